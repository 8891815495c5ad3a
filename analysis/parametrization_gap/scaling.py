"""Each measured gap against its bound (checked only where the bound's hypotheses hold) and its scaling with nu.

Imports only numpy and pandas, so reports can read a laboratory's ``summary.csv`` without torch.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["BY_CONSTRUCTION", "check_counts", "scaling_table"]

# Quantities whose relation to nu follows from how nu is measured, not from the theory: nu_1 and nu_KL are
# the errors of the same in-class policies these gaps are computed from. Their slopes are not evidence.
BY_CONSTRUCTION = {
    "dual_function_gap": "beta E_x KL(pi_p || pi*(lambda*_p)) of the fitted policy whose L1 distance enters nu_1 "
    "(Pinsker: >= nu_1^2 / 2 for the worst prompt)",
    "multi_constraint_gap": "|E (pi_p - pi*(lambda*_p)) h| <= M x the L1 distance that enters nu_1",
    "one_constraint_gap": "|E (pi_p(lambda*) - pi*) h| <= M x the L1 distance that enters nu_1",
    "one_u_opt": "the same number as one_constraint_gap",
    "one_r_opt": "objective difference of the pair (pi_p(lambda*), pi*) whose L1 and KL gaps define nu",
}
_BOOTSTRAP = 2000
# The hypothesis names in a "fails: <name> (<detail>); ..." text.
_FAILED_NAME = re.compile(r"(?:^fails: |; )(Assumption \d+|eq\. \(\d+\))")


def _loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(np.log(x)) == 0:
        return float("nan")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _bootstrap_ci(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of the log-log slope, resampling classes (rows) with replacement."""
    if len(x) < 3:
        return float("nan"), float("nan")
    slopes = []
    for _ in range(_BOOTSTRAP):
        pick = rng.integers(0, len(x), len(x))
        slopes.append(_loglog_slope(x[pick], y[pick]))
    slopes = np.array(slopes)
    slopes = slopes[np.isfinite(slopes)]  # a resample of one repeated class has no slope
    return float(np.percentile(slopes, 2.5)), float(np.percentile(slopes, 97.5))


def scaling_table(summary: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per measured quantity: its bound checks and how it scales with nu.

    A (class, quantity) pair is *checked* when its bound is a number, which the laboratory writes only where
    the bound's hypotheses hold (``<quantity>_hypothesis == "holds"``); a NaN bound is *not applicable* and is
    never counted as a pass.

    Columns:
        quantity: The column stem (``<quantity>_measured``).
        checked: k, the classes whose bound is a number.
        violations: The checked classes outside the bound (each a finding). Two-sided results (Theorems 2
            and 5) check both sides.
        not_applicable: j, the classes whose bound is NaN; ``not_applicable_reasons`` lists their distinct
            ``<quantity>_hypothesis`` texts (or "no bound column" for a quantity no result bounds).
        median_looseness: The median over checked classes of bound / |measured| (for a negative measurement of
            a two-sided result, the lower side's magnitude), where both are positive.
        slope, slope_ci_low, slope_ci_high: The least-squares slope of log|measured| on log(nu) over the
            classes with both positive, and its 95% bootstrap interval resampling classes (1 means ~nu, 0.5
            ~sqrt(nu); NaN with fewer than 3 classes).
        slope_parametrized, slope_parametrized_ci_low, slope_parametrized_ci_high: The same without the tabular
            row (whose nu is optimisation error only), the slope across restricted classes.
        n_points: The classes in ``slope``.
        by_construction: Why the slope follows from how nu is measured (:data:`BY_CONSTRUCTION`), or empty
            when it is independent evidence.

    Raises:
        ValueError: If ``summary`` lacks the ``nu`` or ``policy_class`` column.
    """
    for column in ("nu", "policy_class"):
        if column not in summary:
            raise ValueError(f"summary: no '{column}' column; pass a laboratory's summary.csv")
    rng = np.random.default_rng(seed)
    nan = pd.Series(np.nan, index=summary.index)
    nu = summary["nu"].astype(float)
    records = []
    for column in summary.columns:
        if not column.endswith("_measured"):
            continue
        stem = column.removesuffix("_measured")
        signed = summary[column].astype(float)
        measured = signed.abs()
        upper = summary.get(f"{stem}_bound", nan).astype(float)
        lower = summary.get(f"{stem}_bound_lower", nan).astype(float)
        checked = upper.notna() & signed.notna()
        violated = checked & ((signed > upper) | (lower.notna() & (signed < lower)))
        if f"{stem}_hypothesis" in summary:
            stated = summary[f"{stem}_hypothesis"].astype(str).where(lambda v: v != "holds", "measured value NaN")
            reasons = stated[~checked].unique()
        else:
            reason = "bound is NaN" if f"{stem}_bound" in summary else "no bound column"
            reasons = np.array([reason] if (~checked).any() else [])
        # Two-sided results bound a negative measurement by their lower side's magnitude.
        bound = upper.where(~(signed < 0) | lower.isna(), -lower)
        both = checked & (bound > 0) & (measured > 0)
        fit = (measured > 0) & (nu > 0)
        parametrized = fit & (summary["policy_class"] != "tabular")
        low, high = _bootstrap_ci(nu[fit].to_numpy(), measured[fit].to_numpy(), rng)
        p_low, p_high = _bootstrap_ci(nu[parametrized].to_numpy(), measured[parametrized].to_numpy(), rng)
        records.append(
            {
                "quantity": stem,
                "checked": int(checked.sum()),
                "violations": int(violated.sum()),
                "not_applicable": int((~checked).sum()),
                "not_applicable_reasons": " | ".join(reasons),
                "median_looseness": float(np.median(bound[both] / measured[both])) if both.any() else np.nan,
                "slope": _loglog_slope(nu[fit].to_numpy(), measured[fit].to_numpy()),
                "slope_ci_low": low,
                "slope_ci_high": high,
                "slope_parametrized": _loglog_slope(nu[parametrized].to_numpy(), measured[parametrized].to_numpy()),
                "slope_parametrized_ci_low": p_low,
                "slope_parametrized_ci_high": p_high,
                "n_points": int(fit.sum()),
                "by_construction": BY_CONSTRUCTION.get(stem, ""),
            }
        )
    return pd.DataFrame(records)


def check_counts(summary: pd.DataFrame) -> str:
    """One sentence: how many (class, bound) pairs were checked, violated, and not applicable, and why.

    Only quantities with a ``<q>_hypothesis`` column count (those the laboratory pairs with a bound); a pair
    is not applicable when its bound is NaN, and its reasons are tallied by failed hypothesis name.
    """
    stems = [c.removesuffix("_hypothesis") for c in summary.columns if c.endswith("_hypothesis")]
    table = scaling_table(summary).set_index("quantity").loc[stems]
    checked, violated, na = (int(table[c].sum()) for c in ("checked", "violations", "not_applicable"))
    tally: dict[str, int] = {}
    for stem in stems:
        unchecked = summary[f"{stem}_bound"].isna()
        for text in summary.loc[unchecked, f"{stem}_hypothesis"].astype(str):
            for name in _FAILED_NAME.findall(text) or ["measured value NaN"]:
                tally[name] = tally.get(name, 0) + 1
    reasons = ", ".join(f"{name}: {n}" for name, n in sorted(tally.items()))
    return f"{checked} of {checked + na} (class, bound) pairs checked, {violated} violated; {na} not applicable" + (
        f" (failed hypotheses, a pair can fail several: {reasons})" if na else ""
    )
