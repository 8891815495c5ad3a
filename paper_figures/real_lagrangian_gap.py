"""The empirical parametrization gap of the trained SmolLM2 policies: D_hat(lambda) - L_hat(pi_theta, lambda).

Reads the single-constraint sweep ``RESULTS/llm_sweep/single/<run>/`` (``eval_scores.csv`` with its
``log_ratio`` column, ``summary.json``, ``config.json``) and computes, per CAID (multi-shot) and one-shot
run, :func:`analysis.lagrangian_gap.lagrangian_gap` at the multiplier its last epoch trained for.

Draws ``real_lagrangian_gap``: left, the plug-in dual value D_hat(lambda) (the best Lagrangian over all
policies, from pi_ref's samples) and the trained policy's Lagrangian L_hat(pi_theta, lambda) (from its own
samples, with the log-ratio KL) against the threshold b; right, their paired difference with 95% t-CIs.
A gap above zero is Lagrangian value the LLM's training did not reach: the dual function D(lambda) is the
Lagrangian's maximum over all policies (eq. (3)), and the paper's bounds charge its shortfall to the
parametrization gap nu (Sec. 3, Lemma 3).

Usage::

    python -m paper_figures.real_lagrangian_gap --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.lagrangian_gap import lagrangian_gap_table
from llm.methods import REGISTRY
from paper_figures.cli import figure_entry
from paper_figures.fig1a_expected_vs_actual import (
    RESULTS_SUBDIR,
    SWEEP_METHODS,
    ci_errors,
    sweep_runs_expected,
)
from paper_figures.style import COLUMN_WIDTH, new_figure, paper_style

NAME = "real_lagrangian_gap"


def load_gaps(results_dir: Path | str) -> pd.DataFrame:
    """:func:`analysis.lagrangian_gap.lagrangian_gap_table` of the single sweep's CAID and one-shot runs.

    Raises:
        FileNotFoundError: If the sweep folder holds no finished runs.
        paper_figures.results_files.ResultsFileError: If a run's files are unusable.
        ValueError: If it holds no CAID or one-shot run.
    """
    table = lagrangian_gap_table(sweep_runs_expected(results_dir, RESULTS_SUBDIR), methods=SWEEP_METHODS)
    if table.empty:
        raise ValueError(f"{Path(results_dir) / RESULTS_SUBDIR}: no runs of method {' or '.join(SWEEP_METHODS)}")
    return table.assign(threshold=[b[0] for b in table["thresholds"]])


def draw(results_dir: Path | str) -> Figure:
    """The real-model Lagrangian gap, unsaved (its artists hold the plotted data; errors as :func:`load_gaps`)."""
    gaps = load_gaps(results_dir)
    methods = [m for m in SWEEP_METHODS if (gaps["method"] == m).any()]
    span = float(np.ptp(gaps["threshold"])) or 1.0
    offsets = dict(zip(methods, (np.arange(len(methods)) - (len(methods) - 1) / 2) * 0.015 * span, strict=True))
    with paper_style():
        fig = new_figure(width=2.2 * COLUMN_WIDTH, height=2.9)
        values, gap_ax = fig.subplots(1, 2)
        for method in methods:
            rows = gaps[gaps["method"] == method].sort_values("threshold")
            x = rows["threshold"] + offsets[method]
            color, marker, label = REGISTRY[method].color, REGISTRY[method].marker, REGISTRY[method].label
            err = {q: ci_errors(rows, q, f"{q}_ci_low", f"{q}_ci_high") for q in ("dual_value", "lagrangian", "gap")}
            values.errorbar(
                x, rows["dual_value"], yerr=err["dual_value"], color=color, marker=marker,
                linestyle="--", capsize=2, fillstyle="none", label=rf"$\hat D(\lambda)$, {label}",
            )  # fmt: skip
            values.errorbar(
                x, rows["lagrangian"], yerr=err["lagrangian"], color=color, marker=marker,
                linestyle="-", capsize=2, label=rf"$\hat L(\pi_\theta, \lambda)$, {label}",
            )  # fmt: skip
            gap_ax.errorbar(
                x, rows["gap"], yerr=err["gap"], color=color, marker=marker, capsize=2, label=label
            )
        gap_ax.axhline(0.0, color="k", linewidth=0.8, linestyle=":")
        for ax in (values, gap_ax):
            ax.set_xlabel("threshold b")
        values.set_ylabel("value at the trained-for $\\lambda$")
        values.set_title("plug-in dual vs trained policy's Lagrangian")
        gap_ax.set_ylabel(r"$\hat D(\lambda) - \hat L(\pi_\theta, \lambda)$")
        gap_ax.set_title(f"parametrization gap, 95% t-CIs over n = {int(gaps['n_prompts'].min())} prompts")
        values.legend(fontsize=6)
        gap_ax.legend()
    return fig


make_figure, main = figure_entry(NAME, __doc__, draw)


if __name__ == "__main__":
    sys.exit(main())
