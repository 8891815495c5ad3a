"""A threshold sweep: one configuration run by several methods at several threshold vectors (Fig. 1, Sec. 4.1.1).

``python -m llm sweep --config FILE --out DIR --thresholds B [B ...] [--methods ...]`` runs every method at
every threshold vector into ``DIR/<method>_b<b_1>[_<b_2>...]/`` (the DPO baselines do not depend on b and
run once, at the first vector), the layout :mod:`analysis.statistics` and the ``paper_figures`` sweep
figures read. All runs share the cached reference phase. Each run resumes where it stopped and a finished
one is not recomputed, so rerunning the same command continues a killed sweep. Thresholds the reference
samples cannot reach are recorded as infeasible (leaving no directory), not fatal. When every run has
ended, ``DIR/sweep.json`` lists them with their status.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llm.config import RunConfig
from llm.methods import DPO_BASELINES
from llm.run_files import check_run_dir, write_atomic
from theory import InfeasibleProblemError

if TYPE_CHECKING:  # torch is imported only once a sweep really runs
    from llm.learner import TrunkCaches

__all__ = ["SWEEP_FILE", "SweepRun", "run_sweep", "sweep_runs"]

SWEEP_FILE = "sweep.json"


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: a method at a threshold vector."""

    method: str
    thresholds: tuple[float, ...]

    @property
    def name(self) -> str:
        """Its directory name, e.g. ``caid_b0.03`` or ``one_shot_b0.02_0.05``."""
        if self.method in DPO_BASELINES:
            return self.method
        return f"{self.method}_b" + "_".join(f"{b:g}" for b in self.thresholds)


def sweep_runs(methods: Sequence[str], grid: Sequence[Sequence[float]]) -> list[SweepRun]:
    """Every method at every threshold vector of ``grid``, a threshold-free baseline once (at ``grid[0]``)."""
    if not grid:
        raise ValueError("thresholds: give at least one threshold vector")
    runs = []
    for method in methods:
        vectors = grid[:1] if method in DPO_BASELINES else grid
        runs.extend(SweepRun(method, tuple(float(b) for b in vector)) for vector in vectors)
    return runs


def run_sweep(
    config: RunConfig, runs: Sequence[SweepRun], out: Path, progress: bool = True, trunks: TrunkCaches | None = None
) -> list[dict]:
    """Run (or resume, or skip when finished) every run of the sweep into ``out/<run.name>``.

    Its runs share one set of frozen-trunk caches (``trunks``, or the sweep's own), so runs over the same
    reference samples forward each trunk once.

    Returns:
        One record per run: ``name``, ``method``, ``thresholds``, ``status`` (``"finished"`` or
        ``"infeasible"``) and, for an infeasible one, the solver's message. Also written to ``sweep.json``.
    """
    from llm.distributed import init_ranks  # torch and transformers only once a sweep really runs
    from llm.learner import TrunkCaches
    from llm.pipeline import execute

    check_run_dir(out)
    records, trunks = [], trunks if trunks is not None else TrunkCaches()
    for i, item in enumerate(runs, 1):
        if progress:
            print(f"[{i}/{len(runs)}] {item.name}", file=sys.stderr, flush=True)
        scorers = dataclasses.replace(config.scorers, thresholds=list(item.thresholds))
        run_config = dataclasses.replace(config, method=item.method, scorers=scorers)
        record = {"name": item.name, "method": item.method, "thresholds": list(item.thresholds)}
        try:
            execute(run_config, out / item.name, True, progress, trunks)
        except InfeasibleProblemError as err:
            # Refused before training: the directory holds only the run record; sweep.json keeps the reason.
            shutil.rmtree(out / item.name, ignore_errors=True)
            records.append({**record, "status": "infeasible", "message": str(err)})
            continue
        records.append({**record, "status": "finished"})
    if init_ranks(config.model.device).is_main:
        write_atomic(out / SWEEP_FILE, json.dumps({"runs": records}, indent=2) + "\n")
    return records
