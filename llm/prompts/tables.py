"""In-memory tables as records: a ``datasets.Dataset``, a pandas DataFrame or a list of dicts (or of prompts).

What :func:`llm.run` accepts for ``prompts=`` and ``preferences=``, and what the ``file:`` and ``hf:`` sources
read into: ``(location, record)`` pairs (:data:`Records`), ``location`` naming the table and the row for error
messages. :func:`prompts_from_records` reads the PKU-SafeRLHF layout (``prompt``, ``response_0``,
``response_1``, ...) as fixed responses per prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from llm.prompts.prompt_set import PromptSet

__all__ = ["Records", "is_table", "prompts_from_object", "prompts_from_records", "table_records"]

Records = Sequence[tuple[str, dict]]
"""``(location, record)`` pairs: where each record comes from (for messages) and its fields."""

_RESPONSE_FIELD = re.compile(r"^response_(\d+)$")


def is_table(obj: object) -> bool:
    """Whether ``obj`` is a ``datasets.Dataset`` or a pandas DataFrame (checked by type, importing neither)."""
    kind = type(obj)
    return (kind.__module__.split(".")[0], kind.__name__) in {("datasets", "Dataset"), ("pandas", "DataFrame")}


def table_records(table: Any, name: str, limit: int | None = None) -> Records:
    """The rows of ``table`` as ``(location, record)`` pairs, the first ``limit`` of them (None: all).

    Args:
        table: A ``datasets.Dataset``, a pandas DataFrame, or a sequence of mappings.
        name: What the table is called in messages (``"prompts"``, a file or dataset name).
        limit: Keep at most this many rows.

    Raises:
        TypeError: For anything else (a ``DatasetDict`` names its splits: pick one).
    """
    kind = type(table)
    module = kind.__module__.split(".")[0]
    if module == "datasets" and kind.__name__ == "Dataset":
        rows = table.select(range(min(limit, len(table)))) if limit is not None else table
        records = rows.to_list()
    elif module == "datasets" and kind.__name__ in ("DatasetDict", "IterableDatasetDict"):
        raise TypeError(f"{name}: a {kind.__name__} of splits {sorted(table)}; pass one split, e.g. table['train']")
    elif module == "pandas" and kind.__name__ == "DataFrame":
        records = (table if limit is None else table.head(limit)).to_dict(orient="records")
    elif isinstance(table, Sequence) and not isinstance(table, str | bytes) and all(
        isinstance(row, Mapping) for row in table
    ):
        records = list(table if limit is None else table[:limit])
    else:
        raise TypeError(
            f"{name}: expected a datasets.Dataset, a pandas DataFrame or a list of dicts, got {kind.__name__}"
        )
    # Missing cells come back as None or NaN; the readers' type checks name the row and the field.
    return [(f"{name}: row {i} (0-based)", {str(k): v for k, v in dict(rec).items()}) for i, rec in enumerate(records)]


def prompts_from_object(prompts: Any, name: str = "prompts", prompt_field: str = "prompt") -> PromptSet:
    """A prompt set from what a caller holds: a ``PromptSet``, a list of strings, or a table of records.

    Args:
        prompts: A :class:`PromptSet` (returned as is), a sequence of prompt strings, or a table
            (:func:`table_records`) with a ``prompt_field`` column (PKU-SafeRLHF's ``response_i`` columns are read
            as fixed responses).
        name: The set's name.
        prompt_field: The prompt column of a table.

    Raises:
        TypeError: For another type (a bare string included).
        ValueError: For an empty or blank prompt, or a table without the prompt column (naming the row).
    """
    if isinstance(prompts, PromptSet):
        return prompts
    if isinstance(prompts, str):
        raise TypeError(f"{name}: a single string; pass a list of prompts")
    if isinstance(prompts, Sequence) and prompts and all(isinstance(p, str) for p in prompts):
        return PromptSet(name, tuple(prompts))
    return prompts_from_records(table_records(prompts, name), name, prompt_field)


def _response_fields(fields: Iterable[str], where: str) -> list[str]:
    """``response_0 .. response_{k-1}`` present in ``fields`` (k may be 0); gaps are an error."""
    indices = sorted(int(m.group(1)) for f in fields if (m := _RESPONSE_FIELD.match(str(f))))
    if indices != list(range(len(indices))):
        raise ValueError(
            f"{where}: response fields must be consecutive response_0, response_1, ...; found "
            f"{', '.join(f'response_{i}' for i in indices)}"
        )
    return [f"response_{i}" for i in indices]



def prompts_from_records(records: Records, name: str, prompt_field: str = "prompt") -> PromptSet:
    """The prompts of ``records`` (and their fixed responses, if the records carry any), in order.

    Each record needs a string ``prompt_field``. If the records carry ``response_0``, ``response_1``, ... (the
    PKU-SafeRLHF layout; any number of consecutive fields), they become the set's fixed responses; every record
    must then have the same response fields. Other fields are ignored. Prompts are kept verbatim, in order,
    duplicates included.

    Args:
        records: ``(location, record)`` pairs, at least one.
        name: the set's name.
        prompt_field: name of the prompt field.

    Raises:
        ValueError: naming the location and the field, for a missing, non-string or empty prompt, a
            non-string response, or response fields that differ from the first record's.
    """
    if not records:
        raise ValueError(f"{name}: no records; it must hold at least one record with field {prompt_field!r}")
    first_where, first = records[0]
    response_fields = _response_fields(first, first_where)
    prompts: list[str] = []
    responses: list[tuple[str, ...]] = []
    for where, record in records:
        if prompt_field not in record:
            raise ValueError(
                f"{where}: missing field {prompt_field!r} (fields: {', '.join(map(str, record)) or 'none'}); "
                "name the prompt field (hf:<dataset>:<split>:<column>, or prompt_field=...)"
            )
        fields = _response_fields(record, where)
        if fields != response_fields:
            expected = ", ".join(response_fields) or "no response fields"
            raise ValueError(
                f"{where}: has {', '.join(fields) or 'no response fields'} but the first record has {expected}; "
                "every record needs the same response_i fields"
            )
        for field in (prompt_field, *response_fields):
            value = record[field]
            if not isinstance(value, str):
                raise ValueError(f"{where}: field {field!r} is {value!r} ({type(value).__name__}), expected a string")
        if not record[prompt_field].strip():
            raise ValueError(f"{where}: field {prompt_field!r} is empty; remove the record or fill in the prompt")
        prompts.append(record[prompt_field])
        responses.append(tuple(record[f] for f in response_fields))
    return PromptSet(name, tuple(prompts), tuple(responses) if response_fields else None)
