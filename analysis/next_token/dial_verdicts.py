"""The verdicts of the nu dial: each claim decided on every rung, next to the rung's measured nu.

Every rung folder ``nu_dial/<rung>/`` holds its runs in the laboratory's format, so the laboratory's own
claims and tests (:func:`analysis.next_token.verdicts.verdicts`, statistics in :mod:`analysis.decisions`)
decide them rung by rung. Its bound rows (which apply Theorem 6 to every run at the run's own nu) are
replaced by the dial's (:func:`analysis.next_token.nu_dial.theorem_columns`):

* ``U-OPT within its Theorem 6 bound`` / ``R-OPT ...``: CAID runs (exact and sampled dual steps);
* ``U-OPT within its Theorem 4 bound`` / ``R-OPT ...``: ``one_shot_oracle`` (one-shot at lambda*);

each replicated when every run where the theorem's hypotheses hold is within its bound (up to the solver's
accuracy, 1e-8), with measured - bound over those runs (estimate and high: the largest, low: the smallest),
the largest measured/bound ratio where the bound is positive (``ratio_max``; at nu = 0 the bound is 0), the
number of such runs and how many of their bounds are non-vacuous (below the same quantity measured for
pi_ref); "not testable" where no run satisfies the hypotheses (size and power then empty). On the exact
rungs, ``CAID's lambda reaches the train lambda*`` compares lambda(T) of exact dual steps with the
train prompts' lambda* (within 1e-3). These rows are exact (no sampling): size 0, power 1.

A rung's ``nu_1_max`` is the median over its method runs (one-shot, CAID, oracle) of each run's
``max_x |pi - pi*(lambda)|_1``; ``claim_nu_1_max`` is the same median over the runs a row compares.

Beside ``nu_dial_verdicts.csv``, three summaries a reader can take in at once: ``nu_dial_rungs.csv`` (one row
per rung: nu, attenuation, the error's two parts, where the theorems apply), ``nu_dial_claims.csv`` (each claim's
verdict on every rung in order of nu, and where it flips) and ``nu_dial_caid.csv`` (CAID's error and lambda per
rung, setting and method, for the T = 4 against T = 16 comparison).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.next_token.rungs import CAID, ORACLE, DialConfig, Fitting, Rung
from analysis.next_token.verdicts import verdicts
from llm.run_files import write_atomic

__all__ = [
    "CAID_FILE", "CLAIMS_FILE", "DIAL_DIR", "LAMBDA_TOLERANCE", "RUNGS_FILE", "RUNS_FILE", "VERDICTS_FILE",
    "VERDICT_MARKS", "caid_table", "claim_table", "dial_verdicts", "rung_table", "rung_verdicts", "write_dial_verdicts",
]

DIAL_DIR = "nu_dial"
"""The dial's folder in the laboratory's output (one sub-folder per rung)."""
RUNS_FILE = "nu_dial_runs.csv"
VERDICTS_FILE = "nu_dial_verdicts.csv"
RUNGS_FILE = "nu_dial_rungs.csv"
CLAIMS_FILE = "nu_dial_claims.csv"
CAID_FILE = "nu_dial_caid.csv"
VERDICT_MARKS = {"replicated": "✓", "refuted": "✗", "undecided": "?", "not testable": "○", "descriptive": "d"}
"""The claims table's mark of each verdict."""
RUNG_VERDICTS = "verdicts.csv"
"""Each rung folder's own verdicts (written by the process that ran the rung)."""
LAMBDA_TOLERANCE = 1e-3
"""How close lambda(T) of exact dual ascent on tilts must come to lambda* (item 5 of the dial's design)."""
COLUMNS = ["rung", "nu_1_max", "claim", "setting", "method", "estimate", "low", "high", "verdict", "size", "power"]
METHOD_RUNS = (*CAID, "one_shot_plugin", "one_shot_exact", ORACLE)
EXACT_TOLERANCE = 1e-8
"""A measured gap within this of its bound holds (the exact solves are certified to about 1e-9; at nu = 0 the
bound is 0 and the measured gap is the solver's residual); ratios are reported where the bound exceeds it."""


