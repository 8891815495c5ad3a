"""Statistics of finished ``llm`` runs: improvements with two kinds of CI, constraint verdicts, Pareto fronts.

Everything here reads the files a run directory holds (``eval_scores.csv``, ``summary.json``,
``dual_trajectory.csv``; see :mod:`llm.pipeline`) and returns numbers or pandas DataFrames, for notebooks
and for the paper's figures (spec §5.1-5.2):

* Fig. 1(a), expected vs actual improvement: :func:`constraint_satisfaction` (threshold b, measured
  improvement with CIs, and whether b is met, with a one-sided confidence verdict);
* Fig. 1(b), the empirical Pareto curve: :func:`analysis.pareto.pareto_front` over the improvements;
* Fig. 1(c), score histograms before and after alignment: :func:`score_histograms`;
* the dual iterates lambda(t) of CAID: :mod:`analysis.dual_trajectory`;
* a sweep folder of runs as one tidy table: :func:`collect_runs`.

Improvement (spec §5.1) is the mean over held-out prompts of the per-prompt paired difference
``d_j = mean_s policy(x_j, y_s) - mean_s reference(x_j, y'_s)``: both models answer the same prompts, so
the prompt-to-prompt variation cancels and the n per-prompt differences are the independent units.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "ConstraintCheck",
    "EvalScores",
    "PairedImprovement",
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

Interval = Literal["t", "z"]
Verdict = Literal["satisfied", "violated", "undetermined"]

# Bootstrap index draws per block: the n_boot x n_prompts indices and values stay below ~64 MB at once.
_BOOT_BLOCK_CELLS = 1 << 22
# Columns of eval_scores.csv that are not scorers.
_EVAL_KEYS = ("model", "prompt_index", "sample")
# Per-sample log pi/pi_ref, written by `llm run` since the real-model gap needed it (older runs lack it).
_LOG_RATIO = "log_ratio"


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return float(confidence)


def _quantile(interval: Interval, n: int, level: float) -> float:
    """The ``level`` quantile of Student's t with n - 1 degrees of freedom (``"t"``) or of N(0, 1) (``"z"``)."""
    return float(stats.t.ppf(level, n - 1) if interval == "t" else stats.norm.ppf(level))


