"""Decision statistics of the studies: each claim ends with a verdict, its size and its power.

A row of a claims table is a *test*: a statistic of ``(seeds, prompts)`` values estimated with
:mod:`analysis.crossed_anova` (mean of seed x prompt-cluster cells, Satterthwaite degrees of freedom) and a rule:

* :class:`Directional`: the statistic lies above (or below) a threshold (one-shot short/over, a slope's sign, a
  paired difference, a curve gap). Refuted only when *reversed*: the other side is established.
* :class:`Equivalence`: the statistic lies inside ``(low, high)`` (TOST: tracking within a margin, a slope within
  [0.75, 1.33]). Refuted when it is established outside.
* :class:`Closer`: ``|mean e_A| < |mean e_B|`` (A closer to b than B), an intersection-union test on the regular
  paired statistics ``d = e_A - e_B`` and ``s = e_A + e_B`` (``|mu_A| < |mu_B|`` iff ``d s < 0``). Refuted when
  ``|mu_A| > |mu_B|`` is established.
* :class:`Descriptive`: an estimate with its interval and no verdict.
* :class:`Exact`: a claim computed without sampling (replicated or refuted; size 0).

Each one-sided test is a t test at level ``alpha`` (intervals are two-sided ``1 - 2 alpha``). :func:`decide` then
applies Holm's step-down correction over all hypotheses of the table (a replicate and a refute hypothesis per
tested row), and simulates at the components the data measured (:func:`analysis.crossed_anova.simulate_cells`):

* **size**: the probability of the row's verdict where it is wrong. For "replicated" (and "undecided"), the largest
  replication rate on the claim's null boundary (tracking: the error at the margin; closer: the two methods
  equally far from b; directional: the statistic at its threshold); for "refuted", the refutation rate where the
  claim holds at its stated effect. A decided row whose size exceeds ``SIZE_LIMIT`` is reported "undecided".
* **power**: the replication rate at the stated effect, at Holm's smallest level ``alpha / N`` (a lower bound).
* **coverage**: how often the ``1 - 2 alpha`` interval covers the truth at the measured components.

Rows that cannot be tested are :class:`NotTestable` with a reason; they, the descriptive and the exact rows are
outside the Holm family.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import numpy as np
from scipy import stats

from analysis.crossed_anova import (
    Components,
    LinearEstimate,
    batch_estimates,
    cell_means,
    estimate_cells,
    joint_components,
    simulate_cells,
)

__all__ = [
    "ALPHA", "ROUNDING", "SIZE_LIMIT", "Closer", "Decision", "Descriptive", "Directional", "Equivalence", "Exact",
    "NotTestable", "Row", "Test", "Verdict", "decide", "holm", "linearized",
]  # fmt: skip

ALPHA = 0.05
"""One-sided level of every test (two-sided 90% intervals)."""
SIZE_LIMIT = 0.05
"""The largest simulated size of a decided row."""
ROUNDING = 1e-9
"""Float rounding (sigma) allowed in coverage: a statistic without variance (pi_ref's improvement) covers its truth."""
DRAWS = 20_000
"""Simulated studies per size, power and coverage (Monte Carlo SE of a 0.05 rate: 0.0015)."""


class Verdict(str, enum.Enum):
    """The one vocabulary of every claims table (both studies, the laboratories and ``REPORT.md``)."""

    REPLICATED = "replicated"
    REFUTED = "refuted"
    UNDECIDED = "undecided"
    NOT_TESTABLE = "not testable"
    DESCRIPTIVE = "descriptive"

    def __str__(self) -> str:
        return self.value


def _covers(value: np.ndarray, mean: float, half: np.ndarray) -> np.ndarray:
    """Whether the closed interval ``value +- half`` covers ``mean``, up to float rounding (:data:`ROUNDING`)."""
    return np.abs(value - mean) <= half + ROUNDING


def _p_above(value: np.ndarray | float, se: np.ndarray | float, df: np.ndarray | float, threshold: float) -> np.ndarray:
    """One-sided p of H0: mean <= threshold (t statistic with ``df``); 0 or 1 when ``se`` is 0."""
    value, se, df = np.asarray(value, float), np.asarray(se, float), np.asarray(df, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (value - threshold) / se
    t = np.where(se > 0, t, np.where(value > threshold, np.inf, -np.inf))
    return stats.t.sf(t, np.where(np.isfinite(df), df, 1e9))


class Test(Protocol):
    """What :func:`decide` needs of a tested row."""

    name: str
    effect: float

    def estimate(self) -> tuple[float, float, float, LinearEstimate]:
        """``(estimate, low, high, the linear estimate behind the interval)`` at level ALPHA."""

    def p_values(self) -> tuple[float, float]:
        """``(p of replication, p of refutation)``."""

    def simulate(self, truth: str, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p_rep, p_ref, covered)`` of simulated studies at ``truth`` ("null", "effect" or "estimate")."""

    def refutation(self) -> str:
        """What a refutation of this row establishes."""


def _simulated(stat: LinearEstimate, mean: float, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    return batch_estimates(simulate_cells(mean, stat.components, draws, rng))


@dataclasses.dataclass(frozen=True)
class Directional:
    """Claim: the statistic lies above (``direction="above"``) or below a threshold.

    Attributes:
        name: The test's name in the table.
        stat: The statistic's estimate.
        direction: The claim's side of ``threshold``.
        effect: The stated effect: the distance beyond ``threshold`` at which the power is computed.
        threshold: The claim's boundary.
        reversed_text: What a refutation (the other side established) means, e.g. "reversed: one-shot falls short".
        undefined: Simulated studies (of :func:`linearized`'s draws) where a nonlinear statistic is undefined.
    """

    name: str
    stat: LinearEstimate
    direction: Literal["above", "below"]
    effect: float
    threshold: float = 0.0
    reversed_text: str = "reversed"
    undefined: int = 0

    @property
    def _sign(self) -> float:
        return 1.0 if self.direction == "above" else -1.0

    def estimate(self) -> tuple[float, float, float, LinearEstimate]:
        """``(estimate, low, high, the linear estimate behind the interval)``."""
        low, high = self.stat.bounds(ALPHA)
        return self.stat.value, low, high, self.stat

    def _ps(self, value: np.ndarray, se: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self._sign
        p_rep = _p_above(s * value, se, df, s * self.threshold)
        return p_rep, 1.0 - p_rep

    def p_values(self) -> tuple[float, float]:
        """``(p of replication, p of refutation)``, unadjusted."""
        p_rep, p_ref = self._ps(np.array(self.stat.value), np.array(self.stat.se), np.array(self.stat.df))
        return float(p_rep), float(p_ref)

    def simulate(self, truth: str, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p_rep, p_ref, covered)`` of simulated studies at ``truth`` ("null", "effect" or "estimate")."""
        mean = {"null": self.threshold, "effect": self.threshold + self._sign * abs(self.effect),
                "estimate": self.stat.value}[truth]  # fmt: skip
        value, se, df = _simulated(self.stat, mean, draws, rng)
        half = stats.t.ppf(1 - ALPHA, df) * se
        return (*self._ps(value, se, df), _covers(value, mean, half))

    def refutation(self) -> str:
        """What a refutation of this row establishes."""
        return self.reversed_text


@dataclasses.dataclass(frozen=True)
class Equivalence:
    """Claim: ``low < statistic < high`` (two one-sided tests).

    Attributes:
        name: The test's name in the table.
        stat: The statistic's estimate.
        low: Lower margin.
        high: Upper margin.
        target: The value at which the power is computed (e.g. an error of 0, a slope of 1).
        below_text: What "established below ``low``" means (a refutation).
        above_text: What "established above ``high``" means.
    """

    name: str
    stat: LinearEstimate
    low: float
    high: float
    target: float = 0.0
    below_text: str = "below the margin"
    above_text: str = "above the margin"

    def __post_init__(self) -> None:
        if not self.low < self.target < self.high:
            raise ValueError(f"{self.name}: need low < target < high, got {self.low}, {self.target}, {self.high}")

    @property
    def effect(self) -> float:
        """The margin half-width (for tables)."""
        return (self.high - self.low) / 2

    def estimate(self) -> tuple[float, float, float, LinearEstimate]:
        """``(estimate, low, high, the linear estimate behind the interval)``."""
        low, high = self.stat.bounds(ALPHA)
        return self.stat.value, low, high, self.stat

    def _ps(self, value: np.ndarray, se: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        above_low = _p_above(value, se, df, self.low)  # H0: mean <= low
        below_high = _p_above(-value, se, df, -self.high)  # H0: mean >= high
        return np.maximum(above_low, below_high), np.minimum(1 - above_low, 1 - below_high)

    def p_values(self) -> tuple[float, float]:
        """``(p of replication, p of refutation)``, unadjusted."""
        p_rep, p_ref = self._ps(np.array(self.stat.value), np.array(self.stat.se), np.array(self.stat.df))
        return float(p_rep), float(p_ref)

    def simulate(self, truth: str, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p_rep, p_ref, covered)`` of simulated studies at ``truth`` ("null", "effect" or "estimate")."""
        if truth == "null":  # the least favourable of the two margins (their replication rates, per draw)
            lo = self.simulate_at(self.low, draws, rng)
            hi = self.simulate_at(self.high, draws, rng)
            pick = np.mean(lo[0] <= ALPHA) >= np.mean(hi[0] <= ALPHA)
            return lo if pick else hi
        return self.simulate_at(self.target if truth == "effect" else self.stat.value, draws, rng)

    def simulate_at(self, mean: float, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``(p_rep, p_ref, covered)`` of simulated studies whose true statistic is ``mean``."""
        value, se, df = _simulated(self.stat, mean, draws, rng)
        half = stats.t.ppf(1 - ALPHA, df) * se
        return (*self._ps(value, se, df), _covers(value, mean, half))

    def refutation(self) -> str:
        """What a refutation of this row establishes."""
        return self.below_text if self.stat.value < self.low else self.above_text


@dataclasses.dataclass(frozen=True)
class Closer:
    """Claim: ``|mean e_A| < |mean e_B|``: A is closer to its target than B (both errors paired by seed and prompt).

    With ``d = e_A - e_B`` and ``s = e_A + e_B``, ``|mu_A| < |mu_B|`` iff ``d s < 0``: replicated when either ``d > 0``
    and ``s < 0`` (B short of b, A less so or overshooting by less) or ``d < 0`` and ``s > 0`` are established, each
    pair by two one-sided tests at level alpha (an intersection-union test, regular where the folded ``|mean e|`` is
    not). The reported estimate is the advantage ``|mu_B| - |mu_A|`` on B's side, ``min(d, -s)`` when B falls
    short (``min(-d, s)`` when it overshoots), and its interval is the one those bounds give.

    Attributes:
        name: The test's name in the table.
        d: The estimate of ``e_A - e_B``.
        s: The estimate of ``e_A + e_B``.
        joint: ``(2, 2)`` component matrices of (d, s).
        effect: B's distance from b at which the power is computed (A exactly on b).
        reversed_text: What a refutation (``|mu_A| > |mu_B|`` established) means.
    """

    name: str
    d: LinearEstimate
    s: LinearEstimate
    joint: Components
    effect: float
    reversed_text: str = "reversed: B is closer"

    @classmethod
    def of(cls, name: str, errors_a: np.ndarray, errors_b: np.ndarray, clusters: np.ndarray | None, effect: float,
           reversed_text: str) -> Closer:
        """The test from the two arms' ``(R, U)`` errors (NaN: absent units, the same in both)."""
        a, b = np.asarray(errors_a, float), np.asarray(errors_b, float)
        if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
            raise ValueError(f"{name}: the two arms' errors must have one shape and the same absent units")
        cells = np.stack([cell_means(a - b, clusters, "errors"), cell_means(a + b, clusters, "errors")])
        return cls(name, estimate_cells(cells[0]), estimate_cells(cells[1]), joint_components(cells), effect,
                   reversed_text)

    def _side(self) -> float:
        """+1 when B falls short (``mu_B < 0``: ``s - d = 2 e_B``), else -1."""
        return 1.0 if self.s.value - self.d.value < 0 else -1.0

    def estimate(self) -> tuple[float, float, float, LinearEstimate]:
        """``(estimate, low, high, the linear estimate behind the interval)``."""
        side = self._side()
        (d_low, d_high), (s_low, s_high) = self.d.bounds(ALPHA), self.s.bounds(ALPHA)
        if side > 0:  # min(d, -s)
            value, low, high = min(self.d.value, -self.s.value), min(d_low, -s_high), min(d_high, -s_low)
        else:  # min(-d, s)
            value, low, high = min(-self.d.value, self.s.value), min(-d_high, s_low), min(-d_low, s_high)
        return value, low, high, self.d if (side > 0) == (self.d.value < -self.s.value) else self.s

    def _ps(self, d: tuple[np.ndarray, ...], s: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        d_pos, s_pos = _p_above(*d, 0.0), _p_above(*s, 0.0)
        d_neg, s_neg = 1 - d_pos, 1 - s_pos
        p_rep = np.minimum(np.maximum(d_pos, s_neg), np.maximum(d_neg, s_pos))
        p_ref = np.minimum(np.maximum(d_pos, s_pos), np.maximum(d_neg, s_neg))
        return p_rep, p_ref

    def p_values(self) -> tuple[float, float]:
        """``(p of replication, p of refutation)``, unadjusted."""
        d = tuple(np.array(x) for x in (self.d.value, self.d.se, self.d.df))
        s = tuple(np.array(x) for x in (self.s.value, self.s.se, self.s.df))
        p_rep, p_ref = self._ps(d, s)
        return float(p_rep), float(p_ref)

    def simulate_at(self, mu_a: float, mu_b: float, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``(p_rep, p_ref, covered)`` of simulated studies with true mean errors ``mu_a`` and ``mu_b``."""
        cells = simulate_cells(np.array([mu_a - mu_b, mu_a + mu_b]), self.joint, draws, rng)
        d, s = batch_estimates(cells[:, 0]), batch_estimates(cells[:, 1])
        qd, qs = stats.t.ppf(1 - ALPHA, d[2]) * d[1], stats.t.ppf(1 - ALPHA, s[2]) * s[1]
        if mu_b < 0:  # the advantage min(d, -s) and its interval
            truth, low, high = min(mu_a - mu_b, -(mu_a + mu_b)), np.minimum(d[0] - qd, -s[0] - qs), \
                np.minimum(d[0] + qd, -s[0] + qs)
        else:
            truth, low, high = min(mu_b - mu_a, mu_a + mu_b), np.minimum(-d[0] - qd, s[0] - qs), \
                np.minimum(-d[0] + qd, s[0] + qs)
        return (*self._ps(d, s), (low < truth) & (truth < high))

    def simulate(self, truth: str, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p_rep, p_ref, covered)`` of simulated studies at ``truth`` ("null", "effect" or "estimate")."""
        side = -self._side()  # the sign of B's error
        delta = abs(self.effect)
        if truth == "null":  # A and B equally far from b: on one side, or on either side of it
            same = self.simulate_at(side * delta, side * delta, draws, rng)
            other = self.simulate_at(-side * delta, side * delta, draws, rng)
            return same if np.mean(same[0] <= ALPHA) >= np.mean(other[0] <= ALPHA) else other
        if truth == "effect":
            return self.simulate_at(0.0, side * delta, draws, rng)
        mu_a, mu_b = (self.s.value + self.d.value) / 2, (self.s.value - self.d.value) / 2
        return self.simulate_at(mu_a, mu_b, draws, rng)

    def refutation(self) -> str:
        """What a refutation of this row establishes."""
        return self.reversed_text


@dataclasses.dataclass(frozen=True)
class Descriptive:
    """An estimate with its interval, reported without a verdict."""

    name: str
    stat: LinearEstimate
    effect: float = float("nan")


@dataclasses.dataclass(frozen=True)
class Exact:
    """A claim checked exactly (no sampling, so no interval and no size): replicated when it holds, else refuted.

    Attributes:
        name: The check's name in the table.
        estimate: The checked quantity (e.g. the smallest gap).
        low: Its smallest value over the runs.
        high: Its largest value.
        holds: Whether the claim holds.
        reason: What a failure means.
    """

    name: str
    estimate: float
    low: float
    high: float
    holds: bool
    reason: str = ""
    effect: float = float("nan")


@dataclasses.dataclass(frozen=True)
class NotTestable:
    """A row that cannot be tested, with the reason (e.g. a hypothesis of the test fails)."""

    name: str
    reason: str
    estimate: float = float("nan")
    effect: float = float("nan")


Row = Test | Descriptive | Exact | NotTestable


@dataclasses.dataclass(frozen=True)
class Decision:
    """One row's outcome.

    Attributes:
        test: Which statistic.
        estimate: The point estimate.
        low: Lower end of the ``level`` interval (one-sided bounds at ALPHA each).
        high: Upper end.
        level: ``1 - 2 ALPHA``.
        verdict: The row's :class:`Verdict` (after Holm's correction and the size rule).
        reason: What a refutation established, why a row is not testable or undecided despite its p-value.
        p_replicate: One-sided p of the replication test (unadjusted).
        p_refute: One-sided p of the refutation test (unadjusted).
        p_holm: Holm-adjusted p of the row's decided side (NaN when neither is rejected).
        size: Simulated probability of this verdict where it is wrong (see the module docstring).
        power: Simulated replication rate at the stated effect, at Holm's smallest level.
        coverage: Simulated coverage of the ``level`` interval at the estimate.
        effect: The stated effect (a margin's half-width for equivalence tests).
        se: Standard error.
        df: Degrees of freedom.
        seed_var: Seed component of the cell means.
        cluster_var: Cluster (prompt template) component.
        cell_var: Cell (residual) component.
        n_seeds: Seeds.
        n_clusters: Clusters.
        undefined: Simulated studies in which a nonlinear statistic was undefined (counted, never dropped).
    """

    test: str
    estimate: float
    low: float
    high: float
    level: float
    verdict: Verdict
    reason: str
    p_replicate: float
    p_refute: float
    p_holm: float
    size: float
    power: float
    coverage: float
    effect: float
    se: float
    df: float
    seed_var: float
    cluster_var: float
    cell_var: float
    n_seeds: int
    n_clusters: int
    undefined: int = 0

    def as_row(self) -> dict[str, object]:
        """A flat row for tables (the verdict as its text)."""
        return {**dataclasses.asdict(self), "verdict": self.verdict.value}


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where ``<= alpha``; NaN entries are left out and stay NaN)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    keep = np.flatnonzero(np.isfinite(p))
    order = keep[np.argsort(p[keep], kind="stable")]
    n = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (n - rank) * p[i]))
        out[i] = running
    return out


def _nan_decision(row: Descriptive | Exact | NotTestable, verdict: Verdict, reason: str) -> Decision:
    nan = float("nan")
    if isinstance(row, Exact):
        return Decision(row.name, row.estimate, row.low, row.high, 1.0, verdict, reason, nan, nan, nan, 0.0, 1.0, 1.0,
                        row.effect, 0.0, nan, nan, nan, nan, 0, 0)  # fmt: skip
    if isinstance(row, Descriptive):
        low, high = row.stat.bounds(ALPHA)
        c = row.stat.components
        return Decision(row.name, row.stat.value, low, high, 1 - 2 * ALPHA, verdict, reason, nan, nan, nan, nan, nan,
                        nan, row.effect, row.stat.se, row.stat.df, float(c.seed), float(c.cluster), float(c.cell),
                        c.n_seeds, c.n_clusters)  # fmt: skip
    return Decision(row.name, row.estimate, nan, nan, 1 - 2 * ALPHA, verdict, reason, nan, nan, nan, nan, nan, nan,
                    row.effect, nan, nan, nan, nan, nan, 0, 0)  # fmt: skip


def decide(rows: Sequence[Row], *, holm_family: bool = True, draws: int = DRAWS, seed: int = 0) -> list[Decision]:
    """The verdicts of a claims table: Holm over its tested rows, sizes, powers and coverages by simulation.

    Args:
        rows: The table's rows.
        holm_family: Correct over the table (Holm; each tested row contributes its replicate and refute
            hypotheses). False: each row at ALPHA alone.
        draws: Simulated studies per rate.
        seed: Seed of the simulations (the same for every row: the table is reproducible).
    """
    tested = [i for i, r in enumerate(rows) if not isinstance(r, Descriptive | Exact | NotTestable)]
    ps = np.array([rows[i].p_values() for i in tested]).reshape(-1, 2)
    n_hypotheses = 2 * len(tested)
    adjusted = holm(ps.ravel()).reshape(-1, 2) if holm_family else ps
    level_power = ALPHA / n_hypotheses if holm_family and n_hypotheses else ALPHA
    out: list[Decision] = []
    for i, row in enumerate(rows):
        if isinstance(row, Descriptive):
            out.append(_nan_decision(row, Verdict.DESCRIPTIVE, ""))
            continue
        if isinstance(row, NotTestable):
            out.append(_nan_decision(row, Verdict.NOT_TESTABLE, row.reason))
            continue
        if isinstance(row, Exact):
            verdict = Verdict.REPLICATED if row.holds else Verdict.REFUTED
            out.append(_nan_decision(row, verdict, "" if row.holds else row.reason))
            continue
        k = tested.index(i)
        rng = np.random.default_rng([seed, k])
        value, low, high, stat = row.estimate()
        p_rep, p_ref = ps[k]
        null = row.simulate("null", draws, rng)
        effect = row.simulate("effect", draws, rng)
        at_estimate = row.simulate("estimate", draws, rng)
        size_rep = float(np.mean(null[0] <= ALPHA))
        size_ref = float(np.mean(effect[1] <= ALPHA))
        power = float(np.mean(effect[0] <= level_power))
        coverage = float(np.mean(at_estimate[2]))
        verdict, reason, size, p_holm = Verdict.UNDECIDED, "", size_rep, float("nan")
        if adjusted[k, 0] <= ALPHA:
            verdict, size, p_holm = Verdict.REPLICATED, size_rep, float(adjusted[k, 0])
        elif adjusted[k, 1] <= ALPHA:
            verdict, size, p_holm = Verdict.REFUTED, size_ref, float(adjusted[k, 1])
            reason = row.refutation()
        if verdict is not Verdict.UNDECIDED and size > SIZE_LIMIT:
            reason = f"would be {verdict.value}, but its size {size:.3f} exceeds {SIZE_LIMIT}"
            verdict, size = Verdict.UNDECIDED, size_rep
        c = stat.components
        out.append(Decision(row.name, value, low, high, 1 - 2 * ALPHA, verdict, reason, float(p_rep), float(p_ref),
                            p_holm, size, power, coverage, row.effect, stat.se, stat.df, float(c.seed),
                            float(c.cluster), float(c.cell), c.n_seeds, c.n_clusters,
                            getattr(row, "undefined", 0)))  # fmt: skip
    return out


def linearized(statistic: Callable[[np.ndarray], float], arrays: Sequence[np.ndarray], clusters: np.ndarray | None,
               *, step: float = 1e-4, draws: int = 2000, seed: int = 0) -> tuple[LinearEstimate | None, int]:
    """A smooth statistic of several arms' means as a :class:`LinearEstimate` (delta method), and its undefined count.

    ``statistic`` maps the ``(k,)`` vector of the arrays' grand means (means of their cell means) to a number, or NaN
    where it is undefined (e.g. two curves that do not overlap). Its linearisation at the estimate,
    ``T(m) + grad T . (cells - m)``, is estimated like any mean. The second value counts, out of ``draws``
    simulated studies at the arrays' measured joint components, those where ``statistic`` is undefined: such
    studies are never dropped silently.

    Returns:
        ``(estimate, undefined draws)``; the estimate is None where ``statistic`` is undefined at the data.
    """
    cells = np.stack([cell_means(a, clusters, f"arrays[{i}]") for i, a in enumerate(arrays)])
    means = cells.mean(axis=(1, 2))
    value = float(statistic(means))
    rng = np.random.default_rng(seed)
    sims = simulate_cells(means, joint_components(cells), draws, rng).mean(axis=(2, 3))
    undefined = int(sum(not np.isfinite(statistic(m)) for m in sims))
    if not np.isfinite(value):
        return None, undefined
    scale = step * max(1.0, float(np.abs(means).max()))
    grad = np.zeros(len(means))
    for j in range(len(means)):
        up, down = means.copy(), means.copy()
        up[j] += scale
        down[j] -= scale
        hi, lo = statistic(up), statistic(down)
        if np.isfinite(hi) and np.isfinite(lo):
            grad[j] = (hi - lo) / (2 * scale)
        elif np.isfinite(hi):
            grad[j] = (hi - value) / scale
        elif np.isfinite(lo):
            grad[j] = (value - lo) / scale
    lin = value + np.tensordot(grad, cells - means[:, None, None], axes=1)
    return estimate_cells(lin), undefined
