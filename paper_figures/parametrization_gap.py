"""Figures of the parametrization-gap laboratory (``python -m analysis.parametrization_gap``).

Reads ``RESULTS/parametrization_gap/summary.csv`` and ``trajectories.csv`` and draws:

* ``parametrization_gap_bounds``: every measured gap against the measured parametrization gap nu on
  log-log axes (filled markers), next to its bound from :mod:`theory.bounds` (open markers) for the classes
  where the bound's hypotheses hold (no open marker where one fails: see the ``*_hypothesis`` columns),
  with reference slopes proportional to nu and sqrt(nu); a dagger marks the gaps whose scaling with nu
  follows from how nu is measured (:data:`analysis.parametrization_gap.scaling.BY_CONSTRUCTION`);
* ``caid_trajectories``: lambda(t) of exact CAID (solid) and practical CAID with pseudo-label DPO and
  stochastic dual steps (dashed), per policy class, against lambda* and lambda*_p.

Usage::

    python -m paper_figures.parametrization_gap --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.parametrization_gap.scaling import BY_CONSTRUCTION
from paper_figures.cli import figure_command
from paper_figures.style import COLUMN_WIDTH, new_figure, paper_style, save_figure

NAME = "parametrization_gap"
# The laboratory's run directory, relative to the results directory.
RESULTS_SUBDIR = Path("parametrization_gap")
RESULTS_FILE = RESULTS_SUBDIR / "summary.csv"
# Gaps at or below zero cannot sit on a log axis; they are drawn at this floor.
LOG_FLOOR = 1e-12

# (column stem, panel title) of the bounds figure: each stem has *_measured and *_bound columns.
PANELS = (
    ("duality_gap", r"duality gap $D^\star_p - P^\star_p$ (Thm 1)"),
    ("dual_function_gap", r"$D(\lambda^\star_p) - D_p(\lambda^\star_p)$ (Lemma 3)"),
    ("dual_distance", r"$\|\lambda^\star_p - \lambda^\star\|$ (Lemma 4)"),
    ("multi_u_opt", "U-OPT, multi-shot (Thm 3)"),
    ("multi_r_opt", "R-OPT, multi-shot (Thm 3)"),
    ("one_u_opt", "U-OPT, one-shot (Thm 4)"),
    ("one_r_opt", "R-OPT, one-shot (Thm 4)"),
    ("practical_primal_dual_gap", r"$D_p(\lambda_{best}) - P^\star$, practical CAID (Thm 5)"),
    ("practical_u_opt", "U-OPT, practical CAID (Thm 6)"),
    ("practical_r_opt", "R-OPT, practical CAID (Thm 6)"),
)
MARKERS = {"tabular": "o", "lowrank": "s", "transformer": "^"}
COLORS = {"tabular": "tab:gray", "lowrank": "tab:blue", "transformer": "tab:red"}


def producer_args(results_dir: Path, scale: str = "full") -> list[str]:
    """The Python arguments of the command that writes this figure's input under ``results_dir``."""
    args = ["-m", "analysis.parametrization_gap", "--out", str(results_dir / RESULTS_SUBDIR)]
    return [*args, "--quick"] if scale == "quick" else args


