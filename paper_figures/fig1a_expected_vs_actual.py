"""Figure 1(a) of the paper: expected vs actual improvement of the constrained utility (safety).

Reads the single-constraint LLM sweep, one finished ``python -m llm run`` directory per (method,
threshold)::

    RESULTS/llm_sweep/single/<run>/summary.json        method, thresholds, improvements, ...
    RESULTS/llm_sweep/single/<run>/eval_scores.csv     model, prompt_index, sample, <reward>, <utility>, response
    RESULTS/llm_sweep/single/<run>/dual_trajectory.csv
    RESULTS/llm_sweep/single/<run>/config.json

with methods ``caid`` (multi-shot), ``one_shot``, ``dpo_h`` (DPO_h) and ``dpo_g`` (DPO_g, the paper's DPO_s); the
formats are those of :mod:`analysis.statistics`. Improvements and their 95% CIs are recomputed from
``eval_scores.csv`` with :func:`analysis.statistics.collect_runs` (paired over held-out prompts,
Student-t intervals).

Draws ``fig1a_expected_vs_actual``: x = threshold b (the expected improvement), y = the measured improvement
of the first utility with 95% CI error bars, for multi-shot (CAID) and one-shot; a run meets its constraint
when its point lies on or above the line y = x (paper Sec. 4.2, Fig. 1(a)).

This module also holds the sweep loading and labelling shared by the other LLM figures
(:mod:`paper_figures.fig1b_tradeoff`, :mod:`paper_figures.fig1c_histograms`,
:mod:`paper_figures.fig2_two_constraints`).

Usage::

    python -m paper_figures.fig1a_expected_vs_actual --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.statistics import collect_runs, satisfaction_rows
from llm.methods import COMPARED, REGISTRY
from llm.sweep import SWEEP_FILE
from paper_figures.cli import figure_entry
from paper_figures.results_files import ResultsFileError, check_run, read_json_object
from paper_figures.style import COLUMN_WIDTH, new_figure, paper_style

NAME = "fig1a_expected_vs_actual"
# The single-constraint sweep folder (one run directory per method and threshold), relative to the results.
RESULTS_SUBDIR = Path("llm_sweep") / "single"
# The methods compared along the thresholds in Fig. 1(a)/(b)/(c), in drawing order (PeCAID was not run).
SWEEP_METHODS = COMPARED


def producer_hint(subdir: Path) -> str:
    """How the runs of the sweep folder ``subdir`` (relative to the results directory) are produced."""
    return (
        "produce it with the LLM threshold sweep: `python -m llm sweep --config <config> --out "
        f"RESULTS/{subdir.as_posix()} --thresholds <b> [<b> ...]` (comma-separated vectors for m > 1)"
    )


def sweep_runs_expected(results_dir: Path | str, subdir: Path) -> list[Path]:
    """The run directories of the sweep folder ``results_dir/subdir`` a figure or claim needs, each checked whole.

    They are the runs its ``sweep.json`` lists as finished (written when every run has ended; runs refused as
    infeasible have no directory); without one (the sweep still running, or killed), every folder in it.
    A run that is absent, a dangling link or unfinished (no ``summary.json``) is refused, never left out.

    Raises:
        FileNotFoundError: If the folder does not exist or holds no run; the message names the producer.
        paper_figures.results_files.ResultsFileError: If ``sweep.json`` is unusable, or a run's folder,
            ``summary.json``, ``config.json`` or ``eval_scores.csv`` is missing or unusable (the message names the
            file).
    """
    path = Path(results_dir) / subdir
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no sweep folder; {producer_hint(subdir)}")
    record = path / SWEEP_FILE
    if record.is_file():
        fix = f"delete it and rerun the sweep ({producer_hint(subdir)})"
        runs = read_json_object(record, fix=fix).get("runs")
        if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in runs):
            raise ResultsFileError(record, "'runs' is not a list of objects with a 'name'", fix)
        expected = [path / r["name"] for r in runs if r.get("status") == "finished"]
    else:
        # every folder, dangling links included (Path.is_dir is False for those)
        expected = sorted(p for p in path.iterdir() if not p.name.startswith(".") and (p.is_dir() or p.is_symlink()))
    if not expected:
        raise FileNotFoundError(f"{path}: no finished run directories; {producer_hint(subdir)}")
    for run in expected:
        if not run.exists() and not run.is_symlink():
            raise ResultsFileError(run, f"missing, although {record.name} lists it as finished",
                                   f"rerun the sweep ({producer_hint(subdir)})")
        check_run(run, f"delete the run directory {run.name} and rerun the sweep ({producer_hint(subdir)})")
    return expected


def load_sweep(results_dir: Path | str, subdir: Path = RESULTS_SUBDIR) -> pd.DataFrame:
    """:func:`analysis.statistics.collect_runs` of a sweep's runs: a row per run and scorer, 95% CIs.

    Raises:
        FileNotFoundError: If the folder holds no runs.
        paper_figures.results_files.ResultsFileError: If a run is missing, unfinished or its files unusable.
    """
    return collect_runs(sweep_runs_expected(results_dir, subdir))


def ci_errors(rows: pd.DataFrame, mean: str = "mean", low: str = "ci_low", high: str = "ci_high") -> np.ndarray:
    """``(2, n)`` below/above distances of the CIs in columns ``low``/``high`` from ``mean``, for ``errorbar``."""
    return np.vstack([rows[mean] - rows[low], rows[high] - rows[mean]]).astype(float)


def prompts_note(table: pd.DataFrame) -> str:
    """The number of held-out prompts behind the CIs, e.g. ``"95% CIs over n = 2000 held-out prompts"``."""
    counts = sorted({int(n) for n in table["n_prompts"]})
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"95% t-CIs over n = {n} held-out prompts (paired)"


def draw_identity(ax: Axes, thresholds: np.ndarray) -> None:
    """The line y = x over the thresholds' range, labelled as the satisfaction boundary."""
    lo, hi = float(np.min(thresholds)), float(np.max(thresholds))
    pad = 0.1 * (hi - lo) if hi > lo else 0.5
    xs = np.array([lo - pad, hi + pad])
    ax.plot(xs, xs, color="k", linestyle="--", linewidth=0.8, label="y = x (satisfied above)")


