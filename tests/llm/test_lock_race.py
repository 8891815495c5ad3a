"""The run lock under contention (issue 26): a stale lock is taken over by one process only.

Before, 8 processes taking over a lock left by a dead process held it two at a time in 7 of 30 trials: each
saw the stale holder, removed the lock file and created its own, one after another.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

from llm.run_files import LOCK_FILE, RunLockedError, run_lock

PROCESSES = 8


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _contend(folders: list[str], start, held, results) -> None:
    """In every folder, take the lock at the same moment as the other workers; report whether it was held."""
    warnings.simplefilter("always")  # the take-over warning, printed as a user would see it
    sys.stderr = open(os.devnull, "w")  # the worker process ends with the test
    for folder in folders:
        start.wait()
        try:
            with run_lock(Path(folder)):
                results.put((folder, 1))
                held.wait()  # hold it until every worker has tried: two holders would overlap
        except RunLockedError:
            results.put((folder, 0))
            held.wait()


def _holders_per_trial(tmp_path: Path, trials: int) -> list[int]:
    dead = _dead_pid()
    folders = []
    for trial in range(trials):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        (folder / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": "x"}))
        folders.append(str(folder))
    context = multiprocessing.get_context("fork")
    start, held, results = context.Barrier(PROCESSES), context.Barrier(PROCESSES), context.Queue()
    workers = [context.Process(target=_contend, args=(folders, start, held, results)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    counts = dict.fromkeys(folders, 0)
    for _ in range(PROCESSES * trials):
        folder, got = results.get(timeout=120)
        counts[folder] += got
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return [counts[f] for f in folders]


def _check(tmp_path: Path, trials: int) -> None:
    holders = _holders_per_trial(tmp_path, trials)
    shared = sum(h > 1 for h in holders)
    assert shared == 0, f"{shared} of {trials} trials had several holders at once: {holders}"
    assert all(h == 1 for h in holders), f"some trial left the stale lock untaken: {holders}"


def test_8_processes_x_100_trials_take_a_stale_lock_one_at_a_time(tmp_path):
    _check(tmp_path, 100)
