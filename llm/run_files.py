"""Run-directory plumbing shared by long runs: atomic writes, one writer per directory, validated reads.

* :func:`write_atomic`: a run killed mid-write leaves the old file or the new one, never a truncated one; a
  ``.csv`` also gets a record of its rows, header and SHA-256 beside it (:func:`table_record`), so a reader can
  tell a copy cut at a line boundary or a renamed column from the table written;
* :func:`run_lock`: an exclusive lock file (owner pid, host, start time) so two processes never write into one
  run directory; a lock whose process is gone (same host) is taken over with a warning, by one process only;
  temporary files of killed writes are removed once the lock is held;
* :func:`write_with_digest` / :func:`read_with_digest`: binary files (checkpoints) with a SHA-256 stored beside
  them, verified on every load, so a truncated or zeroed file is detected instead of loaded;
* :func:`read_json`: a JSON file read back, every failure a :class:`RunFileError` naming the file and the fix;
* :func:`read_npz`: named arrays of an ``.npz``, their dtypes and declared sizes checked before any is allocated;
* :func:`write_run_record`: ``config.json`` (configuration, versions, machine) written once; a resumption
  appends to its ``resumptions`` list and never rewrites the original provenance.

Files read back are untrusted: nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import io
import json
import os
import platform
import socket
import sys
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import filelock
import numpy as np

__all__ = [
    "DIGEST_SUFFIX",
    "GUARD_FILE",
    "LOCK_FILE",
    "TABLE_RECORD_SUFFIX",
    "RunExistsError",
    "RunFileError",
    "RunLockedError",
    "check_existing_run",
    "check_run_dir",
    "holds_foreign_files",
    "machine_description",
    "package_versions",
    "read_json",
    "read_npz",
    "read_with_digest",
    "remove_stale_temporaries",
    "run_lock",
    "table_record",
    "write_atomic",
    "write_run_record",
    "write_with_digest",
]

LOCK_FILE = ".lock"
"""The lock file of a run directory being written (removed when the writer ends)."""
GUARD_FILE = ".lock.guard"
"""Held (an OS file lock) while a process takes the run lock; the empty file stays."""
# Seconds to wait for another process that is taking the run lock (a few file operations).
_GUARD_TIMEOUT = 60.0
DIGEST_SUFFIX = ".sha256"
TABLE_RECORD_SUFFIX = ".rows.json"
"""``<name>.csv.rows.json``: the row count, header and SHA-256 of a CSV written by :func:`write_atomic`."""


class RunExistsError(ValueError):
    """The run directory holds a run with another configuration, or one that may not be continued."""


class RunFileError(ValueError):
    """A file read back from a run directory or cache is missing, truncated or corrupt; the message names the fix."""


class RunLockedError(RunExistsError):
    """Another live process is writing into the run directory."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _read_lock(path: Path) -> dict[str, Any]:
    holder = read_json(path, f"delete {path} if no process is writing into {path.parent}")
    if not (isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str)):
        raise RunFileError(f"{path}: not a lock file of this toolkit; delete it if nothing writes into {path.parent}")
    return holder


def _is_run_record(path: Path) -> bool:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("config"), dict)


def holds_foreign_files(folder: Path) -> list[str]:
    """The names of entries in ``folder`` that no run or sweep of this toolkit wrote (empty if it is ours).

    A folder is ours when it is empty or holds only our hidden plumbing (``.lock``, ``.lock.guard``,
    ``.*.tmp``), when its ``config.json`` is a run record, when it holds a ``sweep.json``, or when a
    subfolder's ``config.json`` is a run record (a sweep still running).
    """
    entries = sorted(folder.iterdir())
    plumbing = (LOCK_FILE, GUARD_FILE)
    temporary = [p.name for p in entries if p.name.startswith(".") and p.name.endswith(".tmp")]
    foreign = [p.name for p in entries if p.name not in (*plumbing, *temporary)]
    if not foreign:
        return []
    ours = (
        _is_run_record(folder / "config.json")
        or (folder / "sweep.json").is_file()
        or any(p.is_dir() and _is_run_record(p / "config.json") for p in entries)
    )
    return [] if ours else foreign


