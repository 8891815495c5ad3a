"""The ``file:<path>`` prompts: JSON lines, a JSON array or Parquet, read into records.

:func:`read_records` reads a file into ``(location, record)`` pairs (:data:`llm.prompts.tables.Records`), which
:func:`llm.prompts.tables.prompts_from_records` turns into a prompt set; :mod:`llm.preference_pairs` reads
labelled preference files through :func:`read_records` too.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm.prompts.prompt_set import PromptSet
from llm.prompts.tables import Records, prompts_from_records, table_records

__all__ = ["load_prompt_file", "read_records"]


def _read_jsonl_records(path: Path) -> Records:
    """(location, record) pairs; a ``.json`` file holding one JSON array is accepted too."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read it ({err.strerror})") from None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        pairs = [(f"{path}: item {i}", item) for i, item in enumerate(items)]
    else:
        pairs = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((f"{path}: line {lineno}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}: line {lineno} is not valid JSON ({err.msg}); expected one object per line"
                ) from None
    for where, record in pairs:
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return pairs


def _read_parquet_records(path: Path) -> Records:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a core dependency
        raise ValueError(f"{path}: reading Parquet needs pandas and pyarrow: pip install pandas pyarrow") from None
    try:
        frame = pd.read_parquet(path)
    except ImportError as err:
        raise ValueError(f"{path}: reading Parquet needs pyarrow ({err}): pip install pyarrow") from None
    return table_records(frame, str(path))


def read_records(path: Path, what: str, expected: str) -> Records:
    """(location, record) pairs of a JSON lines, JSON array or Parquet file; at least one.

    Args:
        path: The file; its extension (``.jsonl``, ``.json``, ``.parquet``) chooses the format.
        what: What the file is, for the messages (``"prompt file"``).
        expected: What it must hold, for the message on an empty file.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: Naming the file (and line or row) for an unknown extension, invalid JSON, a record that is
            not an object, or no records.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; check the path")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = _read_jsonl_records(path)
    elif suffix == ".parquet":
        records = _read_parquet_records(path)
    else:
        raise ValueError(f"{path}: unsupported extension {path.suffix!r}; use .jsonl, .json (JSON lines) or .parquet")
    if not records:
        raise ValueError(f"{path}: no records; the file must hold {expected}")
    return records


def load_prompt_file(path: Path | str, prompt_field: str = "prompt") -> PromptSet:
    """Prompts (and fixed responses, if present) from a JSONL or Parquet file.

    Formats by extension: ``.jsonl`` and ``.json`` (one JSON object per line; a ``.json`` file holding a single
    JSON array of objects also works), ``.parquet`` (via pandas/pyarrow). The records are read by
    :func:`prompts_from_records`.

    Args:
        path: the file.
        prompt_field: name of the prompt field.

    Returns:
        A ``PromptSet`` named ``"file:<file name>"``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, the line/row and the field, for invalid JSON, a missing or non-string
            prompt or response, inconsistent response fields, an unknown extension, or an empty file.
    """
    path = Path(path)
    records = read_records(path, "prompt file", f"at least one record with field {prompt_field!r}")
    return prompts_from_records(records, f"file:{path.name}", prompt_field)
