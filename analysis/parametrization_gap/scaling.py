"""Scaling of each measured gap with the parametrization gap nu, and its comparison with the bound.

Imports only numpy and pandas, so reports can read a laboratory's ``summary.csv`` without torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _loglog_slope(x: pd.Series, y: pd.Series) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0]) if len(x) >= 3 else float("nan")


def scaling_table(summary: pd.DataFrame) -> pd.DataFrame:
    """How each measured gap scales with nu and how it compares with its bound, one row per quantity.

    Columns: ``quantity``; ``slope``, the least-squares slope of log(measured) on log(nu) over the rows with
    a positive measurement (1 means ~nu, 0.5 means ~sqrt(nu); NaN with fewer than 3 such rows);
    ``slope_parametrized``, the same without the tabular row (whose nu is optimisation error only);
    ``n_points``; ``median_looseness``, the median of bound / |measured| where both are finite and
    positive (for a two-sided result and a negative measurement, the lower side's magnitude);
    ``violations``, the rows outside a finite bound (each a finding).
    """
    records = []
    for column in summary.columns:
        if not column.endswith("_measured"):
            continue
        stem = column[: -len("_measured")]
        signed = summary[column].astype(float)
        measured = signed.abs()
        nan = pd.Series(np.nan, index=summary.index)
        upper = summary.get(f"{stem}_bound", nan).astype(float)
        lower = summary.get(f"{stem}_bound_lower", nan).astype(float)
        # Two-sided results (Theorems 2 and 5) bound a negative measurement by their lower side.
        bound = upper.where(~(signed < 0) | lower.isna(), -lower)
        violated = (upper.notna() & (signed > upper)) | (lower.notna() & (signed < lower))
        if lower.isna().all():
            violated = upper.notna() & (measured > upper)
        nu = summary["nu"].astype(float)
        fit = (measured > 0) & (nu > 0)
        parametrized = fit & (summary["policy_class"] != "tabular")
        both = np.isfinite(bound) & (bound > 0) & (measured > 0)
        records.append(
            {
                "quantity": stem,
                "slope": _loglog_slope(nu[fit], measured[fit]),
                "slope_parametrized": _loglog_slope(nu[parametrized], measured[parametrized]),
                "n_points": int(fit.sum()),
                "median_looseness": float(np.median(bound[both] / measured[both])) if both.any() else np.nan,
                "violations": int(violated.sum()),
            }
        )
    return pd.DataFrame(records)
