"""The multi-token study end to end on the tiny model: runs, points, arms, violations, verdicts, figure, report."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis import multi_token_study as study
from analysis.claims import TRACKS
from analysis.crossed_anova import estimate
from analysis.decisions import Verdict
from llm.methods import REGISTRY
from llm.prompts.reviews import review_grid
from paper_figures import multi_token
from paper_figures.report import claims

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# The study's own configuration, shrunk to the tiny random Llama (its text has no sentiment: r = simplicity,
# g_1 = safety).
TINY_OVERRIDES = (
    'model.name="tiny"', "model.top_k_layers=1", "data.limit=12", "data.test_fraction=0.5",
    'scorers.reward="simplicity"', 'scorers.utilities=["-toxicity"]', "generation.max_new_tokens=4",
    "generation.samples_per_prompt=3",
    "caid.iterations=2", "caid.dual_prompts=2", "evaluation.reference_samples=2", "training.learning_rate=1e-3",
)  # fmt: skip
CONTROLS = ("reference", "dpo_h")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    cache = tmp_path_factory.mktemp("cache")
    design = study.StudyDesign(
        seeds=(0, 1), fractions=(0.25, 0.75), controls=CONTROLS, pairs=((0.5, 0.5),), testable_second=True,
        overrides=(*TINY_OVERRIDES, f'model.cache_dir="{cache}"'),
    )  # fmt: skip
    out = root / multi_token.RESULTS_SUBDIR
    study.run_study(design, out, progress=False)
    study.write_results(out, design)
    return root, out, design


def _by_hand(out, design, name, column, seed, two=False):
    """{prompt text: policy score - mean reference score - b} of one run, read with pandas and json only."""
    run = out / ("two_constraints" if two else "single") / f"seed{seed}" / name
    frame = pd.read_csv(run / "eval_scores.csv")
    means = frame.groupby(["model", "prompt_index"])[column].mean()
    scorers = frame.columns[3:-2].tolist()
    b = json.loads((run / "summary.json").read_text())["thresholds"][scorers.index(column) - 1]
    prompts = study.held_out_prompts(design.run_config(seed, two))
    gains = (means["policy"] - means["reference"]).to_numpy() - b
    return {prompts[i]: g for i, g in zip(means["policy"].index, gains, strict=True)}


def test_each_seed_has_its_own_split_and_reference_pool(finished):
    _, out, design = finished
    points = pd.read_csv(out / study.POINTS_FILE)
    assert len(points) == 2 * (2 * 2 + len(CONTROLS)) + 2  # seeds x (methods x fractions + controls) + two-constraint
    single = points[(points["constraints"] == 1) & points["method"].isin(["caid", "one_shot"])]
    per_seed = single.pivot_table(index="seed", columns="fractions", values="b_1")
    np.testing.assert_allclose(per_seed["0.75"], 3 * per_seed["0.25"])  # b = fraction x the seed's own M
    assert per_seed["0.25"].nunique() == 2  # the pools differ between seeds
    held = [set(study.held_out_prompts(design.run_config(s))) for s in design.seeds]
    assert held[0] != held[1] and held[0] <= set(review_grid())


def test_arms_are_the_runs_errors_on_the_prompt_grid(finished):
    _, out, design = finished
    arms, labels, pools = study.load_arms(out, design)
    texts, _ = study.prompt_units(design)
    grid = review_grid()
    assert list(labels) == [grid.index(t) // 24 for t in texts]
    for seed_row, seed in enumerate(design.seeds):
        for method, f in (("caid", 0.25), ("one_shot", 0.75)):
            expected = _by_hand(out, design, f"{method}_b{f:g}", "-toxicity", seed)
            got = arms[method, f].errors()[seed_row]
            placed = {t: v for t, v in zip(texts, got, strict=True) if np.isfinite(v)}
            assert placed == pytest.approx(expected, abs=1e-5)
    control = arms[CONTROLS[0], 0.75]
    np.testing.assert_allclose(control.thresholds, arms["caid", 0.75].thresholds)  # judged against that b
    assert pools.shape[0] == 2 and pools.shape[2] == 2  # reward and g_1, two reference samples per prompt


def test_verdicts_have_size_power_and_the_controls(finished):
    _, out, design = finished
    table = pd.read_csv(out / study.VERDICTS_FILE)
    assert set(table["verdict"]) <= {v.value for v in Verdict}
    assert {"size", "power", "coverage", "reason", "p_holm"} <= set(table.columns)
    for control in CONTROLS:
        rows = table[table["claim"] == f"{control} {TRACKS}"]
        assert len(rows) == 2 and not (rows["verdict"] == "replicated").any()
    arms, labels, _ = study.load_arms(out, design)
    track = table[(table["claim"] == f"caid {TRACKS}") & table["setting"].str.startswith("b = 0.75 ")].iloc[0]
    if track["verdict"] != "not testable":
        assert track["estimate"] == pytest.approx(estimate(arms["caid", 0.75].errors(), labels).value)
    decided = table[table["verdict"].isin(["replicated", "refuted"])]
    assert (decided["size"] <= 0.05).all()
    both = table[table["claim"].str.startswith("both constraints met (constraint 2)")].iloc[0]
    hand = [_by_hand(out, design, "caid_b0.5_0.5", "relevance", s, two=True) for s in design.seeds]
    assert both["n_seeds"] == 2 and np.isfinite(both["estimate"]) and hand[0]


def test_violations_are_the_per_prompt_shares(finished):
    _, out, design = finished
    table = pd.read_csv(out / study.VIOLATIONS_FILE)
    row = table[(table["method"] == "caid") & table["setting"].str.startswith("b = 0.25 ")].iloc[0]
    errors = np.concatenate([list(_by_hand(out, design, "caid_b0.25", "-toxicity", s).values()) for s in design.seeds])
    assert row["share_missing_b"] == pytest.approx(np.mean(errors < 0))
    assert row["q10"] <= row["mean"] <= row["q90"] or row["units"] < 10


def test_points_carry_each_runs_attenuation_at_its_last_lambda(finished):
    _, out, design = finished
    points = pd.read_csv(out / study.POINTS_FILE)
    trained = points[points["method"] != "reference"]
    np.testing.assert_allclose(trained["attenuation_1"], trained["g_1_improvement"] / trained["tilt_improvement_1"])
    reference = points[points["method"] == "reference"]
    assert (reference["tilt_improvement_1"] == 0).all() and reference["attenuation_1"].isna().all()
    two = points[points["constraints"] == 2]
    assert np.isfinite(two[["tilt_improvement_1", "tilt_improvement_2", "attenuation_2"]].to_numpy()).all()
    # Kish ESS of K = 2 reference samples per prompt (evaluation.reference_samples)
    assert ((1 <= points["ess_min"]) & (points["ess_min"] <= points["ess_median"]) & (points["ess_median"] <= 2)).all()
    for seed in design.seeds:  # the tilt's lambda is the one the last CAID iteration trained at
        run = out / "single" / f"seed{seed}" / "caid_b0.75"
        last = pd.read_csv(run / "dual_trajectory.csv").iloc[-1]
        assert study.tilt_multipliers(run) == (1.0, pytest.approx([last["lambda_1"]]))


def test_figure_and_report_read_the_study(finished, tmp_path):
    root, out, _ = finished
    paths = multi_token.make_figure(root, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    # Panel (a): CAID's line is its mean over seeds at each threshold fraction (b differs between seeds' pools).
    points = pd.read_csv(out / "points.csv")
    caid = points[(points["method"] == "caid") & (points["constraints"] == 1)].groupby("fractions")
    line = next(ln for ln in multi_token.draw(root).axes[0].get_lines() if ln.get_label() == REGISTRY["caid"].label)
    np.testing.assert_allclose(line.get_xdata(), caid["b_1"].mean().to_numpy())
    np.testing.assert_allclose(line.get_ydata(), caid["g_1_improvement"].mean().to_numpy())
    rows = [c for c in claims(root, "quick") if c.key == "multi_token"]
    verdicts = pd.read_csv(root / multi_token.RESULTS_FILE)
    assert [c.verdict for c in rows] == verdicts["verdict"].tolist()
    assert any(c.key == "safety_sweeps" and c.verdict == "not testable" for c in claims(root, "quick"))


def test_an_unstandardised_run_is_refused_by_name(finished, tmp_path):
    _, out, design = finished
    copy = tmp_path / "caid"
    shutil.copytree(out / "single" / "seed0" / "caid_b0.25", copy)
    summary = copy / "summary.json"
    summary.write_text(summary.read_text().replace('"score_scales"', '"unused"'))
    with pytest.raises(ValueError, match=r"caid: scores are not standardised"):
        study.load_run(copy, design.run_config(0), {})


def test_design_configurations_give_each_seed_its_pool():
    design = dataclasses.replace(study.SCALES["full"], overrides=())
    one, two = design.run_config(2), design.run_config(1, two_constraints=True)
    assert one.seed == 2 and one.data_seed == 2 and two.data_seed == 1
    assert two.scorers.utilities == ["simplicity", "relevance"] and two.scorers.thresholds == [0.25, 0.5]
    quick = study.SCALES["quick"]
    assert not quick.pairs and quick.controls == ("reference", "dpo_h")
    config = quick.run_config(0)
    assert len(study.held_out_prompts(config)) == 192


def test_a_method_the_registry_does_not_know_stops_before_anything_runs(tmp_path, monkeypatch, capsys):
    design = dataclasses.replace(study.SCALES["quick"], controls=("no_such_method",))
    monkeypatch.setitem(study.SCALES, "quick", design)
    assert study.main(["--out", str(tmp_path / "out")]) == 2
    assert "['no_such_method'] are not in the methods registry" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
