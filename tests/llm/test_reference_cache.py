"""The reference-phase cache (issue 12): damaged entries are rebuilt, keys follow the weights' content."""

import numpy as np
import pytest

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


def _folder(path, weights: bytes):
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_the_model_key_follows_the_weights_content_and_the_resolved_path(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "model", b"\x01" * 5000)
    before = model_fingerprint(str(folder))
    monkeypatch.chdir(tmp_path)
    assert model_fingerprint("./model") == before  # the same folder, typed differently
    _folder(folder, b"\x02" * 5000)  # the weights replaced in place, same size
    assert model_fingerprint(str(folder)) != before
    other = _folder(tmp_path / "copy", b"\x01" * 5000)
    assert model_fingerprint(str(other)) != before  # another folder: another path


def test_an_hf_scorers_key_follows_its_folder(tmp_path):
    class Folder:
        name = "hf:x"

        def __init__(self, folder):
            self.folder = folder

    folder = _folder(tmp_path / "reward", b"\x01" * 100)
    first = pipeline._scorer_fingerprint(Signed(Folder(folder), -1.0))
    _folder(folder, b"\x03" * 100)
    assert pipeline._scorer_fingerprint(Signed(Folder(folder), -1.0)) != first
    assert pipeline._scorer_fingerprint(object()) is None
