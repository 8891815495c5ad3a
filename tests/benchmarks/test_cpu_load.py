"""The load benchmark's plumbing: every setting idle and busy, ratios to today's idle time from the same run."""

import json

from benchmarks import cpu_load


def test_every_setting_is_timed_idle_and_busy_and_reported_against_today_idle(tmp_path, monkeypatch):
    seconds = {("today", "idle"): 10.0, ("1 thread", "idle"): 18.0, ("passive", "idle"): 12.0, ("auto", "idle"): 10.2,
               ("today", "busy"): 24.0, ("1 thread", "busy"): 19.0, ("passive", "busy"): 13.0, ("auto", "busy"): 19.5}
    calls = []

    def fake(setting, load, prompts):
        calls.append((setting, load))
        return {"seconds": seconds[(setting, load)] + (len(calls) > len(seconds)), "threads": 1}  # round 2 slower

    monkeypatch.setattr(cpu_load, "_time", fake)
    assert cpu_load.main(["--out", str(tmp_path), "--prompts", "2", "--rounds", "2"]) == 0
    assert sorted(calls) == sorted(list(seconds) * 2)
    record = json.loads((tmp_path / f"{cpu_load.NAME}.json").read_text())
    best = seconds  # the faster of the two rounds
    for (setting, load), value in best.items():
        assert record["ratio_to_today_idle"][f"{setting}, {load}"] == value / best[("today", "idle")]
    assert "| auto | busy | 1 | 19.5 | 1.95 |" in (tmp_path / f"{cpu_load.NAME}.md").read_text()


def test_the_worker_samples_the_study_prompts(tokenizer, monkeypatch, capsys):
    """The timed step itself, on a tiny random model with the real tokenizer (the benchmark loads SmolLM2)."""
    from llm import models

    monkeypatch.setattr(models, "load_model", lambda: (models.tiny_model(tokenizer), tokenizer))
    cpu_load._worker(2, 1)
    record = json.loads(capsys.readouterr().out)
    assert record["threads"] == 1 and record["seconds"] > 0
