"""Draw the paper figures: ``python -m paper_figures {all,<figure>} --results DIR --figures DIR``.

Before drawing a figure, its results are produced if they are missing (for the solver benchmark:
``python -m benchmarks.solver_benchmark --out RESULTS/benchmarks``; for the parametrization-gap
laboratory: ``python -m analysis.parametrization_gap --out RESULTS/parametrization_gap``; each with
``--quick`` at ``--scale quick``); existing results are reused as they are. The written figure paths go to stdout,
everything else (progress, the benchmark's report) to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from paper_figures import parametrization_gap, theory_solver_benchmark
from paper_figures.cli import add_results_argument

FigureFn = Callable[[Path, Path], list[Path]]


@dataclasses.dataclass(frozen=True)
class Producer:
    """How to create a figure's input.

    Attributes:
        results_file: The file the figure reads, relative to the results directory.
        args: ``(results_dir, scale) -> argv`` after the interpreter, run from the repository root.
    """

    results_file: Path
    args: Callable[[Path, str], list[str]]


def figure_registry() -> dict[str, FigureFn]:
    """Figure name -> ``make_figure(results_dir, out_dir)``, in drawing order."""
    return {
        theory_solver_benchmark.NAME: theory_solver_benchmark.make_figure,
        parametrization_gap.NAME: parametrization_gap.make_figure,
    }


def producer_registry() -> dict[str, Producer]:
    """Figure name -> the step that writes its results (figures without an entry need none)."""
    tsb, gap = theory_solver_benchmark, parametrization_gap
    return {
        tsb.NAME: Producer(tsb.RESULTS_FILE, tsb.producer_args),
        gap.NAME: Producer(gap.RESULTS_FILE, gap.producer_args),
    }


def ensure_results(producer: Producer, results_dir: Path, scale: str) -> bool:
    """Run ``producer`` unless its results file exists.

    Args:
        producer: The producing step.
        results_dir: The results directory.
        scale: ``quick`` or ``full``.

    Returns:
        False if the step ran and reported a failure but still wrote its results (e.g. a solver
        failure recorded in the benchmark table); True otherwise.

    Raises:
        RuntimeError: If the step cannot run here or did not write its results file.
    """
    target = results_dir / producer.results_file
    if target.is_file():
        print(f"using existing {target} (delete it to re-run)", file=sys.stderr)
        return True
    # The producers are modules of the source checkout (benchmarks/ is not an installed package).
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks").is_dir():
        raise RuntimeError(f"{target} is missing and {root} is no source checkout with benchmarks/")
    command = [sys.executable, *producer.args(results_dir.resolve(), scale)]
    print(f"running: {shlex.join(command)}", file=sys.stderr, flush=True)
    # Its report goes to stderr so that stdout lists only the written figures.
    returncode = subprocess.run(command, cwd=root, stdout=sys.stderr, check=False).returncode
    if not target.is_file():
        raise RuntimeError(
            f"`{shlex.join(command)}` exited with status {returncode} without writing {target}"
        )
    if returncode != 0:
        print(f"warning: `{shlex.join(command)}` exited with status {returncode}", file=sys.stderr)
    return returncode == 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 1 if a producing step reported a failure."""
    figures = figure_registry()
    parser = argparse.ArgumentParser(
        prog="python -m paper_figures",
        description="Produce missing results, then draw the paper figures (PNG and PDF).",
    )
    parser.add_argument(
        "figure", choices=["all", *figures], help="'all' for every registered figure, or one name"
    )
    add_results_argument(parser, "results directory: read, and written where results are missing")
    parser.add_argument(
        "--figures", type=Path, default=Path("figures"),
        help="output directory for the figures (default: figures)",
    )  # fmt: skip
    parser.add_argument(
        "--scale", choices=("quick", "full"), default="quick",
        help="size of the runs that produce missing results: quick (about 5 minutes) or full "
        "(under an hour: solver benchmark up to N = 1e7, larger gap laboratory) (default: quick)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    names = list(figures) if args.figure == "all" else [args.figure]
    producers = producer_registry()
    ok = True
    done: set[Path] = set()
    for name in names:
        producer = producers.get(name)
        if producer is not None and producer.results_file not in done:
            ok &= ensure_results(producer, args.results, args.scale)
            done.add(producer.results_file)
    for name in names:
        for path in figures[name](args.results, args.figures):
            print(path)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
