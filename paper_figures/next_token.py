"""Figures of the exact real-model laboratory (``python -m analysis.next_token``): SmolLM2's one-token responses.

Reads ``RESULTS/next_token/runs.csv`` (+ ``optima.csv`` and ``runs/*.npz``) and draws ``next_token``, five
exact panels (no sampling noise in evaluation; error bars are the SD over DPO seeds):

(a) analogue of Fig. 1(a): achieved improvement of g_1 against the threshold b, CAID (exact / sampled dual
    steps) and one-shot (plug-in / exact lambda*), with the diagonal;
(b) analogue of Fig. 1(b): reward improvement against g_1 improvement (trade-off), with DPO_h and DPO_g;
(c) analogue of Fig. 2: both constraints' achieved improvement against b for the two-constraint runs;
(d) CAID's lambda trajectories against the exact lambda* of each threshold (dotted);
(e) measured U-OPT against its Theorem 6 bound (runs whose bound's hypotheses allow evaluating it).

Usage::

    python -m paper_figures.next_token --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.next_token.arms import Arm
from llm.methods import COMPARED
from paper_figures.cli import figure_command
from paper_figures.multi_token import TABLE_COLUMNS
from paper_figures.results_files import read_results_csv
from paper_figures.style import COLUMN_WIDTH, new_figure, paper_style, save_figure

NAME = "next_token"
RESULTS_SUBDIR = Path("next_token")
RESULTS_FILE = RESULTS_SUBDIR / "verdicts.csv"
VIOLATIONS_FILE = RESULTS_SUBDIR / "violations.csv"
_FIX = "rerun `python -m analysis.next_token --quick --out <results>/next_token` (it resumes)"
STYLES = {arm.value: arm.style for arm in Arm}


def producer_args(results_dir: Path, scale: str = "full") -> list[str]:
    """The Python arguments of the command that writes this figure's input under ``results_dir``."""
    args = ["-m", "analysis.next_token", "--out", str(results_dir / RESULTS_SUBDIR)]
    return [*args, "--quick"] if scale == "quick" else args


def load_runs(run_dir: Path) -> pd.DataFrame:
    """The per-run table.

    Raises:
        FileNotFoundError: The table is missing; the message names the command that writes it.
    """
    path = Path(run_dir) / "runs.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: produce it with `python -m analysis.next_token --quick --out {run_dir}`"
        )
    return pd.read_csv(path)


def load_verdicts(results_dir: Path) -> pd.DataFrame:
    """The laboratory's claims table (``verdicts.csv``), validated, for the report.

    Raises:
        FileNotFoundError: The file is missing.
        paper_figures.results_files.ResultsFileError: The file is unusable (the message names it and the fix).
    """
    frame = read_results_csv(Path(results_dir) / RESULTS_FILE, fix=_FIX, columns=("claim", "verdict", "reason"),
                             numeric=("estimate",), optional=("low", "high", "size", "power", "coverage", "df", "se",
                                                              "effect"))  # fmt: skip
    return frame[list(TABLE_COLUMNS)].assign(reason=frame["reason"].fillna(""))


def load_violations(results_dir: Path) -> pd.DataFrame:
    """``violations.csv``: per method, setting and constraint the share of prompts missing b and the quantiles."""
    return read_results_csv(Path(results_dir) / VIOLATIONS_FILE, fix=_FIX, columns=("method", "setting"),
                            numeric=("b", "mean", "share_missing_b", "q10", "q90"))  # fmt: skip


def draw_run(run_dir: Path, out_dir: Path | str) -> list[Path]:
    """Draw the five panels from one laboratory folder."""
    runs = load_runs(run_dir)
    single = runs[runs["setting"].str.count("@") == 1]
    double = runs[runs["setting"].str.count("@") == 2]
    with paper_style():
        fig = new_figure(width=2.5 * COLUMN_WIDTH, height=2.4)
        ax = fig.subplots(1, 5)
        for method, (color, marker, label) in STYLES.items():
            rows = single[single["method"] == method]
            if rows.empty:
                continue
            agg = rows.groupby("b_1").agg(g=("improvement_1", "mean"), sd=("improvement_1", "std"),
                                          r=("reward_improvement", "mean"))
            if Arm(method).method.key in COMPARED:
                ax[0].errorbar(agg.index, agg["g"], agg["sd"], color=color, marker=marker, ms=3, label=label)
            ax[1].plot(agg["g"], agg["r"], color=color, marker=marker, ms=3, ls="-" if len(agg) > 1 else "")
        lim = [0, float(single["b_1"].max()) * 1.1]
        ax[0].plot(lim, lim, "k:", lw=0.8)
        ax[0].set(xlabel="b (σ)", ylabel="achieved E g₁ − E_ref g₁ (σ)", title="(a) tracking b")
        ax[1].set(xlabel="g₁ improvement (σ)", ylabel="reward improvement (σ)", title="(b) trade-off")
        for method in ("caid_exact", "one_shot_plugin"):
            color, marker, _ = STYLES[method]
            rows = double[double["method"] == method].groupby("setting")[["b_1", "b_2", "improvement_1",
                                                                          "improvement_2"]].mean()
            ax[2].scatter(rows["b_1"], rows["improvement_1"], color=color, marker=marker, s=12)
            ax[2].scatter(rows["b_2"], rows["improvement_2"], facecolor="none", edgecolor=color, marker=marker, s=12)
        lim2 = [0, float(np.nanmax(double[["b_1", "b_2"]].to_numpy())) * 1.1] if len(double) else [0, 1]
        ax[2].plot(lim2, lim2, "k:", lw=0.8)
        ax[2].set(xlabel="b_i (σ)", ylabel="achieved (filled g₁, open g₂)", title="(c) two constraints")
        for i, (setting, rows) in enumerate(single[single["method"] == "caid_exact"].groupby("setting")):
            color = f"C{i}"
            for run_id in rows["run_id"]:
                with np.load(Path(run_dir) / "runs" / f"{run_id}.npz", allow_pickle=False) as data:
                    ax[3].plot(data["trajectory"][:, 0], color=color, lw=0.8, alpha=0.7)
            ax[3].axhline(float(rows["lam_star_1"].iloc[0]), color=color, ls=":", lw=1, label=setting)
        ax[3].set(xlabel="dual iteration t", ylabel="λ₁(t)", title="(d) λ vs exact λ*")
        ax[3].legend(fontsize=5)
        ok = runs[np.isfinite(runs.get("u_opt_bound", pd.Series(dtype=float)).astype(float))]
        ax[4].loglog(ok["u_opt_bound"], ok["u_opt"], "o", ms=2, color="tab:red")
        lo, hi = 1e-3, float(max(ok["u_opt_bound"].max(), 1.0)) if len(ok) else 1.0
        ax[4].plot([lo, hi], [lo, hi], "k:", lw=0.8)
        ax[4].set(xlabel="Theorem 6 bound", ylabel="measured U-OPT", title="(e) gap vs bound")
        fig.legend(*ax[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=6)
        return save_figure(fig, out_dir, NAME)


def make_figure(results_dir: Path | str, out_dir: Path | str) -> list[Path]:
    """Draw the laboratory's figure from ``results_dir/next_token``."""
    return draw_run(Path(results_dir) / RESULTS_SUBDIR, out_dir)


main = figure_command(NAME, __doc__, make_figure)


if __name__ == "__main__":
    sys.exit(main())
