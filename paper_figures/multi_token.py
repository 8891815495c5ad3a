"""Figure of the powered multi-token study (``python -m analysis.multi_token_study``): SmolLM2 on review openings.

Reads ``RESULTS/multi_token/points.csv`` (one row per run) and draws ``multi_token``, three panels in sigma
units (dots: seeds; line: their mean):

(a) analogue of Fig. 1(a): achieved improvement of g_1 (simplicity) against b, CAID and one-shot, diagonal, and
    the negative controls' achieved improvement (dashed: pi_ref, DPO_h);
(b) analogue of Fig. 1(b): reward (positivity) improvement against g_1 improvement (controls and baselines too);
(c) analogue of Fig. 2: each constraint's achieved improvement against its b for two-constraint CAID (full scale).

Usage::

    python -m paper_figures.multi_token --results RESULTS --out FIGURES
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from matplotlib.figure import Figure

from llm.methods import REGISTRY
from paper_figures.cli import figure_entry
from paper_figures.results_files import read_results_csv
from paper_figures.style import COLUMN_WIDTH, new_figure, paper_style


class Style(NamedTuple):
    """A method's legend label, colour and marker."""

    label: str
    color: str
    marker: str


NAME = "multi_token"
RESULTS_SUBDIR = Path("multi_token")
RESULTS_FILE = RESULTS_SUBDIR / "verdicts.csv"
POINTS_FILE = RESULTS_SUBDIR / "points.csv"
VIOLATIONS_FILE = RESULTS_SUBDIR / "violations.csv"
TABLE_COLUMNS = ("claim", "setting", "method", "test", "estimate", "low", "high", "verdict", "reason", "size", "power",
                 "coverage", "df", "level", "se", "effect")  # fmt: skip
"""The columns of a claims table the report reads (both studies)."""
_FIX = "rerun `python -m analysis.multi_token_study --out <results>/multi_token` (it resumes)"


def producer_args(results_dir: Path, scale: str = "quick") -> list[str]:
    """The Python arguments of the command that writes this figure's input under ``results_dir``."""
    return ["-m", "analysis.multi_token_study", "--out", str(results_dir / RESULTS_SUBDIR), "--scale", scale]


def load_points(results_dir: Path | str) -> pd.DataFrame:
    """``points.csv``, validated (a missing or unusable file is an error naming it and the fix)."""
    return read_results_csv(
        Path(results_dir) / POINTS_FILE, fix=_FIX,
        columns=("method", "constraints", "seed", "b_1"),
        numeric=("b_1", "reward_improvement", "g_1_improvement", "kl_estimate"),
    )  # fmt: skip


def load_verdicts(results_dir: Path | str) -> pd.DataFrame:
    """The study's claims table (``verdicts.csv``), validated, for the report."""
    frame = read_results_csv(Path(results_dir) / RESULTS_FILE, fix=_FIX, columns=("claim", "verdict", "reason"),
                             numeric=("estimate",), optional=("low", "high", "size", "power", "coverage", "df", "se",
                                                              "effect"))  # fmt: skip
    return frame[list(TABLE_COLUMNS)].assign(reason=frame["reason"].fillna(""))


def load_violations(results_dir: Path | str) -> pd.DataFrame:
    """``violations.csv``: per method, setting and constraint the share of prompts missing b and the quantiles."""
    return read_results_csv(Path(results_dir) / VIOLATIONS_FILE, fix=_FIX, columns=("method", "setting"),
                            numeric=("b", "mean", "share_missing_b", "q10", "q90"))  # fmt: skip


def _style(key: str) -> Style:
    """The registry's style of a method; a method the registry does not know (yet) in grey, named by its key."""
    spec = REGISTRY.get(key)
    return Style(spec.label, spec.color, spec.marker) if spec is not None else Style(key, "tab:gray", "x")


def draw(results_dir: Path) -> Figure:
    """The three panels from ``results_dir/multi_token/points.csv``.

    Lines join each method's means over seeds at each threshold fraction (b varies with each seed's pool); dots are
    the seeds.
    """
    points = load_points(results_dir)
    single, double = points[points["constraints"] == 1], points[points["constraints"] == 2]
    with paper_style():
        fig = new_figure(width=1.6 * COLUMN_WIDTH, height=2.2)
        ax = fig.subplots(1, 3)
        for key, rows in single.groupby("method", sort=False):
            spec = _style(key)
            means = rows.groupby("fractions", dropna=False)[["b_1", "g_1_improvement", "reward_improvement"]].mean()
            if key in ("caid", "one_shot"):
                ax[0].scatter(rows["b_1"], rows["g_1_improvement"], color=spec.color, marker=spec.marker, s=6,
                              alpha=0.5)
                ax[0].plot(means["b_1"], means["g_1_improvement"], color=spec.color, marker=spec.marker, ms=3,
                           label=spec.label)
            else:  # a control: its achieved improvement, the same whatever b
                achieved = float(rows["g_1_improvement"].mean())
                ax[0].axhline(achieved, color=spec.color, ls="--", lw=0.8, label=spec.label)
            ax[1].scatter(rows["g_1_improvement"], rows["reward_improvement"], color=spec.color, marker=spec.marker,
                          s=6, alpha=0.5)
            ax[1].plot(means["g_1_improvement"], means["reward_improvement"], color=spec.color, marker=spec.marker,
                       ms=3, ls="-" if len(means) > 1 else "")
        top = float(single["b_1"].max()) * 1.2
        ax[0].plot([0, top], [0, top], "k:", lw=0.8)
        ax[0].set(xlabel="b (σ of g₁ = simplicity)", ylabel="achieved simplicity gain (σ)", title="(a) tracking b")
        ax[1].axhline(0, color="k", lw=0.5)
        ax[1].set(xlabel="simplicity gain (σ)", ylabel="reward (positivity) gain (σ)", title="(b) trade-off")
        caid = REGISTRY["caid"]
        for i, fill in ((1, caid.color), (2, "none")):
            if f"b_{i}" in double:
                ax[2].scatter(double[f"b_{i}"], double[f"g_{i}_improvement"], facecolor=fill, edgecolor=caid.color,
                              marker=caid.marker, s=10, label=f"g{i}")
        if len(double):
            top2 = float(double[["b_1", "b_2"]].max().max()) * 1.2
            ax[2].plot([0, top2], [0, top2], "k:", lw=0.8)
            ax[2].legend(fontsize=5, title="CAID", title_fontsize=5)
        else:
            ax[2].text(0.5, 0.5, "not run at this scale\n(SCALE=full runs it)", ha="center", va="center",
                       transform=ax[2].transAxes, fontsize=6)
            ax[2].set(xticks=[], yticks=[])
        ax[2].set(xlabel="b_i (σ)", ylabel="achieved gain (σ)", title="(c) two constraints")
        fig.legend(*ax[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=6)
    return fig


make_figure, main = figure_entry(NAME, __doc__, draw)


if __name__ == "__main__":
    sys.exit(main())
