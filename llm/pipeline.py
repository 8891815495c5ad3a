"""One run of a method at one threshold vector: reference phase, one-shot dual, training, evaluation.

Methods (spec §3.2, §3.4, §5.1):

* ``caid`` (MoCAID, the paper's multi-shot): lambda starts at the one-shot solution; iteration t > 1 first
  takes an on-policy dual step ``lambda <- [lambda - eta u]_+`` from n prompts x k fresh samples of the
  current policy; every iteration is one DPO epoch on the reference pairs relabelled by
  ``Bernoulli(sigma(Delta(r + lambda^T g)))``;
* ``one_shot`` (MoCAN): lambda fixed at the one-shot solution, T epochs;
* ``dpo_reward`` / ``dpo_utility``: pseudo-labels from the reward alone / the first utility alone;
* ``pecaid`` (Algorithm 3, spec §3.3): as ``caid``, with the scores replaced by the implicit rewards of
  models DPO-trained from pi_ref on the scorers' simulated Bradley-Terry preferences
  (:mod:`llm.implicit_rewards`), saved as ``pre_aligned_<i>.safetensors``.

The DPO reference is pi_ref throughout. The run directory holds ``config.json`` (resolved configuration,
versions), ``metrics.jsonl``, ``dual_trajectory.csv``, ``eval_scores.csv`` (every held-out sample's scores
and log pi/pi_ref), ``summary.json`` and ``checkpoint_<t>.safetensors`` with ``state.pt``; every file is
written atomically, and ``--resume`` continues after the last finished iteration with the saved optimiser
and random states, so a killed run ends as the uninterrupted one would.

Under ``torchrun --nproc_per_node N`` the same command shares sampling, scoring and log-probabilities out
across the ranks and trains with DDP or FSDP (:mod:`llm.distributed`); only rank 0 writes files, and the
samples, labels and batches are those of a single-process run.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import get_scheduler

from llm.config import RunConfig, to_dict
from llm.data import PromptSet, content_key, prompt_set, split
from llm.distributed import (
    Ranks,
    full_parameters,
    init_ranks,
    load_training_state,
    load_weights,
    training_state,
    wrap_for_training,
)
from llm.dpo import dpo_loss, dual_step, pseudo_labels, sequence_logprobs
from llm.implicit_rewards import ImplicitReward
from llm.methods import method
from llm.models import (
    DEFAULT_MODEL,
    DTYPES,
    apply_lora,
    chat_prompt,
    default_cache_root,
    load_model,
    load_tokenizer,
    tiny_model,
    trainable_parameters,
)
from llm.paired_statistics import improvement
from llm.reference import (
    CHUNK_PROMPTS,
    EVAL_SAMPLES,
    ReferenceData,
    build_reference,
    reference_key,
    response_logprobs,
    score_samples,
)
from llm.run_files import RunExistsError, write_atomic, write_run_record
from llm.sampling import sample_responses
from llm.scorers import build_scorer
from theory.dual import dual_value
from theory.dual_solver import solve_dual

__all__ = ["RunExistsError", "RunSetup", "reference_phase", "run"]

VERSIONS = ("caid-toolkit", "torch", "transformers", "numpy", "vaderSentiment", "alt-profanity-check")


def _prompts(config: RunConfig) -> tuple[PromptSet, PromptSet]:
    limit = config.data.limit or None
    sets = [prompt_set(spec, limit, config.seed) for spec in config.data.prompts]
    merged = PromptSet("+".join(s.name for s in sets), tuple(p for s in sets for p in s.prompts))
    return split(merged, config.data.test_fraction, config.seed)


def _models(config: RunConfig, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """(frozen reference, tokenizer), on ``device`` in the configured dtype."""
    cache = config.model.cache_dir or None
    dtype = DTYPES[config.model.dtype]
    if config.model.name == "tiny":
        tokenizer = load_tokenizer(DEFAULT_MODEL, cache_dir=cache)
        model = tiny_model(tokenizer, seed=config.seed).to(dtype)
    else:
        model, tokenizer = load_model(config.model.name, cache_dir=cache, dtype=dtype)
    return model.to(device).eval().requires_grad_(False), tokenizer


@dataclasses.dataclass(frozen=True, eq=False)
class _Learner:
    """A model DPO trains: ``model`` itself, ``trainer`` the (DDP/FSDP) module steps run through."""

    model: torch.nn.Module
    trainer: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    names: set[str]  # the trained parameters, a tied weight under one name


def _learner(config: RunConfig, ranks: Ranks, reference: torch.nn.Module, total_steps: int) -> _Learner:
    """A trainable copy of pi_ref (trained weights as configured), wrapped for the job, with its optimiser."""
    model = copy.deepcopy(reference)
    if config.training.gradient_checkpointing:
        # Non-reentrant checkpointing needs no gradient on the inputs, so frozen embeddings (LoRA, top layers) work.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.model.train == "lora":
        model = apply_lora(model, config.model.lora_rank, config.model.lora_alpha, seed=config.seed)
    else:
        trainable_parameters(model, config.model.train, config.model.top_k_layers)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    # The optimiser is built after wrapping: FSDP replaces the parameters it shards.
    trainer = wrap_for_training(model, ranks, config.training.distributed)
    trained = [p for p in trainer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.training.learning_rate)
    return _Learner(model, trainer, optimizer, _scheduler(config, optimizer, total_steps), names)


def _scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The Hugging Face Trainer's schedules (Table 1): warm-up, then constant or cosine to 0 over all steps."""
    return get_scheduler(
        {"cosine": "cosine", "constant": "constant_with_warmup"}[config.training.lr_scheduler],
        optimizer,
        num_warmup_steps=config.training.warmup_steps,
        num_training_steps=total_steps,
    )


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def _save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(weights, tmp)
    tmp.replace(path)


