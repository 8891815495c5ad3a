"""Command line of the exact parametrization-gap laboratory: ``python -m analysis.parametrization_gap``.

The only place that draws the laboratory's figures (an entry point may import :mod:`paper_figures`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.parametrization_gap.laboratory import SCALES, run
from analysis.parametrization_gap.scaling import check_counts, scaling_table
from llm.cli_errors import check_out_dir, exit_2_on_user_error, whole_number
from paper_figures.parametrization_gap import draw_run


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.parametrization_gap",
        description="Measure the LLM parametrization gap exactly on an enumerable sequence world, "
        "next to the paper's bounds; writes instance.npz, summary.csv, trajectories.csv and figures.",
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory (created; reruns resume)")
    parser.add_argument(
        "--quick", action="store_true", help="the small run (minutes on 2 cores: docs/reproduction.md), not the full"
    )
    parser.add_argument("--seed", type=whole_number, default=0, help="seed of everything, >= 0 (default: 0)")
    args = parser.parse_args(argv)
    check_out_dir(args.out)
    config = dataclasses.replace(SCALES["quick" if args.quick else "full"], seed=args.seed)
    summary = run(config, args.out)
    paths = draw_run(args.out, args.out / "figures")
    columns = ["label", "n_params", "nu", "duality_gap_measured", "duality_gap_bound", "dual_distance_measured"]
    print(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.3g}"), file=sys.stderr)
    table = scaling_table(summary).drop(columns=["not_applicable_reasons", "by_construction"])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"), file=sys.stderr)
    print(check_counts(summary), file=sys.stderr)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
