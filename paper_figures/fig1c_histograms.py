"""Figure 1(c) of the paper: score histograms before and after alignment at one threshold.

Reads the single-constraint LLM sweep ``RESULTS/llm_sweep/single/<run>/`` (one finished ``python -m llm run``
directory per method and threshold, holding ``summary.json``, ``eval_scores.csv``, ``dual_trajectory.csv``
and ``config.json``; layout in :mod:`paper_figures.fig1a_expected_vs_actual`). Runs are found with
:func:`analysis.statistics.collect_runs` and binned with :func:`analysis.statistics.score_histograms`.

Draws ``fig1c_histograms``: a row per method (multi-shot CAID on top, one-shot below) and a column per
scorer (the reward, e.g. helpfulness, left; the first utility, e.g. safety, right), each panel the held-out
scores of pi_ref (before, blue) and of the aligned policy (after, red) on common bins, titled with the mean
improvement and its 95% CI. The threshold is an argument of :func:`make_figure`; by default the median of
the thresholds that both methods ran (the lower middle one for an even count), b = 5 in the paper (Sec. 4.2,
Fig. 1(c)).

Usage::

    python -m paper_figures.fig1c_histograms --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.statistics import score_histograms
from llm.methods import REGISTRY
from paper_figures.cli import figure_command
from paper_figures.fig1a_expected_vs_actual import RESULTS_SUBDIR, SWEEP_METHODS, load_sweep
from paper_figures.style import COLUMN_WIDTH, new_figure, paper_style, save_figure

NAME = "fig1c_histograms"
BINS = 30
# (column of score_histograms, legend label, colour) of the two histograms of a panel.
SERIES = (("reference", r"before ($\pi_{\rm ref}$)", "tab:blue"), ("policy", "after (aligned)", "tab:red"))


def default_threshold(table: pd.DataFrame) -> float:
    """The median of the first-utility thresholds run by every method of :data:`SWEEP_METHODS`.

    Raises:
        ValueError: If no threshold was run by all of them.
    """
    rows = table[table["constraint"] == 1]
    common = sorted(set.intersection(*(set(rows.loc[rows["method"] == m, "threshold"]) for m in SWEEP_METHODS)))
    if not common:
        raise ValueError(f"no threshold was run by every method of {SWEEP_METHODS}; pass threshold=")
    return float(common[(len(common) - 1) // 2])


def _draw_panel(ax: Axes, bins: pd.DataFrame, improvement: pd.Series) -> None:
    for column, label, color in SERIES:
        ax.stairs(bins[column], [*bins["bin_low"], bins["bin_high"].iloc[-1]], fill=True, alpha=0.35, color=color)
        ax.stairs(bins[column], [*bins["bin_low"], bins["bin_high"].iloc[-1]], color=color, label=label)
    ax.set_title(
        f"{improvement['scorer']}: Δ = {improvement['mean']:.3g} [{improvement['ci_low']:.3g}, "
        f"{improvement['ci_high']:.3g}]"
    )
    ax.set_xlabel(f"{improvement['scorer']} score")


def draw(results_dir: Path | str, threshold: float | None = None) -> Figure:
    """Fig. 1(c) from ``results_dir/llm_sweep/single``, unsaved (its artists hold the plotted data).

    Args:
        results_dir: The results directory.
        threshold: b of the runs to draw (default: :func:`default_threshold`). Where a method has several
            runs at b, the first by directory name is drawn.

    Raises:
        FileNotFoundError: If the sweep folder holds no finished runs.
        paper_figures.results_files.ResultsFileError: If a run's files are unusable.
        ValueError: If a method has no run at ``threshold``.
    """
    table = load_sweep(results_dir, RESULTS_SUBDIR)
    b = default_threshold(table) if threshold is None else float(threshold)
    with paper_style():
        fig = new_figure(width=2 * COLUMN_WIDTH, height=4.2)
        axes = fig.subplots(len(SWEEP_METHODS), 2, squeeze=False)
        n_prompts = set()
        for row_axes, method in zip(axes, SWEEP_METHODS, strict=True):
            runs = table[(table["method"] == method) & (table["constraint"] == 1) & (table["threshold"] == b)]
            if runs.empty:
                raise ValueError(f"{Path(results_dir) / RESULTS_SUBDIR}: no {method} run at threshold b = {b:g}")
            run = runs.sort_values("run", kind="stable").iloc[0]["run"]
            rows = table[table["run"] == run]
            histograms = score_histograms(rows["path"].iloc[0], bins=BINS)
            n_prompts.update(int(n) for n in rows["n_prompts"])
            # The reward (first scorer) and the first utility.
            for ax, (_, improvement) in zip(row_axes, rows.head(2).iterrows(), strict=True):
                _draw_panel(ax, histograms[histograms["scorer"] == improvement["scorer"]], improvement)
            row_axes[0].set_ylabel(f"{REGISTRY[method].label}\nsamples")
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=len(SERIES))
        n = "/".join(str(v) for v in sorted(n_prompts))
        fig.suptitle(f"Fig. 1(c): held-out scores before and after alignment, b = {b:g} (Δ: 95% t-CI, n = {n} prompts)")
    return fig


def make_figure(results_dir: Path | str, out_dir: Path | str, threshold: float | None = None) -> list[Path]:
    """Draw Fig. 1(c) (:func:`draw`) at ``threshold`` into ``out_dir``; return the PNG and PDF paths."""
    with paper_style():
        return save_figure(draw(results_dir, threshold), out_dir, NAME)


main = figure_command(NAME, __doc__, make_figure)


if __name__ == "__main__":
    sys.exit(main())
