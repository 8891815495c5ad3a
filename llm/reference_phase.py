"""The reference phase: pi_ref's samples, their scores and log-probabilities, cached under a content key.

Sampling N training prompts x K responses from pi_ref, scoring them and computing their reference
log-probabilities is the expensive common part of every method and every threshold: it is cached on disk
under a key of everything it depends on (the model's and scorers' weights by content, prompt sets,
generation settings, seed), so iterations, methods and threshold sweeps reuse it. It is built in chunks of
prompts, each cached as it finishes, so a killed run resamples nothing it had finished. An entry whose
stored key or shapes do not match is rebuilt, never used, and so is a damaged one (truncated, empty,
bit-flipped). The plug-in problem over the K samples per prompt (the plug-in dual of eq. (4)) is exactly a
:class:`theory.ConstrainedProblem` with a uniform reference over the samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm.config import GenerationConfig
from llm.distributed import Ranks
from llm.dpo import sequence_logprobs
from llm.prompts import PromptSet
from llm.run_files import write_atomic
from llm.sampling import Sample, sample_responses
from llm.scorers import Scorer, Standardization, score
from theory.problem import ConstrainedProblem

__all__ = ["ReferenceData", "RunSetup", "build_reference", "reference_key", "response_logprobs", "score_samples"]

FORMAT_VERSION = 2
# Training prompts per cached chunk of the reference phase: a killed run resumes at the first missing chunk.
CHUNK_PROMPTS = 16
# Default responses sampled per held-out prompt from pi_ref for evaluation (the paper evaluates two per prompt).
EVAL_SAMPLES = 2


def reference_key(parts: dict[str, object]) -> str:
    """SHA-256 over the canonical JSON of everything the reference phase depends on."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _token_ids(ids: tuple[object, ...]) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids)


