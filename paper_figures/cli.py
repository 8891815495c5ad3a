"""The command line shared by every figure module: ``python -m paper_figures.<name> --results DIR --out DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from llm.cli_errors import USER_ERRORS, check_out_dir
from paper_figures.style import paper_style, save_figure

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


def figure_entry(
    name: str, doc: str | None, draw: Callable[[Path], Figure]
) -> tuple[MakeFigure, Callable[[Sequence[str] | None], int]]:
    """``(make_figure, main)`` of a module whose ``draw(results_dir)`` returns one figure.

    ``make_figure(results_dir, out_dir)`` draws it in the paper style, saves ``<name>.png`` and ``.pdf`` in
    ``out_dir`` and returns their paths; ``main`` is its command line (:func:`figure_command`).
    """

    def make_figure(results_dir: Path | str, out_dir: Path | str) -> list[Path]:
        with paper_style():
            return save_figure(draw(Path(results_dir)), out_dir, name)

    make_figure.__doc__ = f"Draw {name} into ``out_dir``; return the PNG and PDF paths."
    return make_figure, figure_command(name, doc, make_figure)


def figure_command(name: str, doc: str | None, make_figure: MakeFigure) -> Callable[[Sequence[str] | None], int]:
    """The module's command-line entry point: :func:`figure_main` with its name and first docstring line."""

    def main(argv: Sequence[str] | None = None) -> int:
        return figure_main(name, (doc or name).splitlines()[0], make_figure, argv)

    return main
