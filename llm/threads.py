"""CPU threads for torch, chosen from the cores actually free when a command starts.

torch runs one OpenMP thread per core, and OpenMP threads spin while they wait for each other. Beside another
busy process on a 2-core machine the spinning threads take turns with it for a core and every parallel region
waits for the slowest of them (benchmarks/README.md, "Threads under load"). One thread per *free* core avoids
that, and a blanket passive wait (``OMP_WAIT_POLICY=PASSIVE``), which slows an idle machine, is not needed.

:func:`set_threads` is called by each command line before torch is imported (``--threads N`` overrides the
choice; so does an ``OMP_NUM_THREADS`` the user set).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from llm.cli_errors import whole_number

__all__ = ["add_threads_argument", "choose_threads", "free_cores", "set_threads", "usable_cores"]

# How long the CPUs' busy time is sampled to tell how many cores other processes use.
_SAMPLE_SECONDS = 0.3


def usable_cores() -> list[int]:
    """The CPUs this process may run on (its affinity mask; every CPU where the OS has no such call)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return list(range(os.cpu_count() or 1))


def _cpu_times(cpus: list[int]) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``cpus`` from ``/proc/stat``, or None where it is unavailable."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{i}" for i in cpus}
    busy = total = 0.0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            total += sum(values)
            busy += sum(values) - values[3] - values[4]
    return (busy, total) if total > 0 else None


def free_cores(seconds: float = _SAMPLE_SECONDS) -> float:
    """How many of :func:`usable_cores` other processes left idle over the last ``seconds`` (this one idle).

    Measured from ``/proc/stat`` (Linux); elsewhere from the 1-minute load average.
    """
    cpus = usable_cores()
    before = _cpu_times(cpus)
    if before is None:
        try:
            return max(0.0, len(cpus) - os.getloadavg()[0])
        except (AttributeError, OSError):
            return float(len(cpus))
    time.sleep(seconds)
    after = _cpu_times(cpus)
    if after is None or after[1] <= before[1]:
        return float(len(cpus))
    busy = (after[0] - before[0]) / (after[1] - before[1])
    return len(cpus) * (1.0 - busy)


def choose_threads(requested: int | None = None) -> int:
    """``requested`` if given, else ``OMP_NUM_THREADS`` if the user set it, else the free cores rounded (>= 1)."""
    if requested:
        return requested
    preset = os.environ.get("OMP_NUM_THREADS", "")
    if preset.isdigit() and int(preset) > 0:
        return int(preset)
    return max(1, min(len(usable_cores()), int(free_cores() + 0.5)))


def set_threads(requested: int | None = None) -> int:
    """Use :func:`choose_threads` threads in torch (and its OpenMP and MKL pools); return how many.

    Call it before torch is imported: OpenMP sizes its pool from ``OMP_NUM_THREADS`` when it starts. If torch is
    already loaded, its intra-op pool is resized as well.
    """
    threads = choose_threads(requested)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads (default 0: one per core left free by other processes at start)."""
    parser.add_argument(
        "--threads", type=whole_number, default=0, metavar="N",
        help="CPU threads for torch (default 0: one per core that other processes leave free at the start, "
        "so a busy machine does not make torch's threads wait on each other)",
    )  # fmt: skip

