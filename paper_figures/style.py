"""Shared styling and output for the paper figures.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg canvas rather than
through ``pyplot``, so drawing touches no global figure state and needs no display.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib as mpl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from llm.run_files import write_atomic

FORMATS = ("png", "pdf")
# Width of one column of a two-column paper page, in inches.
COLUMN_WIDTH = 3.5


def rc_params() -> dict[str, Any]:
    """The rcParams shared by every paper figure (a fresh dict each call)."""
    return {
        "font.size": 9,
        "axes.titlesize": 9,
        "axes.labelsize": 9,
        "legend.fontsize": 7.5,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.5,
        "lines.linewidth": 1.4,
        "lines.markersize": 4.5,
        "legend.frameon": False,
        "savefig.dpi": 200,
        "savefig.bbox": "tight",
        "pdf.fonttype": 42,  # embed TrueType so the PDF text stays editable and searchable
    }


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply :func:`rc_params` for the duration of a ``with`` block (creation *and* saving)."""
    with mpl.rc_context(rc_params()):
        yield


def new_figure(width: float = 2 * COLUMN_WIDTH, height: float = 2.6) -> Figure:
    """A figure of the given size in inches, attached to an Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_dir: Path | str, name: str) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.png`` and ``out_dir/name.pdf``.

    Each file is written atomically (:func:`llm.run_files.write_atomic`), so an interrupted run never leaves a
    truncated figure.

    Args:
        fig: The figure.
        out_dir: Output directory (created if missing).
        name: File name without extension.

    Returns:
        The written paths, PNG first.
    """
    out_dir = Path(out_dir)
    paths = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt)
        write_atomic(out_dir / f"{name}.{fmt}", buffer.getvalue())
        paths.append(out_dir / f"{name}.{fmt}")
    return paths
