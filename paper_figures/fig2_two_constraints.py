"""Figure 2 of the paper: alignment with two constraints (harmlessness and humor, reward helpfulness).

Reads the two-constraint LLM sweep, one finished ``python -m llm run`` directory per (method, threshold
pair)::

    RESULTS/llm_sweep/two_constraints/<run>/summary.json       method, thresholds [b_1, b_2], ...
    RESULTS/llm_sweep/two_constraints/<run>/eval_scores.csv    model, prompt_index, sample, <r>, <u_1>, <u_2>, response
    RESULTS/llm_sweep/two_constraints/<run>/dual_trajectory.csv
    RESULTS/llm_sweep/two_constraints/<run>/config.json

with methods ``caid`` (multi-shot) and ``one_shot``; formats as in :mod:`analysis.statistics`, which
recomputes the improvements and 95% CIs from ``eval_scores.csv`` (:func:`analysis.statistics.collect_runs`).

Draws ``fig2_two_constraints``: (left, middle) expected vs actual improvement of each utility with 95% CI
error bars and the line y = x (satisfied above), as Fig. 2(a) and App. Fig. 4(b); (right) the reward
improvement per threshold pair with 95% CIs, as Fig. 2(b) and App. Fig. 4(c). Colour is the method; the
marker identifies the threshold pair and is the same in all three panels (paper Sec. 4.1.2 and 4.2.2).

Usage::

    python -m paper_figures.fig2_two_constraints --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from llm.methods import REGISTRY
from paper_figures.cli import figure_entry
from paper_figures.fig1a_expected_vs_actual import (
    SWEEP_METHODS,
    ci_errors,
    draw_identity,
    load_sweep,
    prompts_note,
)
from paper_figures.style import COLUMN_WIDTH, new_figure, paper_style

NAME = "fig2_two_constraints"
RESULTS_SUBDIR = Path("llm_sweep") / "two_constraints"
# One marker per threshold pair, cycled when there are more pairs.
PAIR_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "p", "h", "*", "d", "8")
# Horizontal offset of each method's points in the reward panel, in pair slots.
METHOD_OFFSET = 0.15


def draw(results_dir: Path | str) -> Figure:
    """Fig. 2 from ``results_dir/llm_sweep/two_constraints``, unsaved (its artists hold the plotted data).

    Raises:
        FileNotFoundError: If the sweep folder holds no finished runs.
        paper_figures.results_files.ResultsFileError: If a run's files are unusable.
        ValueError: If it holds no ``caid`` or ``one_shot`` run with two constraints.
    """
    table = load_sweep(results_dir, RESULTS_SUBDIR)
    table = table[table["method"].isin(SWEEP_METHODS) & (table["thresholds"].map(len) == 2)]
    if table.empty:
        raise ValueError(
            f"{Path(results_dir) / RESULTS_SUBDIR}: no two-constraint runs of method {' or '.join(SWEEP_METHODS)}"
        )
    pairs = sorted(set(table["thresholds"]))
    marker = {pair: PAIR_MARKERS[i % len(PAIR_MARKERS)] for i, pair in enumerate(pairs)}
    methods = [m for m in SWEEP_METHODS if (table["method"] == m).any()]
    # Side-by-side offsets of the methods' points, in units of the spacing they are drawn on.
    offsets = dict(zip(methods, (np.arange(len(methods)) - (len(methods) - 1) / 2) * METHOD_OFFSET, strict=True))
    with paper_style():
        fig = new_figure(width=3 * COLUMN_WIDTH, height=3.3)
        axes = fig.subplots(1, 3, width_ratios=[1, 1, 1.4])
        for constraint, ax in enumerate(axes[:2], start=1):
            rows = table[table["constraint"] == constraint]
            span = float(np.ptp(rows["threshold"])) or 1.0
            for _, row in rows.iterrows():
                ax.errorbar(
                    row["threshold"] + span * offsets[row["method"]] / 10, row["mean"],
                    yerr=ci_errors(rows.loc[[row.name]]),
                    color=REGISTRY[row["method"]].color, marker=marker[row["thresholds"]], capsize=2,
                    linestyle="none",
                )  # fmt: skip
            draw_identity(ax, rows["threshold"].to_numpy(dtype=float))
            scorer = rows["scorer"].iloc[0]
            ax.set_title(f"constraint {constraint}: {scorer}")
            ax.set_xlabel(f"expected improvement $b_{constraint}$")
            ax.set_ylabel(f"actual improvement of {scorer}")
        ax = axes[2]
        rewards = table[table["role"] == "reward"]
        for method in methods:
            part = rewards[rewards["method"] == method]
            for _, row in part.iterrows():
                ax.errorbar(
                    pairs.index(row["thresholds"]) + offsets[method], row["mean"], yerr=ci_errors(part.loc[[row.name]]),
                    color=REGISTRY[method].color, marker=marker[row["thresholds"]], capsize=2, linestyle="none",
                )  # fmt: skip
        ax.set_xticks(range(len(pairs)), [f"({b1:g}, {b2:g})" for b1, b2 in pairs], rotation=45, ha="right")
        ax.axhline(0.0, color="k", linewidth=0.6)
        ax.set_xlabel("threshold pair $(b_1, b_2)$")
        ax.set_ylabel(f"improvement of {rewards['scorer'].iloc[0]} (reward)")
        ax.set_title("reward improvement per threshold pair")
        handles = [Line2D([], [], color=REGISTRY[m].color, marker="o", linestyle="none") for m in methods]
        fig.legend(
            [*handles, *axes[0].get_legend_handles_labels()[0]],
            [*(REGISTRY[m].label for m in methods), "y = x (satisfied above)"],
            loc="outside lower center", ncol=len(methods) + 1,
        )  # fmt: skip
        fig.suptitle(f"Fig. 2: two constraints; {prompts_note(table)}; marker = threshold pair", fontsize=8)
    return fig


make_figure, main = figure_entry(NAME, __doc__, draw)


if __name__ == "__main__":
    sys.exit(main())
