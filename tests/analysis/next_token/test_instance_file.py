"""``instance.npz`` read back as untrusted input (issue 26): dtypes, declared sizes and damage checked first."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

import analysis.next_token.problem as problem
from analysis.next_token.problem import INSTANCE_FIELDS, InstanceError, load_instance, save_instance
from tests.dense_dual import random_problem


def _arrays() -> dict[str, np.ndarray]:
    prob = random_problem(0, n_prompts=4, n_responses=6)
    return {name: np.asarray(getattr(prob, name)) for name in INSTANCE_FIELDS}


def test_a_saved_instance_reads_back(tmp_path):
    prob = random_problem(0, n_prompts=4, n_responses=6)
    save_instance(prob, tmp_path / "instance.npz")
    loaded = load_instance(tmp_path / "instance.npz")
    assert np.allclose(loaded.reward, prob.reward, atol=1e-6)
    assert np.allclose(np.exp(loaded.ref_logprobs), np.exp(prob.ref_logprobs), atol=1e-6)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_instance_names_the_file(tmp_path, keep):
    path = tmp_path / "instance.npz"
    save_instance(random_problem(0, n_prompts=4, n_responses=6), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data))])  # a copy cut short: BadZipFile before
    with pytest.raises(InstanceError, match=r"instance\.npz: not a readable npz file.*python -m analysis\.next_token"):
        load_instance(path)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("utilities", lambda a: a["utilities"].astype(str), "'utilities' has dtype <U"),
        ("reward", lambda a: a["reward"] > 0, "'reward' has dtype bool"),
        ("reward", lambda a: np.full(a["reward"].shape, np.datetime64("2020-01-01")), "'reward' has dtype datetime64"),
        ("thresholds", lambda a: a["thresholds"].astype(np.int64), "'thresholds' has dtype int64"),
        ("prompt_weights", lambda a: a["prompt_weights"].astype(complex), "'prompt_weights' has dtype complex"),
        ("beta", lambda a: np.array([0.1, 0.2]), "beta has shape"),
    ],
)
def test_non_float_arrays_are_refused_naming_the_field(tmp_path, field, value, match):
    arrays = _arrays()
    arrays[field] = value(arrays)
    path = tmp_path / "instance.npz"
    np.savez(path, **arrays)
    with pytest.raises(InstanceError, match=match):
        load_instance(path)


def test_declared_sizes_are_checked_before_any_array_is_read(tmp_path, monkeypatch):
    # Issue 26: a 3 MB file declaring 20000 x 20000 float64 made load_instance allocate 3 GB. The same at a
    # smaller limit: zeros of 1000 x 1000 float64 compress to a few kB.
    arrays = _arrays()
    arrays["ref_logprobs"] = np.zeros((1000, 1000))
    path = tmp_path / "instance.npz"
    np.savez_compressed(path, **arrays)
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(problem, "MAX_INSTANCE_ARRAY_BYTES", 2**20)

    def no_read(*args, **kwargs):
        raise AssertionError("an array was read before the sizes were checked")

    monkeypatch.setattr(np.lib.format, "read_array", no_read)
    with pytest.raises(InstanceError, match=r"instance\.npz: its arrays declare 8 MiB.*ref_logprobs \(1000, 1000\)"):
        load_instance(path)


def test_an_array_shorter_than_its_declared_shape_is_refused(tmp_path):
    arrays = _arrays()
    buffer = io.BytesIO()
    np.save(buffer, arrays["reward"])
    header_and_data = buffer.getvalue()
    path = tmp_path / "instance.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if k != "reward"})
    with zipfile.ZipFile(path, "a") as archive:  # a member whose data stops short of its declared shape
        archive.writestr("reward.npy", header_and_data[:-16])
    with pytest.raises(InstanceError, match="'reward' is shorter than its declared shape"):
        load_instance(path)


def test_an_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "instance.npz"
    save_instance(random_problem(0, n_prompts=4, n_responses=6), path)
    monkeypatch.setattr(problem, "MAX_INSTANCE_BYTES", 100)
    with pytest.raises(InstanceError, match=r"instance\.npz: [0-9.e-]+ MB exceeds the [0-9.e-]+ MB"):
        load_instance(path)
