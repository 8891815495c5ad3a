"""One benchmark's results: ``<name>.json`` (the record) and ``<name>.md`` (its table), written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm.run_files import write_atomic

__all__ = ["write_report"]


def write_report(out: Path, name: str, record: dict[str, Any], markdown: str) -> None:
    """Write ``out/<name>.json`` and ``out/<name>.md`` (``out`` created), then print the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{name}.json", json.dumps(record, indent=2) + "\n")
    write_atomic(out / f"{name}.md", markdown)
    print(markdown)
