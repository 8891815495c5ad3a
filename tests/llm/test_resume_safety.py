"""Resuming from a run directory someone else wrote (issue 12): no code runs, damage is named, never a traceback.

All of these are refused before any model is loaded, so they are fast.
"""

import dataclasses
import json
import os
import pickle  # only to craft the malicious file the pipeline must never load
import socket

import numpy as np
import pytest

import llm.pipeline as pipeline
from llm.__main__ import main
from llm.config_files import to_dict
from llm.run_files import LOCK_FILE, RunFileError, RunLockedError, write_run_record, write_with_digest
from tests.llm.test_pipeline import TINY


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # creates the marker file when unpickled


def _started(tmp_path, config=TINY):
    out = tmp_path / "run"
    write_run_record(out, to_dict(config))
    return out


def test_a_crafted_state_pt_is_never_unpickled_on_resume(tmp_path):
    out = _started(tmp_path)
    marker = tmp_path / "payload_ran"
    with open(out / "state.pt", "wb") as handle:
        pickle.dump({"iteration": 1, "x": _Payload(marker)}, handle)
    with pytest.raises(RunFileError, match=r"state\.pt: .*never loaded.*delete it"):
        pipeline.run(TINY, out, resume=True, progress=False)
    assert not marker.exists()


def _state(out, **changes):
    write_with_digest(out / "checkpoint_1.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    write_with_digest(out / "training_state_1.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    multipliers = {"value": [0.5], "dual_step_size": 1.0, "update": "projected", "trajectory": [[0.5]], "slacks": []}
    group = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
    state = {
        "format": 2, "iteration": 1, "multipliers": multipliers, "metrics": [{"iteration": 1}],
        "scheduler": {"base_lrs": [1e-3], "last_epoch": 1}, "numpy_rng": {},
        "optimizer": {"state": {}, "param_groups": [group]},
        "checkpoint": "checkpoint_1.safetensors", "training_state": "training_state_1.safetensors", **changes,
    }  # fmt: skip
    (out / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda out: (out / "state.json").write_text('{"format": 1, "iter'), r"state\.json: corrupt or truncated"),
        (lambda out: _state(out, format=1), r"state\.json: invalid .*format 1 \(an earlier version's\)"),
        (
            lambda out: _state(out, multipliers={"value": [np.nan], "dual_step_size": 1.0, "update": "projected"}),
            r"state\.json: invalid .*lambda",
        ),
        (lambda out: _state(out, iteration=9), r"state\.json: invalid .*iteration 9 is not an integer in 1\.\.2"),
        (lambda out: _state(out, iteration=True), r"state\.json: invalid .*iteration True"),
        (
            lambda out: _state(out, optimizer={"state": {}, "param_groups": [{"lr": -5, "eps": 1e-8}]}),
            r"state\.json: invalid .*lr -5",
        ),
        (lambda out: _state(out, scheduler={"base_lrs": [-5.0]}), r"state\.json: invalid .*scheduler\.base_lrs"),
        (lambda out: _state(out, checkpoint="../../etc/passwd"), r"state\.json: invalid .*plain names"),
        (
            lambda out: (_state(out), (out / "checkpoint_1.safetensors").write_bytes(b"\x08\x00")),
            r"checkpoint_1\.safetensors: content does not match its SHA-256",
        ),
        (
            lambda out: (_state(out), (out / "training_state_1.safetensors").unlink()),
            r"training_state_1\.safetensors: missing",
        ),
        (lambda out: _state(out), r"training_state_1\.safetensors: no torch_rng"),
    ],
)
def test_damaged_saved_state_is_named_with_the_fix(tmp_path, damage, message):
    out = _started(tmp_path)
    damage(out)
    with pytest.raises(RunFileError, match=message) as err:
        pipeline.run(TINY, out, resume=True, progress=False)
    assert "restart this run from iteration 1" in str(err.value)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = _started(tmp_path)
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    (out / LOCK_FILE).write_text(json.dumps(holder))
    with pytest.raises(RunLockedError, match=rf"process {os.getppid()} .*since 2026-01-01.*another --out"):
        pipeline.run(TINY, out, resume=True, progress=False)
    assert json.loads((out / LOCK_FILE).read_text()) == holder  # the holder's lock is left alone


def _toml(tmp_path, tables="", top=""):
    path = tmp_path / f"run{len(list(tmp_path.glob('*.toml')))}.toml"
    path.write_text(f'{top}\n[model]\nname = "tiny"\n{tables}')
    return path


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_user_errors_exit_2_with_a_message_and_no_traceback(tmp_path, capsys, command):
    extra = ["--thresholds", "0.0"] if command == "sweep" else []
    file = tmp_path / "file"
    file.write_text("x")
    missing = _toml(tmp_path, f'[data]\nprompts = ["file:{tmp_path / "nope.jsonl"}"]\n')
    cases = [
        (["--config", str(missing), "--out", str(tmp_path / "a")], "prompt file not found"),
        (["--config", str(_toml(tmp_path)), "--out", str(file)], "is a file, not a directory"),
        (["--config", str(_toml(tmp_path, "[caid]\nbeta = inf\n")), "--out", str(tmp_path / "b")], "caid.beta"),
        (["--config", str(_toml(tmp_path, top="seed = -1")), "--out", str(tmp_path / "c")], "seed: must be >= 0"),
        (
            ["--config", str(_toml(tmp_path, "[training]\nlearning_rate = nan\n")), "--out", str(tmp_path / "d")],
            "training.learning_rate: must be a finite number",
        ),
    ]
    for args, message in cases:
        assert main([command, *args, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    # The failed start wrote no run record, so the same --out takes a corrected run.
    assert not (tmp_path / "a" / "config.json").exists()
    if command == "sweep":
        args = ["sweep", "--config", str(_toml(tmp_path)), "--out", str(tmp_path / "e"), "--thresholds", "nan"]
        assert main(args) == 2
        assert "finite" in capsys.readouterr().err


def test_the_resumed_config_is_the_configuration_of_the_run(tmp_path):
    out = _started(tmp_path)
    with pytest.raises(pipeline.RunExistsError, match="another configuration"):
        pipeline.run(dataclasses.replace(TINY, seed=1), out, resume=True, progress=False)
