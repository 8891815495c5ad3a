"""The empirical parametrization gap of a trained LLM policy (Theorem 2 on the real model).

For a multiplier lambda the dual function is the best Lagrangian over *all* policies (eq. (3)-(4)),

    D(lambda) = E_x[ beta log E_{y ~ pi_ref}[ exp((r(x, y) + lambda^T g(x, y)) / beta) ] ] - lambda^T c,
    L(pi, lambda) = E_x[ E_{y ~ pi}[ r + lambda^T g ] - beta KL(pi(.|x) || pi_ref(.|x)) ] - lambda^T c,

with ``c = E_ref[g] + b``, so ``D(lambda) - L(pi_theta, lambda) >= 0`` for every parametrized policy, and it
is zero only for the tilted policy ``pi_ref exp((r + lambda^T g) / beta)``. Its size at the lambda the policy
was trained for is how far LLM training fell short of the Lagrangian maximiser: the quantity the
paper's bounds charge to the parametrization gap nu.

Both sides are estimated per held-out prompt of a finished ``llm run`` directory (``eval_scores.csv``):

* ``D_hat_x = beta log mean_k exp(s_ref[x, k] / beta)`` over pi_ref's samples of prompt x (the plug-in
  dual; with k samples, Jensen's inequality biases it *downwards*, so the gap below is conservative);
* ``L_hat_x = mean_j (s_pi[x, j] - beta log(pi/pi_ref)(y_xj))`` over the policy's own samples (the
  log-ratio's mean is the Monte-Carlo KL);

where ``s = r + lambda^T g``. Both share the offset ``lambda^T (mean_k g_ref[x, k] + b)``, which is
subtracted from each so that D_hat and L_hat are the dual and Lagrangian values themselves; it cancels in
the gap ``D_hat_x - L_hat_x``, whose mean gets a paired t-interval and a bootstrap interval over prompts
(:func:`analysis.statistics.paired_improvement`).

The policy's samples are drawn with the run's ``top_p`` while its log-probabilities are the model's full
softmax, so for ``top_p < 1`` the KL term is that of the untruncated policy evaluated on truncated samples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from analysis.statistics import load_eval_scores, paired_improvement, read_summary, run_dirs
from llm.methods import CONSTRAINED_METHODS
from llm.run_files import RunFileError, read_json

__all__ = ["GAP_METHODS", "lagrangian_gap", "lagrangian_gap_table", "run_beta"]

# Methods trained for a multiplier lambda (the DPO baselines fix their weights and are not Lagrangian maximisers).
GAP_METHODS = CONSTRAINED_METHODS


def run_beta(run_dir: Path) -> float:
    """Beta of the run, from its ``config.json`` (validated: the error names the file and the fix)."""
    path = run_dir / "config.json"
    record = read_json(path, "it is written by `python -m llm run`; rerun the run into a fresh --out")
    beta = record.get("config", {}).get("caid", {}).get("beta") if isinstance(record, dict) else None
    if not (isinstance(beta, int | float) and not isinstance(beta, bool) and beta > 0):
        raise RunFileError(f"{path}: no positive number at config.caid.beta; rerun the run into a fresh --out")
    return float(beta)


def lagrangian_gap(
    run_dir: str | os.PathLike[str],
    lam: Sequence[float] | np.ndarray | None = None,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """D_hat(lambda), L_hat(pi_theta, lambda) and their gap for one finished run, with 95% CIs.

    Args:
        run_dir: A finished ``llm run`` directory whose ``eval_scores.csv`` has the ``log_ratio`` column.
        lam: ``(m,)`` the multiplier; default the run's ``lambda_last`` (the one its last epoch trained for).
        confidence: Two-sided level of the intervals.
        n_boot: Bootstrap resamples of the held-out prompts.
        seed: Bootstrap seed.

    Returns:
        ``run, method, thresholds, lambda, beta, n_prompts``; ``dual_value``, ``lagrangian`` and ``gap`` (each
        a mean with ``_ci_low, _ci_high``; the gap also ``_boot_low, _boot_high``); ``kl`` (the Monte-Carlo
        KL on these samples) and ``gap_relative`` (gap / |dual value|).

    Raises:
        ValueError: If the run predates the ``log_ratio`` column, or ``lam`` has the wrong length.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    beta = run_beta(run_dir)
    scores = load_eval_scores(run_dir)
    if scores.policy_log_ratio is None:
        raise ValueError(
            f"run_dir: {run_dir / 'eval_scores.csv'} has no log_ratio column (written by `llm run` since the "
            "real-model gap was added); rerun the evaluation with this version"
        )
    lam = np.asarray(summary.lambda_last if lam is None else lam, dtype=np.float64)
    m = len(scores.scorers) - 1
    if lam.shape != (m,):
        raise ValueError(f"lam: expected {m} multipliers (one per utility), got shape {lam.shape}")
    thresholds = np.asarray(summary.thresholds, dtype=np.float64)

    # The prompts whose samples have log-ratios (all, unless the run set evaluation.log_ratio_prompts).
    measured = np.isfinite(scores.policy_log_ratio).all(axis=1)
    weights = np.concatenate([[1.0], lam])
    s_ref = np.tensordot(weights, scores.reference[:, measured], axes=1)  # (n_prompts, k) r + lambda^T g, pi_ref
    s_pi = np.tensordot(weights, scores.policy[:, measured], axes=1)
    offset = scores.reference[1:, measured].mean(axis=2).T @ lam + lam @ thresholds  # lambda^T (E_ref[g | x] + b)
    k = s_ref.shape[1]
    dual_x = beta * (logsumexp(s_ref / beta, axis=1) - np.log(k)) - offset
    lagrangian_x = (s_pi - beta * scores.policy_log_ratio[measured]).mean(axis=1) - offset

    gap = paired_improvement(dual_x, lagrangian_x, confidence=confidence, n_boot=n_boot, rng=seed)
    row: dict[str, Any] = {
        "run": run_dir.name,
        "method": summary.method,
        "thresholds": tuple(float(b) for b in thresholds),
        "lambda": tuple(float(v) for v in lam),
        "beta": beta,
        "n_prompts": gap.n_prompts,
    }
    for name, values in (("dual_value", dual_x), ("lagrangian", lagrangian_x)):
        # The same paired machinery against zero gives the one-sample t-interval of each side.
        side = paired_improvement(values, np.zeros_like(values), confidence=confidence, n_boot=n_boot, rng=seed)
        row.update({name: side.mean, f"{name}_ci_low": side.ci_low, f"{name}_ci_high": side.ci_high})
    row.update(
        gap=gap.mean, gap_ci_low=gap.ci_low, gap_ci_high=gap.ci_high, gap_boot_low=gap.boot_low,
        gap_boot_high=gap.boot_high, kl=float(scores.policy_log_ratio[measured].mean()),
        gap_relative=gap.mean / abs(row["dual_value"]) if row["dual_value"] else np.nan,
    )  # fmt: skip
    return row


def lagrangian_gap_table(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    methods: Sequence[str] = GAP_METHODS,
    **options: Any,
) -> pd.DataFrame:
    """:func:`lagrangian_gap` of every finished run of ``methods`` under ``paths`` (a sweep folder or runs).

    Args:
        paths: A run directory, a sweep folder of runs, or a list of either.
        methods: The methods to include (default: those trained for a multiplier).
        **options: ``confidence``, ``n_boot``, ``seed`` of :func:`lagrangian_gap`.

    Returns:
        One row per run, sorted by method and thresholds.
    """
    rows = [
        lagrangian_gap(run_dir, **options)
        for run_dir in run_dirs(paths)
        if (run_dir / "summary.json").is_file() and read_summary(run_dir).method in methods
    ]
    frame = pd.DataFrame(rows)
    return frame.sort_values(["method", "thresholds"], kind="stable").reset_index(drop=True) if rows else frame
