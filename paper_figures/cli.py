"""The command line shared by every figure module: ``python -m paper_figures.<name> --results DIR --out DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from llm.cli_errors import USER_ERRORS, check_out_dir

MakeFigure = Callable[[Path, Path], list[Path]]


def add_results_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Add ``--results DIR`` (default ``results``), the directory figures read saved results from."""
    parser.add_argument("--results", type=Path, default=Path("results"), help=f"{help_text} (default: results)")


def figure_main(name: str, description: str, make_figure: MakeFigure, argv: Sequence[str] | None = None) -> int:
    """Parse ``--results`` and ``--out``, draw one figure, and print the written paths (exit 2 for a user error)."""
    parser = argparse.ArgumentParser(prog=f"python -m paper_figures.{name}", description=description)
    add_results_argument(parser, "directory holding the saved results this figure reads")
    parser.add_argument(
        "--out", type=Path, default=Path("figures"), help="directory for the PNG and PDF (default: figures)"
    )
    args = parser.parse_args(argv)
    try:
        for path in make_figure(args.results, check_out_dir(args.out)):
            print(path)
    except USER_ERRORS as err:  # a missing or unusable results file, a file where --out should be
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
