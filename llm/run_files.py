"""Run-directory plumbing shared by long runs: atomic writes and a record of the configuration and environment."""

from __future__ import annotations

import json
import os
import platform
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunExistsError", "machine_description", "package_versions", "write_atomic", "write_run_record"]


class RunExistsError(ValueError):
    """The run directory holds a run with another configuration, or one that may not be continued."""


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``.

    A run killed mid-write leaves either the old file or the new one, never a truncated file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would survive the rename; "x" honours the umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if isinstance(data, bytes):
            with open(tmp, "xb") as handle:
                handle.write(data)
        else:
            with open(tmp, "x", encoding="utf-8") as handle:
                handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def machine_description() -> str:
    """OS, architecture, CPU count, Python and numpy versions of this machine."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )


def package_versions(
    names: tuple[str, ...] = ("caid-toolkit", "numpy", "scipy", "cvxpy", "torch", "transformers"),
) -> dict[str, str]:
    """Installed version of each distribution in ``names`` (``"not installed"`` where absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_run_record(
    out: Path, config: dict[str, Any], packages: tuple[str, ...] | None = None, *, existing_hint: str | None = None
) -> None:
    """Create ``out`` and write ``config.json`` (configuration, package versions, machine), atomically.

    Args:
        out: The run directory.
        config: The resolved configuration as plain data.
        packages: Distributions whose versions to record (default: :func:`package_versions`'s).
        existing_hint: If given, a run of the same configuration already in ``out`` is refused with this
            hint (e.g. how to continue it); if None, it is continued.

    Raises:
        RunExistsError: If ``out`` holds a run with another configuration (or, with ``existing_hint``, any run).
    """
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(config))  # tuples become lists, as they read back
    path = out / "config.json"
    if path.is_file():
        if json.loads(path.read_text()).get("config") != config:
            raise RunExistsError(f"out: {out} holds a run with another configuration ({path}); use a fresh directory")
        if existing_hint is not None:
            raise RunExistsError(f"out: {out} already holds this run; {existing_hint}")
    versions = package_versions() if packages is None else package_versions(packages)
    record = {"config": config, "versions": versions, "machine": machine_description()}
    write_atomic(path, json.dumps(record, indent=2) + "\n")