def draw_expected_vs_actual(ax: Axes, rows: pd.DataFrame, methods: Sequence[str] = SWEEP_METHODS) -> None:
    """Measured vs required improvement of one utility, a series per method connected in threshold order.

    Args:
        ax: The axes.
        rows: :func:`analysis.statistics.satisfaction_rows` of one constraint.
        methods: The methods to draw, in order (missing ones are skipped).
    """
    present = [m for m in methods if (rows["method"] == m).any()]
    span = float(np.ptp(rows["threshold"])) if len(rows) > 1 else 1.0
    # Side-by-side offsets so that error bars of the same threshold do not hide each other.
    offsets = (np.arange(len(present)) - (len(present) - 1) / 2) * 0.012 * (span or 1.0)
    for method, offset in zip(present, offsets, strict=True):
        part = rows[rows["method"] == method].sort_values("threshold", kind="stable")
        spec = REGISTRY[method]
        ax.errorbar(
            part["threshold"] + offset, part["mean"], yerr=ci_errors(part), color=spec.color, marker=spec.marker,
            capsize=2.5, label=spec.label,
        )  # fmt: skip
    draw_identity(ax, rows["threshold"].to_numpy(dtype=float))
    scorer = str(rows["scorer"].iloc[0])
    ax.set_xlabel(f"expected improvement b of {scorer}")
    ax.set_ylabel(f"actual improvement of {scorer}")


def draw(results_dir: Path | str) -> Figure:
    """Fig. 1(a) from ``results_dir/llm_sweep/single``, unsaved (its artists hold the plotted data).

    Raises:
        FileNotFoundError: If the sweep folder holds no finished runs.
        paper_figures.results_files.ResultsFileError: If a run's files are unusable.
        ValueError: If it holds no ``caid`` or ``one_shot`` run.
    """
    table = satisfaction_rows(load_sweep(results_dir, RESULTS_SUBDIR))
    rows = table[(table["constraint"] == 1) & table["method"].isin(SWEEP_METHODS)]
    if rows.empty:
        raise ValueError(f"{Path(results_dir) / RESULTS_SUBDIR}: no runs of method {' or '.join(SWEEP_METHODS)}")
    with paper_style():
        fig = new_figure(width=1.3 * COLUMN_WIDTH, height=3.0)
        ax = fig.subplots()
        draw_expected_vs_actual(ax, rows)
        ax.legend(loc="upper left")
        ax.set_title(f"Fig. 1(a): expected vs actual improvement\n{prompts_note(rows)}")
    return fig


make_figure, main = figure_entry(NAME, __doc__, draw)


if __name__ == "__main__":
    sys.exit(main())
