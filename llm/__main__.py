"""Command line: ``python -m llm run``, ``python -m llm sweep`` and ``python -m llm export`` (``--help`` of each).

``run --config FILE.toml [--out DIR] [--resume]`` runs one method, ``sweep`` several at several thresholds,
``export RUN_DIR TARGET_DIR [--iteration N | --best]`` writes a run's policy as a Hugging Face folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from llm.config import RunConfig
from llm.config_files import add_config_arguments, config_from_args, describe_fields
from llm.methods import METHODS, SWEEP_DEFAULT_METHODS
from llm.threads import add_threads_argument, set_threads


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a configuration or input error)."""
    parser = argparse.ArgumentParser(prog="python -m llm", description="Constrained alignment (CAID) on causal LMs.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run one method at one threshold vector",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Run one method ({', '.join(METHODS)}) from a TOML configuration.",
        epilog="configuration fields (TOML tables; every field is optional):\n  " + "\n  ".join(describe_fields()),
    )
    sweep = commands.add_parser(
        "sweep",
        help="run several methods over several threshold vectors (shared reference phase, resumable)",
        description="Run every method at every threshold vector into OUT/<method>_b<b...>/ (llm.sweep).",
    )
    export = commands.add_parser(
        "export",
        help="write a run's trained policy as a save_pretrained folder (or a PEFT adapter folder for LoRA)",
        description="Write the policy of RUN_DIR into TARGET_DIR (llm.policy_export): a folder that "
        "AutoModelForCausalLM.from_pretrained (or, for LoRA, PeftModel.from_pretrained) reloads, with its "
        "tokenizer and caid.json (lambda, beta, thresholds, provenance).",
    )
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory of `python -m llm run`")
    export.add_argument("target_dir", type=Path, metavar="TARGET_DIR", help="the folder to create (must not exist)")
    which = export.add_mutually_exclusive_group()
    which.add_argument(
        "--iteration", type=int, default=None, metavar="N", help="iteration N's policy (default: the last)"
    )
    which.add_argument("--best", action="store_true", help="the best iterate of summary.json (best_iteration)")
    export.add_argument(
        "--offline", action="store_true", help="read the base model from local files and the local HF cache only"
    )
    for command in (run, sweep):
        add_config_arguments(command)
        command.add_argument("--no-progress", action="store_true", help="no progress bars (logs, batch jobs)")
        command.add_argument(
            "--offline", action="store_true",
            help="read models, tokenizers, hf: scorers and hf: datasets from local files and the local Hugging Face "
            "cache only (sets model.offline = true)",
        )  # fmt: skip
        add_threads_argument(command)
    run.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<config name>)")
    run.add_argument(
        "--resume", action="store_true", help="continue the run in --out after its last finished iteration"
    )
    sweep.add_argument("--out", type=Path, required=True, help="sweep directory, one subdirectory per run")
    sweep.add_argument(
        "--thresholds", nargs="+", required=True, metavar="B[,B...]",
        help="threshold vectors, one per run, comma-separated for m > 1 (e.g. 0.01 0.02, or 0.01,0.05 0.02,0.05)",
    )  # fmt: skip
    sweep.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(SWEEP_DEFAULT_METHODS),
        help=f"methods to run (default: {' '.join(SWEEP_DEFAULT_METHODS)})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "export":
        return _export(args)
    if args.offline:
        args.overrides.append("model.offline=true")
    config = config_from_args(args)
    if config is None:
        return 2
    set_threads(args.threads)  # before torch loads
    try:
        return _sweep(config, args) if args.command == "sweep" else _run(config, args)
    except (ValueError, OSError) as err:  # every input, file and model error names its fix: no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


def _sweep(config: RunConfig, args: argparse.Namespace) -> int:
    try:
        grid = [[float(b) for b in vector.split(",")] for vector in args.thresholds]
    except ValueError:
        raise ValueError(f"--thresholds: numbers, comma-separated within a vector, got {args.thresholds}") from None
    if not all(math.isfinite(b) for vector in grid for b in vector):
        raise ValueError(f"--thresholds: every threshold must be a finite number, got {args.thresholds}")
    from llm.sweep import run_sweep, sweep_runs  # heavy imports only after the configuration is valid

    records = run_sweep(config, sweep_runs(args.methods, grid), args.out, progress=not args.no_progress)
    print(json.dumps(records, indent=2))
    return 0


def _run(config: RunConfig, args: argparse.Namespace) -> int:
    from llm.pipeline import run as run_pipeline

    out = args.out or Path("runs") / args.config.stem
    summary = run_pipeline(config, out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(summary["improvements"], indent=2))
    print(out / "summary.json")
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        from llm.policy_export import export

        target = export(args.run_dir, args.target_dir, iteration=args.iteration, best=args.best, offline=args.offline)
    except (ValueError, OSError) as err:  # a bad run directory, target or base model: each names its fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
