"""The laboratory end to end on the tiny world: outputs, verdicts, and resuming after a kill."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.decisions import Verdict
from analysis.next_token import laboratory
from analysis.next_token.laboratory import LabConfig
from analysis.next_token.methods import TrainingSettings
from analysis.next_token.verdicts import write_verdicts
from tests.interrupts import count_calls, killed_on_call

CONFIG = LabConfig(n_train=8, n_eval=6, k=4, fractions=(0.3, 0.7), pairs=((0.3, 0.3),), seeds=(0, 1),
                   training=TrainingSettings(iterations=2, passes=1, batch_prompts=4, dual_prompts=4, dual_samples=2))


def test_run_resumes_after_kill_and_writes_verdicts(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    kwargs = {"model": model, "tokenizer": tok, "cache_dir": tmp_path / "cache", "progress": False}
    with killed_on_call(laboratory, "train_method", 5):
        laboratory.run(CONFIG, tmp_path / "out", **kwargs)
    calls = count_calls(monkeypatch, laboratory, "train_method")
    table = laboratory.run(CONFIG, tmp_path / "out", **kwargs)
    n_jobs = 2 * (2 * 4 + 3) + 2 * 2
    assert len(table) == n_jobs and len(calls) == n_jobs - 4  # the 4 finished runs are not retrained
    assert (tmp_path / "out" / "instance.npz").exists()
    verdicts = write_verdicts(tmp_path / "out")
    assert set(verdicts["verdict"]) <= {v.value for v in Verdict}
    assert pd.read_csv(tmp_path / "out" / "verdicts.csv").shape == verdicts.shape
    caid = table[table["method"] == "caid_exact"]
    assert np.all(caid["dual_minus_lagrangian"] >= -1e-9)
