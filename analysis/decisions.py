"""Pre-registered decision statistics: each claim ends "replicated", "refuted" or "undecided" (with power).

The statistics of the decisive studies (Sec. 5 claims tested on exact or sampled per-unit values):

* :func:`equivalence` (TOST): is the mean of ``values`` within ``+-margin`` of zero (e.g. actual - b)?
* :func:`one_sided`: is the mean below (``direction="below"``) or above zero (one-sided bound)?
* :func:`paired_abs_difference`: paired bootstrap of |mean e_A| - |mean e_B| (A closer to 0 than B)?
* :func:`non_inferiority`: is the mean above ``-margin``?
* :func:`paired_difference`: is the mean of A - B above zero?
* :func:`paired_statistic`: is any statistic of several paired arrays above (or below) zero?

Values are ``(n_units,)`` or ``(n_seeds, n_units)`` arrays (units are prompts, paired across arms). The
interval is a percentile bootstrap that resamples seeds and units independently (a crossed two-way
bootstrap), so it covers training randomness as well as prompt heterogeneity. A claim is "replicated" when
the interval excludes its negation; "refuted" when it excludes the claim, or, for a directional claim
(one-sided, paired differences), when it excludes an effect of the stated size in the claim's direction (the
effect the power refers to: a well-powered test of an absent effect is a decided negative); and otherwise
"undecided", always reported with the power the test had (normal approximation with the bootstrap SE) at the
stated effect. Directional tests are two one-sided tests at ``level`` each: their interval is two-sided
at ``2 level - 1``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy.stats import norm

__all__ = ["MARGIN_TESTS", "Decision", "Verdict", "equivalence", "non_inferiority", "one_sided",
           "paired_abs_difference", "paired_difference", "paired_statistic"]

Verdict = Literal["replicated", "refuted", "undecided"]

EQUIVALENCE = "equivalence (TOST)"
NON_INFERIORITY = "non-inferiority"
MARGIN_TESTS = (EQUIVALENCE, NON_INFERIORITY)
"""The tests (``Decision.test``) whose ``effect`` is a margin and whose power is at a true value of 0."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome of one pre-registered test.

    Attributes:
        test: Which statistic.
        estimate: The point estimate.
        low: Lower end of the interval (``-inf`` for an upper one-sided bound).
        high: Upper end of the interval (``inf`` for a lower one-sided bound).
        level: Coverage of the interval.
        verdict: "replicated", "refuted" or "undecided".
        power: Probability the test replicates the claim when the true effect is the stated one.
        effect: The stated effect (or margin) the power refers to.
        se: Bootstrap standard error of the estimate.
    """

    test: str
    estimate: float
    low: float
    high: float
    level: float
    verdict: Verdict
    power: float
    effect: float
    se: float

    def as_row(self) -> dict[str, object]:
        """A flat row for tables."""
        return dataclasses.asdict(self)


def _as_matrix(values: np.ndarray, field: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] < 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"{field}: expected finite (n_units,) or (n_seeds, n_units) values with >= 2 units, "
                         f"got shape {np.shape(values)}")
    return a


def _paired(values_a: np.ndarray, values_b: np.ndarray, field: str) -> tuple[np.ndarray, np.ndarray]:
    """``<field>_a`` and ``<field>_b`` as matrices of one shape (paired seeds and units)."""
    a, b = _as_matrix(values_a, f"{field}_a"), _as_matrix(values_b, f"{field}_b")
    if a.shape != b.shape:
        raise ValueError(f"{field}_b: expected shape {a.shape} to pair with {field}_a, got {b.shape}")
    return a, b


def _bootstrap(arrays: list[np.ndarray], stat: Callable[..., float], n_boot: int, seed: int) -> np.ndarray:
    """Crossed bootstrap: resample seeds (rows) and units (columns) of every array with the same indices."""
    rng = np.random.default_rng(seed)
    n_seeds, n_units = arrays[0].shape
    out = np.empty(n_boot)
    for b in range(n_boot):
        s = rng.integers(0, n_seeds, n_seeds) if n_seeds > 1 else np.zeros(1, int)
        u = rng.integers(0, n_units, n_units)
        out[b] = stat(*(a[np.ix_(s, u)] for a in arrays))
    return out


def _check(level: float, n_boot: int) -> None:
    if not 0.5 < level < 1:
        raise ValueError(f"level: must be in (0.5, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot: need >= 100 resamples, got {n_boot}")


def _directional(test: str, estimate: float, boot: np.ndarray, level: float, effect: float,
                 direction: Literal["below", "above"], threshold: float = 0.0,
                 refute_at: float | None = None) -> Decision:
    """Claim: mean < threshold ("below") or mean > threshold ("above"), two one-sided tests at ``level`` each.

    Replicated when the bound on the claim's side excludes ``threshold``; refuted when the bound on the other
    side excludes ``refute_at``, by default the stated effect (``threshold`` moved by ``|effect|`` in the claim's
    direction): the data then rule out an effect as large as the one the power refers to. The interval is
    the two-sided ``2 level - 1`` one whose ends are the two bounds.
    """
    boot = boot[np.isfinite(boot)]  # a statistic undefined on some resamples (e.g. outside a curve's range)
    if boot.size < 100 or not np.isfinite(estimate):
        return Decision(test, estimate, np.nan, np.nan, 2 * level - 1, "undecided", 0.0, effect, np.nan)
    se = float(boot.std(ddof=1))
    z = norm.ppf(level)
    low, high = float(np.quantile(boot, 1 - level)), float(np.quantile(boot, level))
    sign = -1.0 if direction == "below" else 1.0
    refute_at = threshold + sign * abs(effect) if refute_at is None else refute_at
    if direction == "below":
        verdict: Verdict = "replicated" if high < threshold else "refuted" if low > refute_at else "undecided"
    else:
        verdict = "replicated" if low > threshold else "refuted" if high < refute_at else "undecided"
    power = float(norm.cdf(abs(effect) / se - z)) if se > 0 else 1.0
    return Decision(test, estimate, low, high, 2 * level - 1, verdict, power, effect, se)


def equivalence(values: np.ndarray, margin: float, *, level: float = 0.95, n_boot: int = 2000,
                seed: int = 0) -> Decision:
    """TOST: the mean lies within ``(-margin, margin)``.

    Replicated when the two-sided ``2 level - 1`` interval lies inside the margins; refuted when it lies
    entirely outside them; power at a true mean of 0.
    """
    _check(level, n_boot)
    if not margin > 0:
        raise ValueError(f"margin: must be > 0, got {margin}")
    a = _as_matrix(values, "values")
    boot = _bootstrap([a], np.mean, n_boot, seed)
    low, high = float(np.quantile(boot, 1 - level)), float(np.quantile(boot, level))
    se = float(boot.std(ddof=1))
    if -margin < low and high < margin:
        verdict: Verdict = "replicated"
    elif low >= margin or high <= -margin:
        verdict = "refuted"
    else:
        verdict = "undecided"
    z = norm.ppf(level)
    power = float(max(0.0, 2 * norm.cdf(margin / se - z) - 1)) if se > 0 else 1.0
    return Decision(EQUIVALENCE, float(a.mean()), low, high, 2 * level - 1, verdict, power, margin, se)


def one_sided(values: np.ndarray, direction: Literal["below", "above"], effect: float, *, level: float = 0.95,
              n_boot: int = 2000, seed: int = 0) -> Decision:
    """The mean is below (or above) zero: one-sided ``level`` bound; power at a true mean of ``effect``."""
    _check(level, n_boot)
    a = _as_matrix(values, "values")
    return _directional(f"one-sided ({direction} 0)", float(a.mean()), _bootstrap([a], np.mean, n_boot, seed), level,
                        effect, direction)


def non_inferiority(values: np.ndarray, margin: float, *, level: float = 0.95, n_boot: int = 2000,
                    seed: int = 0) -> Decision:
    """The mean exceeds ``-margin``; power at a true mean of 0."""
    _check(level, n_boot)
    a = _as_matrix(values, "values")
    return _directional(NON_INFERIORITY, float(a.mean()), _bootstrap([a], np.mean, n_boot, seed), level, margin,
                        "above", -margin, refute_at=-margin)


def paired_abs_difference(errors_a: np.ndarray, errors_b: np.ndarray, effect: float, *, level: float = 0.95,
                          n_boot: int = 2000, seed: int = 0) -> Decision:
    """|mean e_A| - |mean e_B| < 0 (A's mean error is smaller), bootstrapped jointly over paired units."""
    _check(level, n_boot)
    a, b = _paired(errors_a, errors_b, "errors")

    def stat(x: np.ndarray, y: np.ndarray) -> float:
        return abs(x.mean()) - abs(y.mean())

    return _directional("paired |e_A| - |e_B|", stat(a, b), _bootstrap([a, b], stat, n_boot, seed), level, effect,
                        "below")


def paired_difference(values_a: np.ndarray, values_b: np.ndarray, effect: float, *, level: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> Decision:
    """mean(A - B) > 0 over paired units; power at a true difference of ``effect``."""
    _check(level, n_boot)
    a, b = _paired(values_a, values_b, "values")
    d = a - b
    return _directional("paired difference", float(d.mean()), _bootstrap([d], np.mean, n_boot, seed), level, effect,
                        "above")


def paired_statistic(arrays: list[np.ndarray], stat: Callable[..., float], direction: Literal["below", "above"],
                     effect: float, *, name: str = "paired statistic", level: float = 0.95, n_boot: int = 2000,
                     seed: int = 0) -> Decision:
    """``stat(*arrays)`` below (or above) zero, bootstrapped jointly over the paired seeds and units.

    Args:
        arrays: ``(n_seeds, n_units)`` arrays sharing seeds and units (e.g. several arms on the same prompts).
        stat: Maps resampled arrays to a number (e.g. the gap between two curves).
        direction: The claim's side of zero.
        effect: The effect the power refers to.
        name: The test's name in the decision.
        level: One-sided coverage.
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.
    """
    _check(level, n_boot)
    mats = [_as_matrix(a, f"arrays[{i}]") for i, a in enumerate(arrays)]
    if any(m.shape != mats[0].shape for m in mats):
        raise ValueError(f"arrays: expected one common shape, got {[m.shape for m in mats]}")
    return _directional(name, float(stat(*mats)), _bootstrap(mats, stat, n_boot, seed), level, effect, direction)