def _claim_methods(method: str) -> list[str]:
    """The methods a verdict row compares (``"a vs b"``, ``"a, b"``), or all method runs for ``"all"``."""
    return list(METHOD_RUNS) if method == "all" else re.split(r" vs |, ", method)


def _theorem_rows(runs: pd.DataFrame) -> list[dict[str, object]]:
    rows = []
    for theorem, methods in (("Theorem 6", CAID), ("Theorem 4", (ORACLE,))):
        subject = runs[runs["method"].isin(methods)]
        for quantity in ("u_opt", "r_opt"):
            bound = subject[f"{quantity}_bound"].astype(float)
            ok = subject[np.isfinite(bound)]
            excess = (ok[quantity] - ok[f"{quantity}_bound"]).to_numpy(float)
            ratio = (ok[quantity] / ok[f"{quantity}_bound"])[ok[f"{quantity}_bound"] > EXACT_TOLERANCE]
            nonvacuous = int(ok[quantity.replace("opt", "nonvacuous")].astype(bool).sum())
            testable = not ok.empty
            verdict = ("not testable" if not testable
                       else "replicated" if excess.max() <= EXACT_TOLERANCE else "refuted")
            rows.append({
                "claim": f"{quantity.upper().replace('_', '-')} within its {theorem} bound", "setting": "all",
                "method": ", ".join(methods), "test": "exact: measured - bound <= 1e-8 in every run",
                "estimate": float(excess.max()) if testable else np.nan,
                "low": float(excess.min()) if testable else np.nan,
                "high": float(excess.max()) if testable else np.nan, "verdict": verdict,
                "size": 0.0 if testable else np.nan, "power": 1.0 if testable else np.nan,
                "n_runs": len(subject), "n_evaluable": len(ok), "n_nonvacuous": nonvacuous,
                "ratio_max": float(ratio.max()) if len(ratio) else np.nan,
                "bound_median": float(ok[f"{quantity}_bound"].median()) if testable else np.nan,
            })  # fmt: skip
    return rows


def _lambda_gaps(runs: pd.DataFrame) -> np.ndarray:
    """Per run, max_i |lambda_i(T) - lambda*_i| (lambda* of the train prompts; NaN columns of absent constraints)."""
    m = sum(c.startswith("lam_final_") for c in runs.columns)
    final = runs[[f"lam_final_{i + 1}" for i in range(m)]].to_numpy(float)
    star = runs[[f"lam_star_train_{i + 1}" for i in range(m)]].to_numpy(float)
    return np.nanmax(np.abs(final - star), axis=1)


def _lambda_row(runs: pd.DataFrame) -> dict[str, object] | None:
    caid = runs[runs["method"] == "caid_exact"]
    if caid.empty:
        return None
    gap = _lambda_gaps(caid)
    return {"claim": "CAID's lambda reaches the train lambda*", "setting": "all", "method": "caid_exact",
            "test": f"exact: max_i |lambda_i(T) - lambda*_i| <= {LAMBDA_TOLERANCE:g}", "estimate": float(gap.max()),
            "low": float(gap.min()), "high": float(gap.max()),
            "verdict": "replicated" if gap.max() <= LAMBDA_TOLERANCE else "refuted", "size": 0.0, "power": 1.0}


def rung_verdicts(folder: Path, rung: Rung, rung_runs: pd.DataFrame) -> pd.DataFrame:
    """One rung's verdicts (module docstring) from its folder and its runs (with the theorem columns)."""
    table = verdicts(folder)
    table = table[~table["claim"].str.startswith(("U-OPT", "R-OPT"))]
    extra = _theorem_rows(rung_runs)
    if rung.fit is Fitting.EXACT:
        extra.append(_lambda_row(rung_runs))
    table = pd.concat([table, pd.DataFrame([r for r in extra if r is not None])], ignore_index=True)
    if "size" not in table.columns:
        table["size"] = np.nan
    method_runs = rung_runs[rung_runs["method"].isin(METHOD_RUNS)]
    table.insert(0, "nu_1_max", float(method_runs["nu_1_max"].median()))
    table.insert(0, "rung", rung.name)
    table["policy_class"], table["fit"], table["budget"] = rung.class_name, rung.fit.value, rung.budget
    table["iterations"] = rung.caid_iterations
    table["claim_nu_1_max"] = [
        float(method_runs.loc[method_runs["method"].isin(_claim_methods(m)) & (
            (method_runs["setting"] == s) | s.startswith("all")), "nu_1_max"].median())
        for m, s in zip(table["method"], table["setting"], strict=True)
    ]  # fmt: skip
    write_atomic(Path(folder) / RUNG_VERDICTS, table.to_csv(index=False))
    return table


