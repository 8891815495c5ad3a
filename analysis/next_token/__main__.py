"""``python -m analysis.next_token [--quick] --out DIR``: run (or resume) the exact real-model laboratory."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.threads import add_threads_argument, set_threads


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, run the laboratory, write the verdicts and the figures."""
    parser = argparse.ArgumentParser(prog="python -m analysis.next_token", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed if it holds runs)")
    parser.add_argument("--quick", action="store_true", help="quick scale (default: full scale)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    check_out_dir(args.out)
    set_threads(args.threads)  # before torch loads
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from analysis.next_token.laboratory import FULL, QUICK, run
    from analysis.next_token.verdicts import write_verdicts

    run(QUICK if args.quick else FULL, args.out, progress=not args.no_progress)
    print(write_verdicts(args.out).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
