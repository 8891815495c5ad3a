"""Statistics of finished ``llm`` runs: improvements with two kinds of CI, constraint verdicts, Pareto fronts.

Everything here reads the files a run directory holds (``eval_scores.csv``, ``summary.json``,
``dual_trajectory.csv``; see :mod:`llm.pipeline`) and returns numbers or pandas DataFrames, for notebooks
and for the paper's figures (Sec. 4.1.1, Fig. 1):

* Fig. 1(a), expected vs actual improvement: :func:`constraint_satisfaction` (threshold b, measured
  improvement with CIs, and whether b is met, with a one-sided confidence verdict);
* Fig. 1(b), the empirical Pareto curve: :func:`analysis.pareto.pareto_front` over the improvements;
* Fig. 1(c), score histograms before and after alignment: :func:`score_histograms`;
* the dual iterates lambda(t) of CAID: :mod:`analysis.dual_trajectory`;
* a sweep folder of runs as one tidy table: :func:`collect_runs`.

Improvement (Sec. 4.1.1) is the mean over held-out prompts of the per-prompt paired difference
``d_j = mean_s policy(x_j, y_s) - mean_s reference(x_j, y'_s)``: both models answer the same prompts, so
the prompt-to-prompt variation cancels and the n per-prompt differences are the independent units.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import pandas as pd

from llm.paired_statistics import ConstraintCheck, Interval, PairedImprovement, paired_improvement
from llm.run_schema import EvalScores, RunSummary, load_eval_scores

__all__ = [  # the paired statistics live in llm.paired_statistics (the pipeline uses them); re-exported here
    "ConstraintCheck",
    "EvalScores",
    "PairedImprovement",
    "RunOptions",
    "collect_runs",
    "constraint_satisfaction",
    "improvement_table",
    "load_eval_scores",
    "paired_improvement",
    "read_summary",
    "run_dirs",
    "satisfaction_rows",
    "score_histograms",
]



# ------------------------------------------------------------------------------------------------------
# Reading a run directory.


def improvement_table(
    run_dir: str | os.PathLike[str],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    interval: Interval = "t",
) -> pd.DataFrame:
    """One row per scorer of a run: mean improvement, normal CI, bootstrap CI, number of prompts.

    Every scorer is resampled with the same prompt indices (the same seed), so the bootstrap is joint
    over the scorers of a run.

    Args:
        run_dir: The run directory (reads ``eval_scores.csv``).
        confidence: Two-sided CI level.
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.
        interval: ``"t"`` or ``"z"`` (see :func:`paired_improvement`).

    Returns:
        Columns ``scorer, role ("reward" or "utility"), mean, ci_low, ci_high, boot_low, boot_high,
        n_prompts``.
    """
    scores = load_eval_scores(run_dir)
    rows = []
    for i, name in enumerate(scores.scorers):
        imp = paired_improvement(
            scores.policy[i], scores.reference[i], confidence=confidence, n_boot=n_boot, rng=seed, interval=interval
        )
        rows.append({"scorer": name, "role": "reward" if i == 0 else "utility", **imp.as_row()})
    return pd.DataFrame(rows)


def score_histograms(run_dir: str | os.PathLike[str], bins: int | str = 30) -> pd.DataFrame:
    """Binned scores before (pi_ref) and after (policy) alignment, per scorer, on common edges (Fig. 1(c)).

    For each scorer the edges are ``np.histogram_bin_edges`` of the pooled policy and reference samples,
    so the two histograms are directly comparable. The raw arrays are :meth:`EvalScores.scores`.

    Args:
        run_dir: The run directory (reads ``eval_scores.csv``).
        bins: Number of bins, or a numpy rule name such as ``"auto"`` or ``"fd"``.

    Returns:
        Columns ``scorer, bin_low, bin_high, reference, policy`` (counts of samples in
        ``[bin_low, bin_high)``, the last bin closed).
    """
    scores = load_eval_scores(run_dir)
    frames = []
    for i, name in enumerate(scores.scorers):
        after, before = scores.policy[i].ravel(), scores.reference[i].ravel()
        edges = np.histogram_bin_edges(np.concatenate([after, before]), bins=bins)
        frames.append(
            pd.DataFrame(
                {
                    "scorer": name,
                    "bin_low": edges[:-1],
                    "bin_high": edges[1:],
                    "reference": np.histogram(before, edges)[0],
                    "policy": np.histogram(after, edges)[0],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def read_summary(run_dir: str | os.PathLike[str]) -> RunSummary:
    """A finished run's ``summary.json``, validated (:meth:`llm.run_schema.RunSummary.read`).

    Raises:
        FileNotFoundError: If the run has not finished (no ``summary.json``).
        llm.run_files.RunFileError: If it is corrupt or malformed (a ``ValueError`` naming the field).
    """
    return RunSummary.read(run_dir)


# ------------------------------------------------------------------------------------------------------
# Constraint satisfaction over runs, and many runs as one table.


_RUN_COLUMNS = [
    "run", "path", "method", "thresholds", "scorer", "role", "constraint", "threshold", "mean", "ci_low", "ci_high",
    "boot_low", "boot_high", "n_prompts", "q10", "q90", "satisfied", "p_satisfied", "share_missing_b", "lower_bound",
    "upper_bound", "verdict", "kl", "best_iteration", "last_iteration",
]  # fmt: skip
_SATISFACTION_COLUMNS = [
    "run", "method", "constraint", "scorer", "threshold", "mean", "ci_low", "ci_high", "boot_low", "boot_high",
    "n_prompts", "q10", "q90", "satisfied", "p_satisfied", "share_missing_b", "lower_bound", "upper_bound", "verdict",
]  # fmt: skip


def _run_rows(run_dir: Path, confidence: float, n_boot: int, seed: int, interval: Interval) -> list[dict[str, Any]]:
    """The :func:`collect_runs` rows of one finished run."""
    summary = read_summary(run_dir)
    scores = load_eval_scores(run_dir)
    thresholds = list(summary.thresholds)
    if len(thresholds) != len(scores.scorers) - 1:
        raise ValueError(
            f"{run_dir}: summary.json has {len(thresholds)} threshold(s) but eval_scores.csv has "
            f"{len(scores.scorers) - 1} utility column(s) after the reward {scores.scorers[0]!r}"
        )
    common = {
        "run": run_dir.name,
        "path": str(run_dir),
        "method": summary.method,
        "thresholds": tuple(thresholds),
        "kl": summary.kl_estimate,
        "best_iteration": summary.best_iteration,
        "last_iteration": summary.last_iteration,
    }
    rows = []
    for i, name in enumerate(scores.scorers):
        imp = paired_improvement(
            scores.policy[i], scores.reference[i], confidence=confidence, n_boot=n_boot, rng=seed, interval=interval
        )
        row: dict[str, Any] = {**common, "scorer": name, **imp.as_row()}
        if i == 0:
            row.update(role="reward", constraint=pd.NA, threshold=np.nan)
        else:
            check = imp.check(thresholds[i - 1])
            row.update(
                role="utility", constraint=i, threshold=check.threshold, satisfied=check.satisfied,
                p_satisfied=check.p_satisfied, share_missing_b=check.share_missing_b, lower_bound=check.lower_bound,
                upper_bound=check.upper_bound, verdict=check.verdict,
            )  # fmt: skip
        rows.append(row)
    return rows


def run_dirs(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Each path that is a run, or else each immediate subdirectory of it that is one (sorted by name).

    A directory is a run when it holds ``config.json`` or ``summary.json``.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found = []
    for item in map(Path, items):
        if not item.is_dir():
            raise FileNotFoundError(f"paths: {item} is not a directory")
        if (item / "config.json").is_file() or (item / "summary.json").is_file():
            found.append(item)
        else:
            found.extend(
                sub for sub in sorted(item.iterdir())
                if sub.is_dir() and ((sub / "config.json").is_file() or (sub / "summary.json").is_file())
            )  # fmt: skip
    return found


def collect_runs(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    interval: Interval = "t",
) -> pd.DataFrame:
    """Many run directories (e.g. a threshold sweep) as one tidy table: a row per run and scorer.

    Unfinished runs (a directory with ``config.json`` but no ``summary.json``) are skipped with a
    ``UserWarning``. Improvements are recomputed from ``eval_scores.csv`` (whose scores are rounded to
    six significant digits, so ``mean`` can differ from ``summary.json`` in the sixth digit).

    Args:
        paths: A run directory, a sweep folder whose immediate subdirectories are runs, or a list of either.
        confidence: Two-sided CI level, and the one-sided level of the verdicts.
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed (the same for every run and scorer: results do not depend on the order of runs).
        interval: ``"t"`` or ``"z"`` (see :func:`paired_improvement`).

    Returns:
        Columns ``run`` (directory name), ``path``, ``method``, ``thresholds`` (tuple), ``scorer``, ``role``
        (``"reward"`` or ``"utility"``), ``constraint`` (1-based utility number), ``threshold`` (b of that
        utility; NaN for the reward), ``mean, ci_low, ci_high, boot_low, boot_high, n_prompts``, the 10% / 90%
        quantiles ``q10, q90`` of the per-prompt improvement, the :class:`ConstraintCheck` fields ``satisfied,
        p_satisfied, share_missing_b, lower_bound, upper_bound, verdict`` (missing for the reward), ``kl`` (the
        run's KL estimate), ``best_iteration, last_iteration``.
    """
    rows: list[dict[str, Any]] = []
    for run_dir in run_dirs(paths):
        if not (run_dir / "summary.json").is_file():
            warnings.warn(f"{run_dir}: no summary.json (unfinished run); skipped", UserWarning, stacklevel=2)
            continue
        rows.extend(_run_rows(run_dir, confidence, n_boot, seed, interval))
    table = pd.DataFrame(rows, columns=_RUN_COLUMNS)
    return table.astype({"constraint": "Int64", "satisfied": "boolean"})


class RunOptions(TypedDict, total=False):
    """The keyword arguments of :func:`collect_runs` after ``paths``."""

    confidence: float
    n_boot: int
    seed: int
    interval: Interval


def constraint_satisfaction(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], **options: Unpack[RunOptions]
) -> pd.DataFrame:
    """Expected vs actual improvement of every constrained utility, over one run or a sweep (Fig. 1(a)).

    ``satisfied`` is the paper's ``improvement >= b``; ``verdict`` says whether that holds with one-sided
    confidence ``confidence`` (see :class:`ConstraintCheck`). Arguments as in :func:`collect_runs`.

    Returns:
        One row per run and constraint, sorted by method, constraint and threshold: ``run, method,
        constraint, scorer, threshold, mean, ci_low, ci_high, boot_low, boot_high, n_prompts, q10, q90,
        satisfied, p_satisfied, share_missing_b, lower_bound, upper_bound, verdict``.
    """
    return satisfaction_rows(collect_runs(paths, **options))


def satisfaction_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The :func:`constraint_satisfaction` table of an existing :func:`collect_runs` table (no recomputation)."""
    table = runs[runs["role"] == "utility"][_SATISFACTION_COLUMNS]
    return table.sort_values(["method", "constraint", "threshold", "run"], kind="stable").reset_index(drop=True)
