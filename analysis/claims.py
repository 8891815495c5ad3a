"""The claims both studies test, defined once: their texts, margins, the arms they read and the table they build.

The paper's Fig. 1 / Fig. 2 claims (Sec. 4.1.1, Sec. 5) become rows of a claims table, tested by
:mod:`analysis.decisions` on per-prompt errors e(x) = achieved improvement - b in within-prompt SDs (sigma) of
the constrained utility. The multi-token study (:mod:`analysis.multi_token_study`) and the next-token laboratory
(:mod:`analysis.next_token.verdicts`) both call :func:`single_constraint_rows` and :func:`two_constraint_rows`
with their own method names, so the two tables test the same claims with the same margins:

* **tracking**: a CAID variant's mean error lies within +-MARGIN (TOST), tested only where b >= 2 MARGIN (a
  margin that fits the threshold: a policy at pi_ref, e = -b, is then outside it; below, the row is "not
  testable"); with >= 3 thresholds also the slope of achieved vs b within [0.75, 1.33] (TOST);
* **negative controls**: pi_ref itself (``reference``) and DPO_h (``dpo_h``, reward only) in the same tracking
  rows, where a sound test must not say "replicated";
* **one-shot short / over**: one-shot's mean error below 0 at the smallest b and above 0 at the largest, and the
  slope of its error vs b above 0;
* **closer**: CAID's mean error smaller in absolute value than one-shot's (:class:`analysis.decisions.Closer`),
  where b >= 2 MARGIN (power at one-shot MARGIN from b);
* **trade-off**: CAID's reward along its achieved-g curve minus one-shot's, averaged over the curves' common
  range of achieved g (power at the exact tilt's reward cost of the constraint, where the caller has one); the
  reward difference at equal b is descriptive;
* **both constraints met**: non-inferiority e_i > -m(b_i) for each constraint of two-constraint CAID.

:func:`violation_rows` adds what a mean hides: per method and constraint, the share of held-out prompts whose own
improvement misses b and the 10% / 90% quantiles of the per-prompt improvement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.crossed_anova import estimate
from analysis.decisions import (
    Closer,
    Decision,
    Descriptive,
    Directional,
    Equivalence,
    NotTestable,
    Row,
    decide,
    linearized,
)

__all__ = [
    "BOTH_MET", "CLOSER", "CONTROLS", "MARGIN", "ONE_SHOT_SLOPE", "OVER", "REWARD_AT_B", "SHORT", "SLOPE_RANGE",
    "TRACKS", "TRACKS_SLOPE", "TRADE_OFF", "ArmData", "ClaimRow", "claims_table", "curve_gap", "margin",
    "single_constraint_rows", "tilt_reward_cost", "two_constraint_rows", "violation_rows",
]  # fmt: skip

MARGIN = 0.25
"""The largest margin, in within-prompt SDs (sigma) of the utility."""
SLOPE_RANGE = (0.75, 4 / 3)
"""Achieved improvement vs b: the slopes that count as tracking (TOST)."""
CONTROLS = ("reference", "dpo_h")
"""Negative controls: pi_ref itself and DPO on the reward alone."""

TRACKS = "tracks b"
TRACKS_SLOPE = "achieved follows b (slope in [0.75, 1.33])"
SHORT = "one-shot short at small b"
OVER = "one-shot over at large b"
ONE_SHOT_SLOPE = "one-shot's error grows with b"
CLOSER = "CAID closer to b than one-shot"
TRADE_OFF = "higher trade-off (reward at equal achieved g1)"
REWARD_AT_B = "reward at equal b (descriptive)"
BOTH_MET = "both constraints met (constraint {i})"


def margin(b: float) -> float:
    """The stated effect at threshold b: ``min(MARGIN, b / 2)`` (a miss of half of b at small b)."""
    return min(MARGIN, abs(b) / 2)


@dataclasses.dataclass(frozen=True)
class ArmData:
    """One method at one threshold setting over the seeds, in sigma units.

    Attributes:
        thresholds: ``(R, m)`` b_i of each seed (a reference pool per seed gives each seed its own b).
        improvements: ``(m, R, U)`` per-unit achieved improvement of each constrained utility (NaN: the unit is
            not held out at that seed).
        reward: ``(R, U)`` per-unit reward improvement.
    """

    thresholds: np.ndarray
    improvements: np.ndarray
    reward: np.ndarray

    def __post_init__(self) -> None:
        m, r, u = np.shape(self.improvements)
        if np.shape(self.thresholds) != (r, m) or np.shape(self.reward) != (r, u):
            raise ValueError(f"ArmData: thresholds {np.shape(self.thresholds)}, improvements {(m, r, u)} and reward "
                             f"{np.shape(self.reward)} disagree (want (R, m), (m, R, U), (R, U))")

    def errors(self, i: int = 0) -> np.ndarray:
        """``(R, U)`` e_i = improvement_i - b_i of each seed."""
        return self.improvements[i] - self.thresholds[:, i, None]

    def at(self, thresholds: np.ndarray) -> ArmData:
        """The same policy judged against other thresholds (a threshold-free control at each setting)."""
        return dataclasses.replace(self, thresholds=np.asarray(thresholds, dtype=np.float64))

    @property
    def b(self) -> np.ndarray:
        """``(m,)`` the mean threshold over seeds."""
        return self.thresholds.mean(axis=0)


@dataclasses.dataclass(frozen=True)
class ClaimRow:
    """A row of a claims table before the decision: which claim, where, for which method, and its test."""

    claim: str
    setting: str
    method: str
    row: Row


def _tracking(method: str, errors: np.ndarray, b: float, clusters: np.ndarray | None) -> Equivalence | NotTestable:
    if b < 2 * MARGIN:
        return NotTestable(f"equivalence (TOST, margin {MARGIN:g})",
                           f"b = {b:.3f} < 2 x the margin {MARGIN:g}: a policy that does not move is inside it")
    return Equivalence(f"equivalence (TOST, margin {MARGIN:g})", estimate(errors, clusters), -MARGIN, MARGIN,
                       below_text=f"{method} falls short of b by more than {MARGIN:g}",
                       above_text=f"{method} overshoots b by more than {MARGIN:g}")  # fmt: skip


def _slope_values(arms: Sequence[ArmData], offset: float) -> np.ndarray:
    """``(R, U)`` per-unit least-squares slope of improvement vs b over the arms (each seed's own b), minus offset."""
    b = np.stack([a.thresholds[:, 0] for a in arms], axis=1)  # (R, k)
    centred = b - b.mean(axis=1, keepdims=True)
    weights = centred / (centred**2).sum(axis=1, keepdims=True)
    return sum(weights[:, j, None] * a.improvements[0] for j, a in enumerate(arms)) - offset


def curve_gap(means: np.ndarray, n: int) -> float:
    """Reward of curve A minus curve B averaged over the common range of their achieved g.

    Args:
        means: ``(4 n,)`` A's achieved g at n thresholds, A's reward, B's achieved g, B's reward.
        n: Thresholds per curve.

    Returns:
        The mean of ``r_A(g) - r_B(g)`` over 101 points of ``[max(min g_A, min g_B), min(max g_A, max g_B)]``,
        each curve interpolated linearly through its points sorted by g; NaN where the range is empty.
    """
    g_a, r_a, g_b, r_b = np.reshape(means, (4, n))
    low, high = max(g_a.min(), g_b.min()), min(g_a.max(), g_b.max())
    if not high > low:
        return float("nan")
    grid = np.linspace(low, high, 101)
    oa, ob = np.argsort(g_a), np.argsort(g_b)
    return float(np.mean(np.interp(grid, g_a[oa], r_a[oa]) - np.interp(grid, g_b[ob], r_b[ob])))


def tilt_reward_cost(reward: np.ndarray, utility: np.ndarray, b: float, beta: float) -> float:
    """The exact tilt's reward cost of the constraint, estimated on a reference pool (self-normalised weights).

    On each prompt's K reference samples, ``pi_lambda ~ pi_ref exp((r + lambda g) / beta)`` is represented by
    the weights ``w ~ exp((r + lambda g) / beta)``. Its improvements are ``Delta_f(lambda) = mean_x (sum_k w f -
    mean_k f)``. The constraint ``Delta_g >= b`` costs ``Delta_r(0) - Delta_r(lambda_b)``, ``lambda_b`` the
    smallest lambda >= 0 that meets it (0 when pi_0 already does; NaN when no lambda does on this pool).

    Args:
        reward: ``(N, K)`` reward scores of the pool, sigma units.
        utility: ``(N, K)`` utility scores.
        b: The threshold.
        beta: The KL strength.
    """
    r, g = np.asarray(reward, float), np.asarray(utility, float)

    def deltas(lam: float) -> tuple[float, float]:
        z = (r + lam * g) / beta
        w = np.exp(z - z.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        return (float(((w * r).sum(axis=1) - r.mean(axis=1)).mean()),
                float(((w * g).sum(axis=1) - g.mean(axis=1)).mean()))  # fmt: skip

    r0, g0 = deltas(0.0)
    if g0 >= b:
        return 0.0
    low, high = 0.0, 1.0
    while deltas(high)[1] < b:
        high *= 2
        if high > 1e4:
            return float("nan")
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if deltas(mid)[1] < b else (low, mid)
    return r0 - deltas(high)[0]


def single_constraint_rows(arms: Mapping[tuple[str, float], ArmData], fractions: Sequence[float],
                           clusters: np.ndarray | None, *, caid: Sequence[str], one_shot: Sequence[str],
                           controls: Sequence[str] = CONTROLS, tilt_cost: float | None = None,
                           setting: dict[float, str] | None = None, undefined_draws: int = 2000) -> list[ClaimRow]:
    """The Fig. 1 claims of a single-constraint sweep as table rows (see the module docstring).

    Args:
        arms: ``(method, fraction) -> ArmData`` for every CAID, one-shot and control method at every fraction (a
            control's arm judged against that fraction's thresholds, :meth:`ArmData.at`).
        fractions: The thresholds as fractions of the plug-in maximum, ascending.
        clusters: ``(U,)`` prompt-template labels of the units (None: every prompt its own cluster).
        caid: CAID variants (tracking rows; the first is compared with one-shot).
        one_shot: One-shot variants (short/over and closer rows; the first is CAID's trade-off comparison).
        controls: Negative controls (tracking rows).
        tilt_cost: The exact tilt's reward cost of the constraint (the trade-off's stated effect); None: MARGIN / 2.
        setting: Display name per fraction (default ``"b = <f> M = <b> sigma"``).
        undefined_draws: Simulated studies in which the trade-off's curve gap is checked for being undefined.
    """
    fractions = sorted(fractions)
    names = setting or {f: f"b = {f:g} M = {arms[caid[0], f].b[0]:.3f} sigma" for f in fractions}
    rows: list[ClaimRow] = []
    for f in fractions:
        b = float(arms[caid[0], f].b[0])
        for method in (*caid, *controls):
            rows.append(ClaimRow(f"{method} {TRACKS}", names[f], method,
                                 _tracking(method, arms[method, f].errors(), b, clusters)))
    if len(fractions) >= 3:
        for method in (*caid, *controls):
            values = _slope_values([arms[method, f] for f in fractions], 0.0)
            rows.append(ClaimRow(f"{method} {TRACKS_SLOPE}", "all single", method, Equivalence(
                "slope of achieved vs b (TOST)", estimate(values, clusters), *SLOPE_RANGE, target=1.0,
                below_text=f"{method}'s achieved improvement grows slower than 0.75 b",
                above_text=f"{method}'s achieved improvement grows faster than 1.33 b")))  # fmt: skip
    else:
        for method in caid:
            rows.append(ClaimRow(f"{method} {TRACKS_SLOPE}", "all single", method,
                                 NotTestable("slope of achieved vs b", f"needs >= 3 thresholds, got {len(fractions)}")))
    low, high = fractions[0], fractions[-1]
    b_low, b_high = float(arms[caid[0], low].b[0]), float(arms[caid[0], high].b[0])
    for method in one_shot:
        rows.append(ClaimRow(SHORT, names[low], method, Directional(
            "one-sided t (below 0)", estimate(arms[method, low].errors(), clusters), "below", margin(b_low),
            reversed_text="reversed: one-shot overshoots b")))  # fmt: skip
        rows.append(ClaimRow(OVER, names[high], method, Directional(
            "one-sided t (above 0)", estimate(arms[method, high].errors(), clusters), "above", margin(b_high),
            reversed_text="reversed: one-shot falls short of b")))  # fmt: skip
        if high > low:
            values = _slope_values([arms[method, f] for f in fractions], 1.0)
            effect = (margin(b_low) + margin(b_high)) / (b_high - b_low)
            rows.append(ClaimRow(ONE_SHOT_SLOPE, "all single", method, Directional(
                "slope of e vs b (one-sided t, above 0)", estimate(values, clusters), "above", effect,
                reversed_text="reversed: one-shot's error falls as b grows")))  # fmt: skip
    pair = f"{caid[0]} vs {one_shot[0]}"
    for f in fractions:
        b = float(arms[caid[0], f].b[0])
        for other in one_shot:
            name = "advantage |e_one-shot| - |e_CAID| (IUT on e_A - e_B, e_A + e_B)"
            if b < 2 * MARGIN:
                test: Row = NotTestable(name, f"b = {b:.3f} < 2 x the margin {MARGIN:g}: one-shot's stated miss there "
                                              "(b / 2) is smaller than the tracking margin")
            else:
                test = Closer.of(name, arms[caid[0], f].errors(), arms[other, f].errors(), clusters, MARGIN,
                                 reversed_text=f"reversed: {other} is closer to b")
            rows.append(ClaimRow(CLOSER, names[f], f"{caid[0]} vs {other}", test))
    n = len(fractions)
    arrays = [x for m in (caid[0], one_shot[0]) for x in
              ([arms[m, f].improvements[0] for f in fractions] + [arms[m, f].reward for f in fractions])]  # fmt: skip
    gap, undefined = linearized(lambda means: curve_gap(means, n), arrays, clusters, draws=undefined_draws)
    effect = MARGIN / 2 if tilt_cost is None or not np.isfinite(tilt_cost) else tilt_cost
    if gap is None:
        rows.append(ClaimRow(TRADE_OFF, "all single", pair, NotTestable(
            "curve gap", f"the achieved-g ranges of {caid[0]} and {one_shot[0]} do not overlap", effect=effect)))
    else:
        rows.append(ClaimRow(TRADE_OFF, "all single", pair, Directional(
            "curve gap at equal achieved g1 (delta method)", gap, "above", effect,
            reversed_text=f"reversed: {one_shot[0]}'s curve is higher", undefined=undefined)))  # fmt: skip
    for f in fractions:
        values = arms[caid[0], f].reward - arms[one_shot[0], f].reward
        rows.append(ClaimRow(REWARD_AT_B, names[f], pair, Descriptive("paired difference", estimate(values, clusters))))
    return rows


def two_constraint_rows(arm: ArmData, setting: str, method: str, clusters: np.ndarray | None) -> list[ClaimRow]:
    """Fig. 2: non-inferiority ``mean e_i > -m(b_i)`` for each constraint (refuted: missed by more than m)."""
    rows = []
    for i, b in enumerate(arm.b):
        m = margin(float(b))
        rows.append(ClaimRow(BOTH_MET.format(i=i + 1), setting, method, Directional(
            f"non-inferiority (margin {m:.3g})", estimate(arm.errors(i), clusters), "above", m, threshold=-m,
            reversed_text=f"constraint {i + 1} missed by more than {m:.3g}")))  # fmt: skip
    return rows


def claims_table(rows: Sequence[ClaimRow], *, seed: int = 0) -> pd.DataFrame:
    """Decide every row (Holm over the table's tested rows) and return one table row per claim row."""
    decisions: list[Decision] = decide([r.row for r in rows], seed=seed)
    return pd.DataFrame([{"claim": r.claim, "setting": r.setting, "method": r.method, **d.as_row()}
                         for r, d in zip(rows, decisions, strict=True)])  # fmt: skip


def violation_rows(arms: Mapping[tuple[str, str], ArmData]) -> pd.DataFrame:
    """What a mean hides: per arm and constraint, the per-prompt improvements' miss share and 10% / 90% quantiles.

    Args:
        arms: ``(method, setting) -> ArmData``.

    Returns:
        Columns ``method, setting, constraint, b, mean, share_missing_b`` (units whose own improvement is below
        their seed's b, over seeds x held-out prompts), ``q10, q90`` (of the per-prompt improvement) and
        ``units``.
    """
    out = []
    for (method, setting), arm in arms.items():
        for i in range(arm.improvements.shape[0]):
            values = arm.improvements[i]
            present = np.isfinite(values)
            miss = (values < arm.thresholds[:, i, None]) & present
            q10, q90 = np.quantile(values[present], [0.1, 0.9])
            out.append({"method": method, "setting": setting, "constraint": i + 1, "b": float(arm.b[i]),
                        "mean": float(values[present].mean()), "share_missing_b": float(miss.sum() / present.sum()),
                        "q10": float(q10), "q90": float(q90), "units": int(present.sum())})  # fmt: skip
    return pd.DataFrame(out)
