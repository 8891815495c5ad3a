"""``data.max_prompt_length`` and ``data.max_length``: the sequences DPO forwards, cut as TRL's DPO cuts them.

A prompt keeps its last ``max_prompt_length`` tokens (the end, next to the response, matters most); then the
response is cut at its end so that prompt and response together hold at most ``max_length`` tokens (a prompt
that alone reaches ``max_length`` keeps its last ``max_length - 1``, so one response token remains). pi_ref's
log-probabilities are computed on the same cut sequences, so the DPO loss compares like with like. Sampling and
scoring see whole prompts and responses; ``generation.max_new_tokens`` bounds sampled responses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from llm.config import DataConfig
from llm.reference_phase import ReferenceData, RunSetup, response_logprobs
from llm.sampling import Sample

__all__ = ["truncate", "truncated_reference", "truncated_samples", "truncated_setup"]


def truncate(sample: Sample, max_prompt_length: int = 0, max_length: int = 0) -> Sample:
    """``sample`` with its prompt and response ids cut (0: no limit); the text is kept whole."""
    prompt, response = sample.prompt_ids, sample.response_ids
    if max_prompt_length and len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:]
    if max_length:
        if len(prompt) >= max_length:
            prompt = prompt[-(max_length - 1) :]
        response = response[: max_length - len(prompt)]
    if (prompt, response) == (sample.prompt_ids, sample.response_ids):
        return sample
    return dataclasses.replace(sample, prompt_ids=tuple(prompt), response_ids=tuple(response))


def truncated_samples(
    samples: Sequence[Sample], max_prompt_length: int = 0, max_length: int = 0
) -> tuple[list[Sample], np.ndarray]:
    """Every sample cut (:func:`truncate`), and a mask of the ones that changed."""
    cut = [truncate(s, max_prompt_length, max_length) for s in samples]
    return cut, np.array([c is not s for c, s in zip(cut, samples, strict=True)], dtype=bool)


def truncated_reference(
    ref: ReferenceData,
    reference: torch.nn.Module,
    pad_id: int,
    batch_size: int,
    max_prompt_length: int = 0,
    max_length: int = 0,
) -> ReferenceData:
    """``ref`` with its training samples cut and their pi_ref log-probabilities recomputed where they changed."""
    if not (max_prompt_length or max_length):
        return ref
    train, changed = truncated_samples(ref.train, max_prompt_length, max_length)
    if not changed.any():
        return ref
    logprobs = ref.train_logprobs.ravel().copy()
    chosen = [train[i] for i in np.flatnonzero(changed)]
    logprobs[changed] = response_logprobs(reference, chosen, pad_id, batch_size, "truncated log-probs")
    return dataclasses.replace(ref, train=train, train_logprobs=logprobs.reshape(ref.train_logprobs.shape))


def truncated_setup(setup: RunSetup, data: DataConfig, batch_size: int) -> RunSetup:
    """``setup`` with its reference training samples cut by ``data.max_prompt_length`` and ``data.max_length``."""
    ref = truncated_reference(
        setup.ref, setup.ref_model, setup.tokenizer.pad_token_id, batch_size, data.max_prompt_length, data.max_length
    )
    return setup if ref is setup.ref else dataclasses.replace(setup, ref=ref)