def check_run_dir(out: Path) -> None:
    """Create ``out`` (and its parents), or refuse a file, an unwritable path or a folder of other files.

    A run writes ``config.json``, ``summary.json``, ``eval_scores.csv`` and more into ``out``: an existing folder
    must be empty or a run or sweep of this toolkit (:func:`holds_foreign_files`), so that ``--out ""`` or
    ``--out .`` (the current directory) cannot overwrite a user's files of those names.

    Raises:
        RunFileError: If ``out`` is a file, cannot be created or written, or holds files that are not ours.
    """
    if out.exists() and not out.is_dir():
        raise RunFileError(f"out: {out} is a file, not a directory; pass a directory (it is created if missing)")
    if out.is_dir():
        foreign = holds_foreign_files(out)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            where = f"{out} ({out.resolve()})" if str(out) in ("", ".") else str(out)
            raise RunFileError(
                f"out: {where} already holds files that no run of this toolkit wrote ({shown}); a run would "
                "overwrite files such as config.json and summary.json there. Pass a new or empty folder"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFileError(f"out: cannot create {out} ({err.strerror}); choose a writable directory") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunFileError(f"out: {out} is not writable; choose a writable directory or fix its permissions")


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` while writing into ``out``: one writer per run directory.

    The lock file (JSON: pid, host, start time) is created atomically (hard link of a finished temporary
    file), so a reader never sees it half-written. A lock left by a process that no longer exists on this
    host is taken over with a warning; a live holder, or one on another host, is refused. Taking the lock
    (and taking over a stale one) happens under an OS file lock on ``out/.lock.guard``, so of several processes
    that find the same stale lock exactly one takes it over; the others then find a live holder. Once the lock
    is held, temporary files left in ``out`` by killed writes (:func:`remove_stale_temporaries`) are removed.

    Raises:
        RunLockedError: If another process holds the lock (the message names it and the fix).
        RunFileError: If ``out`` cannot be used (see :func:`check_run_dir`) or the lock file is unreadable.
    """
    check_run_dir(out)
    path = out / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
    tmp = out / f".lock.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(json.dumps(me) + "\n")
    try:
        with _guard(out):
            try:
                os.link(tmp, path)
            except FileExistsError:
                holder = _read_lock(path)
                if holder["host"] != me["host"] or _pid_alive(holder["pid"]):
                    raise RunLockedError(
                        f"out: {out} is being written by process {holder['pid']} on {holder['host']} (since "
                        f"{holder.get('started', '?')}, lock file {path}); wait for it to end or use another "
                        f"--out (delete the lock file only if that process is gone)"
                    ) from None
                warnings.warn(
                    f"{path}: taking over the lock of process {holder['pid']}, which no longer runs",
                    RuntimeWarning,
                    stacklevel=3,
                )
                os.replace(tmp, path)  # one atomic step: the lock file never vanishes for another taker
    finally:
        tmp.unlink(missing_ok=True)
    remove_stale_temporaries(out)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, RunFileError):
            if _read_lock(path)["pid"] == me["pid"]:  # a live holder's lock is never replaced by another
                path.unlink()


@contextlib.contextmanager
def _guard(out: Path) -> Iterator[None]:
    """An OS file lock on ``out/.lock.guard`` for the few steps of taking the run lock (the file stays)."""
    guard = filelock.FileLock(out / GUARD_FILE, timeout=_GUARD_TIMEOUT)
    try:
        guard.acquire()
    except filelock.Timeout:
        raise RunLockedError(
            f"out: {out}: another process has been taking its lock for {_GUARD_TIMEOUT:g} s ({out / GUARD_FILE}); "
            "try again"
        ) from None
    try:
        yield
    finally:
        guard.release()


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files of writes killed midway in ``folder``; return them.

    They are ``.<name>.<pid>.<hex>.tmp`` (:func:`write_atomic`, :func:`run_lock`); one is stale when process
    ``<pid>`` no longer runs. A live process's temporary file is left alone.
    """
    removed = []
    for path in folder.glob(".*.tmp"):
        parts = path.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        if pid is not None and not _pid_alive(pid) and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def read_json(path: Path, fix: str) -> Any:
    """The JSON value in ``path``.

    Args:
        path: The file.
        fix: What the user should do if it is missing or corrupt (ends the error message).

    Raises:
        RunFileError: If it is missing, unreadable or not valid JSON.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFileError(f"{path}: missing; {fix}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunFileError(f"{path}: unreadable ({err}); {fix}") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise RunFileError(f"{path}: corrupt or truncated JSON ({err}); {fix}") from None


def read_npz(
    path: Path, fields: Sequence[str], *, max_bytes: int, fix: str, kinds: str = "iuf"
) -> dict[str, np.ndarray]:
    """The arrays ``fields`` of the ``.npz`` at ``path``, each header checked before any array is read.

    Every member's ``.npy`` header is read first: its dtype must be of one of ``kinds`` (numpy kind letters;
    never objects, so nothing is unpickled), the member must hold as many bytes as its declared shape needs,
    and the declared shapes together at most ``max_bytes``; only then are the arrays read. A file that is
    truncated, not a zip, or fails any check raises.

    Raises:
        RunFileError: Naming the file, the field and ``fix``.
    """
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): archive.getinfo(name) for name in archive.namelist()}
            missing = [f for f in fields if f not in members]
            if missing:
                raise RunFileError(f"{path}: missing fields {missing} (has {sorted(members)}); {fix}")
            headers, total = {}, 0
            for field in fields:
                with archive.open(members[field]) as handle:
                    version = np.lib.format.read_magic(handle)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else (
                        np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(handle)  # reads the header only, no data
                    offset = handle.tell()
                if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None:
                    raise RunFileError(f"{path}: array {field!r} has dtype {dtype}, expected numbers ({kinds}); {fix}")
                size = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if members[field].file_size < offset + size:
                    raise RunFileError(f"{path}: array {field!r} is shorter than its declared shape {shape}; {fix}")
                total += size
                headers[field] = shape
            if total > max_bytes:
                declared = ", ".join(f"{f} {shape}" for f, shape in headers.items())
                raise RunFileError(
                    f"{path}: its arrays declare {total / 2**20:.0f} MiB ({declared}), more than the "
                    f"{max_bytes / 2**20:.0f} MiB allowed; {fix}"
                )
            for field in fields:
                with archive.open(members[field]) as handle:
                    arrays[field] = np.lib.format.read_array(handle, allow_pickle=False)
    except RunFileError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:  # truncated, not a zip, bad CRC
        raise RunFileError(f"{path}: not a readable npz file ({type(err).__name__}: {err}); {fix}") from None
    return arrays


def write_with_digest(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` and its SHA-256 to ``path.sha256`` (both atomically); return the digest."""
    digest = hashlib.sha256(data).hexdigest()
    write_atomic(path, data)
    write_atomic(path.with_name(path.name + DIGEST_SUFFIX), digest + "\n")
    return digest


def read_with_digest(path: Path, fix: str) -> bytes:
    """The bytes of ``path``, checked against the SHA-256 written beside it by :func:`write_with_digest`.

    Raises:
        RunFileError: If the file or its digest is missing, or the content does not match (truncated, zeroed
            or changed bytes).
    """
    sidecar = path.with_name(path.name + DIGEST_SUFFIX)
    try:
        data = path.read_bytes()
        expected = sidecar.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise RunFileError(f"{path}: missing or unreadable, or its digest {sidecar.name} is ({err}); {fix}") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise RunFileError(f"{path}: content does not match its SHA-256 in {sidecar.name} (truncated, corrupt); {fix}")
    return data


def table_record(data: bytes) -> dict[str, Any]:
    """What identifies a CSV's content: ``{"rows": data records, "header": [...], "sha256": ...}``.

    Records are counted as the csv module parses them (a quoted field may span lines); blank lines are not
    records.
    """
    text = data.decode("utf-8", errors="replace")
    records = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    return {
        "rows": max(len(records) - 1, 0),
        "header": records[0] if records else [],
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``.

    A run killed mid-write leaves either the old file or the new one, never a truncated file; a failed write (a
    full disk, no permission) raises the ``OSError`` with ``path`` in its message. A ``.csv`` file
    is followed by ``<name>.csv.rows.json`` (:func:`table_record`), written the same way after it: a reader
    that finds the two disagree knows the table was cut, edited or not finished being replaced.
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
    except OSError as err:  # a full disk or a file-size limit says "[Errno 28] No space left" without a name
        tmp.unlink(missing_ok=True)
        raise type(err)(err.errno, f"{err.strerror} (writing {path})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if path.suffix == ".csv":
        raw = data if isinstance(data, bytes) else data.encode("utf-8")
        write_atomic(path.with_name(path.name + TABLE_RECORD_SUFFIX), json.dumps(table_record(raw)) + "\n")


def machine_description() -> str:
    """OS, architecture, CPU count, Python and numpy versions of this machine, and torch's threads if it is loaded.

    The threads are recorded because :mod:`llm.threads` chooses them from the cores free at the start, and a
    float reduction over another number of threads rounds differently (an L-BFGS fit can then end elsewhere).
    """
    torch = sys.modules.get("torch")
    threads = f", torch threads {torch.get_num_threads()}" if torch is not None else ""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}{threads}"
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
    """Write ``out/config.json`` (configuration, package versions, machine), or record a resumption in it.

    A new run gets ``{"config", "versions", "machine", "started"}``. Continuing a run of the same
    configuration keeps all of that and appends ``{"versions", "machine", "resumed"}`` to its
    ``resumptions`` list, so the provenance of the original start is never lost.

    Args:
        out: The run directory.
        config: The resolved configuration as plain data.
        packages: Distributions whose versions to record (default: :func:`package_versions`'s).
        existing_hint: If given, a run of the same configuration already in ``out`` is refused with this
            hint (e.g. how to continue it); if None, it is continued.

    Raises:
        RunExistsError: If ``out`` holds a run with another configuration (or, with ``existing_hint``, any run).
        RunFileError: If an existing ``config.json`` is corrupt.
    """
    record = check_existing_run(out, config, existing_hint)
    versions = package_versions() if packages is None else package_versions(packages)
    here = {"versions": versions, "machine": machine_description()}
    if record is None:
        record = {"config": json.loads(json.dumps(config)), **here, "started": _now()}
    else:
        record = {**record, "resumptions": [*record.get("resumptions", []), {**here, "resumed": _now()}]}
    write_atomic(out / "config.json", json.dumps(record, indent=2) + "\n")


def check_existing_run(out: Path, config: dict[str, Any], existing_hint: str | None = None) -> dict[str, Any] | None:
    """The run record in ``out/config.json`` if it is a run of ``config`` that may continue, None if there is none.

    Reads only, so it can run before the inputs are validated (a failed start writes nothing).

    Raises:
        RunExistsError: If ``out`` holds a run with another configuration (or, with ``existing_hint``, any run).
        RunFileError: If ``config.json`` is corrupt.
    """
    path = out / "config.json"
    if not path.is_file():
        return None
    fix = f"use a fresh --out, or delete {out} to start this run again"
    record = read_json(path, fix)
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise RunFileError(f"{path}: not a run record (no 'config' table); {fix}")
    if record["config"] != json.loads(json.dumps(config)):  # tuples become lists, as they read back
        raise RunExistsError(f"out: {out} holds a run with another configuration ({path}); use a fresh directory")
    if existing_hint is not None:
        raise RunExistsError(f"out: {out} already holds this run; {existing_hint}")
    return record
