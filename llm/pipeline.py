"""One run of a method at one threshold vector: reference phase, one-shot dual, training, evaluation.

Methods (spec §3.2, §3.4, §5.1):

* ``caid`` (MoCAID, the paper's multi-shot): lambda starts at the one-shot solution; iteration t > 1 first
  takes an on-policy dual step ``lambda <- [lambda - eta u]_+`` from n prompts x k fresh samples of the
  current policy; every iteration is one DPO epoch on the reference pairs relabelled by
  ``Bernoulli(sigma(Delta(r + lambda^T g)))``;
* ``one_shot`` (MoCAN): lambda fixed at the one-shot solution, T epochs;
* ``dpo_reward`` / ``dpo_utility``: pseudo-labels from the reward alone / the first utility alone.

The DPO reference is pi_ref throughout. The run directory holds ``config.json`` (resolved configuration,
versions), ``metrics.jsonl``, ``dual_trajectory.csv``, ``eval_scores.csv``, ``summary.json`` and
``checkpoint_<t>.safetensors`` with ``state.pt``; every file is written atomically, and ``--resume`` continues
after the last finished iteration with the saved optimiser and random states, so a killed run ends as
the uninterrupted one would.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from analysis.run_files import RunExistsError, write_atomic, write_run_record
from llm.config import RunConfig, to_dict
from llm.data import PromptSet, content_key, prompt_set, split
from llm.dpo import DPOStats, dpo_loss, dual_step, pseudo_labels, sequence_logprobs
from llm.models import (
    DEFAULT_MODEL,
    apply_lora,
    chat_prompt,
    default_cache_root,
    load_model,
    load_tokenizer,
    tiny_model,
    trainable_parameters,
)
from llm.reference import (
    EVAL_SAMPLES,
    ReferenceData,
    build_reference,
    reference_key,
    response_logprobs,
    score_samples,
)
from llm.sampling import sample_responses
from llm.scorers import build_scorer
from theory.dual import dual_value
from theory.dual_solver import solve_dual

__all__ = ["RunExistsError", "improvement", "run"]

VERSIONS = ("caid-toolkit", "torch", "transformers", "numpy", "vaderSentiment", "alt-profanity-check")


def improvement(policy: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Mean improvement with a normal 95% CI from per-prompt paired differences.

    Args:
        policy: ``(n_prompts, samples)`` scores of the trained policy.
        reference: ``(n_prompts, samples)`` scores of pi_ref on the same prompts.
    """
    diff = policy.mean(axis=1) - reference.mean(axis=1)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    mean = float(diff.mean())
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n_prompts": len(diff)}


def _prompts(config: RunConfig) -> tuple[PromptSet, PromptSet]:
    limit = config.data.limit or None
    sets = [prompt_set(spec, limit, config.seed) for spec in config.data.prompts]
    merged = PromptSet("+".join(s.name for s in sets), tuple(p for s in sets for p in s.prompts))
    return split(merged, config.data.test_fraction, config.seed)


