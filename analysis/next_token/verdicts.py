"""The pre-registered verdicts of the laboratory, computed from its saved runs (:mod:`analysis.decisions`).

Errors are per held-out prompt and exact: e(x) = E_pi g(x) - E_ref g(x) - b, in sigma units; the mean over
prompts is the constraint slack. Arrays are (seeds x prompts), so intervals cover the DPO randomness too.

Claims (Sec. 5 / Fig. 1-2 of the paper), margin m = 0.25 sigma unless said:

1. CAID tracks b: TOST |mean e| < m, per single-constraint threshold (exact and sampled dual steps).
2. One-shot falls short at the smallest b (upper one-sided bound of mean e < 0) and overshoots at the
   largest (lower bound > 0); plug-in and exact-lambda* one-shot separately; power at |effect| = m.
3. CAID is closer to b than one-shot: paired bootstrap of |mean e_CAID| - |mean e_one-shot| < 0; power at
   -m/2.
4. Higher trade-off: reward improvement of CAID minus one-shot at equal b > 0; power at +m/2. Since a
   one-shot that falls short of b buys reward with the constraint, also at equal achieved g_1: CAID's reward
   minus the one-shot curve (reward vs achieved g_1, linearly interpolated over the thresholds) at CAID's
   achieved g_1, averaged over the thresholds inside the one-shot curve's range.
5. Both constraints met: non-inferiority mean e_i > -m for each constraint of two-constraint CAID.
6. D(lambda) - L(pi_theta, lambda) >= 0 for every run (weak duality; exact, no interval).
7. Measured U-OPT / R-OPT within their Theorem 6 bounds, where the bound's hypotheses allow evaluating it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.decisions import (
    Decision,
    equivalence,
    non_inferiority,
    one_sided,
    paired_abs_difference,
    paired_difference,
    paired_statistic,
)
from llm.run_files import write_atomic

__all__ = ["MARGIN", "load_errors", "verdicts", "write_verdicts"]

MARGIN = 0.25
"""The pre-registered margin, in within-prompt SDs (sigma) of the utility."""


def load_errors(out: Path, table: pd.DataFrame, method: str, setting: str, quantity: str = "error",
                constraint: int = 1) -> np.ndarray:
    """``(seeds, prompts)`` per-prompt errors e_i(x) (``"error"``), improvements, or reward improvements.

    Raises:
        ValueError: A run's arrays are missing or malformed (the message names the file).
    """
    rows = table[(table["method"] == method) & (table["setting"] == setting)].sort_values("seed")
    out_rows = []
    for _, row in rows.iterrows():
        path = Path(out) / "runs" / f"{row['run_id']}.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                values = data["reward"] if quantity == "reward" else data["improvements"][constraint - 1]
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: unreadable run arrays ({exc}); delete it and rerun the laboratory") from exc
        out_rows.append(values - (row[f"b_{constraint}"] if quantity == "error" else 0.0))
    return np.array(out_rows)


def _row(claim: str, setting: str, method: str, decision: Decision) -> dict[str, object]:
    return {"claim": claim, "setting": setting, "method": method, **decision.as_row()}


def _curve_gap(out: Path, table: pd.DataFrame, single: list[str]) -> Decision:
    """CAID's reward minus the one-shot (plug-in) trade-off curve at CAID's achieved g_1 (claim 4)."""
    arrays = [load_errors(out, table, m, s, q) for s in single for m in ("caid_exact", "one_shot_plugin")
              for q in ("improvement", "reward")]
    n = len(single)

    def gap(*a: np.ndarray) -> float:
        means = np.array([x.mean() for x in a]).reshape(n, 2, 2)  # threshold, method, (g_1, reward)
        g_os, r_os = means[:, 1, 0], means[:, 1, 1]
        order = np.argsort(g_os)
        inside = (means[:, 0, 0] >= g_os.min()) & (means[:, 0, 0] <= g_os.max())
        if not inside.any():
            return float("nan")
        curve = np.interp(means[inside, 0, 0], g_os[order], r_os[order])
        return float(np.mean(means[inside, 0, 1] - curve))

    return paired_statistic(arrays, gap, "above", MARGIN / 2, name="curve gap at equal achieved g1")


def verdicts(out: Path) -> pd.DataFrame:
    """All verdicts as a table (one row per test)."""
    out = Path(out)
    table = pd.read_csv(out / "runs.csv")
    single = sorted(table.loc[table["setting"].str.count("@") == 1, "setting"].unique(),
                    key=lambda s: float(s.split("@")[1]))
    double = sorted(table.loc[table["setting"].str.count("@") == 2, "setting"].unique())
    rows = []
    for s in single:
        for caid in ("caid_exact", "caid_sampled"):
            rows.append(_row("CAID tracks b", s, caid, equivalence(load_errors(out, table, caid, s), MARGIN)))
        for os_ in ("one_shot_plugin", "one_shot_exact"):
            rows.append(_row("CAID closer to b than one-shot", s, f"caid_exact vs {os_}", paired_abs_difference(
                load_errors(out, table, "caid_exact", s), load_errors(out, table, os_, s), -MARGIN / 2)))
        rows.append(_row("higher trade-off (reward at equal b)", s, "caid_exact vs one_shot_plugin", paired_difference(
            load_errors(out, table, "caid_exact", s, "reward"), load_errors(out, table, "one_shot_plugin", s, "reward"),
            MARGIN / 2)))
    rows.append(_row("higher trade-off curve (reward at equal achieved g1)", "all single", "caid_exact vs "
                     "one_shot_plugin", _curve_gap(out, table, single)))
    for os_ in ("one_shot_plugin", "one_shot_exact"):
        rows.append(_row("one-shot short at small b", single[0], os_,
                         one_sided(load_errors(out, table, os_, single[0]), "below", -MARGIN)))
        rows.append(_row("one-shot over at large b", single[-1], os_,
                         one_sided(load_errors(out, table, os_, single[-1]), "above", MARGIN)))
    for s in double:
        for i in (1, 2):
            rows.append(_row(f"both constraints met (constraint {i})", s, "caid_exact",
                             non_inferiority(load_errors(out, table, "caid_exact", s, constraint=i), MARGIN)))
    gap = table["dual_minus_lagrangian"].dropna()
    rows.append({"claim": "D(lambda) - L(pi, lambda) >= 0", "setting": "all", "method": "all", "test": "exact minimum",
                 "estimate": float(gap.min()), "low": float(gap.min()), "high": float(gap.max()), "level": 1.0,
                 "verdict": "replicated" if gap.min() >= -1e-9 else "refuted", "power": 1.0, "effect": 0.0, "se": 0.0})
    with_lambda = table[table["lam_1"].notna()]
    a4_fails = int(with_lambda["hypotheses"].str.contains("A4 fails").sum())
    for name in ("u_opt", "r_opt"):
        bounded = with_lambda[np.isfinite(with_lambda[f"{name}_bound"].astype(float))]
        ratio = bounded[name] / bounded[f"{name}_bound"]
        missing = len(with_lambda) - len(bounded)
        rows.append({"claim": f"{name.upper().replace('_', '-')} within its Theorem 6 bound", "setting": "all",
                     "method": f"{len(bounded)} runs bounded, {missing} not evaluable (Assumption 4 fails in "
                               f"{a4_fails}); nu measured at each run's lambda (Assumption 3 proxy)",
                     "test": "measured / bound", "estimate": float(ratio.max()) if len(ratio) else np.nan,
                     "low": float(ratio.min()) if len(ratio) else np.nan,
                     "high": float(ratio.max()) if len(ratio) else np.nan, "level": 1.0,
                     "verdict": ("replicated" if (ratio <= 1).all() else "refuted") if len(ratio) else "undecided",
                     "power": 1.0 if len(ratio) else 0.0, "effect": 1.0, "se": 0.0})
    return pd.DataFrame(rows)


def write_verdicts(out: Path) -> pd.DataFrame:
    """Compute the verdicts and write ``verdicts.csv`` into ``out``."""
    frame = verdicts(out)
    write_atomic(Path(out) / "verdicts.csv", frame.to_csv(index=False))  # with its record of rows (paper_figures)
    return frame
