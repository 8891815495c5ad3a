"""Figure: speed and accuracy of the closed-form dual solver against the conic primal solver.

Reads ``RESULTS/benchmarks/solver_benchmark.csv`` (written by
``python -m benchmarks.solver_benchmark``) and draws (a) wall time against N = X * Y on log-log axes
for ``solve_dual``, ``solve_primal`` and one ``logsumexp`` pass, and (b) the agreement metrics
between the two solvers and the dual's own optimality certificates against N on log-log axes.

Usage::

    python -m paper_figures.theory_solver_benchmark --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from paper_figures.cli import figure_entry
from paper_figures.results_files import read_results_csv
from paper_figures.style import new_figure, paper_style

NAME = "theory_solver_benchmark"
# Where the input lies, relative to the results directory.
RESULTS_FILE = Path("benchmarks") / "solver_benchmark.csv"
# Exact zeros cannot sit on a log axis; they are drawn at this floor.
LOG_FLOOR = 1e-17

# (column, legend label, marker) of the timing panel.
_TIMES = (
    ("primal_s", "solve_primal (cvxpy)", "s"),
    ("dual_s", "solve_dual (with policy)", "o"),
    ("logsumexp_s", "one logsumexp pass", "^"),
)
# (column, legend label, marker, line style) of the agreement panel: solid lines compare the two
# solvers, dashed ones are the dual solution's own certificates; the gap is drawn as |gap|.
_AGREEMENT = (
    ("policy_l1_max", r"$\max_x \|\pi_d - \pi_p\|_1$", "D", "-"),
    ("lam_rel_diff", r"$\max_i |\lambda_d - \lambda_p| / |\lambda_d|$", "s", "-"),
    ("value_rel_diff", r"$|D^\star - P^\star| / (1 + |P^\star|)$", "o", "-"),
    ("kkt_residual", "dual KKT residual", "v", "--"),
    ("cert_gap", "|dual certificate gap|", "^", "--"),
)


def producer_args(results_dir: Path, scale: str = "full") -> list[str]:
    """The Python arguments of the command that writes this figure's input under ``results_dir``.

    Args:
        results_dir: The results directory (the CSV goes to ``results_dir/benchmarks``).
        scale: ``quick`` (N up to 1e6, cvxpy up to 1e4, about 10 s) or ``full`` (N up to 1e7, cvxpy up to 1e5, a few
            minutes).

    Returns:
        The arguments after the interpreter: ``-m benchmarks.solver_benchmark --out ...``.
    """
    args = ["-m", "benchmarks.solver_benchmark", "--out", str(results_dir / "benchmarks")]
    return [*args, "--quick"] if scale == "quick" else args


def load_results(results_dir: Path | str) -> pd.DataFrame:
    """The benchmark table, one row per instance, sorted by N.

    Raises:
        FileNotFoundError: If the CSV is missing; the message names the command that writes it.
        paper_figures.results_files.ResultsFileError: If it is empty, truncated, header-only, has no N or no
            dual timing in some row, or a drawn column holds text.
    """
    results_dir = Path(results_dir)
    fix = (
        f"produce it with `python {' '.join(producer_args(results_dir))}` (add --quick for the small run) from "
        f"the repository root, or run `python -m paper_figures all --results {results_dir}`; delete a broken file first"
    )
    # The other drawn columns may be absent or empty (no cvxpy solve beyond some N), but never text.
    optional = [c for c, *_ in (*_TIMES, *_AGREEMENT)]
    frame = read_results_csv(results_dir / RESULTS_FILE, fix=fix, complete=("n", "dual_s"), optional=optional)
    return frame.sort_values("n", kind="stable")


def _fmt_n(n: float) -> str:
    """``1e+05`` -> ``1e5``."""
    return f"{n:.0e}".replace("e+0", "e").replace("e+", "e")


def _plot_series(
    ax: Axes, n: pd.Series, values: pd.Series, label: str, marker: str, linestyle: str = "-"
) -> bool:
    """Draw the non-missing ``|values|`` against ``n``; return whether anything was drawn."""
    values = values.astype(float).abs()
    keep = values.notna().to_numpy()
    if not keep.any():
        return False
    shown = np.maximum(values[keep], LOG_FLOOR)
    ax.plot(n[keep], shown, marker=marker, linestyle=linestyle, label=label)
    return True


def _legend_below(ax: Axes, handles: list, labels: list[str]) -> None:
    """A legend under the x label, so it can never hide data whatever the run's numbers are."""
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
              handlelength=1.8, columnspacing=1.0)  # fmt: skip