def _models(config: RunConfig) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """(policy, frozen reference, tokenizer)."""
    cache = config.model.cache_dir or None
    if config.model.name == "tiny":
        tokenizer = load_tokenizer(DEFAULT_MODEL, cache_dir=cache)
        policy = tiny_model(tokenizer, seed=config.seed)
    else:
        policy, tokenizer = load_model(config.model.name, cache_dir=cache)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    if config.model.train == "lora":
        policy = apply_lora(policy, config.model.lora_rank, config.model.lora_alpha)
    return policy, reference, tokenizer


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def _save_checkpoint(out: Path, iteration: int, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write ``checkpoint_<t>.safetensors``, then ``state.pt`` naming it, then drop older checkpoints.

    A kill at any point leaves ``state.pt`` pointing at a complete checkpoint of the same iteration.
    """
    name = f"checkpoint_{iteration}.safetensors"
    tmp = out / f".{name}.tmp"
    save_file(weights, tmp)
    tmp.replace(out / name)
    _atomic_torch_save({**state, "checkpoint": name}, out / "state.pt")
    for old in out.glob("checkpoint_*.safetensors"):
        if old.name != name:
            old.unlink()


def run(config: RunConfig, out: Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run one method into ``out``; return the summary (also written to ``summary.json``).

    Raises:
        RunExistsError: If ``out`` holds a run with another configuration, or any run and ``resume`` is off.
        theory.InfeasibleProblemError: If the thresholds are unreachable on the reference samples (before
            any training).
        ValueError: For bad prompt sets, scorers or models (each names what to fix).
    """
    hint = None if resume else "pass --resume to continue it, or use a fresh one"
    write_run_record(out, to_dict(config), VERSIONS, existing_hint=hint)

    scorers = [build_scorer(spec) for spec in (config.scorers.reward, *config.scorers.utilities)]
    train, test = _prompts(config)
    policy, reference, tokenizer = _models(config)
    use_template = config.model.use_chat_template

    # The model's inputs, formatted once: sampling, on-policy dual steps and evaluation reuse them.
    train_inputs = [chat_prompt(tokenizer, p, use_template) for p in train.prompts]
    test_inputs = [chat_prompt(tokenizer, p, use_template) for p in test.prompts]

    parts = {
        "model": config.model.name, "model_seed": config.seed if config.model.name == "tiny" else None,
        "chat": use_template, "train": content_key(train), "test": content_key(test),
        "scorers": [config.scorers.reward, *config.scorers.utilities],
        "generation": dataclasses.asdict(config.generation), "seed": config.seed,
    }  # fmt: skip
    key = reference_key(parts)
    cache_root = Path(config.model.cache_dir) if config.model.cache_dir else default_cache_root()
    ref = build_reference(
        reference, tokenizer, train.prompts, train_inputs, test.prompts, test_inputs, scorers,
        config.generation, config.seed, key, cache_root / "reference" / f"{key}.npz",
    )  # fmt: skip

    prob = ref.problem(config.scorers.thresholds, config.caid.beta)
    one_shot = solve_dual(prob, return_policy=False).lam  # raises InfeasibleProblemError before training
    m = len(config.scorers.utilities)
    reward_weight, lam = {
        "caid": (1.0, one_shot), "one_shot": (1.0, one_shot),
        "dpo_reward": (1.0, np.zeros(m)), "dpo_utility": (0.0, np.eye(m)[0]),
    }[config.method]  # fmt: skip

    rng = np.random.default_rng(config.seed)
    k = config.generation.samples_per_prompt
    per_prompt = config.training.pairs_per_prompt
    pairs = np.array([(i, *rng.choice(k, 2, replace=False)) for i in range(len(train)) for _ in range(per_prompt)])
    if config.model.train == "lora":
        params = [p for p in policy.parameters() if p.requires_grad]
    else:
        params = trainable_parameters(policy, config.model.train, config.model.top_k_layers)
    names = {id(p): n for n, p in policy.named_parameters()}
    optimizer = torch.optim.AdamW(params, lr=config.training.learning_rate)
    metrics: list[dict[str, Any]] = []
    start = 1
    if resume and (out / "state.pt").is_file():
        state = torch.load(out / "state.pt", weights_only=False)
        if state["iteration"] == config.caid.iterations and (out / "summary.json").is_file():
            return json.loads((out / "summary.json").read_text())  # finished: nothing to recompute
        weights = load_file(out / state["checkpoint"])
        with torch.no_grad():
            for p in params:
                p.copy_(weights[names[id(p)]])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        lam, metrics, start = np.asarray(state["lam"]), state["metrics"], state["iteration"] + 1

    pad = tokenizer.pad_token_id
    ref_means = ref.train_scores[1:].mean(axis=2)  # (m, N): E_ref[g_i | x] from the K reference samples
    for t in tqdm(range(start, config.caid.iterations + 1), desc=config.method, unit="iter", disable=not progress):
        row: dict[str, Any] = {"iteration": t}
        if config.method == "caid" and t > 1:
            lam, row["slack"], row["kl_estimate"] = _dual_step(
                config, policy, reference, tokenizer, train, train_inputs, scorers[1:], ref_means, lam, rng
            )
        composite = reward_weight * ref.train_scores[0] + np.tensordot(lam, ref.train_scores[1:], axes=1)
        prefer_1 = pseudo_labels(composite[pairs[:, 0], pairs[:, 1]], composite[pairs[:, 0], pairs[:, 2]], rng)
        chosen = np.where(prefer_1, pairs[:, 2], pairs[:, 1])
        rejected = np.where(prefer_1, pairs[:, 1], pairs[:, 2])
        stats = _dpo_epoch(config, policy, optimizer, ref, pairs[:, 0], chosen, rejected, rng, pad, progress)
        row.update(
            lam=[float(v) for v in lam],
            plugin_dual_value=float(dual_value(prob, lam)) if config.method in ("caid", "one_shot") else None,
            dpo_loss=float(np.mean([s.loss for s in stats])),
            dpo_accuracy=float(np.mean([s.accuracy for s in stats])),
        )
        metrics.append(row)
        _save_checkpoint(out, t, {names[id(p)]: p.detach().contiguous() for p in params}, {
            "iteration": t, "lam": lam, "metrics": metrics, "optimizer": optimizer.state_dict(),
            "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        })  # fmt: skip
        _write_jsonl(out / "metrics.jsonl", metrics)

    summary = _evaluate(
        config, policy, reference, tokenizer, test, test_inputs, ref, scorers, out, one_shot, lam, metrics
    )
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _dual_step(config, policy, reference, tokenizer, train, train_inputs, utilities, ref_means, lam, rng):
    """On-policy dual step: sample n prompts x k responses, measure u = E[g - E_ref g] - b, project."""
    chosen = rng.choice(len(train), size=min(config.caid.dual_prompts, len(train)), replace=False)
    samples = sample_responses(
        policy, tokenizer, [train_inputs[i] for i in chosen], config.caid.dual_samples, config.generation,
        int(rng.integers(2**31)), desc="on-policy samples",
    )  # fmt: skip
    prompts = [train.prompts[i] for i in chosen]
    g = score_samples(utilities, prompts, samples, config.caid.dual_samples)  # (m, n, k)
    slack = (g - ref_means[:, chosen, None]).mean(axis=(1, 2)) - np.asarray(config.scorers.thresholds)
    kl = _kl_estimate(policy, reference, samples, tokenizer.pad_token_id, config.generation.batch_size)
    return dual_step(lam, slack, config.caid.dual_step_size), [float(v) for v in slack], kl


def _dpo_epoch(
    config, policy, optimizer, ref: ReferenceData, x, chosen, rejected, rng, pad, progress: bool = True
) -> list[DPOStats]:
    """One epoch over the relabelled pairs in shuffled batches."""
    k = config.generation.samples_per_prompt
    sample = lambda i, j: ref.train[i * k + j]  # noqa: E731
    order = rng.permutation(len(x))
    stats = []
    policy.train()
    batches = range(0, len(order), config.training.batch_size)
    for start in tqdm(batches, desc="DPO epoch", unit="step", leave=False, disable=not progress):
        idx = order[start : start + config.training.batch_size]
        wins = [sample(x[i], chosen[i]) for i in idx]
        loses = [sample(x[i], rejected[i]) for i in idx]
        both = wins + loses
        logp = sequence_logprobs(policy, [s.prompt_ids for s in both], [s.response_ids for s in both], pad)
        ref_logp = torch.tensor(
            [ref.train_logprobs[x[i], chosen[i]] for i in idx] + [ref.train_logprobs[x[i], rejected[i]] for i in idx],
            dtype=logp.dtype,
        )
        n = len(idx)
        loss, batch_stats = dpo_loss(logp[:n], logp[n:], ref_logp[:n], ref_logp[n:], config.caid.beta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        stats.append(batch_stats)
    policy.eval()
    return stats


def _kl_estimate(policy, reference, samples, pad: int, batch_size: int) -> float:
    """Monte-Carlo KL(pi_theta || pi_ref) from the policy's own samples: mean log-ratio."""
    ratio = response_logprobs(policy, samples, pad, batch_size) - response_logprobs(reference, samples, pad, batch_size)
    return float(np.mean(ratio))


def _evaluate(
    config, policy, reference, tokenizer, test, test_inputs, ref: ReferenceData, scorers, out, one_shot, lam, metrics
):
    """Two responses per held-out prompt from the trained policy, scored next to pi_ref's."""
    samples = sample_responses(
        policy, tokenizer, test_inputs, EVAL_SAMPLES, config.generation, config.seed + 2, desc="eval"
    )
    scores = score_samples(scorers, test.prompts, samples, EVAL_SAMPLES)
    kl = _kl_estimate(policy, reference, samples, tokenizer.pad_token_id, config.generation.batch_size)
    names = [config.scorers.reward, *config.scorers.utilities]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "prompt_index", "sample", *names, "response"])
    for label, data, samp in (("policy", scores, samples), ("reference", ref.test_scores, ref.test)):
        for s_index, s in enumerate(samp):
            i, j = divmod(s_index, EVAL_SAMPLES)
            writer.writerow([label, i, j, *(f"{v:.6g}" for v in data[:, i, j]), s.text])
    write_atomic(out / "eval_scores.csv", buffer.getvalue())

    buffer = io.StringIO()
    m = len(config.scorers.utilities)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["iteration", *(f"lambda_{i + 1}" for i in range(m)), *(f"slack_{i + 1}" for i in range(m))])
    for row in metrics:
        writer.writerow([row["iteration"], *row["lam"], *(row.get("slack") or [float("nan")] * m)])
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