def _per_prompt(scores: np.ndarray, field: str) -> np.ndarray:
    """``(n_prompts,)`` per-prompt means of ``(n_prompts, samples)`` scores (a 1-D array is one sample each)."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"{field}: expected an (n_prompts, samples) array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{field}: contains NaN or inf; every score must be finite")
    return array.mean(axis=1)


@dataclasses.dataclass(frozen=True)
class ConstraintCheck:
    """Whether a measured improvement meets a threshold b, and how sure we are (spec §5.1).

    Attributes:
        threshold: b, the required improvement.
        mean: The measured improvement.
        satisfied: ``mean >= b``, the paper's definition ("an aligned LLM satisfies threshold b if its
            improvement ... is at least b").
        p_satisfied: The fraction of bootstrap means ``>= b``: P(improvement >= b) under the bootstrap
            distribution (a plausibility, not a p-value).
        lower_bound: The one-sided ``confidence`` lower bound ``mean - q_c * se``.
        upper_bound: The one-sided ``confidence`` upper bound ``mean + q_c * se``.
        verdict: ``"satisfied"`` if ``lower_bound >= b`` (H0: improvement < b is rejected at level
            1 - confidence), ``"violated"`` if ``upper_bound < b`` (H0: improvement >= b is rejected),
            else ``"undetermined"``.
        confidence: The one-sided confidence level of the bounds.
    """

    threshold: float
    mean: float
    satisfied: bool
    p_satisfied: float
    lower_bound: float
    upper_bound: float
    verdict: Verdict
    confidence: float


@dataclasses.dataclass(frozen=True, eq=False)
class PairedImprovement:
    """The mean paired improvement over prompts with a normal-theory and a percentile-bootstrap CI.

    With per-prompt differences ``d_1..d_n``, ``mean = sum_j d_j / n``, ``sd`` their sample standard
    deviation (ddof = 1) and ``se = sd / sqrt(n)``:

    * normal CI: ``mean -/+ q * se`` with ``q`` the ``(1 + confidence) / 2`` quantile of Student's t with
      n - 1 degrees of freedom (``interval="t"``) or of the standard normal (``interval="z"``, the
      interval ``summary.json`` reports);
    * bootstrap CI: the ``(1 -/+ confidence) / 2`` quantiles of ``boot_means``, the means of ``n_boot``
      resamples of the n prompts with replacement (percentile bootstrap).

    Attributes:
        mean: The mean improvement.
        sd: Sample standard deviation of the per-prompt differences.
        n_prompts: n.
        ci_low: Lower end of the normal CI.
        ci_high: Upper end of the normal CI.
        boot_low: Lower end of the bootstrap CI.
        boot_high: Upper end of the bootstrap CI.
        confidence: The two-sided level of both CIs.
        interval: ``"t"`` or ``"z"``, the quantile of the normal CI (and of :meth:`check`'s bounds).
        boot_means: ``(n_boot,)`` the bootstrap means.
    """

    mean: float
    sd: float
    n_prompts: int
    ci_low: float
    ci_high: float
    boot_low: float
    boot_high: float
    confidence: float
    interval: Interval
    boot_means: np.ndarray

    @property
    def standard_error(self) -> float:
        """``sd / sqrt(n)``."""
        return self.sd / np.sqrt(self.n_prompts)

    def check(self, threshold: float, confidence: float | None = None) -> ConstraintCheck:
        """Test ``improvement >= threshold`` one-sidedly (see :class:`ConstraintCheck`).

        The two one-sided bounds at level c together form a two-sided ``2c - 1`` interval (90% for
        c = 95%), so "satisfied" and "violated" are each claimed with confidence c.

        Args:
            threshold: b.
            confidence: One-sided level of the bounds (default: this improvement's ``confidence``).
        """
        b = float(threshold)
        if not np.isfinite(b):
            raise ValueError(f"threshold: must be finite, got {threshold!r}")
        c = self.confidence if confidence is None else _check_confidence(confidence)
        half = _quantile(self.interval, self.n_prompts, c) * self.standard_error
        lower, upper = self.mean - half, self.mean + half
        verdict: Verdict = "satisfied" if lower >= b else "violated" if upper < b else "undetermined"
        return ConstraintCheck(
            threshold=b,
            mean=self.mean,
            satisfied=bool(self.mean >= b),
            p_satisfied=float(np.mean(self.boot_means >= b)),
            lower_bound=lower,
            upper_bound=upper,
            verdict=verdict,
            confidence=c,
        )

    def as_row(self) -> dict[str, float | int]:
        """The scalar fields, for a DataFrame row."""
        return {
            "mean": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "boot_low": self.boot_low,
            "boot_high": self.boot_high,
            "n_prompts": self.n_prompts,
        }


def _bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values``, drawn in memory-bounded blocks."""
    n = len(values)
    out = np.empty(n_boot)
    block = max(1, _BOOT_BLOCK_CELLS // n)
    for start in range(0, n_boot, block):
        stop = min(start + block, n_boot)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def paired_improvement(
    policy: np.ndarray,
    reference: np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    rng: np.random.Generator | int = 0,
    interval: Interval = "t",
) -> PairedImprovement:
    """Mean improvement of the policy over pi_ref on the same prompts, with normal and bootstrap CIs.

    The unit is the prompt: ``d_j = mean_s policy[j, s] - mean_s reference[j, s]`` (spec §5.1, two samples
    per prompt in the paper); see :class:`PairedImprovement` for the formulas.

    Args:
        policy: ``(n_prompts, samples)`` scores of the aligned policy (1-D: one sample per prompt).
        reference: ``(n_prompts, samples')`` scores of pi_ref on the same prompts, in the same order.
        confidence: Two-sided level of both CIs.
        n_boot: Bootstrap resamples of the prompts.
        rng: A ``np.random.Generator`` or a seed for the bootstrap (default 0: reproducible).
        interval: ``"t"`` (default; exact for normal differences, wider than z for small n) or ``"z"``
            (what ``llm.pipeline.improvement`` writes to ``summary.json``).

    Returns:
        The :class:`PairedImprovement`.

    Raises:
        ValueError: naming the field, for non-finite scores, different prompt counts, fewer than two
            prompts, or a bad ``confidence``, ``n_boot`` or ``interval``.
    """
    diff_policy = _per_prompt(policy, "policy")
    diff_reference = _per_prompt(reference, "reference")
    if diff_policy.shape != diff_reference.shape:
        raise ValueError(
            f"reference: expected the policy's {len(diff_policy)} prompts (paired, same order), "
            f"got {len(diff_reference)}"
        )
    n = len(diff_policy)
    if n < 2:
        raise ValueError(f"policy: need at least 2 prompts for a confidence interval, got {n}")
    c = _check_confidence(confidence)
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot: must be a positive integer (e.g. 2000), got {n_boot!r}")
    if interval not in ("t", "z"):
        raise ValueError(f"interval: must be 't' or 'z', got {interval!r}")

    diff = diff_policy - diff_reference
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    boot = _bootstrap_means(diff, int(n_boot), np.random.default_rng(rng))
    boot_low, boot_high = np.quantile(boot, [(1 - c) / 2, (1 + c) / 2])
    half = _quantile(interval, n, (1 + c) / 2) * sd / np.sqrt(n)
    return PairedImprovement(
        mean=mean, sd=sd, n_prompts=n, ci_low=mean - half, ci_high=mean + half, boot_low=float(boot_low),
        boot_high=float(boot_high), confidence=c, interval=interval, boot_means=boot,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# Reading a run directory.


@dataclasses.dataclass(frozen=True, eq=False)
class EvalScores:
    """The held-out scores of one run (``eval_scores.csv``), as arrays aligned by prompt.

    Attributes:
        scorers: Scorer names in file order: the reward first, then each utility (e.g. ``"-toxicity"``).
        prompt_index: ``(n_prompts,)`` the held-out prompt indices, ascending.
        policy: ``(n_scorers, n_prompts, samples)`` the aligned policy's scores.
        reference: ``(n_scorers, n_prompts, samples')`` pi_ref's scores on the same prompts.
        policy_log_ratio: ``(n_prompts, samples)`` log pi(y|x) - log pi_ref(y|x) of the policy's samples, or
            None for a file without the ``log_ratio`` column.
    """

    scorers: tuple[str, ...]
    prompt_index: np.ndarray
    policy: np.ndarray
    reference: np.ndarray
    policy_log_ratio: np.ndarray | None = None

    def scores(self, scorer: str) -> tuple[np.ndarray, np.ndarray]:
        """``(policy, reference)`` ``(n_prompts, samples)`` score arrays of one scorer (after, before)."""
        if scorer not in self.scorers:
            raise KeyError(f"scorer: {scorer!r} is not in this run's scorers {list(self.scorers)}")
        i = self.scorers.index(scorer)
        return self.policy[i], self.reference[i]


def _model_block(frame: pd.DataFrame, model: str, scorers: list[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(prompt_index, (n_scorers, n_prompts, samples))`` of one model's rows, checked to be rectangular."""
    rows = frame[frame["model"] == model].sort_values(["prompt_index", "sample"], kind="stable")
    if rows.empty:
        raise ValueError(f"{path}: no rows with model == {model!r}; is this an eval_scores.csv of `llm run`?")
    counts = rows.groupby("prompt_index").size()
    if counts.nunique() != 1:
        raise ValueError(f"{path}: the {model} rows have different numbers of samples per prompt")
    samples = int(counts.iloc[0])
    values = rows[scorers].to_numpy(dtype=np.float64).T.reshape(len(scorers), len(counts), samples)
    return counts.index.to_numpy(), values


def load_eval_scores(run_dir: str | os.PathLike[str]) -> EvalScores:
    """Read ``eval_scores.csv`` of a run directory into policy and reference arrays (Fig. 1(c) data).

    Args:
        run_dir: The run directory.

    Raises:
        FileNotFoundError: If there is no ``eval_scores.csv``.
        ValueError: If the file is malformed or the two models were not scored on the same prompts.
    """
    path = Path(run_dir) / "eval_scores.csv"
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: {path} does not exist; is {run_dir} a finished `llm run` directory?")
    # The response texts are not needed; skipping them also avoids parsing free text as numbers.
    frame = pd.read_csv(path, usecols=lambda column: column != "response")
    missing = [key for key in _EVAL_KEYS if key not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    scorers = [column for column in frame.columns if column not in (*_EVAL_KEYS, _LOG_RATIO)]
    if not scorers:
        raise ValueError(f"{path}: no scorer columns")
    policy_prompts, policy = _model_block(frame, "policy", scorers, path)
    reference_prompts, reference = _model_block(frame, "reference", scorers, path)
    if not np.array_equal(policy_prompts, reference_prompts):
        raise ValueError(f"{path}: the policy and reference rows cover different prompts; the comparison is paired")
    log_ratio = _model_block(frame, "policy", [_LOG_RATIO], path)[1][0] if _LOG_RATIO in frame.columns else None
    return EvalScores(tuple(scorers), policy_prompts, policy, reference, log_ratio)


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


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A finished run's ``summary.json``.

    Raises:
        FileNotFoundError: If the run has not finished (no ``summary.json``).
    """
    path = run_dir / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: {path} does not exist; the run has not finished")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------------
# Constraint satisfaction over runs, and many runs as one table.


_RUN_COLUMNS = [
    "run", "path", "method", "thresholds", "scorer", "role", "constraint", "threshold", "mean", "ci_low", "ci_high",
    "boot_low", "boot_high", "n_prompts", "satisfied", "p_satisfied", "lower_bound", "upper_bound", "verdict",
    "kl", "best_iteration", "last_iteration",
]  # fmt: skip
_SATISFACTION_COLUMNS = [
    "run", "method", "constraint", "scorer", "threshold", "mean", "ci_low", "ci_high", "boot_low", "boot_high",
    "n_prompts", "satisfied", "p_satisfied", "lower_bound", "upper_bound", "verdict",
]  # fmt: skip


def _run_rows(run_dir: Path, confidence: float, n_boot: int, seed: int, interval: Interval) -> list[dict[str, Any]]:
    """The :func:`collect_runs` rows of one finished run."""
    summary = read_summary(run_dir)
    scores = load_eval_scores(run_dir)
    thresholds = [float(b) for b in summary["thresholds"]]
    if len(thresholds) != len(scores.scorers) - 1:
        raise ValueError(
            f"{run_dir}: summary.json has {len(thresholds)} threshold(s) but eval_scores.csv has "
            f"{len(scores.scorers) - 1} utility column(s) after the reward {scores.scorers[0]!r}"
        )
    common = {
        "run": run_dir.name,
        "path": str(run_dir),
        "method": summary["method"],
        "thresholds": tuple(thresholds),
        "kl": summary.get("kl_estimate", np.nan),
        "best_iteration": summary.get("best_iteration"),
        "last_iteration": summary.get("last_iteration"),
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
                p_satisfied=check.p_satisfied, lower_bound=check.lower_bound, upper_bound=check.upper_bound,
                verdict=check.verdict,
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
        utility; NaN for the reward), ``mean, ci_low, ci_high, boot_low, boot_high, n_prompts``, the
        :class:`ConstraintCheck` fields ``satisfied, p_satisfied, lower_bound, upper_bound, verdict``
        (missing for the reward), ``kl`` (the run's KL estimate), ``best_iteration, last_iteration``.
    """
    rows: list[dict[str, Any]] = []
    for run_dir in run_dirs(paths):
        if not (run_dir / "summary.json").is_file():
            warnings.warn(f"{run_dir}: no summary.json (unfinished run); skipped", UserWarning, stacklevel=2)
            continue
        rows.extend(_run_rows(run_dir, confidence, n_boot, seed, interval))
    table = pd.DataFrame(rows, columns=_RUN_COLUMNS)
    return table.astype({"constraint": "Int64", "satisfied": "boolean"})


def constraint_satisfaction(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    interval: Interval = "t",
) -> pd.DataFrame:
    """Expected vs actual improvement of every constrained utility, over one run or a sweep (Fig. 1(a)).

    ``satisfied`` is the paper's ``improvement >= b``; ``verdict`` says whether that holds with one-sided
    confidence ``confidence`` (see :class:`ConstraintCheck`). Arguments as in :func:`collect_runs`.

    Returns:
        One row per run and constraint, sorted by method, constraint and threshold: ``run, method,
        constraint, scorer, threshold, mean, ci_low, ci_high, boot_low, boot_high, n_prompts, satisfied,
        p_satisfied, lower_bound, upper_bound, verdict``.
    """
    return satisfaction_rows(collect_runs(paths, confidence=confidence, n_boot=n_boot, seed=seed, interval=interval))


def satisfaction_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The :func:`constraint_satisfaction` table of an existing :func:`collect_runs` table (no recomputation)."""
    table = runs[runs["role"] == "utility"][_SATISFACTION_COLUMNS]
    return table.sort_values(["method", "constraint", "threshold", "run"], kind="stable").reset_index(drop=True)
