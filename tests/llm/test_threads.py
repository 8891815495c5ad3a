"""torch's CPU threads chosen from the cores other processes leave free (issue 26, item 9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import llm.threads as threads

ROOT = Path(__file__).parents[2]


def _counters(monkeypatch, *samples):
    """Make /proc/stat report these (busy, total) jiffies, one pair per read, on two usable cores."""
    reads = iter(samples)
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus: next(reads))
    monkeypatch.setattr(threads, "usable_cores", lambda: [0, 1])
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)


@pytest.mark.parametrize(
    ("busy", "expected_free", "expected_threads"),
    [(0.0, 2.0, 2), (0.05, 1.9, 2), (0.5, 1.0, 1), (0.7, 0.6, 1), (1.0, 0.0, 1)],
    ids=["idle", "background-noise", "one-busy-process", "one-and-a-bit", "saturated"],
)
def test_threads_follow_the_free_cores(monkeypatch, busy, expected_free, expected_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _counters(monkeypatch, (1000.0, 10_000.0), (1000.0 + busy * 200.0, 10_200.0))
    assert threads.free_cores() == pytest.approx(expected_free)
    _counters(monkeypatch, (1000.0, 10_000.0), (1000.0 + busy * 200.0, 10_200.0))
    assert threads.choose_threads() == expected_threads


def test_an_explicit_count_or_the_users_omp_num_threads_wins(monkeypatch):
    _counters(monkeypatch, (0.0, 100.0), (200.0, 300.0))  # saturated: auto would say 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads() == 2
    assert threads.choose_threads(3) == 3


def test_proc_stat_is_read_over_the_usable_cores():
    counters = threads._cpu_times(threads.usable_cores())
    if counters is None:
        pytest.skip("no /proc/stat here")
    busy, total = counters
    assert 0 <= busy <= total


def test_set_threads_sizes_torch_before_it_loads():
    # A fresh process: OpenMP must see the count when torch starts it.
    code = (
        "import llm.threads, sys\n"
        "assert 'torch' not in sys.modules\n"
        "n = llm.threads.set_threads(1)\n"
        "import torch\n"
        "print(n, torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_the_llm_command_accepts_threads_and_refuses_a_negative_count(capsys):
    from llm.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["run", "--config", "configs/smoke.toml", "--threads", "-1"])
    assert exit_.value.code == 2 and "--threads: must be >= 0" in capsys.readouterr().err
