"""``python -m analysis.next_token [--quick] --out DIR``: the exact real-model laboratory and its nu dial."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.threads import add_threads_argument, set_threads


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the laboratory and the nu dial, write their verdicts."""
    parser = argparse.ArgumentParser(prog="python -m analysis.next_token", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed if it holds runs)")
    parser.add_argument("--quick", action="store_true", help="quick scale (default: full scale)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--no-dial", action="store_true", help="skip the nu dial (nu_dial_*.csv)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the nu dial's rungs (default 2)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers: expected a positive number of processes, got {args.workers}")
    check_out_dir(args.out)
    set_threads(args.threads)  # before torch loads
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from analysis.next_token.dial_verdicts import claim_table, write_dial_verdicts
    from analysis.next_token.laboratory import FULL, QUICK, prepare, train_runs
    from analysis.next_token.nu_dial import FULL_DIAL, QUICK_DIAL, run_dial
    from analysis.next_token.verdicts import write_verdicts

    start, progress = time.perf_counter(), not args.no_progress
    lab = prepare(QUICK if args.quick else FULL, args.out, progress=progress)
    train_runs(lab, progress=progress, start=start)
    print(write_verdicts(args.out).to_string(index=False))
    if not args.no_dial:
        dial = QUICK_DIAL if args.quick else FULL_DIAL
        run_dial(lab, dial, progress=progress, workers=args.workers)
        print(claim_table(write_dial_verdicts(args.out, dial)).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
