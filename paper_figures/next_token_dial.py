"""The nu dial (``python -m analysis.next_token``): each claim's statistic against the measured parametrization gap.

Reads ``RESULTS/next_token/nu_dial_verdicts.csv`` and ``nu_dial_runs.csv`` and draws ``next_token_dial``:

* one panel per claim of the laboratory's claims table: the row's estimate against its rung's nu_1 (the median
  over the rung's method runs of max_x |pi - pi*(lambda)|_1, log scale; the exact tilt, nu = 0, is drawn at
  the left edge), coloured by verdict; the longer-CAID variants (T = 16) are drawn hollow;
* the attenuation of every run (achieved improvement of g_1 over the exact tilt's at the run's lambda)
  against its own nu_1, by rung fit (exact, lagrangian, dpo), with the multi-token study's median attenuation
  per method as horizontal lines where ``RESULTS/multi_token/points.csv`` has it (the study does not measure nu:
  where a line crosses the laboratory's cloud is the nu at which the laboratory attenuates alike);
* the error decomposition: |lam_error| and |policy_error| of g_1 against nu_1 (mean over runs per rung);
* measured / bound of Theorems 6 and 4 against nu_1, where the hypotheses hold.

Usage::

    python -m paper_figures.next_token_dial --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from llm.methods import COMPARED
from paper_figures.cli import figure_entry
from paper_figures.next_token import producer_args
from paper_figures.results_files import read_results_csv
from paper_figures.style import COLUMN_WIDTH, new_figure

__all__ = ["NAME", "RESULTS_FILE", "draw", "load_dial", "load_summaries", "make_figure", "producer_args",
           "study_attenuation"]

NAME = "next_token_dial"
RESULTS_SUBDIR = Path("next_token")
RESULTS_FILE = RESULTS_SUBDIR / "nu_dial_verdicts.csv"
RUNS_FILE = RESULTS_SUBDIR / "nu_dial_runs.csv"
RUNGS_FILE, CLAIMS_FILE, CAID_FILE = "nu_dial_rungs.csv", "nu_dial_claims.csv", "nu_dial_caid.csv"
"""The summaries of :func:`analysis.next_token.dial_verdicts.write_dial_verdicts` (in ``RESULTS/next_token``)."""
STUDY_POINTS = Path("multi_token") / "points.csv"
SHORTFALL_SETTINGS = ("g1@0.8", "g1@0.6+g2@0.3")
"""Where the quick laboratory's CAID (DPO in the last MLP, T = 4) fell short of b by about 0.28 σ."""
_FIX = "rerun `python -m analysis.next_token --quick --out <results>/next_token` (it resumes)"
VERDICT_COLORS = {"replicated": "tab:green", "refuted": "tab:red", "undecided": "tab:gray",
                  "not testable": "white", "descriptive": "tab:blue"}
FIT_COLORS = {"exact": "black", "lagrangian": "tab:blue", "dpo": "tab:orange"}
NU_FLOOR = 1e-4
"""Where nu = 0 (the exact tilt) is drawn on the log axis."""


