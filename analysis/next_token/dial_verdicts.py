"""The verdicts of the nu dial: each claim decided on every rung, next to the rung's measured nu.

Every rung folder ``nu_dial/<rung>/`` holds its runs in the laboratory's format, so the laboratory's own
claims and tests (:func:`analysis.next_token.verdicts.verdicts`, statistics in :mod:`analysis.decisions`)
decide them rung by rung. Its bound rows (which apply Theorem 6 to every run at the run's own nu) are
replaced by the dial's (:func:`analysis.next_token.nu_dial.theorem_columns`):

* ``U-OPT within its Theorem 6 bound`` / ``R-OPT ...``: CAID runs (exact and sampled dual steps);
* ``U-OPT within its Theorem 4 bound`` / ``R-OPT ...``: ``one_shot_oracle`` (one-shot at lambda*);

each replicated when every run where the theorem's hypotheses hold is within its bound (up to the solver's
accuracy), with the largest measured/bound ratio over those runs (estimate and high; low is the smallest), the
number of such runs and how many of their bounds are non-vacuous (below the same quantity measured for
pi_ref); "not testable" where no run satisfies the hypotheses. On the exact
rungs, ``CAID's lambda reaches the train lambda*`` compares lambda(T) of exact dual steps with the
train prompts' lambda* (within 1e-3). These rows are exact (no sampling): size 0, power 1.

A rung's ``nu_1_max`` is the median over its method runs (one-shot, CAID, oracle) of each run's
``max_x |pi - pi*(lambda)|_1``; ``claim_nu_1_max`` is the same median over the runs a row compares.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.next_token.rungs import CAID, ORACLE, DialConfig, Fitting, Rung
from analysis.next_token.verdicts import verdicts
from llm.run_files import write_atomic

__all__ = [
    "DIAL_DIR", "LAMBDA_TOLERANCE", "RUNS_FILE", "VERDICTS_FILE", "dial_verdicts", "flip_table", "rung_verdicts",
    "write_dial_verdicts",
]

DIAL_DIR = "nu_dial"
"""The dial's folder in the laboratory's output (one sub-folder per rung)."""
RUNS_FILE = "nu_dial_runs.csv"
VERDICTS_FILE = "nu_dial_verdicts.csv"
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
            within = ok[quantity] <= ok[f"{quantity}_bound"] + EXACT_TOLERANCE
            ratio = (ok[quantity] / ok[f"{quantity}_bound"])[ok[f"{quantity}_bound"] > EXACT_TOLERANCE]
            nonvacuous = int(ok[quantity.replace("opt", "nonvacuous")].astype(bool).sum())
            verdict = "not testable" if ok.empty else "replicated" if within.all() else "refuted"
            rows.append({
                "claim": f"{quantity.upper().replace('_', '-')} within its {theorem} bound", "setting": "all",
                "method": ", ".join(methods), "test": "exact: measured / bound",
                "estimate": float(ratio.max()) if len(ratio) else np.nan,
                "low": float(ratio.min()) if len(ratio) else np.nan,
                "high": float(ratio.max()) if len(ratio) else np.nan, "verdict": verdict,
                "size": 0.0, "power": 1.0 if len(ratio) else 0.0, "n_runs": len(subject), "n_evaluable": len(ok),
                "n_nonvacuous": nonvacuous,
                "bound_median": float(ok[f"{quantity}_bound"].median()) if len(ok) else np.nan,
            })  # fmt: skip
    return rows


def _lambda_row(runs: pd.DataFrame) -> dict[str, object] | None:
    caid = runs[runs["method"] == "caid_exact"]
    if caid.empty:
        return None
    m = sum(c.startswith("lam_final_") for c in runs.columns)
    gaps = [np.nanmax(np.abs(caid[[f"lam_final_{i + 1}" for i in range(m)]].to_numpy(float)
                             - caid[[f"lam_star_train_{i + 1}" for i in range(m)]].to_numpy(float)), axis=1)]
    gap = np.concatenate(gaps)
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


def dial_verdicts(out: Path, dial: DialConfig) -> pd.DataFrame:
    """Every rung's verdicts, one row per rung and claim (each rung's ``verdicts.csv``, computed where missing)."""
    out = Path(out)
    runs = pd.read_csv(out / RUNS_FILE)
    frames = []
    for rung in dial.rungs:
        rung_runs = runs[runs["rung"] == rung.name]
        if rung_runs.empty:
            continue
        folder = out / DIAL_DIR / rung.name
        path = folder / RUNG_VERDICTS
        fresh = path.is_file() and path.stat().st_mtime >= (folder / "runs.csv").stat().st_mtime
        frames.append(pd.read_csv(path) if fresh else rung_verdicts(folder, rung, rung_runs))
    frame = pd.concat(frames, ignore_index=True)
    rest = [c for c in frame.columns if c not in COLUMNS]
    return frame[COLUMNS + rest]


def write_dial_verdicts(out: Path, dial: DialConfig) -> pd.DataFrame:
    """Compute the dial's verdicts and write ``nu_dial_verdicts.csv`` into ``out``."""
    frame = dial_verdicts(out, dial)
    write_atomic(Path(out) / VERDICTS_FILE, frame.to_csv(index=False))
    return frame


def flip_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Each (claim, setting, method): its verdict on every rung in order of nu, and where the verdict changes.

    Returns:
        One row per (claim, setting, method) with ``verdicts`` (``nu_1_max: verdict`` from the smallest nu up)
        and ``flips_at`` (the nu_1_max of each rung whose verdict differs from the previous rung's), over the
        rungs with the laboratory's CAID iterations (the T = 16 rungs are compared separately).
    """
    rows = []
    base = frame[frame["iterations"] == frame["iterations"].min()]
    for (claim, setting, method), group in base.groupby(["claim", "setting", "method"], sort=False):
        group = group.sort_values("nu_1_max")
        verdicts_ = list(group["verdict"])
        nus = list(group["nu_1_max"])
        flips = [f"{nus[i]:.3g}" for i in range(1, len(verdicts_)) if verdicts_[i] != verdicts_[i - 1]]
        rows.append({"claim": claim, "setting": setting, "method": method,
                     "verdicts": "; ".join(f"{n:.3g}: {v}" for n, v in zip(nus, verdicts_, strict=True)),
                     "flips_at": ", ".join(flips) if flips else "never"})
    return pd.DataFrame(rows)
