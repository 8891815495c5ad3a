"""Run-directory plumbing shared by long runs: atomic writes and a record of the environment."""

from __future__ import annotations

import os
import platform
import uuid
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["machine_description", "package_versions", "write_atomic"]


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
