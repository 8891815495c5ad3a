"""What a threshold sweep saves by reusing the reference phase, and the peak memory of each run.

Usage::

    python -m benchmarks.threshold_sweep --out DIR [--config FILE] [--thresholds B ...] [--set TABLE.KEY=VALUE ...]

Runs the same configuration (default ``configs/smollm2_safety.toml`` with fewer prompts and iterations,
``--set`` to change) at every threshold, twice over, each run a ``python -m llm run`` process:

* ``reuse``: all thresholds share one cache, so only the first run samples, scores and computes the
  reference log-probabilities; the others read them (the reference key does not include thresholds);
* ``no_reuse``: every run gets an empty reference cache, as if each threshold were run on its own.

Both sweeps run in the same invocation, on the same (possibly noisy) machine; compare their ratio. Each
run's peak resident memory is the process's ``ru_maxrss`` (from ``os.wait4``). The converted model is
shared by all runs and built before timing starts.

Writes ``DIR/threshold_sweep.json`` (every run, the totals, the machine and versions) and
``DIR/threshold_sweep.md`` (a table, also printed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import write_report
from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.config_files import load_config
from llm.models import DEFAULT_MODEL, default_cache_root, load_model
from llm.run_files import machine_description, package_versions
from llm.run_schema import RunSummary

DEFAULT_OVERRIDES = ("data.limit=8", "caid.iterations=2")


def _run(config: Path, overrides: Sequence[str], threshold: float, out: Path, cache: Path) -> dict[str, Any]:
    """One ``python -m llm run`` process: wall seconds and peak resident memory."""
    command = [
        sys.executable, "-m", "llm", "run", "--config", str(config), "--out", str(out),
        *(arg for o in overrides for arg in ("--set", o)), "--set", f"scorers.thresholds=[{threshold}]",
    ]  # fmt: skip
    env = {**os.environ, "CAID_CACHE": str(cache), "TQDM_DISABLE": "1"}
    cached = any((cache / "reference").glob("*.npz"))
    # stderr goes to a file, not a pipe: a pipe nobody reads until the run ends could fill and stall it.
    with tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise RuntimeError(f"run at b = {threshold} failed:\n{log.read()[-3000:]}")
    summary = RunSummary.read(out)
    return {
        "threshold": threshold,
        "reference_cached": cached,
        "seconds": seconds,
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # ru_maxrss is in KiB on Linux
        "lambda_one_shot": list(summary.lambda_one_shot),
        "lambda_last": list(summary.lambda_last),
    }


def run_benchmark(config: Path, thresholds: Sequence[float], overrides: Sequence[str], work: Path) -> dict[str, Any]:
    """Both sweeps; returns every run and the totals."""
    resolved = load_config(config, overrides)  # refuses a bad configuration before anything runs
    models = default_cache_root() / "models"
    if resolved.model.name == DEFAULT_MODEL:
        load_model(DEFAULT_MODEL)  # converts it once, outside the timings
    runs = []
    for sweep in ("reuse", "no_reuse"):
        for i, b in enumerate(thresholds):
            cache = work / ("cache_reuse" if sweep == "reuse" else f"cache_fresh_{i}")
            if not cache.is_dir():
                cache.mkdir()
                if models.is_dir():
                    (cache / "models").symlink_to(models)  # the converted model, not the reference phase
            runs.append({"sweep": sweep, **_run(config, overrides, b, work / f"{sweep}_{i}", cache)})
            print(runs[-1], flush=True)
    total = {s: sum(r["seconds"] for r in runs if r["sweep"] == s) for s in ("reuse", "no_reuse")}
    return {
        "config": str(config),
        "overrides": list(overrides),
        "thresholds": list(thresholds),
        "runs": runs,
        "total_seconds": total,
        "saved_seconds": total["no_reuse"] - total["reuse"],
        "no_reuse_over_reuse": total["no_reuse"] / total["reuse"],
        "peak_rss_gib_max": max(r["peak_rss_gib"] for r in runs),
        "machine": machine_description(),
        "versions": package_versions(("torch", "transformers", "numpy")),
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The runs as a table and the headline numbers."""
    lines = [
        f"Config: `{result['config']}` with {' '.join(result['overrides']) or 'no overrides'}; "
        f"machine: {result['machine']}.",
        "",
        "| sweep | b | reference cached | seconds | peak RSS (GiB) | lambda one-shot | lambda last |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['sweep']} | {r['threshold']:g} | {r['reference_cached']} | {r['seconds']:.1f} | "
            f"{r['peak_rss_gib']:.2f} | {r['lambda_one_shot'][0]:.3f} | {r['lambda_last'][0]:.3f} |"
        )
    total = result["total_seconds"]
    lines += [
        "",
        f"Sweep of {len(result['thresholds'])} thresholds: {total['reuse']:.0f} s reusing the reference phase, "
        f"{total['no_reuse']:.0f} s without ({result['no_reuse_over_reuse']:.2f}x; "
        f"{result['saved_seconds']:.0f} s saved). Peak RSS of any run: {result['peak_rss_gib_max']:.2f} GiB.",
    ]
    return "\n".join(lines) + "\n"


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threshold_sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON and markdown results go")
    parser.add_argument("--config", type=Path, default=Path("configs/smollm2_safety.toml"), help="the run config")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.04], help="b values")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=None, metavar="TABLE.KEY=VALUE",
        help=f"configuration overrides for every run (default: {' '.join(DEFAULT_OVERRIDES)})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    check_out_dir(args.out)  # before any timing: a file there would fail only at the end
    overrides = DEFAULT_OVERRIDES if args.overrides is None else tuple(args.overrides)
    with tempfile.TemporaryDirectory(prefix="threshold_sweep_") as work:
        result = run_benchmark(args.config, args.thresholds, overrides, Path(work))
    write_report(args.out, "threshold_sweep", result, to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