def _save_checkpoint(out: Path, iteration: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write ``checkpoint_<t>.safetensors``, then ``state.pt`` naming it, then drop older checkpoints.

    A kill at any point leaves ``state.pt`` pointing at a complete checkpoint of the same iteration.
    """
    name = f"checkpoint_{iteration}.safetensors"
    _save_weights(out / name, weights)
    _atomic_torch_save({**state, "checkpoint": name}, out / "state.pt")
    for old in out.glob("checkpoint_*.safetensors"):
        if old.name != name:
            old.unlink()


@dataclasses.dataclass(frozen=True, eq=False)
class RunSetup:
    """What every method of a configuration shares: scorers, prompts, pi_ref and its reference phase.

    Attributes:
        scorers: The reward scorer, then one per utility.
        train: Training prompts; ``test``: held-out prompts.
        reference: The frozen pi_ref; ``tokenizer`` its tokenizer.
        train_inputs: The model inputs of the training prompts (chat template applied); ``test_inputs`` likewise.
        ref: The (cached) reference phase: pi_ref's samples, scores and log-probabilities.
    """

    scorers: list
    train: PromptSet
    test: PromptSet
    reference: torch.nn.Module
    tokenizer: Any
    train_inputs: list[str]
    test_inputs: list[str]
    ref: ReferenceData


def reference_phase(config: RunConfig, ranks: Ranks | None = None) -> RunSetup:
    """Load the scorers, prompts and pi_ref, and load or build the cached reference phase (no training).

    Every method and threshold of ``config`` shares it (the cache key ignores both), so a sweep computes it
    once; :mod:`analysis.dual_convergence` studies it alone.

    Raises:
        ValueError: For bad prompt sets, scorers or models (each names what to fix).
    """
    ranks = ranks or init_ranks(config.model.device)
    scorers = [
        build_scorer(spec, device=str(ranks.device), dtype=config.model.dtype)
        for spec in (config.scorers.reward, *config.scorers.utilities)
    ]
    train, test = _prompts(config)
    reference, tokenizer = _models(config, ranks.device)
    use_template = config.model.use_chat_template

    # The model's inputs, formatted once: sampling, on-policy dual steps and evaluation reuse them.
    train_inputs = [chat_prompt(tokenizer, p, use_template) for p in train.prompts]
    test_inputs = [chat_prompt(tokenizer, p, use_template) for p in test.prompts]

    parts = {
        "model": config.model.name, "model_seed": config.seed if config.model.name == "tiny" else None,
        "dtype": config.model.dtype, "chat": use_template, "train": content_key(train), "test": content_key(test),
        "scorers": [config.scorers.reward, *config.scorers.utilities],
        "generation": dataclasses.asdict(config.generation), "seed": config.seed,
    }  # fmt: skip
    key = reference_key(parts)
    cache_root = Path(config.model.cache_dir) if config.model.cache_dir else default_cache_root()
    ref = build_reference(
        reference, tokenizer, train.prompts, train_inputs, test.prompts, test_inputs, scorers,
        config.generation, config.seed, key, cache_root / "reference" / f"{key}.npz", ranks,
    )  # fmt: skip
    return RunSetup(scorers, train, test, reference, tokenizer, train_inputs, test_inputs, ref)


def run(config: RunConfig, out: Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run one method into ``out``; return the summary (also written to ``summary.json``).

    Raises:
        RunExistsError: If ``out`` holds a run with another configuration, or any run and ``resume`` is off.
        theory.InfeasibleProblemError: If the thresholds are unreachable on the reference samples (before
            any training).
        ValueError: For bad prompt sets, scorers or models (each names what to fix).
    """
    ranks = init_ranks(config.model.device)
    hint = None if resume else "pass --resume to continue it, or use a fresh one"
    ranks.on_main(lambda: write_run_record(out, to_dict(config), VERSIONS, existing_hint=hint))
    if resume and (out / "summary.json").is_file():
        # Written last, and the run record matched this configuration: finished, nothing to load or recompute.
        return json.loads((out / "summary.json").read_text())

    setup = reference_phase(config, ranks)
    scorers, train, test, ref = setup.scorers, setup.train, setup.test, setup.ref
    reference, tokenizer = setup.reference, setup.tokenizer
    train_inputs, test_inputs = setup.train_inputs, setup.test_inputs
    pad = tokenizer.pad_token_id

    rng = np.random.default_rng(config.seed)
    k = config.generation.samples_per_prompt
    per_prompt = config.training.pairs_per_prompt
    pairs = np.array([(i, *rng.choice(k, 2, replace=False)) for i in range(len(train)) for _ in range(per_prompt)])
    steps_per_epoch = math.ceil(len(pairs) / config.training.batch_size)
    utilities = scorers[1:]
    if method(config.method).pre_aligned:
        implicit = _pre_align(config, ranks, reference, pad, ref, pairs, out, progress)
        ref = dataclasses.replace(ref, train_scores=_implicit_scores(ranks, implicit, train.prompts, ref, k))
        utilities = implicit[1:]

    prob = ref.problem(config.scorers.thresholds, config.caid.beta)
    one_shot = solve_dual(prob, return_policy=False).lam  # raises InfeasibleProblemError before training
    spec = method(config.method)
    reward_weight, lam = spec.reward_weight, spec.initial_multipliers(one_shot)

    learner = _learner(config, ranks, reference, config.caid.iterations * steps_per_epoch)
    policy = learner.model
    metrics: list[dict[str, Any]] = []
    start = 1
    if resume and (out / "state.pt").is_file():
        state = torch.load(out / "state.pt", weights_only=False, map_location="cpu")
        weights = load_file(out / state["checkpoint"])
        load_training_state(learner.trainer, learner.optimizer, weights, state["optimizer"])
        learner.scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        lam, metrics, start = np.asarray(state["lam"]), state["metrics"], state["iteration"] + 1

    ref_means = ref.train_scores[1:].mean(axis=2)  # (m, N): E_ref[g_i | x] from the K reference samples
    iterations = range(start, config.caid.iterations + 1)
    for t in tqdm(iterations, desc=config.method, unit="iter", disable=not (progress and ranks.is_main)):
        row: dict[str, Any] = {"iteration": t}
        if spec.dual_steps and t > 1:
            lam, row["slack"], row["kl_estimate"] = _dual_step(
                config, ranks, policy, reference, tokenizer, train, train_inputs, utilities, ref_means, lam, rng,
                progress,
            )  # fmt: skip
        composite = reward_weight * ref.train_scores[0] + np.tensordot(lam, ref.train_scores[1:], axes=1)
        prefer_1 = pseudo_labels(composite[pairs[:, 0], pairs[:, 1]], composite[pairs[:, 0], pairs[:, 2]], rng)
        stats = _dpo_epoch(config, ranks, learner, ref, pairs, prefer_1, rng, pad, progress)
        row.update(
            lam=[float(v) for v in lam],
            plugin_dual_value=None if spec.baseline else float(dual_value(prob, lam)),
            **stats,
        )
        metrics.append(row)
        weights, optimizer_state = training_state(learner.trainer, learner.optimizer, learner.names)
        # Rank 0's torch generator is the one saved; sampling reseeds it from the numpy generator anyway.
        state = {
            "iteration": t, "lam": lam, "metrics": metrics, "optimizer": optimizer_state,
            "scheduler": learner.scheduler.state_dict(), "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
        }  # fmt: skip
        if ranks.is_main:
            _save_checkpoint(out, t, weights, state)
            _write_jsonl(out / "metrics.jsonl", metrics)

    summary = _evaluate(
        config, ranks, policy, reference, tokenizer, test, test_inputs, ref, scorers, out, one_shot, lam, metrics,
        progress,
    )  # fmt: skip
    if ranks.is_main:
        write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _policy_samples(
    ranks: Ranks, policy, reference, tokenizer, prompts: Sequence[str], inputs: Sequence[str], scorers, n: int,
    generation, seed: int, desc: str, progress: bool,
) -> tuple[list, np.ndarray, np.ndarray]:  # fmt: skip
    """``n`` samples per prompt from ``policy``, their scores and their log-ratios ``log pi / pi_ref``.

    The prompts are cut into generation batches, each seeded by its number and shared out across ranks, so
    the result is the same for any number of ranks.

    Returns:
        ``(samples, scores (len(scorers), P, n), log_ratio (P, n))``.
    """
    per_batch = max(1, generation.batch_size // n)
    starts = range(0, len(inputs), per_batch)
    pad = tokenizer.pad_token_id

    def unit(u: int) -> tuple[list, np.ndarray, np.ndarray]:
        first = starts[u]
        batch = sample_responses(
            policy, tokenizer, inputs[first : first + per_batch], n, generation, seed + u, progress=False
        )
        logp = response_logprobs(policy, batch, pad, generation.batch_size, progress=False)
        batch = [dataclasses.replace(s, prompt_index=s.prompt_index + first) for s in batch]
        ref_logp = response_logprobs(reference, batch, pad, generation.batch_size, progress=False)
        return batch, score_samples(scorers, prompts, batch, n, ref_logp), logp - ref_logp

    implicit = [s.model for s in scorers if isinstance(s, ImplicitReward)]
    with full_parameters(policy, *implicit):  # every rank gathers FSDP's shards once, then samples on its own
        parts = ranks.map(len(starts), unit, desc=desc, progress=progress)
    samples = [s for part in parts for s in part[0]]
    return samples, np.concatenate([p[1] for p in parts], axis=1), np.concatenate([p[2] for p in parts]).reshape(-1, n)


def _dual_step(
    config, ranks, policy, reference, tokenizer, train, train_inputs, utilities, ref_means, lam, rng, progress
):
    """On-policy dual step: sample n prompts x k responses, measure u = E[g - E_ref g] - b, project.

    Also returns the Monte-Carlo KL(pi_theta || pi_ref) of the same samples (their mean log-ratio).
    """
    chosen = rng.choice(len(train), size=min(config.caid.dual_prompts, len(train)), replace=False)
    _, g, log_ratio = _policy_samples(
        ranks, policy, reference, tokenizer, [train.prompts[i] for i in chosen], [train_inputs[i] for i in chosen],
        utilities, config.caid.dual_samples, config.generation, int(rng.integers(2**31)), "on-policy samples",
        progress,
    )  # fmt: skip
    slack = (g - ref_means[:, chosen, None]).mean(axis=(1, 2)) - np.asarray(config.scorers.thresholds)
    return dual_step(lam, slack, config.caid.dual_step_size), [float(v) for v in slack], float(log_ratio.mean())


def _pre_align(config, ranks, reference, pad, ref: ReferenceData, pairs, out: Path, progress) -> list[ImplicitReward]:
    """PeCAID's pre-alignment (Algorithm 3, lines 3-4): pi_r and each pi_g_i by DPO from pi_ref on preferences.

    The scorers play the annotators: one Bradley-Terry label per pair and objective, drawn once. Each
    trained model is saved as ``pre_aligned_<i>.safetensors``; a resumed run loads it instead of training.
    """
    names = [config.scorers.reward, *config.scorers.utilities]
    steps = config.pecaid.epochs * math.ceil(len(pairs) / config.training.batch_size)
    rewards = []
    for s, name in enumerate(names):
        learner = _learner(config, ranks, reference, steps)
        path = out / f"pre_aligned_{s}.safetensors"
        if path.is_file():
            load_weights(learner.trainer, load_file(path))
        else:
            rng = np.random.default_rng([config.seed, s])  # its own stream: skipping it on resume changes nothing
            scores = ref.train_scores[s]
            prefer_1 = pseudo_labels(scores[pairs[:, 0], pairs[:, 1]], scores[pairs[:, 0], pairs[:, 2]], rng)
            epochs = range(config.pecaid.epochs)
            for _ in tqdm(epochs, desc=f"pre-align {name}", disable=not (progress and ranks.is_main)):
                _dpo_epoch(config, ranks, learner, ref, pairs, prefer_1, rng, pad, progress)
            weights, _ = training_state(learner.trainer, learner.optimizer, learner.names)
            if ranks.is_main:
                _save_weights(path, weights)
        learner.model.eval().requires_grad_(False)
        beta, batch = config.caid.beta, config.generation.batch_size
        rewards.append(ImplicitReward(f"implicit:{name}", learner.model, beta, pad, batch))
    return rewards


def _implicit_scores(ranks: Ranks, rewards, prompts, ref: ReferenceData, k: int) -> np.ndarray:
    """``(len(rewards), N, K)`` implicit rewards of the reference samples, shared out across ranks."""
    chunk = CHUNK_PROMPTS * k
    starts = range(0, len(ref.train), chunk)
    ref_logprobs = ref.train_logprobs.ravel()  # cached: no second reference pass

    def unit(u: int) -> np.ndarray:
        rows = slice(starts[u], starts[u] + chunk)
        return score_samples(rewards, prompts, ref.train[rows], k, ref_logprobs[rows])

    with full_parameters(*(r.model for r in rewards)):
        parts = ranks.map(len(starts), unit, desc="implicit rewards")
    return np.concatenate(parts, axis=1)


def _dpo_epoch(
    config, ranks: Ranks, learner: _Learner, ref: ReferenceData, pairs: np.ndarray, prefer_1: np.ndarray, rng, pad,
    progress: bool = True,
) -> dict[str, float]:  # fmt: skip
    """One epoch over labelled reference pairs in shuffled batches; returns the mean loss, accuracy and margin.

    ``pairs`` rows are ``(prompt, j_0, j_1)`` indices into the reference samples; ``prefer_1`` says where
    ``j_1`` is the chosen response. Each batch is split across ranks; a rank's loss is weighted by its
    share of the batch, so the gradient DDP averages is the gradient of the whole batch's mean loss. A rank
    with no pair in a (last, small) batch still takes part with a zero-weighted pair, as every rank must
    join every gradient exchange.
    """
    x = pairs[:, 0]
    chosen = np.where(prefer_1, pairs[:, 2], pairs[:, 1])
    rejected = np.where(prefer_1, pairs[:, 1], pairs[:, 2])
    trainer, optimizer, scheduler = learner.trainer, learner.optimizer, learner.scheduler
    k = config.generation.samples_per_prompt
    sample = lambda i, j: ref.train[i * k + j]  # noqa: E731
    order = rng.permutation(len(x))
    totals = np.zeros(4)  # pairs, and the sums of loss, accuracy and margin over them
    trainer.train()
    batches = range(0, len(order), config.training.batch_size)
    for start in tqdm(batches, desc="DPO epoch", unit="step", leave=False, disable=not (progress and ranks.is_main)):
        idx = order[start : start + config.training.batch_size]
        local = idx[ranks.rank :: ranks.world_size]
        weight = len(local) * ranks.world_size / len(idx)
        if len(local) == 0:
            local, weight = idx[:1], 0.0
        both = [sample(x[i], chosen[i]) for i in local] + [sample(x[i], rejected[i]) for i in local]
        logp = sequence_logprobs(trainer, [s.prompt_ids for s in both], [s.response_ids for s in both], pad)
        rows, cols = np.tile(x[local], 2), np.concatenate([chosen[local], rejected[local]])
        ref_logp = torch.tensor(ref.train_logprobs[rows, cols], dtype=logp.dtype, device=logp.device)
        n = len(local)
        loss, stats = dpo_loss(logp[:n], logp[n:], ref_logp[:n], ref_logp[n:], config.caid.beta)
        optimizer.zero_grad()
        (loss * weight).backward()
        optimizer.step()
        scheduler.step()
        if weight:
            totals += n * np.array([1.0, stats.loss, stats.accuracy, stats.margin])
    trainer.eval()
    pairs, loss, accuracy, margin = np.sum(ranks.gather(totals), axis=0)
    return {"dpo_loss": loss / pairs, "dpo_accuracy": accuracy / pairs, "dpo_margin": margin / pairs}


def _evaluate(
    config, ranks, policy, reference, tokenizer, test, test_inputs, ref: ReferenceData, scorers, out, one_shot, lam,
    metrics, progress,
):  # fmt: skip
    """Two responses per held-out prompt from the trained policy, scored next to pi_ref's."""
    samples, scores, log_ratio = _policy_samples(
        ranks, policy, reference, tokenizer, test.prompts, test_inputs, scorers, EVAL_SAMPLES, config.generation,
        config.seed + 2, "eval", progress,
    )  # fmt: skip
    kl = float(log_ratio.mean())
    names = [config.scorers.reward, *config.scorers.utilities]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "prompt_index", "sample", *names, "log_ratio", "response"])
    # log pi/pi_ref of each sample (exactly 0 for pi_ref's own): the KL and Lagrangian estimates need it.
    ref_ratio = np.zeros_like(log_ratio)
    for label, data, ratio, samp in (
        ("policy", scores, log_ratio, samples), ("reference", ref.test_scores, ref_ratio, ref.test)
    ):  # fmt: skip
        for s_index, s in enumerate(samp):
            i, j = divmod(s_index, EVAL_SAMPLES)
            writer.writerow([label, i, j, *(f"{v:.6g}" for v in data[:, i, j]), f"{ratio[i, j]:.6g}", s.text])
    eval_csv = buffer.getvalue()

    buffer = io.StringIO()
    m = len(config.scorers.utilities)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["iteration", *(f"lambda_{i + 1}" for i in range(m)), *(f"slack_{i + 1}" for i in range(m))])
    for row in metrics:
        writer.writerow([row["iteration"], *row["lam"], *(row.get("slack") or [float("nan")] * m)])
    if ranks.is_main:
        write_atomic(out / "eval_scores.csv", eval_csv)
        write_atomic(out / "dual_trajectory.csv", buffer.getvalue())

    improvements = {name: improvement(scores[r], ref.test_scores[r]) for r, name in enumerate(names)}
    # How much reward and each utility conflict where the pairs compare them: within a prompt.
    centred = ref.train_scores - ref.train_scores.mean(axis=2, keepdims=True)
    flat = centred.reshape(len(names), -1)
    correlation = np.corrcoef(flat)[0, 1:] if flat.std(axis=1).min() > 0 else np.full(len(names) - 1, np.nan)
    thresholds = config.scorers.thresholds
    # Each iterate's policy is measured on-policy by the next dual step (caid) or, for the last, by this
    # evaluation; the best iterate is the least violating one (latest on ties). Only the last one's weights
    # are kept.
    last_slack = [improvements[n]["mean"] - b for n, b in zip(names[1:], thresholds, strict=True)]
    slacks = [row.get("slack") for row in metrics[1:]] + [last_slack]
    violation = [sum(max(0.0, -u) for u in s) if s is not None else np.inf for s in slacks]
    best = max(range(len(violation)), key=lambda i: (-violation[i], i))
    return {
        "method": config.method,
        "thresholds": thresholds,
        "lambda_one_shot": [float(v) for v in one_shot],
        "lambda_last": [float(v) for v in lam],
        "improvements": improvements,
        "constraints_satisfied": [improvements[n]["mean"] >= b for n, b in zip(names[1:], thresholds, strict=True)],
        "kl_estimate": kl,
        "last_iteration": metrics[-1]["iteration"],
        "best_iteration": metrics[best]["iteration"],
        "measured_slack_by_iteration": {str(row["iteration"]): s for row, s in zip(metrics, slacks, strict=True)},
        "reference_reward_utility_correlation": dict(zip(names[1:], map(float, correlation), strict=True)),
        "n_train_prompts": len(ref.train) // config.generation.samples_per_prompt,
        "n_test_prompts": len(test),
        "reference_key": ref.key,
    }