def dial_verdicts(out: Path, dial: DialConfig, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every rung's verdicts, one row per rung and claim (each rung's ``verdicts.csv``, computed where missing).

    ``variant_of`` names the rung whose non-CAID runs a longer-CAID rung shares (missing for the others).
    ``runs``: the dial's ``nu_dial_runs.csv`` when the caller has read it.
    """
    out = Path(out)
    runs = pd.read_csv(out / RUNS_FILE) if runs is None else runs
    frames = []
    for rung in dial.rungs:
        rung_runs = runs[runs["rung"] == rung.name]
        if rung_runs.empty:
            continue
        folder = out / DIAL_DIR / rung.name
        path = folder / RUNG_VERDICTS
        fresh = path.is_file() and path.stat().st_mtime >= (folder / "runs.csv").stat().st_mtime
        frame = pd.read_csv(path) if fresh else rung_verdicts(folder, rung, rung_runs)
        frames.append(frame.assign(variant_of=dial.variant_of(rung)))
    frame = pd.concat(frames, ignore_index=True)
    rest = [c for c in frame.columns if c not in COLUMNS]
    return frame[COLUMNS + rest]


def write_dial_verdicts(out: Path, dial: DialConfig) -> pd.DataFrame:
    """Compute the dial's verdicts and write ``nu_dial_verdicts.csv`` and the three summaries into ``out``.

    The summaries: ``nu_dial_rungs.csv`` (:func:`rung_table`), ``nu_dial_claims.csv`` (:func:`claim_table`) and
    ``nu_dial_caid.csv`` (:func:`caid_table`). Returns the verdicts.
    """
    out = Path(out)
    runs = pd.read_csv(out / RUNS_FILE)
    frame = dial_verdicts(out, dial, runs)
    write_atomic(out / VERDICTS_FILE, frame.to_csv(index=False))
    for name, table in ((RUNGS_FILE, rung_table(runs, frame)), (CLAIMS_FILE, claim_table(frame)),
                        (CAID_FILE, caid_table(runs))):  # fmt: skip
        write_atomic(out / name, table.to_csv(index=False))
    return frame


def rung_table(runs: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """One row per rung, in the dial's order: what it is, its nu, attenuation, error parts and theorems.

    Columns: ``rung, policy_class, fit, budget, iterations, variant_of``; ``nu_1`` (the rung's ``nu_1_max``, the
    median over its method runs of max_x |pi - pi*(lambda)|_1), ``nu_1_largest`` (the largest such run value),
    ``nu_kl`` (the median of max_x |KL(pi*(lambda)) - KL(pi)|); over the method runs, for g_1: the median
    ``attenuation`` and the mean ``abs_lam_error`` and ``abs_policy_error``; for U-OPT under Theorem 6 (CAID) and
    Theorem 4 (``one_shot_oracle``): the runs where the hypotheses hold (``t6_evaluable``), those whose bound is
    non-vacuous (``t6_nonvacuous``) and the largest measured / bound (``t6_ratio_max``), ``t4_*`` alike.
    """
    rows = []
    for name, rung_runs in runs.groupby("rung", sort=False):
        method_runs = rung_runs[rung_runs["method"].isin(METHOD_RUNS)]
        rung_rows = verdicts[verdicts["rung"] == name]
        first = rung_rows.iloc[0]
        row = {"rung": name, "policy_class": first["policy_class"], "fit": first["fit"], "budget": first["budget"],
               "iterations": int(first["iterations"]), "variant_of": first["variant_of"],
               "nu_1": float(first["nu_1_max"]), "nu_1_largest": float(method_runs["nu_1_max"].max()),
               "nu_kl": float(method_runs["nu_kl_max"].median()),
               "attenuation": float(method_runs["attenuation"].median()),
               "abs_lam_error": float(method_runs["lam_error"].abs().mean()),
               "abs_policy_error": float(method_runs["policy_error"].abs().mean())}  # fmt: skip
        for key, theorem in (("t6", "Theorem 6"), ("t4", "Theorem 4")):
            bound = rung_rows[rung_rows["claim"] == f"U-OPT within its {theorem} bound"].iloc[0]
            row.update({f"{key}_evaluable": int(bound["n_evaluable"]), f"{key}_nonvacuous": int(bound["n_nonvacuous"]),
                        f"{key}_ratio_max": float(bound["ratio_max"])})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def claim_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Each (claim, setting, method): its verdict on every rung, from the smallest nu up, and where it changes.

    Over the rungs that are not longer-CAID variants. Columns: ``claim, setting, method``, then one column per
    rung named by its ``nu_1`` (3 digits; the rung's name is added where two rungs round alike) holding the
    verdict's mark (:data:`VERDICT_MARKS`; empty where the rung has no such row), then ``flips``: each change
    between neighbouring rungs as ``label -> label: verdict -> verdict`` ("never" if none). A claim that holds on
    the accurate rungs and not beyond flips at the first change.
    """
    base = verdicts[verdicts["variant_of"].isna()]
    order = base.groupby("rung", sort=False)["nu_1_max"].first().sort_values(kind="stable")
    labels = [f"{nu:.3g}" for nu in order]
    labels = [f"{label} ({rung})" if labels.count(label) > 1 else label
              for label, rung in zip(labels, order.index, strict=True)]  # fmt: skip
    rows = []
    for (claim, setting, method), group in base.groupby(["claim", "setting", "method"], sort=False):
        verdict = dict(zip(group["rung"], group["verdict"], strict=True))
        row = {"claim": claim, "setting": setting, "method": method}
        row.update({label: VERDICT_MARKS[verdict[rung]] if rung in verdict else None
                    for label, rung in zip(labels, order.index, strict=True)})  # fmt: skip
        present = [(label, verdict[rung]) for label, rung in zip(labels, order.index, strict=True) if rung in verdict]
        flips = [f"{a} -> {b}: {va} -> {vb}" for (a, va), (b, vb) in itertools.pairwise(present) if va != vb]
        row["flips"] = "; ".join(flips) if flips else "never"
        rows.append(row)
    return pd.DataFrame(rows)


