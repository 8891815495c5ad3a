"""The laboratory's claims table on a tiny run: the shared claims, the controls, exact rows and violations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.claims import TRACKS
from analysis.crossed_anova import estimate
from analysis.decisions import Verdict
from analysis.next_token import laboratory
from analysis.next_token.laboratory import LabConfig
from analysis.next_token.methods import TrainingSettings
from analysis.next_token.verdicts import VIOLATIONS_FILE, load_arms, load_errors, write_verdicts

CONFIG = LabConfig(n_train=8, n_eval=16, k=4, fractions=(0.3, 0.5, 0.7), pairs=((0.3, 0.3),), seeds=(0, 1),
                   training=TrainingSettings(iterations=2, passes=1, batch_prompts=4, dual_prompts=4, dual_samples=2))


@pytest.fixture(scope="module")
def out(tiny, tmp_path_factory):
    model, tok = tiny
    root = tmp_path_factory.mktemp("lab")
    laboratory.run(CONFIG, root / "out", model=model, tokenizer=tok, cache_dir=root / "cache", progress=False)
    write_verdicts(root / "out")
    return root / "out"


def test_the_table_has_every_claim_with_size_and_power(out):
    table = pd.read_csv(out / "verdicts.csv")
    assert set(table["verdict"]) <= {v.value for v in Verdict}
    assert {"size", "power", "coverage", "reason"} <= set(table.columns)
    decided = table[table["verdict"].isin(["replicated", "refuted"]) & table["size"].notna()]
    assert (decided["size"] <= 0.05).all()
    for control in ("reference", "dpo_h"):
        rows = table[table["claim"] == f"{control} {TRACKS}"]
        assert len(rows) == 3 and not (rows["verdict"] == "replicated").any()
    # >= 3 thresholds: the slope rows are tested; R-OPT is never undecided (exact, or not testable)
    assert (table["claim"].str.contains("slope in")).sum() == 4
    r_opt = table[table["claim"] == "R-OPT within its Theorem 6 bound"].iloc[0]
    assert r_opt["verdict"] in ("not testable", "replicated", "refuted")


def test_rows_are_the_decisions_on_the_runs_errors(out):
    table = pd.read_csv(out / "verdicts.csv")
    runs = pd.read_csv(out / "runs.csv")
    errors = load_errors(out, runs, "caid_exact", "g1@0.7")
    row = table[(table["claim"] == f"caid_exact {TRACKS}") & (table["setting"] == "g1@0.7")].iloc[0]
    arms, fractions, double, clusters = load_arms(out)
    assert fractions == [0.3, 0.5, 0.7] and double == ["g1@0.3+g2@0.3"]
    assert clusters is not None and len(clusters) == 16  # world.json records the split: prompts cluster by frame
    if row["verdict"] != "not testable":
        assert row["estimate"] == pytest.approx(estimate(errors, clusters).value)
    b = arms["caid_exact", 0.5].thresholds
    np.testing.assert_allclose(arms["reference", 0.5].errors(), -np.repeat(b, 16, axis=1))


def test_without_the_split_each_prompt_is_its_own_cluster(out, tmp_path):
    world = json.loads((out / "world.json").read_text())
    assert world["split_seed"] == CONFIG.split_seed
    *_, clusters = load_arms(out)
    assert clusters.max() < 8  # 16 held-out prompts of fewer frames
    copy = tmp_path / "lab"
    copy.mkdir()
    (copy / "runs.csv").write_text((out / "runs.csv").read_text())
    (copy / "runs").symlink_to(out / "runs")
    (copy / "world.json").write_text(json.dumps({k: v for k, v in world.items() if k != "split_seed"}))
    *_, clusters = load_arms(copy)
    assert clusters is None


def test_violations_are_the_exact_per_prompt_shares(out):
    table = pd.read_csv(out / VIOLATIONS_FILE)
    runs = pd.read_csv(out / "runs.csv")
    errors = load_errors(out, runs, "one_shot_plugin", "g1@0.3")
    row = table[(table["method"] == "one_shot_plugin") & (table["setting"] == "g1@0.3")].iloc[0]
    assert row["share_missing_b"] == pytest.approx(np.mean(errors < 0))
    improvements = load_errors(out, runs, "one_shot_plugin", "g1@0.3", "improvement")
    assert row["q10"] == pytest.approx(np.quantile(improvements, 0.1))
