"""Draw the paper figures: ``python -m paper_figures {all,<figure>} --results DIR --figures DIR``.

Before drawing a figure, its results are produced if they are missing, each by one command (the solver
benchmark: ``python -m benchmarks.solver_benchmark``; the parametrization-gap laboratory:
``python -m analysis.parametrization_gap``; the LLM sweeps and the dual-convergence study: see
:mod:`paper_figures.producers`), sized by ``--scale``. Existing results are reused as they are, and every
producer resumes its own unfinished work, so a killed ``make reproduce`` continues where it stopped.
Seconds per step go to ``RESULTS/timings.json``; ``all`` ends with ``RESULTS/REPORT.md``
(:mod:`paper_figures.report`). The written paths go to stdout, everything else (progress) to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.run_files import write_atomic
from paper_figures import (
    fig1a_expected_vs_actual,
    fig1b_tradeoff,
    fig1c_histograms,
    fig2_two_constraints,
    fig3_dual_convergence,
    multi_token,
    next_token,
    next_token_dial,
    parametrization_gap,
    producers,
    real_lagrangian_gap,
    theory_solver_benchmark,
)
from paper_figures.cli import add_results_argument
from paper_figures.report import read_timings, timings_file, write_report
from paper_figures.results_files import ResultsFileError

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
    modules = (
        theory_solver_benchmark, parametrization_gap, multi_token, fig1a_expected_vs_actual, fig1b_tradeoff,
        fig1c_histograms, real_lagrangian_gap, fig2_two_constraints, fig3_dual_convergence, next_token,
        next_token_dial,
    )  # fmt: skip
    return {module.NAME: module.make_figure for module in modules}


def producer_registry() -> dict[str, Producer]:
    """Figure name -> the step that writes its results (figures without an entry need none)."""
    tsb, gap, p = theory_solver_benchmark, parametrization_gap, producers
    single = Producer(p.SINGLE_SWEEP_FILE, p.single_sweep_args)
    return {
        tsb.NAME: Producer(tsb.RESULTS_FILE, tsb.producer_args),
        gap.NAME: Producer(gap.RESULTS_FILE, gap.producer_args),
        multi_token.NAME: Producer(multi_token.RESULTS_FILE, multi_token.producer_args),
        fig1a_expected_vs_actual.NAME: single,
        fig1b_tradeoff.NAME: single,
        fig1c_histograms.NAME: single,
        real_lagrangian_gap.NAME: single,
        fig2_two_constraints.NAME: Producer(p.TWO_SWEEP_FILE, p.two_constraint_sweep_args),
        fig3_dual_convergence.NAME: Producer(fig3_dual_convergence.RESULTS_FILE, p.dual_convergence_args),
        next_token.NAME: Producer(next_token.RESULTS_FILE, next_token.producer_args),
        next_token_dial.NAME: Producer(next_token_dial.RESULTS_FILE, next_token_dial.producer_args),
    }


def full_scale_only() -> set[str]:
    """Figures of the paper-analogue safety sweeps: produced by ``--scale full`` only.

    At ``quick`` they are drawn when their results exist, and the powered multi-token study (``multi_token``)
    decides the Fig. 1 / Fig. 2 claims: the safety sweeps' intervals at 2-core sizes are wider than the
    thresholds' spacing.
    """
    return {
        fig1a_expected_vs_actual.NAME, fig1b_tradeoff.NAME, fig1c_histograms.NAME, real_lagrangian_gap.NAME,
        fig2_two_constraints.NAME,
    }


def ensure_results(producer: Producer, results_dir: Path, scale: str) -> tuple[bool, bool]:
    """Run ``producer`` unless its results file exists.

    Args:
        producer: The producing step.
        results_dir: The results directory.
        scale: ``quick`` or ``full``.

    Returns:
        ``(ran, succeeded)``: whether the step ran now, and False for ``succeeded`` if it reported a
        failure but still wrote its results (e.g. a solver failure recorded in the benchmark table).

    Raises:
        RuntimeError: If the step cannot run here or did not write its results file.
    """
    target = results_dir / producer.results_file
    if target.is_file():
        print(f"using existing {target} (delete it to re-run)", file=sys.stderr)
        return False, True
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
    return True, returncode == 0


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 1 if a producing step reported a failure, 2 for a user error."""
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
        help="size of the runs that produce missing results: quick (the powered multi-token study and the "
        "laboratories, about 45 minutes on 2 CPU cores) or full (also the paper-analogue safety sweeps, larger "
        "study, benchmark and laboratories: an estimated 5 hours on 2 cores; see paper_figures.producers) "
        "(default: quick)",
    )  # fmt: skip
    parser.add_argument(
        "--no-produce", action="store_true",
        help="never run a producer: draw what the saved results allow (e.g. paper-scale results from GPUs)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    check_out_dir(args.figures, "--figures")
    check_out_dir(args.results, "--results")

    names = list(figures) if args.figure == "all" else [args.figure]
    registry = producer_registry()
    if args.figure == "all" and args.scale == "quick":
        # A safety-sweep figure is drawn when its sweep folder exists (if unfinished, the figure says what is missing).
        absent = {n for n in full_scale_only() if not (args.results / registry[n].results_file).parent.is_dir()}
        names = [n for n in names if n not in absent]
    # Each producer once, in figure order.
    steps = [] if args.no_produce else list(dict.fromkeys(registry[n] for n in names if n in registry))
    ok = True
    try:
        timings = read_timings(args.results)
    except ResultsFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for i, producer in enumerate(steps, 1):
        print(f"[step {i}/{len(steps)}] {producer.results_file}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        ran, succeeded = ensure_results(producer, args.results, args.scale)
        ok &= succeeded
        if ran:
            timings[producer.results_file.as_posix()] = round(time.perf_counter() - start, 1)
            write_atomic(timings_file(args.results), json.dumps(timings, indent=2) + "\n")
    written: list[Path] = []
    for name in names:
        try:
            paths = figures[name](args.results, args.figures)
        except (OSError, ValueError) as err:  # e.g. every threshold infeasible: the report says so
            print(f"error: {name}: {err}", file=sys.stderr)
            ok = False
            continue
        written += paths
        for path in paths:
            print(path)
    if args.figure == "all":
        print(write_report(args.results, written, args.scale, timings))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
