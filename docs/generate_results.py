"""Write the results blocks of README.md and docs/*.md from the saved report, so no number is copied by hand.

A block is the text between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``; NAME is one of:

* ``claims``: the claims table of ``docs/reproduction/REPORT.md`` (every column but ``key``), verbatim;
* ``gap_scaling``: the gap laboratory's per-quantity checks and log-log slopes against nu from the same report;
* ``next_token``: the next-token laboratory's claims table from the same report;
* ``next_token_dial``: the nu dial's three tables from the same report (``paper_figures.report.DIAL_TITLES``);
* ``next_token_dial_full``: the same tables of the full-scale run, from its summaries in
  ``docs/reproduction/full/next_token/`` (copied from ``python -m analysis.next_token --out DIR``'s folder);
* ``timing``: the steps' seconds of ``docs/reproduction/timings.json`` and their total.

``python docs/generate_results.py`` rewrites every block in place; ``--check`` rewrites nothing and exits 1
naming each block that differs (``tests/test_docs.py`` runs it, so a hand-edited or leaked row fails
``make test``). After ``make reproduce``, ``make docs`` copies the new report and timings into
``docs/reproduction/`` and runs this script.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from paper_figures.report import DIAL_TITLES, dial_tables

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "reproduction" / "REPORT.md"
TIMINGS = ROOT / "docs" / "reproduction" / "timings.json"
FULL = ROOT / "docs" / "reproduction" / "full"
"""Summaries of full-scale runs (a results folder: ``next_token/nu_dial_{rungs,claims,caid}.csv``)."""
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.DOTALL)


def markdown_table(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of the first table after ``heading`` in ``text`` (cells stripped, escaped bars kept).

    Raises:
        ValueError: If the heading or its table is missing.
    """
    start = text.find(f"\n{heading}\n")
    if start < 0:
        raise ValueError(f"{REPORT}: no section {heading!r}; regenerate it with `make reproduce`")
    lines = text[start:].splitlines()[2:]
    table = []
    for line in lines:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if len(table) < 2:
        raise ValueError(f"{REPORT}: section {heading!r} has no table")
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in table]
    return cells[0], cells[2:]


def report_table(heading: str, columns: list[str] | None = None, drop: tuple[str, ...] = ()) -> str:
    """The report's table under ``heading``: ``columns`` in that order (None: all but ``drop``), verbatim.

    Raises:
        ValueError: If a column is missing from the report's table.
    """
    header, rows = markdown_table(REPORT.read_text(encoding="utf-8"), heading)
    names = columns if columns is not None else [name for name in header if name not in drop]
    missing = [name for name in names if name not in header]
    if missing:
        raise ValueError(f"{REPORT}: section {heading!r} has no column {missing}; regenerate it with `make reproduce`")
    keep = [header.index(name) for name in names]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(row[i] for i in keep) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def claims_block() -> str:
    """The report's claims table without its ``key`` column."""
    return report_table("## Claims", drop=("key",))


def gap_scaling_block() -> str:
    """The gap laboratory's checks and log-log slopes against nu, per quantity."""
    columns = ["quantity", "checked", "violations", "not_applicable", "median_looseness", "slope", "slope_ci_low",
               "slope_ci_high"]  # fmt: skip
    return report_table("## Parametrization-gap laboratory: scaling with ν", columns)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def timing_block() -> str:
    """Seconds per step of the saved quick run, and the total."""
    timings = json.loads(TIMINGS.read_text(encoding="utf-8"))
    if not isinstance(timings, dict) or not all(isinstance(v, int | float) for v in timings.values()):
        raise ValueError(f"{TIMINGS}: expected a JSON object of step -> seconds")
    lines = ["| step (its results file) | time |", "|---|---|"]
    lines += [f"| `{step}` | {_duration(seconds)} |" for step, seconds in timings.items()]
    lines.append(f"| **total** | **{_duration(sum(timings.values()))}** |")
    return "\n".join(lines) + "\n"


def next_token_block() -> str:
    """The next-token laboratory's claims table: estimate, interval, verdict, size and power per row."""
    columns = ["claim", "setting", "method", "estimate", "low", "high", "verdict", "size", "power"]
    return report_table("## Exact real-model laboratory: claims table", columns)


def next_token_dial_block() -> str:
    """The nu dial's three tables (rungs, each claim on each rung, CAID's error) from the quick report."""
    return "\n".join(report_table(f"## {title}") for title in DIAL_TITLES)


def next_token_dial_full_block() -> str:
    """The same three tables from the full-scale run's summaries saved in ``docs/reproduction/full/next_token/``."""
    return "\n".join(f"{table}\n" for _, table in dial_tables(FULL))


GENERATORS = {
    "claims": claims_block, "gap_scaling": gap_scaling_block, "next_token": next_token_block, "timing": timing_block,
    "next_token_dial": next_token_dial_block, "next_token_dial_full": next_token_dial_full_block,
}  # fmt: skip


def regenerate(text: str, page: Path) -> str:
    """``text`` with every results block rewritten.

    Raises:
        ValueError: For a block of an unknown name.
    """

    def body(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise ValueError(f"{page}: unknown results block {name!r}; use one of {sorted(GENERATORS)}")
        return f"{match.group(1)}{GENERATORS[name]()}{match.group(4)}"

    return BLOCK.sub(body, text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or, with ``--check``, compare) every page's results blocks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    args = parser.parse_args(argv)
    stale = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        new = regenerate(text, page)
        if new != text:
            stale.append(page)
            if not args.check:
                page.write_text(new, encoding="utf-8")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"results blocks differ from {REPORT.relative_to(ROOT)} in: {names}; run python docs/generate_results.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
