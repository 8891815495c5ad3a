"""The command line shared by every figure module: ``python -m paper_figures.<name> --results DIR --out DIR``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

MakeFigure = Callable[[Path, Path], list[Path]]


def add_results_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add ``--results DIR`` (default ``results``), the directory figures read saved results from."""
    parser.add_argument("--results", type=Path, default=Path("results"), help=f"{help_text} (default: results)")


def figure_main(name: str, description: str, make_figure: MakeFigure, argv: Sequence[str] | None = None) -> int:
    """Parse ``--results`` and ``--out``, draw one figure, and print the written paths."""
    parser = argparse.ArgumentParser(prog=f"python -m paper_figures.{name}", description=description)
    add_results_argument(parser, "directory holding the saved results this figure reads")
    parser.add_argument(
        "--out", type=Path, default=Path("figures"), help="directory for the PNG and PDF (default: figures)"
    )
    args = parser.parse_args(argv)
    for path in make_figure(args.results, args.out):
        print(path)
    return 0
