"""``llm sweep``: methods x thresholds into the layout the analysis and the sweep figures read."""

import dataclasses
import json

import pytest

import llm.learner as learner
import llm.trainer as trainer
from analysis.statistics import constraint_satisfaction
from llm.sweep import SWEEP_FILE, run_sweep, sweep_runs
from paper_figures import fig1a_expected_vs_actual, fig1b_tradeoff
from tests.llm.test_pipeline import TINY


def test_sweep_runs_name_each_method_and_threshold_once():
    runs = sweep_runs(["caid", "dpo_h"], [[0.01, 0.05], [0.02, 0.05]])
    assert [r.name for r in runs] == ["caid_b0.01_0.05", "caid_b0.02_0.05", "dpo_h"]
    assert runs[-1].thresholds == (0.01, 0.05)
    with pytest.raises(ValueError, match="at least one threshold vector"):
        sweep_runs(["caid"], [])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    config = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, cache_dir=str(root / "cache")))
    config = dataclasses.replace(config, caid=dataclasses.replace(config.caid, iterations=1))
    runs = sweep_runs(["caid", "one_shot", "dpo_h"], [[0.0], [0.001], [5.0]])
    out = root / "llm_sweep" / "single"
    return config, runs, out, run_sweep(config, runs, out, progress=False)


def test_sweep_writes_every_run_and_records_unreachable_thresholds(sweep):
    _, _, out, records = sweep
    status = {r["name"]: r["status"] for r in records}
    assert status == {
        "caid_b0": "finished", "caid_b0.001": "finished", "caid_b5": "infeasible",
        "one_shot_b0": "finished", "one_shot_b0.001": "finished", "one_shot_b5": "infeasible",
        "dpo_h": "finished",
    }  # fmt: skip
    assert json.loads((out / SWEEP_FILE).read_text())["runs"] == records
    finished = sorted(name for name, s in status.items() if s == "finished")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == finished
    assert len(list((out.parents[1] / "cache" / "reference").glob("*.npz"))) == 1  # one shared reference phase


def test_rerunning_a_finished_sweep_recomputes_nothing(sweep, monkeypatch):
    config, runs, out, records = sweep
    monkeypatch.setattr(learner, "dpo_epoch", lambda *a, **k: pytest.fail("retrained a finished run"))
    monkeypatch.setattr(trainer.CAIDTrainer, "evaluate", lambda *a, **k: pytest.fail("re-evaluated a finished run"))
    assert run_sweep(config, runs, out, progress=False) == records


def test_sweep_feeds_the_statistics_and_the_figures(sweep, tmp_path):
    _, _, out, _ = sweep
    table = constraint_satisfaction(out)
    assert sorted(zip(table["method"], table["threshold"], strict=True)) == [
        ("caid", 0.0), ("caid", 0.001), ("dpo_h", 0.0), ("one_shot", 0.0), ("one_shot", 0.001)
    ]  # fmt: skip
    for module in (fig1a_expected_vs_actual, fig1b_tradeoff):
        paths = module.make_figure(out.parents[1], tmp_path / "figures")
        assert {p.suffix for p in paths} == {".png", ".pdf"} and all(p.stat().st_size > 5_000 for p in paths)