@dataclasses.dataclass(frozen=True, eq=False)
class ReferenceData:
    """pi_ref's samples on the training prompts (K each) and on the test prompts (two each), scored.

    Attributes:
        key: The content key.
        train: ``N * K`` samples, grouped by prompt.
        train_scores: ``(1 + m, N, K)`` reward, then each utility.
        train_logprobs: ``(N, K)`` log pi_ref(y|x) of the training samples.
        test: ``N_test * 2`` samples.
        test_scores: ``(1 + m, N_test, 2)``.
    """

    key: str
    train: list[Sample]
    train_scores: np.ndarray
    train_logprobs: np.ndarray
    test: list[Sample]
    test_scores: np.ndarray

    def problem(self, thresholds: Sequence[float], beta: float) -> ConstrainedProblem:
        """The plug-in problem: uniform reference over each prompt's K samples (the plug-in dual of eq. (4))."""
        return ConstrainedProblem.plug_in(self.train_scores, thresholds, beta)

    def to_bytes(self) -> bytes:
        """Serialise as an ``.npz`` (arrays, plus the samples as JSON)."""
        meta = {
            "key": self.key,
            "train": [dataclasses.astuple(s) for s in self.train],
            "test": [dataclasses.astuple(s) for s in self.test],
        }
        buffer = io.BytesIO()
        np.savez(
            buffer, meta=np.array(json.dumps(meta)), train_scores=self.train_scores,
            train_logprobs=self.train_logprobs, test_scores=self.test_scores,
        )  # fmt: skip
        return buffer.getvalue()

    @classmethod
    def from_file(cls, path: Path, key: str) -> ReferenceData | None:
        """Load a cached entry, or None if it is missing, unreadable, or not the entry for ``key``.

        Not the entry for ``key`` also means: shapes that disagree, a sample out of its prompt's place in the
        table, or a token id that is not a non-negative integer.

        A truncated, empty or bit-flipped file (``BadZipFile``, ``EOFError``, a CRC error, a bad header, ...)
        is None too, with a warning, so the caller rebuilds it.
        """
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k] for k in ("train_scores", "train_logprobs", "test_scores")}
            train = [Sample(s[0], tuple(s[1]), tuple(s[2]), s[3]) for s in meta["train"]]
            test = [Sample(s[0], tuple(s[1]), tuple(s[2]), s[3]) for s in meta["test"]]
            entry = cls(
                meta["key"], train, arrays["train_scores"], arrays["train_logprobs"], test, arrays["test_scores"]
            )
            n, k = entry.train_logprobs.shape
        except Exception as err:  # any damage (zipfile, zlib, numpy, JSON errors differ by kind): rebuild
            warnings.warn(f"{path}: unreadable cache entry ({type(err).__name__}: {err}); rebuilding it", stacklevel=2)
            return None
        per_test = entry.test_scores.shape[2]
        consistent = (
            entry.key == key
            and len(train) == n * k
            and entry.train_scores.shape[1:] == (n, k)
            and len(test) == entry.test_scores.shape[1] * per_test
            and np.all(np.isfinite(entry.train_scores))
            and np.all(np.isfinite(entry.train_logprobs))
            # each sample at its prompt's place in the table, every token id a non-negative integer
            and all(s.prompt_index == i // k for i, s in enumerate(train))
            and all(s.prompt_index == i // per_test for i, s in enumerate(test))
            and all(_token_ids(s.prompt_ids) and _token_ids(s.response_ids) for s in (*train, *test))
        )
        return entry if consistent else None


def score_samples(
    scorers: Sequence[Scorer],
    prompts: Sequence[str],
    samples: Sequence[Sample],
    k: int,
    ref_logprobs: np.ndarray | None = None,
) -> np.ndarray:
    """``(len(scorers), len(samples) // k, k)`` scores of grouped samples against their (raw) prompts.

    A scorer with a ``score_samples(samples, ref_logprobs)`` method (an implicit reward) scores the token
    ids, given the samples' ``(len(samples),)`` log pi_ref(y|x), which the caller has already computed; any
    other scorer scores the texts.
    """
    if not scorers:  # PeCAID from labelled pairs alone: its implicit rewards replace the scores later
        return np.zeros((0, len(samples) // k, k))
    texts = [s.text for s in samples]
    prompt_texts = [prompts[s.prompt_index] for s in samples]
    rows = [
        scorer.score_samples(samples, ref_logprobs)
        if hasattr(scorer, "score_samples")
        else score(scorer, prompt_texts, texts)
        for scorer in scorers
    ]
    return np.stack(rows).reshape(len(scorers), len(samples) // k, k)


@torch.no_grad()
def response_logprobs(
    model: PreTrainedModel,
    samples: Sequence[Sample],
    pad_id: int,
    batch_size: int,
    desc: str = "log-probs",
    progress: bool = True,
) -> np.ndarray:
    """``(len(samples),)`` log pi(y|x) of each sample under ``model``."""
    out = []
    starts = range(0, len(samples), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", leave=False, disable=not progress):
        batch = samples[start : start + batch_size]
        logp = sequence_logprobs(model, [s.prompt_ids for s in batch], [s.response_ids for s in batch], pad_id)
        out.append(logp.double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def build_reference(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_prompts: Sequence[str],
    train_inputs: Sequence[str],
    test_prompts: Sequence[str],
    test_inputs: Sequence[str],
    scorers: Sequence[Scorer],
    generation: GenerationConfig,
    seed: int,
    key: str,
    cache_file: Path,
    ranks: Ranks = Ranks(),
    eval_samples: int = EVAL_SAMPLES,
    samples_key: str | None = None,
) -> ReferenceData:
    """Load the cached reference phase for ``key`` or compute and cache it (atomically).

    Under ``torchrun`` the chunks are shared out across ranks (each seeded by its number, so the result
    does not depend on the number of ranks) and every rank returns the whole entry; rank 0 writes it.

    Args:
        model: pi_ref.
        tokenizer: Its tokenizer.
        train_prompts: Raw training prompts (what the scorers see).
        train_inputs: The same prompts as fed to the model (chat-formatted).
        test_prompts: Raw held-out prompts.
        test_inputs: Their model inputs.
        scorers: Reward first, then the utilities.
        generation: Sampling settings (``samples_per_prompt`` is K).
        seed: Sampling seed.
        key: The content key (see :func:`reference_key`).
        cache_file: Where the entry lives.
        ranks: The processes sharing the work.
        eval_samples: pi_ref responses per held-out prompt.
        samples_key: The key of everything the samples depend on (``key`` without the scorers): an entry cached
            under another key with the same samples is rescored instead of sampled again (a sweep over scorer
            sets, e.g. a second constraint). None: no reuse.
    """
    cached = ReferenceData.from_file(cache_file, key)
    if cached is not None:
        return cached
    k = generation.samples_per_prompt
    index = cache_file.with_name(f"samples-{samples_key}.json") if samples_key else None
    if index is not None and (same := _entry_with_these_samples(index)) is not None:
        # Only the scorers differ from a cached entry: its samples and log-probabilities, rescored.
        entry = dataclasses.replace(
            same, key=key, train_scores=score_samples(scorers, train_prompts, same.train, k),
            test_scores=score_samples(scorers, test_prompts, same.test, eval_samples),
        )  # fmt: skip
        if ranks.is_main:
            write_atomic(cache_file, entry.to_bytes())
        return entry
    parts_dir = cache_file.with_name(f"{cache_file.stem}.parts")
    pad = tokenizer.pad_token_id

    def part(
        name: str, prompts: Sequence[str], model_inputs: Sequence[str], start: int, n: int, part_seed: int,
        with_logprobs: bool = True,
    ):
        """One chunk of prompts, reused from ``parts_dir`` when an earlier (killed) run finished it.

        Only the training chunks need log pi_ref (DPO's reference terms): the held-out one is only scored, and
        its log-probs are left at 0.
        """
        path = parts_dir / f"{name}.npz"
        found = ReferenceData.from_file(path, f"{key}/{name}")
        if found is not None:
            return found
        samples = sample_responses(
            model, tokenizer, model_inputs, n, generation, part_seed, desc=f"reference {name}", progress=ranks.is_main
        )
        samples = [dataclasses.replace(s, prompt_index=s.prompt_index + start) for s in samples]
        scores = score_samples(scorers, prompts, samples, n)
        logprobs = np.zeros((len(model_inputs), n))
        if with_logprobs:
            logprobs = response_logprobs(model, samples, pad, generation.batch_size, progress=ranks.is_main)
            logprobs = logprobs.reshape(-1, n)
        chunk = ReferenceData(f"{key}/{name}", samples, scores, logprobs, [], np.zeros((len(scorers), 0, 2)))
        write_atomic(path, chunk.to_bytes())
        return chunk

    starts = range(0, len(train_inputs), CHUNK_PROMPTS)

    def unit(c: int) -> ReferenceData:
        if c == len(starts):
            return part("test", test_prompts, test_inputs, 0, eval_samples, seed + 1, with_logprobs=False)
        start = starts[c]
        inputs = train_inputs[start : start + CHUNK_PROMPTS]
        return part(f"train{c}", train_prompts, inputs, start, k, seed + 7919 * (c + 1))

    with_test = len(test_inputs) > 0  # the one-shot plug-in pool has no held-out part
    *chunks, test = ranks.map(len(starts) + 1, unit, desc="reference phase") if with_test else [
        *ranks.map(len(starts), unit, desc="plug-in pool"), None
    ]
    entry = ReferenceData(
        key,
        [s for chunk in chunks for s in chunk.train],
        np.concatenate([chunk.train_scores for chunk in chunks], axis=1),
        np.concatenate([chunk.train_logprobs for chunk in chunks], axis=0),
        test.train if test else [],
        test.train_scores if test else np.zeros((len(scorers), 0, eval_samples)),
    )
    if ranks.is_main:
        write_atomic(cache_file, entry.to_bytes())
        shutil.rmtree(parts_dir, ignore_errors=True)
        if index is not None:
            write_atomic(index, json.dumps({"key": key}) + "\n")
    return entry


def _entry_with_these_samples(index: Path) -> ReferenceData | None:
    """The cached entry ``index`` names (same samples, other scorers), or None if either is missing or damaged."""
    try:
        key = json.loads(index.read_text(encoding="utf-8"))["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
        return None  # only a content key may name a file in the cache folder
    return ReferenceData.from_file(index.with_name(f"{key}.npz"), key)


@dataclasses.dataclass(frozen=True, eq=False)
class RunSetup:
    """What every method of a configuration shares: scorers, prompts, pi_ref and its reference phase.

    Attributes:
        scorers: The reward scorer, then one per utility.
        train: Training prompts; ``test``: held-out prompts.
        ref_model: The frozen pi_ref; ``tokenizer`` its tokenizer.
        train_inputs: The model inputs of the training prompts (chat template applied); ``test_inputs`` likewise.
        ref: The (cached) reference phase: pi_ref's samples, scores and log-probabilities.
        samples_key: The key of pi_ref's weights and samples without the scorers: runs that share it share the
            frozen-trunk cache (e.g. a second constraint rescoring the same samples).
        plugin: With ``caid.plugin_samples > 0``, the (cached) pool of the one-shot plug-in problem:
            ``plugin_prompts`` training prompts x ``plugin_samples`` pi_ref responses; None: the pairs' samples.
        thresholds: The b_i the run uses (``scorers.thresholds`` resolved: fractions of the plug-in maximum
            with ``scorers.threshold_units = 'plugin_fraction'``), in the units of the scores.
        standardization: With ``scorers.standardize``, the sigma_w scales every score was divided by (the
            scorers, ``ref`` and ``plugin`` are then in sigma units); None: raw units.
    """

    scorers: list[Scorer]
    train: PromptSet
    test: PromptSet
    ref_model: torch.nn.Module
    tokenizer: Any
    train_inputs: list[str]
    test_inputs: list[str]
    ref: ReferenceData
    samples_key: str
    plugin: ReferenceData | None = None
    thresholds: tuple[float, ...] = ()
    standardization: Standardization | None = None

    def __post_init__(self) -> None:
        if self.scorers and len(self.thresholds) != len(self.scorers) - 1:  # no scorers: PeCAID's objectives
            raise ValueError(f"RunSetup: {len(self.thresholds)} thresholds for {len(self.scorers) - 1} utilities")
