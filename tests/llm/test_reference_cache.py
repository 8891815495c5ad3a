"""The reference-phase cache (issue 12): damaged entries are rebuilt, keys follow the weights' content."""

import hashlib
import os

import numpy as np
import pytest

import llm.models as models
import llm.pipeline as pipeline
from llm.models import model_fingerprint
from llm.reference_phase import ReferenceData
from llm.sampling import Sample
from llm.scorers import Signed


def _entry(key="k"):
    rng = np.random.default_rng(0)
    train = [Sample(i // 2, (1, 2), (3, 4 + i), f"t{i}") for i in range(6)]
    test = [Sample(i // 2, (1,), (5,), f"e{i}") for i in range(4)]
    scores, logprobs, test_scores = rng.normal(size=(2, 3, 2)), rng.normal(size=(3, 2)), rng.normal(size=(2, 2, 2))
    return ReferenceData(key, train, scores, logprobs, test, test_scores)


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated: BadZipFile
        lambda b: b"",  # empty: EOFError / BadZipFile
        lambda b: b[:-30],  # the zip's end record cut
        lambda b: b[:200] + bytes([b[200] ^ 0x40]) + b[201:],  # one bit flipped inside a member: CRC error
        lambda b: b[:60] + bytes(64) + b[124:],  # zeroed bytes
    ],
)
def test_a_damaged_entry_reads_as_missing_and_is_rebuilt(tmp_path, damage):
    path = tmp_path / "k.npz"
    data = _entry().to_bytes()
    path.write_bytes(data)
    loaded = ReferenceData.from_file(path, "k")
    assert loaded is not None and loaded.train == _entry().train
    path.write_bytes(damage(data))
    with pytest.warns(UserWarning, match=r"k\.npz: unreadable cache entry.*rebuilding"):
        assert ReferenceData.from_file(path, "k") is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: e.train.__setitem__(3, Sample(7, (1, 2), (3, 4), "t")),  # a sample moved to another prompt
        lambda e: e.test.__setitem__(0, Sample(1, (1,), (5,), "e")),
        lambda e: e.train.__setitem__(0, Sample(0, (1, -2), (3, 4), "t")),  # a negative token id
        lambda e: e.train.__setitem__(0, Sample(0, (1, 2), (3, "4"), "t")),  # a token id that is text
    ],
    ids=["train-index", "test-index", "negative-token", "text-token"],
)
def test_an_entry_whose_indices_or_token_ids_do_not_fit_is_rebuilt(tmp_path, tamper):
    # Issue 26: prompt indices and token ids in cache entries are checked against their tables.
    entry = _entry()
    tamper(entry)
    path = tmp_path / "k.npz"
    path.write_bytes(entry.to_bytes())
    assert ReferenceData.from_file(path, "k") is None


def _folder(path, weights: bytes):
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_the_model_key_follows_the_weights_content_and_the_resolved_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CAID_CACHE", str(tmp_path / "cache"))
    folder = _folder(tmp_path / "model", b"\x01" * 5000)
    before = model_fingerprint(str(folder))
    monkeypatch.chdir(tmp_path)
    assert model_fingerprint("./model") == before  # the same folder, typed differently
    _folder(folder, b"\x02" * 5000)  # the weights replaced in place, same size
    assert model_fingerprint(str(folder)) != before
    other = _folder(tmp_path / "copy", b"\x01" * 5000)
    assert model_fingerprint(str(other)) != before  # another folder: another path


def test_an_hf_scorers_key_follows_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CAID_CACHE", str(tmp_path / "cache"))
    class Folder:
        name = "hf:x"

        def __init__(self, folder):
            self.folder = folder

    folder = _folder(tmp_path / "reward", b"\x01" * 100)
    first = pipeline._scorer_fingerprint(Signed(Folder(folder), -1.0), None)
    _folder(folder, b"\x03" * 100)
    assert pipeline._scorer_fingerprint(Signed(Folder(folder), -1.0), None) != first
    assert pipeline._scorer_fingerprint(object(), None) is None


MIB = 1 << 20


def _rewrite_middle(path, keep_mtime: bool) -> None:
    """Flip one byte in the middle of ``path`` in place (same size), optionally restoring its mtime."""
    stat = path.stat()
    with path.open("r+b") as handle:
        handle.seek(stat.st_size // 2)
        byte = handle.read(1)
        handle.seek(stat.st_size // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_weights_changed_in_place_between_the_first_and_last_mib_change_the_key(tmp_path, keep_mtime):
    # Issue 26: the key hashed only each file's first and last MiB.
    folder = _folder(tmp_path / "model", bytes(range(256)) * (12 * MIB // 256))
    before = model_fingerprint(str(folder), cache_dir=tmp_path / "cache")
    _rewrite_middle(folder / "model.safetensors", keep_mtime)
    assert model_fingerprint(str(folder), cache_dir=tmp_path / "cache") != before
    content = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert model_fingerprint(str(folder), cache_dir=tmp_path / "cache")["files"]["model.safetensors"][1] == content


def test_a_file_is_hashed_once_per_version_across_processes(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x07" * (3 * MIB))
    digest = models.file_sha256(path, tmp_path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / models.DIGEST_CACHE_FILE).is_file()
    monkeypatch.setattr(models, "_DIGESTS", {})  # a new process: only the digest file remembers

    def no_hashing(*args):
        raise AssertionError("hashed again")

    monkeypatch.setattr(models.hashlib, "sha256", no_hashing)
    assert models.file_sha256(path, tmp_path) == digest
    monkeypatch.undo()
    path.write_bytes(b"\x08" * (3 * MIB))  # a new version: hashed again
    assert models.file_sha256(path, tmp_path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_damaged_digest_file_is_ignored(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x01" * 100)
    (tmp_path / models.DIGEST_CACHE_FILE).write_bytes(b"\xff{not json")
    assert models.file_sha256(path, tmp_path) == hashlib.sha256(b"\x01" * 100).hexdigest()


def test_a_model_built_in_code_is_keyed_by_its_tensors(tiny_llama_model):
    import copy

    import torch

    before = models.module_fingerprint(tiny_llama_model)
    assert models.module_fingerprint(copy.deepcopy(tiny_llama_model)) == before
    changed = copy.deepcopy(tiny_llama_model)
    with torch.no_grad():
        next(iter(changed.parameters())).view(-1)[0] += 1e-3
    assert models.module_fingerprint(changed) != before
