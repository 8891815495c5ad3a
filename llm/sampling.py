"""Batched sampling of responses from a causal LM (KV cache, temperature and nucleus sampling)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm.config import GenerationConfig

__all__ = ["Sample", "sample_responses"]

# transformers fills every generation setting left unset from the model's generation_config.json, then from its own
# defaults (top-k 50 among them; the others below default to neutral). Where the model's config sets one of these,
# its neutral value is passed instead, so the samples stay on softmax(logits / T) truncated only by the configured
# top-k and top-p; settings the model leaves unset add no logits processor.
NEUTRAL_SAMPLING = {
    "min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_new_tokens": 0,  # (it overrides min_length)
    "suppress_tokens": [], "begin_suppress_tokens": [],
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Sample:
    """One sampled response.

    Attributes:
        prompt_index: Index of its prompt in the list passed to :func:`sample_responses`.
        prompt_ids: The prompt's token ids (as fed to the model, without padding).
        response_ids: The response's token ids, up to and including the first end-of-sequence token.
        text: The decoded response without special tokens.
    """

    prompt_index: int
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    text: str


def _check_positions(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_new_tokens: int
) -> None:
    """Refuse, before any sampling, a prompt whose tokens plus ``max_new_tokens`` exceed the model's positions.

    Past ``max_position_embeddings`` a rotary model still runs, on positions it was never trained on, while
    its KV cache grows with every token.
    """
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(positions, int) or not prompts:
        return
    if max_new_tokens >= positions:
        raise ValueError(
            f"generation.max_new_tokens: {max_new_tokens} new tokens do not fit in the model's {positions} positions "
            f"(with the prompt); lower it below {positions}"
        )
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    longest = max(range(len(prompts)), key=lengths.__getitem__)
    if lengths[longest] + max_new_tokens > positions:
        room = positions - lengths[longest]
        fix = (f"lower generation.max_new_tokens to {room} or shorten the prompt" if room > 0
               else "shorten or remove the prompt")
        raise ValueError(
            f"prompt {longest} ({lengths[longest]} tokens, starting {prompts[longest][:60]!r}) plus "
            f"generation.max_new_tokens = {max_new_tokens} exceeds the model's {positions} positions; {fix}"
        )


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    n_per_prompt: int,
    generation: GenerationConfig,
    seed: int,
    desc: str = "sampling",
    progress: bool = True,
) -> list[Sample]:
    """Draw ``n_per_prompt`` responses for every prompt (already chat-formatted text).

    Each token is drawn from softmax(logits / temperature), truncated to the ``top_k`` most likely tokens (0: no
    truncation) and then to the ``top_p`` nucleus. The sampling settings a model's own generation config may carry
    (top-k, min-p, typical-p, repetition penalties, minimum lengths, suppressed tokens) are neutralised.

    Returns:
        ``len(prompts) * n_per_prompt`` samples, grouped by prompt in input order.

    Raises:
        ValueError: ``n_per_prompt`` < 1, or a prompt whose tokens plus ``generation.max_new_tokens`` exceed the
            model's ``max_position_embeddings`` (checked before any sampling).
    """
    if n_per_prompt < 1:
        raise ValueError(f"n_per_prompt: must be >= 1, got {n_per_prompt}")
    _check_positions(model, tokenizer, prompts, generation.max_new_tokens)
    torch.manual_seed(seed)
    own = getattr(model, "generation_config", None)
    overrides = {k: v for k, v in NEUTRAL_SAMPLING.items() if getattr(own, k, None) not in (None, v)}
    eos = tokenizer.eos_token_id
    per_batch = max(1, generation.batch_size // n_per_prompt)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    samples: list[Sample] = []
    starts = range(0, len(prompts), per_batch)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        batch = list(prompts[start : start + per_batch])
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=generation.temperature,
            top_p=generation.top_p,
            top_k=generation.top_k,
            **overrides,
            max_new_tokens=generation.max_new_tokens,
            num_return_sequences=n_per_prompt,
            pad_token_id=tokenizer.pad_token_id,
            # Each rank samples its own prompts (llm.distributed); transformers would otherwise lock-step
            # every rank's decoding when the model is FSDP-sharded.
            synced_gpus=False,
        )
        width = enc["input_ids"].shape[1]
        for row, ids in enumerate(out.tolist()):
            i = row // n_per_prompt
            mask = enc["attention_mask"][i].tolist()
            prompt_ids = tuple(t for t, m in zip(enc["input_ids"][i].tolist(), mask, strict=True) if m)
            response = ids[width:]
            if eos in response:  # padding only ever follows the first end-of-sequence token
                response = response[: response.index(eos) + 1]
            text = tokenizer.decode(response, skip_special_tokens=True)
            samples.append(Sample(start + i, prompt_ids, tuple(response), text))
    model.train(was_training)
    return samples
