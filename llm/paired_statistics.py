"""Paired improvement of a policy over pi_ref on the same prompts, with normal and bootstrap CIs.

The statistics behind the paper's evaluation (Fig. 1: improvement = aligned mean - pi_ref mean on the same
held-out prompts, with 95% confidence intervals, and "an aligned LLM satisfies threshold b if its
improvement ... is at least b"). The unit is the prompt: ``d_j = mean_s policy(x_j, y_s) - mean_s
reference(x_j, y'_s)``; both models answer the same prompts, so the prompt-to-prompt variation cancels and
the n per-prompt differences are the independent units. :mod:`llm.pipeline` writes these numbers into
``summary.json``; :mod:`analysis.statistics` builds its tables on them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from scipy import stats

__all__ = ["ConstraintCheck", "Interval", "PairedImprovement", "Verdict", "improvement", "paired_improvement"]

Interval = Literal["t", "z"]
Verdict = Literal["satisfied", "violated", "undetermined"]

# Bootstrap index draws per block: the n_boot x n_prompts indices and values stay below ~64 MB at once.
_BOOT_BLOCK_CELLS = 1 << 22


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
    """Whether a measured improvement meets a threshold b, and how sure we are (Sec. 4.1.1 of the paper).

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
        share_missing_b: The share of prompts whose own improvement ``d_j`` is below b (what the mean hides; with
            few samples per prompt it includes their sampling noise).
    """

    threshold: float
    mean: float
    satisfied: bool
    p_satisfied: float
    lower_bound: float
    upper_bound: float
    verdict: Verdict
    confidence: float
    share_missing_b: float = float("nan")


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
        per_prompt: ``(n,)`` the per-prompt improvements ``d_j`` (their 10% / 90% quantiles are in :meth:`as_row`).
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
    per_prompt: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0))

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
            share_missing_b=float(np.mean(self.per_prompt < b)) if self.per_prompt.size else float("nan"),
        )

    def as_row(self) -> dict[str, float | int]:
        """The scalar fields, for a DataFrame row, with the 10% / 90% quantiles ``q10, q90`` of the ``d_j``."""
        q10, q90 = np.quantile(self.per_prompt, [0.1, 0.9]) if self.per_prompt.size else (np.nan, np.nan)
        return {
            "mean": self.mean,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "boot_low": self.boot_low,
            "boot_high": self.boot_high,
            "n_prompts": self.n_prompts,
            "q10": float(q10),
            "q90": float(q90),
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

    The unit is the prompt: ``d_j = mean_s policy[j, s] - mean_s reference[j, s]`` (Sec. 4.1.1, two samples
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
        boot_high=float(boot_high), confidence=c, interval=interval, boot_means=boot, per_prompt=diff,
    )  # fmt: skip


def improvement(policy: np.ndarray, reference: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """:func:`paired_improvement` with a normal (z) interval as a ``summary.json`` row; one prompt: no CI (NaN).

    The row has the 10% / 90% quantiles of the per-prompt improvement (``q10, q90``) and, given a utility's
    threshold b, ``share_missing_b``: the share of held-out prompts whose own improvement is below b.

    Args:
        policy: ``(n_prompts, samples)`` scores of the trained policy.
        reference: ``(n_prompts, samples)`` scores of pi_ref on the same prompts.
        threshold: b of a constrained utility (None for the reward).
    """
    if len(policy) < 2:
        nan = float("nan")
        mean = float(np.mean(policy) - np.mean(reference))
        row = {"mean": mean, "ci_low": nan, "ci_high": nan, "boot_low": nan, "boot_high": nan, "n_prompts": 1,
               "q10": mean, "q90": mean}  # fmt: skip
        return row if threshold is None else {**row, "share_missing_b": float(mean < threshold)}
    paired = paired_improvement(policy, reference, interval="z")
    row = paired.as_row()
    return row if threshold is None else {**row, "share_missing_b": paired.check(threshold).share_missing_b}