def load_dial(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(verdicts, runs)`` of the nu dial, validated.

    Raises:
        FileNotFoundError: A file is missing.
        paper_figures.results_files.ResultsFileError: A file is unusable (the message names it and the fix).
    """
    results_dir = Path(results_dir)
    verdicts = read_results_csv(results_dir / RESULTS_FILE, fix=_FIX,
                                columns=("rung", "nu_1_max", "claim", "setting", "method", "verdict", "variant_of"),
                                numeric=("nu_1_max",), optional=("estimate", "low", "high"))
    runs = read_results_csv(results_dir / RUNS_FILE, fix=_FIX, columns=("rung", "fit", "method", "nu_1_max"),
                            numeric=("nu_1_max",), optional=("attenuation", "lam_error", "policy_error"))
    return verdicts, runs


def load_summaries(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(rungs, claims, caid)``: the dial's three summaries (:mod:`analysis.next_token.dial_verdicts`), validated.

    Raises:
        FileNotFoundError: A file is missing.
        paper_figures.results_files.ResultsFileError: A file is unusable (the message names it and the fix).
    """
    folder = Path(results_dir) / RESULTS_SUBDIR
    rungs = read_results_csv(folder / RUNGS_FILE, fix=_FIX, columns=("rung", "fit", "budget", "iterations"),
                             numeric=("nu_1", "nu_1_largest", "nu_kl", "attenuation", "abs_lam_error",
                                      "abs_policy_error", "t6_evaluable", "t4_evaluable"),
                             optional=("t6_ratio_max", "t4_ratio_max"))  # fmt: skip
    claims = read_results_csv(folder / CLAIMS_FILE, fix=_FIX, columns=("claim", "setting", "method", "flips"))
    caid = read_results_csv(folder / CAID_FILE, fix=_FIX, columns=("rung", "setting", "method"),
                            numeric=("iterations", "seeds", "e_1", "lam_error", "policy_error", "lambda_gap"),
                            optional=("e_2",))
    return rungs, claims, caid


def study_attenuation(results_dir: Path) -> pd.DataFrame:
    """Median attenuation of g_1 per compared method (CAID, one-shot) over the study's single-constraint runs.

    The study estimates the tilt's improvement on its reference pool (K responses per held-out prompt) by
    self-normalised weights, which underestimate it when K is small, so these medians are biased upwards.

    Empty when the study's ``points.csv`` is missing or predates its attenuation columns
    (:func:`analysis.multi_token_study.points`).
    """
    path = Path(results_dir) / STUDY_POINTS
    fix = "rerun `python -m analysis.multi_token_study` (it reuses finished runs)"
    points = (read_results_csv(path, fix=fix, columns=("method", "constraints"), optional=("attenuation_1",))
              if path.is_file() else None)  # fmt: skip
    if points is None or "attenuation_1" not in points:
        return pd.DataFrame(columns=["method", "attenuation", "runs"])
    trained = points[(points["constraints"] == 1) & points["method"].isin(COMPARED) & points["attenuation_1"].notna()]
    return (trained.groupby("method", sort=False)["attenuation_1"].agg(["median", "size"])
            .reset_index().rename(columns={"median": "attenuation", "size": "runs"}))  # fmt: skip


def _nu(values: pd.Series) -> np.ndarray:
    return np.maximum(values.to_numpy(float), NU_FLOOR)


def draw(results_dir: Path) -> Figure:
    """Draw the dial's panels from ``results_dir``."""
    verdicts, runs = load_dial(results_dir)
    finite = np.isfinite(verdicts["estimate"])
    claims = [c for c in dict.fromkeys(verdicts["claim"]) if finite[verdicts["claim"] == c].any()]
    n_panels = len(claims) + 3
    cols = 4
    rows = int(np.ceil(n_panels / cols))
    fig = new_figure(width=2.5 * COLUMN_WIDTH, height=1.7 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, claim in zip(axes, claims, strict=False):
        part = verdicts[(verdicts["claim"] == claim) & np.isfinite(verdicts["estimate"])]
        for verdict, group in part.groupby("verdict"):
            color = VERDICT_COLORS.get(str(verdict), "tab:purple")
            hollow = group["variant_of"].notna()
            ax.scatter(_nu(group.loc[~hollow, "nu_1_max"]), group.loc[~hollow, "estimate"], s=6, color=color,
                       edgecolor="black", linewidth=0.2, label=str(verdict))
            ax.scatter(_nu(group.loc[hollow, "nu_1_max"]), group.loc[hollow, "estimate"], s=6, facecolor="none",
                       edgecolor=color, linewidth=0.6)
        ax.set_xscale("log")
        ax.axhline(0, color="k", lw=0.4, ls=":")
        ax.set_title(claim if len(claim) < 40 else claim[:38] + "…", fontsize=6)
        ax.set_xlabel("ν₁ of the rung", fontsize=6)
    handles = {}
    for ax in axes[: len(claims)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    ax = axes[len(claims)]
    for fit, group in runs[runs["attenuation"].notna()].groupby("fit"):
        ax.scatter(_nu(group["nu_1_max"]), group["attenuation"], s=3, color=FIT_COLORS.get(str(fit), "tab:purple"),
                   label=str(fit), alpha=0.6)
    for (_, study), style in zip(study_attenuation(results_dir).iterrows(), ("--", "-.", ":", (0, (1, 3))),
                                 strict=False):  # fmt: skip
        ax.axhline(study["attenuation"], color="tab:green", lw=0.7, ls=style,
                   label=f"multi-token {study['method']} (median of {study['runs']}; SNIS, biased up)")
    ax.set(xscale="log", xlabel="ν₁ of the run", ylabel="achieved / tilt (g₁)", title="attenuation")
    ax.set_ylim(-1, 2)
    ax.legend(fontsize=5)
    ax = axes[len(claims) + 1]
    per_rung = runs[runs["lam_error"].notna()].groupby("rung").agg(
        nu=("nu_1_max", "median"), lam=("lam_error", lambda v: np.abs(v).mean()),
        pol=("policy_error", lambda v: np.abs(v).mean()))
    ax.scatter(_nu(per_rung["nu"]), per_rung["lam"], s=8, marker="s", color="tab:purple", label="|λ error|")
    ax.scatter(_nu(per_rung["nu"]), per_rung["pol"], s=8, marker="o", color="tab:orange", label="|policy error|")
    ax.set(xscale="log", xlabel="ν₁ of the rung", ylabel="mean |error| of g₁ (σ)", title="e = λ error + policy error")
    ax.legend(fontsize=5)
    ax = axes[len(claims) + 2]
    theorems = runs[np.isfinite(runs.get("u_opt_bound", pd.Series(dtype=float)).astype(float))]
    positive = False
    for theorem, marker in (("Theorem 6", "o"), ("Theorem 4", "D")):
        part = theorems[theorems.get("theorem", pd.Series(dtype=str)) == theorem]
        ratio = (part["u_opt"] / part["u_opt_bound"].where(part["u_opt_bound"] > 0)).to_numpy(float)
        keep = np.isfinite(ratio) & (ratio > 0)
        if keep.any():
            positive = True
            ax.scatter(_nu(part["nu_bar"])[keep], ratio[keep], s=4, marker=marker, label=f"U-OPT, {theorem}")
    ax.set(xlabel="ν̄ (rung, setting)", ylabel="measured / bound", title="theorems")
    if positive:  # a log axis needs a positive value
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=5)
    ax.axhline(1, color="k", lw=0.4, ls=":")
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center", ncol=5, fontsize=6)
    return fig


make_figure, main = figure_entry(NAME, __doc__, draw)


if __name__ == "__main__":
    sys.exit(main())