def caid_table(runs: pd.DataFrame) -> pd.DataFrame:
    """CAID's error per rung, setting and method, split into its lambda and policy parts (mean over seeds).

    Columns: ``rung, setting, method, iterations, seeds``; ``e_1`` (achieved_1 - b_1), ``lam_error`` and
    ``policy_error`` of g_1 (they sum to ``e_1``), ``e_2`` for two constraints; ``lambda_gap``: the largest
    max_i |lambda_i(T) - lambda*_i| over seeds (lambda* of the train prompts, the problem the dual steps see).
    """
    caid = runs[runs["method"].isin(CAID)]
    rows = []
    for (rung, setting, method), group in caid.groupby(["rung", "setting", "method"], sort=False):
        rows.append({
            "rung": rung, "setting": setting, "method": method, "iterations": int(group["iterations"].iloc[0]),
            "seeds": len(group), "e_1": float((group["achieved_1"] - group["b_1"]).mean()),
            "lam_error": float(group["lam_error"].mean()), "policy_error": float(group["policy_error"].mean()),
            "e_2": float((group["achieved_2"] - group["b_2"]).mean()) if "b_2" in group else np.nan,
            "lambda_gap": float(_lambda_gaps(group).max()),
        })  # fmt: skip
    return pd.DataFrame(rows)
