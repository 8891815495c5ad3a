"""Reading saved results back, defensively: every file is checked before a figure or a verdict uses it.

A results folder is shared, copied and interrupted, so what the figures read is untrusted. A file that
exists but cannot be used (empty, cut off mid-line, header only, a column missing or holding no numbers,
JSON that does not parse) raises :class:`ResultsFileError`, whose message names the file, says why and how
to fix it; the figure is then not drawn and the report shows ``skipped: <file>: <why>`` instead of a
verdict computed over nothing. A file that does not exist stays a ``FileNotFoundError`` (its result is
missing, not broken).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["ResultsFileError", "check_run", "read_json_object", "read_results_csv"]


class ResultsFileError(ValueError):
    """A results file exists but cannot be used.

    Attributes:
        path: The file.
        why: What is wrong with it.
        fix: How to repair it (usually: delete it and rerun its producer).
    """

    def __init__(self, path: Path, why: str, fix: str) -> None:
        self.path, self.why, self.fix = Path(path), why, fix
        super().__init__(f"{path}: {why}; {fix}")


def read_results_csv(
    path: Path,
    *,
    fix: str,
    columns: Sequence[str] = (),
    numeric: Sequence[str] = (),
    complete: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> pd.DataFrame:
    """A CSV written by one of the producers, checked to be whole and to hold the data a figure needs.

    Args:
        path: The CSV file.
        fix: How to repair a bad file (quoted in the error).
        columns: Columns that must be present.
        numeric: Columns (among the present ones) that must be numbers and not all missing.
        complete: Columns that must be numbers in every row (e.g. the x axis).
        optional: Columns that may be absent or empty, but hold numbers where they have values.

    Returns:
        The table, with the ``numeric``, ``complete`` and present ``optional`` columns as numbers.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ResultsFileError: If the file is empty, cut off mid-line, not CSV, has no data rows, lacks one of
            ``columns``, or a ``numeric``/``complete``/``optional`` column holds text, or a ``numeric`` or
            ``complete`` one no numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {fix}")
    raw = path.read_bytes()
    if not raw.strip():
        raise ResultsFileError(path, "the file is empty", fix)
    # Every producer ends its CSV with a newline: a file that does not was cut off while being written.
    if not raw.endswith(b"\n"):
        raise ResultsFileError(path, "the file ends mid-line (truncated)", fix)
    try:
        frame = pd.read_csv(io.BytesIO(raw))
    except (ValueError, UnicodeDecodeError) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise ResultsFileError(path, f"not a readable CSV ({str(err).strip()})", fix) from None
    missing = [c for c in (*columns, *complete) if c not in frame.columns]
    if missing:
        raise ResultsFileError(path, f"missing column(s) {missing} (has {list(frame.columns)})", fix)
    if frame.empty:
        raise ResultsFileError(path, "a header but no data rows", fix)
    _check_numbers(frame, path, fix, numeric, complete, optional)
    return frame


def _check_numbers(
    frame: pd.DataFrame, path: Path, fix: str, numeric: Sequence[str], complete: Sequence[str], optional: Sequence[str]
) -> None:
    """Convert the present checked columns of ``frame`` to numbers in place, or refuse the file."""
    for column in dict.fromkeys((*numeric, *complete, *optional)):
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        if (values.isna() & frame[column].notna()).any():
            raise ResultsFileError(path, f"column {column!r} holds text where numbers belong", fix)
        if values.isna().all() and column not in optional:
            raise ResultsFileError(path, f"column {column!r} has no values (all NaN)", fix)
        if column in complete and values.isna().any():
            raise ResultsFileError(path, f"column {column!r} is missing in {int(values.isna().sum())} row(s)", fix)
        frame[column] = values  # integers stay integers (a count of 4 is labelled 4, not 4.0)


def read_json_object(path: Path, *, fix: str) -> dict[str, Any]:
    """A JSON file holding an object (a run's ``summary.json``, ``config.json``, a sweep's ``sweep.json``).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ResultsFileError: If it is not valid JSON or not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {fix}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ResultsFileError(path, f"not valid JSON ({err})", fix) from None
    if not isinstance(data, dict):
        raise ResultsFileError(path, f"expected a JSON object, got {type(data).__name__}", fix)
    return data


# Columns of a run's eval_scores.csv that are not numbers (see analysis.statistics.load_eval_scores).
_EVAL_TEXT = ("model", "response")


def check_run(run_dir: Path, fix: str) -> None:
    """Check the files of one finished ``llm run`` directory that the sweep figures and the report read.

    ``summary.json`` must name the method and its thresholds, ``config.json`` must parse, and
    ``eval_scores.csv`` must be whole, with a number in every score of every row.

    Raises:
        ResultsFileError: Naming the first unusable file.
    """
    summary = read_json_object(run_dir / "summary.json", fix=fix)
    thresholds = summary.get("thresholds")
    if not isinstance(summary.get("method"), str):
        raise ResultsFileError(run_dir / "summary.json", "no 'method' string", fix)
    if not isinstance(thresholds, list) or not all(
        isinstance(b, int | float) and not isinstance(b, bool) for b in thresholds
    ):
        raise ResultsFileError(run_dir / "summary.json", f"'thresholds' is not a list of numbers: {thresholds!r}", fix)
    if (run_dir / "config.json").is_file():
        read_json_object(run_dir / "config.json", fix=fix)
    path = run_dir / "eval_scores.csv"
    frame = read_results_csv(path, fix=fix, columns=("model", "prompt_index", "sample"))
    _check_numbers(frame, path, fix, (), [c for c in frame.columns if c not in _EVAL_TEXT], ())
