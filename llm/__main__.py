"""Command line: ``python -m llm run --config FILE.toml [--out DIR] [--resume]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from llm.config import ConfigError, describe_fields, load_config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a configuration or input error)."""
    parser = argparse.ArgumentParser(prog="python -m llm", description="Constrained alignment (CAID) on causal LMs.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run one method at one threshold vector",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run one method (caid, one_shot, dpo_reward, dpo_utility) from a TOML configuration.",
        epilog="configuration fields (TOML tables; every field is optional):\n  " + "\n  ".join(describe_fields()),
    )
    run.add_argument("--config", type=Path, required=True, help="the TOML run configuration (see configs/)")
    run.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<config name>)")
    run.add_argument(
        "--resume", action="store_true", help="continue the run in --out after its last finished iteration"
    )
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
        help="override one configuration field (a TOML value), e.g. --set scorers.thresholds=[0.03]; repeatable",
    )  # fmt: skip
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from llm.pipeline import run as run_pipeline  # heavy imports only after the configuration is valid

    out = args.out or Path("runs") / args.config.stem
    try:
        summary = run_pipeline(config, out, resume=args.resume)
    except ValueError as err:  # infeasible thresholds, bad data, scorer or model errors: all name the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary["improvements"], indent=2))
    print(out / "summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
