"""Reading saved results back, defensively: every file is checked before a figure or a verdict uses it.

A results folder is shared, copied and interrupted, so what the figures read is untrusted. A file that
exists but cannot be used (empty, cut off mid-line, header only, a column missing or holding no numbers,
JSON that does not parse) raises :class:`ResultsFileError`, whose message names the file, says why and how
to fix it; the figure is then not drawn and the report shows ``skipped: <file>: <why>`` instead of a
verdict computed over nothing. A file that does not exist stays a ``FileNotFoundError`` (its result is
missing, not broken).

A CSV written by the toolkit has a record of its rows, header and SHA-256 beside it
(:func:`llm.run_files.table_record`); a table that differs from its record (cut at a line boundary, a column
renamed, edited) is refused. Tables written before such records existed are checked for syntax only. A sweep
is read as the runs its ``sweep.json`` lists (every run directory when it has none), each of which must be
whole: a run whose ``summary.json`` is gone, or whose folder is a dangling link, is refused by name rather
than left out of a verdict.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from llm.run_files import TABLE_RECORD_SUFFIX, table_record

__all__ = ["ResultsFileError", "check_run", "check_table_record", "read_json_object", "read_results_csv"]


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
        ResultsFileError: If the file differs from the record written beside it (:func:`check_table_record`),
            is empty, cut off mid-line, not CSV, has no data rows, lacks one of ``columns``, or a
            ``numeric``/``complete``/``optional`` column holds text, or a ``numeric`` or ``complete`` one no
            numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {fix}")
    raw = path.read_bytes()
    check_table_record(path, raw, fix)
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


def check_table_record(path: Path, raw: bytes, fix: str) -> None:
    """Refuse ``raw`` (the bytes of ``path``) if it is not the table recorded beside it when it was written.

    A file without a record (written before records existed, or not by the toolkit) passes.

    Raises:
        ResultsFileError: If the record is unreadable, or the table has other rows, another header or other bytes
            than recorded; the message says which.
    """
    record_path = path.with_name(path.name + TABLE_RECORD_SUFFIX)
    if not record_path.is_file():
        return
    fix = f"{fix} (if you changed {path.name} on purpose, delete {record_path.name})"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        expected_rows, expected_header, digest = record["rows"], record["header"], record["sha256"]
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ResultsFileError(record_path, f"not a readable table record ({type(err).__name__}: {err})", fix) from None
    found = table_record(raw)
    if found["sha256"] == digest:
        return
    if found["header"] != expected_header:
        lost = [c for c in expected_header if c not in found["header"]]
        new = [c for c in found["header"] if c not in expected_header]
        why = f"its header differs from the one written: columns {lost} missing, {new} not written"
    elif found["rows"] != expected_rows:
        cut = " (cut at a line boundary)" if found["rows"] < expected_rows else ""
        why = f"holds {found['rows']} of the {expected_rows} rows written{cut}"
    else:
        why = f"its content changed since it was written (SHA-256 differs from {record_path.name})"
    raise ResultsFileError(path, why, fix)


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
    ``eval_scores.csv`` must be whole, with a number in every score of every row, the score columns the
    summary names and, for each model, as many prompts as the summary's improvements were computed over.

    Raises:
        ResultsFileError: Naming the first unusable or missing file (a dangling link, a deleted ``summary.json``).
    """
    if not run_dir.is_dir():
        why = "a dangling link" if run_dir.is_symlink() else "not a directory"
        raise ResultsFileError(run_dir, f"the run's folder is {why}", fix)
    if not (run_dir / "summary.json").is_file():
        raise ResultsFileError(run_dir / "summary.json", "missing: the run is unfinished or its summary was deleted",
                               fix)
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
    improvements = summary.get("improvements")
    if not isinstance(improvements, dict) or not all(isinstance(v, dict) for v in improvements.values()):
        raise ResultsFileError(run_dir / "summary.json", "no 'improvements' object per scorer", fix)
    scores = [c for c in frame.columns if c not in (*_EVAL_TEXT, "prompt_index", "sample", "log_ratio")]
    if scores != list(improvements):
        raise ResultsFileError(path, f"score columns {scores} are not the scorers {list(improvements)} of "
                               "summary.json (a column renamed, added or removed)", fix)
    for model in ("policy", "reference"):
        prompts = frame.loc[frame["model"] == model, "prompt_index"].nunique()
        expected = {v.get("n_prompts") for v in improvements.values()}
        if expected != {prompts}:
            raise ResultsFileError(path, f"holds {model} rows for {prompts} prompts, but summary.json's improvements "
                                   f"were computed over {sorted(expected, key=str)} (rows lost or added)", fix)
