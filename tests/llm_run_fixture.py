"""Synthetic results for the LLM paper figures (Figs. 1-3): small, seeded, in the files' real formats.

:func:`write_fixture` lays out, under a results directory,

* ``llm_sweep/single/<run>/``: ``caid`` and ``one_shot`` runs at each threshold, plus one ``dpo_h``
  and one ``dpo_g`` run (reward ``helpfulness``, utility ``safety``);
* ``llm_sweep/two_constraints/<run>/``: ``caid`` and ``one_shot`` runs over threshold pairs (reward
  ``helpful``, utilities ``harmless`` and ``humor``);
* ``dual_convergence/dual_convergence.csv`` and ``dual_convergence_summary.csv``: the ``samples`` and
  ``summary`` of :func:`analysis.dual_convergence.dual_convergence` on a small random problem.

Each run directory holds ``config.json``, ``summary.json``, ``eval_scores.csv`` and ``dual_trajectory.csv``
as ``llm.pipeline`` writes them (see :mod:`analysis.statistics`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.dual_convergence import dual_convergence
from llm.run_schema import RunSummary

SINGLE_THRESHOLDS = (1.0, 2.0, 3.0, 4.0)
PAIR_THRESHOLDS = ((0.2, 0.4), (0.5, 0.3), (0.8, 0.8))
N_PROMPTS = 12
SAMPLES = 2


def write_run(
    run_dir: Path,
    method: str,
    scorers: Sequence[str],
    thresholds: Sequence[float],
    gains: Sequence[float],
    rng: np.random.Generator,
    score_scales: Sequence[float] = (),
) -> None:
    """One finished run directory whose policy improves scorer i by about ``gains[i]``.

    Args:
        run_dir: The run directory (created).
        method: The ``llm`` method name.
        scorers: Reward then utility names (the ``eval_scores.csv`` columns).
        thresholds: ``(m,)`` b of each utility.
        gains: ``(1 + m,)`` mean improvement of each scorer.
        rng: Source of the scores.
        score_scales: ``summary.json``'s ``score_scales`` (empty: raw units; one per scorer: a standardised run).
    """
    run_dir.mkdir(parents=True)
    m = len(thresholds)
    config = {"method": method, "caid": {"beta": 0.5}}
    (run_dir / "config.json").write_text(json.dumps({"config": config, "versions": {}}))
    reference = rng.normal(0.0, 2.0, size=(len(scorers), N_PROMPTS, SAMPLES))
    policy = reference + np.asarray(gains)[:, None, None] + rng.normal(0.0, 1.0, size=reference.shape)
    with open(run_dir / "eval_scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["model", "prompt_index", "sample", *scorers, "log_ratio", "response"])
        log_ratio = rng.gamma(2.0, 0.5, size=(N_PROMPTS, SAMPLES))
        for label, data, ratio in (("policy", policy, log_ratio), ("reference", reference, 0 * log_ratio)):
            for i in range(N_PROMPTS):
                for j in range(SAMPLES):
                    values = (f"{v:.6g}" for v in data[:, i, j])
                    writer.writerow([label, i, j, *values, f"{ratio[i, j]:.6g}", f"answer {i}.{j}"])
    lam = np.abs(rng.normal(1.0, 0.3, size=(3, m)))
    with open(run_dir / "dual_trajectory.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["iteration", *(f"lambda_{i + 1}" for i in range(m)), *(f"slack_{i + 1}" for i in range(m))])
        for t, row in enumerate(lam, start=1):
            writer.writerow([t, *row, *(["nan"] * m if t == 1 else rng.normal(0.0, 0.1, m))])
    diff = (policy - reference).mean(axis=2)
    improvements = {
        name: {
            "mean": float(d.mean()),
            "ci_low": float(d.mean() - 1.96 * d.std(ddof=1) / np.sqrt(N_PROMPTS)),
            "ci_high": float(d.mean() + 1.96 * d.std(ddof=1) / np.sqrt(N_PROMPTS)),
            "n_prompts": N_PROMPTS,
        }
        for name, d in zip(scorers, diff, strict=True)
    }
    RunSummary(
        method=method, thresholds=tuple(thresholds), lambda_one_shot=tuple(lam[0]), lambda_last=tuple(lam[-1]),
        improvements=improvements,
        constraints_satisfied=tuple(improvements[s]["mean"] >= b for s, b in zip(scorers[1:], thresholds, strict=True)),
        kl_estimate=1.5, last_iteration=3, best_iteration=3,
        measured_slack_by_iteration={"1": None, "2": (0.0,) * m, "3": (0.0,) * m},
        reference_reward_utility_correlation=dict.fromkeys(scorers[1:], -0.3), n_train_prompts=40,
        n_test_prompts=N_PROMPTS, reference_key="fixture", score_scales=tuple(score_scales),
    ).write(run_dir)  # fmt: skip


def write_fixture(results_dir: Path, seed: int = 0) -> Path:
    """Write the synthetic sweeps and dual-convergence result under ``results_dir``; return it."""
    rng = np.random.default_rng(seed)
    single = results_dir / "llm_sweep" / "single"
    scorers = ("helpfulness", "safety")
    for b in SINGLE_THRESHOLDS:
        # Multi-shot tracks b; one-shot falls short for small b and overshoots for large b (Sec. 4.1.1, Fig. 1(a)).
        write_run(single / f"caid_b{b:g}", "caid", scorers, [b], [6.0 - 0.5 * b, b + 0.2], rng)
        write_run(single / f"one_shot_b{b:g}", "one_shot", scorers, [b], [5.0 - 0.6 * b, 1.4 * b - 1.0], rng)
    write_run(single / "dpo_h", "dpo_h", scorers, [2.0], [7.0, -1.0], rng)
    write_run(single / "dpo_g", "dpo_g", scorers, [2.0], [-0.5, 5.0], rng)

    two = results_dir / "llm_sweep" / "two_constraints"
    scorers = ("helpful", "harmless", "humor")
    for b1, b2 in PAIR_THRESHOLDS:
        name = f"b{b1:g}_{b2:g}"
        write_run(two / f"caid_{name}", "caid", scorers, [b1, b2], [1.0 - b1 - 0.3 * b2, b1 + 0.05, b2], rng)
        write_run(two / f"one_shot_{name}", "one_shot", scorers, [b1, b2], [0.8 - b1, b1 - 0.1, 1.2 * b2], rng)

    out = results_dir / "dual_convergence"
    out.mkdir(parents=True)
    scores = rng.normal(size=(2, 40, 16))
    result = dual_convergence(scores, [0.3], 1.0, [5, 10, 20, 40], [4, 8, 16], n_replicates=6, progress=False)
    result.samples.to_csv(out / "dual_convergence.csv", index=False)
    result.summary.to_csv(out / "dual_convergence_summary.csv", index=False)
    return results_dir