def _draw_times(ax: Axes, df: pd.DataFrame) -> None:
    for column, label, marker in _TIMES:
        if column in df:
            _plot_series(ax, df["n"], df[column], label, marker)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N = X · Y (prompts × responses)")
    ax.set_ylabel("wall time (s)")
    ax.set_title("(a) time to solve")
    # Quote the ratios measured in one run (they hardly depend on the machine) as extra legend rows.
    handles, labels = ax.get_legend_handles_labels()
    ratios = (("primal_over_dual", "primal / dual"), ("dual_over_logsumexp", "dual / lse"))
    for column, text in ratios:
        rows = df.dropna(subset=[column]) if column in df else df.iloc[:0]
        if len(rows):
            row = rows.iloc[-1]
            handles.append(Line2D([], [], linestyle="none"))
            value = f"{row[column]:,.0f}" if row[column] >= 100 else f"{row[column]:.3g}"
            labels.append(f"{text} = {value}× at N = {_fmt_n(row['n'])}")
    _legend_below(ax, handles, labels)


def _draw_agreement(ax: Axes, df: pd.DataFrame) -> None:
    floored = False
    for column, label, marker, linestyle in _AGREEMENT:
        if column in df and _plot_series(ax, df["n"], df[column], label, marker, linestyle):
            floored |= bool((df[column].astype(float).abs() < LOG_FLOOR).any())
    # Name the conic solver behind each comparison: the agreement is limited by its accuracy.
    if "primal_solver" in df and "policy_l1_max" in df:
        for _, row in df.dropna(subset=["primal_solver", "policy_l1_max"]).iterrows():
            ax.annotate(
                str(row["primal_solver"]), xy=(row["n"], max(abs(row["policy_l1_max"]), LOG_FLOOR)),
                xytext=(0, 5), textcoords="offset points", ha="center", fontsize=6,
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N = X · Y (prompts × responses)")
    ax.set_ylabel("discrepancy / residual")
    ax.set_title("(b) agreement and optimality")
    if floored:
        note = f"values < {LOG_FLOOR:g} drawn at {LOG_FLOOR:g}"
        ax.text(0.99, 0.01, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=6)
    _legend_below(ax, *ax.get_legend_handles_labels())


def draw(results_dir: Path | str) -> Figure:
    """The solver benchmark figure from ``results_dir/benchmarks/solver_benchmark.csv``, unsaved.

    Raises:
        FileNotFoundError: If the benchmark CSV is missing.
        paper_figures.results_files.ResultsFileError: If it is unusable (see :func:`load_results`).
    """
    df = load_results(results_dir)
    with paper_style():
        fig = new_figure(height=3.7)
        ax_time, ax_agree = fig.subplots(1, 2)
        _draw_times(ax_time, df)
        _draw_agreement(ax_agree, df)
        first = df.iloc[0] if len(df) else pd.Series(dtype=object)
        m = f", m = {first['n_constraints']}" if "n_constraints" in first else ""
        machine = first.get("machine", "unknown machine")
        mode = f", {first['mode']} run" if "mode" in first else ""
        fig.suptitle(f"Exact solvers on random instances{m} ({machine}{mode})", fontsize=8)
    return fig


make_figure, main = figure_entry(NAME, __doc__, draw)


if __name__ == "__main__":
    sys.exit(main())
