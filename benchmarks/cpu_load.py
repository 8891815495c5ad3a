"""A study step on the CPU, idle and beside one CPU-bound process: torch threads and OpenMP's wait policy.

Usage::

    python -m benchmarks.cpu_load --out DIR [--prompts 64] [--rounds 2]

The step is the study's reference sampling (``configs/reviews_study.toml``: SmolLM2, K = 6 responses of 24
tokens per prompt, batches of 64 samples) of ``--prompts`` review prompts. Each setting runs in a fresh process
(OpenMP reads its thread count and wait policy when it starts), timing only the sampling:

- ``today``: torch's default, one thread per core, OpenMP's default (spinning) wait;
- ``1 thread``; ``passive``: one thread per core with ``OMP_WAIT_POLICY=PASSIVE``;
- ``auto``: :func:`llm.threads.set_threads`, one thread per core that other processes leave free at the start
  (what the command lines do now).

Each is timed idle and beside one CPU-bound process (a Python busy loop started before it and stopped after),
the settings interleaved over ``--rounds`` rounds; the table gives each setting's best time and its ratio to
``today`` idle from the same run. Writes ``cpu_load.json`` and ``cpu_load.md`` into ``--out``. On a machine
other processes also use, "idle" means "without the competitor this benchmark adds".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.report import write_report
from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.run_files import machine_description

STUDY_CONFIG = "configs/reviews_study.toml"
NAME = "cpu_load"
# name -> (threads: 0 = torch's default, -1 = llm.threads.set_threads; OMP_WAIT_POLICY or None for the default)
SETTINGS = {"today": (0, None), "1 thread": (1, None), "passive": (0, "PASSIVE"), "auto": (-1, None)}
LOADS = ("idle", "busy")


def _worker(prompts: int, threads: int) -> None:
    """Sample the reference pool of ``prompts`` review prompts; print the seconds and the threads used."""
    if threads == -1:
        from llm.threads import set_threads

        set_threads()
    import dataclasses

    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    from llm.config_files import load_config
    from llm.models import load_model
    from llm.prompts.reviews import review_prompts
    from llm.sampling import sample_responses

    config = load_config(STUDY_CONFIG)
    model, tokenizer = load_model()
    texts = list(review_prompts(prompts).prompts)
    start = time.perf_counter()
    sample_responses(model, tokenizer, texts, config.generation.samples_per_prompt,
                     dataclasses.replace(config.generation), seed=0, progress=False)  # fmt: skip
    print(json.dumps({"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}))


def _time(setting: str, load: str, prompts: int) -> dict[str, float]:
    threads, wait = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    if wait:
        env["OMP_WAIT_POLICY"] = wait
    competitor = None
    if load == "busy":
        competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)  # running, and visible in the CPU counters auto reads
    try:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.cpu_load", "--worker", "--prompts", str(prompts), "--threads",
             str(threads)], env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def _markdown(best: dict[tuple[str, str], dict[str, float]], prompts: int, rounds: int, wall_s: float) -> str:
    base = best[("today", "idle")]["seconds"]
    lines = [
        f"Reference sampling of {prompts} review prompts (study settings), best of {rounds} round(s); "
        f"{machine_description()}; {wall_s / 60:.1f} min in all.",
        "",
        "| setting | load | threads | seconds | / today idle |",
        "|---|---|---|---|---|",
    ]
    for (setting, load), row in best.items():
        lines.append(f"| {setting} | {load} | {row['threads']:.0f} | {row['seconds']:.1f} | "
                     f"{row['seconds'] / base:.2f} |")
    return "\n".join([*lines, ""])


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_load", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="directory for the JSON and markdown report")
    parser.add_argument("--prompts", type=int, default=64, help="review prompts sampled per timing (default 64)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.prompts, args.threads)
        return 0
    if args.out is None:
        parser.error("--out is required")
    check_out_dir(args.out)
    start = time.perf_counter()
    times: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for load in LOADS:
            for setting in SETTINGS:
                row = _time(setting, load, args.prompts)
                times.setdefault((setting, load), []).append(row)
                print(f"round {r}: {setting}, {load}: {row['seconds']:.1f} s ({row['threads']} threads)",
                      file=sys.stderr, flush=True)  # fmt: skip
    wall_s = time.perf_counter() - start
    best = {key: min(rows, key=lambda row: row["seconds"]) for key, rows in times.items()}
    markdown = _markdown(best, args.prompts, args.rounds, wall_s)
    record = {
        "prompts": args.prompts, "rounds": args.rounds, "machine": machine_description(), "wall_s": wall_s,
        "times": [{"setting": s, "load": load, **row} for (s, load), rows in times.items() for row in rows],
        "ratio_to_today_idle": {f"{s}, {load}": row["seconds"] / best[("today", "idle")]["seconds"]
                                for (s, load), row in best.items()},
    }  # fmt: skip
    write_report(args.out, NAME, record, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
