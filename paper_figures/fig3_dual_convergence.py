"""Figure 3 of the paper: convergence of the plug-in dual solution with the number of prompts and responses.

Reads ``RESULTS/dual_convergence/dual_convergence_summary.csv``, the ``summary`` table of
:func:`analysis.dual_convergence.dual_convergence` (one row per (n_prompts, k): ``n_prompts, k,
n_replicates, n_infeasible, n_failed`` and ``<q>_mean, <q>_sd, <q>_low, <q>_high`` for q in
``lambda_1..m, dual_value``). Its ``samples`` table (``dual_convergence.csv`` beside it) is not needed:
the summary holds the means and percentile bands, and no analysis function rebuilds them from samples.

Draws ``fig3_dual_convergence``: a panel per multiplier lambda*_i and one for the plug-in dual value D*,
each against the number of prompts n (log axis), a line per number of responses per prompt k with the
replicates' mean and their percentile band (the producer's ``level``, 2.5%-97.5% by default). The bands
measure how stable the solution is at size (n, k), not population uncertainty (App. C.2, Fig. 3).

Usage::

    python -m paper_figures.fig3_dual_convergence --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from paper_figures.cli import figure_entry
from paper_figures.results_files import ResultsFileError, read_results_csv
from paper_figures.style import COLUMN_WIDTH, new_figure, paper_style

NAME = "fig3_dual_convergence"
RESULTS_FILE = Path("dual_convergence") / "dual_convergence_summary.csv"


# Columns the figure and the report read besides the lambda_i_* ones.
_COUNTS = ("n_prompts", "k", "n_replicates", "n_infeasible", "n_failed")
_DUAL = ("dual_value_mean", "dual_value_low", "dual_value_high")


def load_summary(results_dir: Path | str) -> pd.DataFrame:
    """The dual-convergence summary table, checked to hold every column the figure and the report read.

    Raises:
        FileNotFoundError: If it is missing; the message names what writes it.
        paper_figures.results_files.ResultsFileError: If it is empty, truncated, header-only, lacks a column,
            or a column holds no numbers.
    """
    path = Path(results_dir) / RESULTS_FILE
    fix = (
        f"produce it with `python -m analysis.dual_convergence --config <config> --out {path.parent}` "
        "(or analysis.dual_convergence.write_study of dual_convergence_from_cache(...)); delete a broken file first"
    )
    header = read_results_csv(path, fix=fix, complete=_COUNTS, numeric=_DUAL).columns
    lambdas = [c.removesuffix("_mean") for c in header if c.startswith("lambda_") and c.endswith("_mean")]
    if not lambdas:
        raise ResultsFileError(path, "no lambda_<i>_mean column", fix)
    bands = [f"{q}_{s}" for q in lambdas for s in ("mean", "low", "high")]
    return read_results_csv(path, fix=fix, complete=_COUNTS, numeric=[*_DUAL, *bands])


def _draw_quantity(ax: Axes, summary: pd.DataFrame, name: str) -> None:
    for i, (k, part) in enumerate(summary.groupby("k", sort=True)):
        part = part.sort_values("n_prompts")
        color = f"C{i}"
        ax.plot(part["n_prompts"], part[f"{name}_mean"], marker="o", color=color, label=f"k = {k}")
        ax.fill_between(part["n_prompts"], part[f"{name}_low"], part[f"{name}_high"], color=color, alpha=0.2)
    ax.set_xscale("log")
    ticks = sorted(summary["n_prompts"].unique())
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("number of prompts n")


def draw(results_dir: Path | str) -> Figure:
    """Fig. 3 from ``results_dir/dual_convergence``, unsaved (its artists hold the plotted data).

    Raises:
        FileNotFoundError: If the summary CSV is missing.
        paper_figures.results_files.ResultsFileError: If it is unusable (see :func:`load_summary`).
    """
    summary = load_summary(results_dir)
    lambdas = sorted(
        c.removesuffix("_mean") for c in summary.columns if c.startswith("lambda_") and c.endswith("_mean")
    )
    panels = [*((q, rf"$\lambda^\star_{q.split('_')[1]}$") for q in lambdas), ("dual_value", r"$D^\star$")]
    unsolved = int((summary["n_infeasible"] + summary["n_failed"]).sum())
    replicates = "/".join(str(v) for v in sorted(summary["n_replicates"].unique()))
    with paper_style():
        fig = new_figure(width=1.1 * COLUMN_WIDTH * len(panels), height=2.8)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (name, label) in zip(axes, panels, strict=True):
            _draw_quantity(ax, summary, name)
            ax.set_ylabel(f"plug-in {label}")
        fig.legend(
            *axes[0].get_legend_handles_labels(),
            loc="outside lower center",
            ncol=summary["k"].nunique(),
            title="responses per prompt",
        )
        note = f"; {unsolved} infeasible or failed subsamples left out" if unsolved else ""
        fig.suptitle(
            f"Fig. 3: plug-in dual solution vs prompts n and responses k; mean and percentile band over "
            f"{replicates} subsamples{note}",
            fontsize=8,
        )
    return fig


make_figure, main = figure_entry(NAME, __doc__, draw)


if __name__ == "__main__":
    sys.exit(main())
