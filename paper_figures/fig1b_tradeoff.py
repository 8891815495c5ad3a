"""Figure 1(b) of the paper: the empirical reward-utility (helpfulness-safety) trade-off of the sweep.

Reads the single-constraint LLM sweep ``RESULTS/llm_sweep/single/<run>/`` (one finished ``python -m llm run``
directory per method and threshold, holding ``summary.json``, ``eval_scores.csv``, ``dual_trajectory.csv``
and ``config.json``; layout in :mod:`paper_figures.fig1a_expected_vs_actual`). Improvements and 95% CIs
are recomputed from ``eval_scores.csv`` with :func:`analysis.statistics.collect_runs`.

Draws ``fig1b_tradeoff``: x = actual improvement of the first utility (safety), y = actual improvement of the
reward (helpfulness), both with 95% CI error bars; the runs of multi-shot (CAID) and one-shot connected in
threshold order and labelled with b, their empirical Pareto fronts
(:func:`analysis.pareto.pareto_front`) drawn as wide translucent lines, and the single points DPO_h
(``dpo_h``) and DPO_g (``dpo_g``, the paper's DPO_s) where present (paper Sec. 4.2, Fig. 1(b)).

Usage::

    python -m paper_figures.fig1b_tradeoff --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.pareto import pareto_front
from llm.methods import DPO_BASELINES, REGISTRY
from paper_figures.cli import figure_entry
from paper_figures.fig1a_expected_vs_actual import (
    RESULTS_SUBDIR,
    SWEEP_METHODS,
    ci_errors,
    load_sweep,
    prompts_note,
)
from paper_figures.style import COLUMN_WIDTH, new_figure, paper_style

NAME = "fig1b_tradeoff"
# Single-point baselines: trained on the reward alone (DPO_h) or the utility alone (DPO_g).
BASELINES = DPO_BASELINES


def tradeoff_points(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its method, threshold b and the reward and first-utility improvements with CIs.

    Args:
        table: :func:`analysis.statistics.collect_runs` rows of a sweep.

    Returns:
        Columns ``run, method, threshold, utility_mean, utility_ci_low, utility_ci_high, reward_mean,
        reward_ci_low, reward_ci_high``, sorted by method and threshold.
    """
    stats = ["mean", "ci_low", "ci_high"]
    utility = table[table["constraint"] == 1].set_index("run")[["method", "threshold", *stats]]
    reward = table[table["role"] == "reward"].set_index("run")[stats]
    points = utility.rename(columns={s: f"utility_{s}" for s in stats}).join(
        reward.rename(columns={s: f"reward_{s}" for s in stats})
    )
    return points.reset_index().sort_values(["method", "threshold", "run"], kind="stable", ignore_index=True)


def _errors(points: pd.DataFrame, prefix: str) -> np.ndarray:
    """:func:`ci_errors` of the ``<prefix>_mean/ci_low/ci_high`` columns."""
    return ci_errors(points, f"{prefix}_mean", f"{prefix}_ci_low", f"{prefix}_ci_high")


def draw_tradeoff(ax: Axes, points: pd.DataFrame) -> None:
    """The sweeps with their Pareto fronts, and the DPO baselines, on one axes (see the module docstring)."""
    for method in (*SWEEP_METHODS, *BASELINES):
        part = points[points["method"] == method]
        if part.empty:
            continue
        color = REGISTRY[method].color
        sweep = method in SWEEP_METHODS
        ax.errorbar(
            part["utility_mean"], part["reward_mean"], xerr=_errors(part, "utility"), yerr=_errors(part, "reward"),
            color=color, marker=REGISTRY[method].marker, markersize=4.5 if sweep else 6, capsize=2,
            linestyle="-" if sweep else "none", linewidth=1.0, label=REGISTRY[method].label, zorder=3,
        )  # fmt: skip
        if not sweep:
            continue
        for _, row in part.iterrows():
            ax.annotate(
                f"b={row['threshold']:g}", (row["utility_mean"], row["reward_mean"]), xytext=(3, 3),
                textcoords="offset points", fontsize=6, color=color,
            )  # fmt: skip
        front = pareto_front(part[["utility_mean", "reward_mean"]])
        ax.plot(
            front["utility_mean"], front["reward_mean"], color=color, linewidth=6, alpha=0.25,
            solid_capstyle="round", label=f"{REGISTRY[method].label} Pareto front", zorder=2,
        )  # fmt: skip


def draw(results_dir: Path | str) -> Figure:
    """Fig. 1(b) from ``results_dir/llm_sweep/single``, unsaved (its artists hold the plotted data).

    Raises:
        FileNotFoundError: If the sweep folder holds no finished runs.
        paper_figures.results_files.ResultsFileError: If a run's files are unusable.
        ValueError: If it holds no ``caid`` or ``one_shot`` run.
    """
    table = load_sweep(results_dir, RESULTS_SUBDIR)
    points = tradeoff_points(table)
    if not points["method"].isin(SWEEP_METHODS).any():
        raise ValueError(f"{Path(results_dir) / RESULTS_SUBDIR}: no runs of method {' or '.join(SWEEP_METHODS)}")
    reward = table.loc[table["role"] == "reward", "scorer"].iloc[0]
    utility = table.loc[table["constraint"] == 1, "scorer"].iloc[0]
    with paper_style():
        fig = new_figure(width=1.5 * COLUMN_WIDTH, height=3.4)
        ax = fig.subplots()
        draw_tradeoff(ax, points)
        ax.set_xlabel(f"actual improvement of {utility} (utility)")
        ax.set_ylabel(f"actual improvement of {reward} (reward)")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper")
        ax.set_title(f"Fig. 1(b): reward-utility trade-off\n{prompts_note(table)}")
    return fig


make_figure, main = figure_entry(NAME, __doc__, draw)


if __name__ == "__main__":
    sys.exit(main())