def load_run(run_dir: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, trajectories)`` of a laboratory run directory.

    Raises:
        FileNotFoundError: If either CSV is missing; the message names the command that writes them.
    """
    run_dir = Path(run_dir)
    paths = [run_dir / "summary.csv", run_dir / "trajectories.csv"]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: produce it with `python -m analysis.parametrization_gap --quick --out {run_dir}`"
            )
    return pd.read_csv(paths[0], keep_default_na=False, na_values=["", "nan", "NaN"]), pd.read_csv(paths[1])


def _draw_gap_panel(ax: Axes, summary: pd.DataFrame, stem: str, title: str) -> bool:
    """One panel; returns whether a value was clipped to the log floor.

    Each scatter carries a ``gid`` ``<stem>:<family>:measured`` or ``<stem>:<family>:bound`` (tests read them).
    """
    clipped = False
    nu = summary["nu"].astype(float).clip(lower=LOG_FLOOR)
    for family, rows in summary.groupby("policy_class", sort=False):
        color, marker = COLORS.get(str(family), "k"), MARKERS.get(str(family), "D")
        x = nu[rows.index]
        measured = rows[f"{stem}_measured"].astype(float).abs()
        clipped |= bool((measured < LOG_FLOOR).any())
        ax.scatter(
            x, measured.clip(lower=LOG_FLOOR), color=color, marker=marker, label=f"{family}", zorder=3,
            gid=f"{stem}:{family}:measured",
        )  # fmt: skip
        bound = rows[f"{stem}_bound"].astype(float)
        applies = bound.notna()  # NaN: a hypothesis of the bound fails for that class
        ax.scatter(
            x[applies], bound[applies], facecolors="none", edgecolors=color, marker=marker, label=f"{family} bound",
            zorder=3, gid=f"{stem}:{family}:bound",
        )  # fmt: skip
    measured = summary[f"{stem}_measured"].astype(float).abs()
    ok = measured > LOG_FLOOR
    if ok.any():
        # Reference slopes through the median measured point.
        x0, y0 = float(np.median(nu[ok])), float(np.median(measured[ok]))
        xs = np.geomspace(nu[ok].min(), nu[ok].max(), 20)
        ax.plot(xs, y0 * xs / x0, color="k", linestyle=":", linewidth=0.8, label=r"$\propto\nu$")
        ax.plot(xs, y0 * np.sqrt(xs / x0), color="k", linestyle="--", linewidth=0.8, label=r"$\propto\sqrt{\nu}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(title + (" †" if stem in BY_CONSTRUCTION else ""))
    ax.set_xlabel(r"measured $\nu = \max(\nu_1, \nu_{KL})$")
    return clipped


def draw_bounds(summary: pd.DataFrame) -> Figure:
    """The gaps-versus-nu figure of a laboratory summary."""
    cols = 3
    rows = -(-len(PANELS) // cols)
    fig = new_figure(width=3 * COLUMN_WIDTH, height=2.4 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    clipped = False
    for ax, (stem, title) in zip(axes, PANELS, strict=False):
        clipped |= _draw_gap_panel(ax, summary, stem, title)
    for ax in axes[len(PANELS) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
    note = " (measured values ≤ 1e-12 drawn at 1e-12)" if clipped else ""
    fig.suptitle(
        "Parametrization gap: measured (filled) vs bound (open, only where the bound's hypotheses hold); "
        "† scaling with ν follows from how ν is measured" + note,
        fontsize=8,
    )
    return fig


def draw_trajectories(summary: pd.DataFrame, trajectories: pd.DataFrame) -> Figure:
    """lambda(t) of exact and practical CAID per class."""
    labels = list(summary["label"])
    cols = min(4, len(labels))
    rows = -(-len(labels) // cols)
    fig = new_figure(width=3 * COLUMN_WIDTH, height=2.0 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    lam_cols = [c for c in trajectories.columns if c.startswith("lam_")]
    colors = [f"C{i}" for i in range(len(lam_cols))]
    for ax, label in zip(axes, labels, strict=False):
        row = summary[summary["label"] == label].iloc[0]
        for col, color in zip(lam_cols, colors, strict=True):
            index = col.split("_")[1]
            for kind, style in (("exact", "-"), ("practical", "--")):
                part = trajectories[(trajectories["label"] == label) & (trajectories["kind"] == kind)]
                ax.plot(part["t"], part[col], linestyle=style, color=color, marker="." if kind == "practical" else "")
            ax.axhline(row[f"lam_star_{index}"], color=color, linestyle=":", linewidth=0.8)
            ax.axhline(row[f"lam_p_star_{index}"], color=color, linestyle="-.", linewidth=0.8)
        ax.set_title(f"{label} (ν = {row['nu']:.2g})")
        ax.set_xlabel("dual step t")
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(r"$\lambda_i(t)$")
    fig.suptitle(
        r"CAID dual trajectories: exact (solid), practical DPO + sampled steps (dashed); "
        r"$\lambda^\star$ (dotted), $\lambda^\star_p$ (dash-dot); colour = constraint",
        fontsize=8,
    )
    return fig


def draw_run(run_dir: Path | str, out_dir: Path | str) -> list[Path]:
    """Draw both figures of one laboratory run directory into ``out_dir``; return the written paths."""
    summary, trajectories = load_run(run_dir)
    with paper_style():
        bounds = save_figure(draw_bounds(summary), Path(out_dir), f"{NAME}_bounds")
        return bounds + save_figure(draw_trajectories(summary, trajectories), Path(out_dir), "caid_trajectories")


def make_figure(results_dir: Path | str, out_dir: Path | str) -> list[Path]:
    """Draw the laboratory's figures from ``results_dir/parametrization_gap``.

    Raises:
        FileNotFoundError: If the run's CSVs are missing.
    """
    return draw_run(Path(results_dir) / RESULTS_SUBDIR, out_dir)


main = figure_command(NAME, __doc__, make_figure)


if __name__ == "__main__":
    sys.exit(main())
