import json

import pytest

torch = pytest.importorskip("torch")

from benchmarks import gpu_smoke  # noqa: E402


def test_without_cuda_it_says_so_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_smoke.main(["--out", str(tmp_path)]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # nothing was run


@pytest.mark.slow
def test_cpu_plumbing_writes_every_phase(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["--out", str(tmp_path), "--cpu", "--model", "tiny", "--dtype", "float32", "--limit", "8",
            "--set", "generation.max_new_tokens=4", "--set", "caid.dual_prompts=2", "--set", "caid.dual_samples=2"]
    assert gpu_smoke.main(args) == 0
    result = json.loads((tmp_path / "gpu_smoke.json").read_text())
    assert [p["phase"] for p in result["phases"]] == [
        "reference phase", "set-up (pairs, one-shot dual)", "iteration 1", "iteration 2", "evaluation", "export",
    ]
    assert result["config"]["training"]["mixed_precision"] == "bf16" and result["config"]["model"]["train"] == "lora"
    assert (tmp_path / "policy" / "adapter_config.json").is_file()
