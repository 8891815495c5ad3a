"""The powered multi-token study end to end on the tiny model: runs, points, verdicts, figure and report rows."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis import multi_token_study as study
from analysis.decisions import equivalence, non_inferiority, one_sided
from paper_figures import multi_token
from paper_figures.report import claims

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# The study's own configuration, shrunk to the tiny random Llama (its text has no sentiment: r = simplicity,
# g_1 = safety).
TINY_OVERRIDES = (
    'model.name="tiny"', "model.top_k_layers=1", "data.limit=10", "data.test_fraction=0.5",
    'scorers.reward="simplicity"', 'scorers.utilities=["-toxicity"]', "generation.max_new_tokens=4",
    "generation.samples_per_prompt=3",
    "caid.iterations=2", "caid.dual_prompts=2", "evaluation.reference_samples=2", "training.learning_rate=1e-3",
)  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    cache = tmp_path_factory.mktemp("cache")
    design = study.StudyDesign(
        seeds=(0, 1), fractions=(0.25, 0.75), pairs=((0.5, 0.5),), baselines=("dpo_g",),
        overrides=(*TINY_OVERRIDES, f'model.cache_dir="{cache}"'),
    )  # fmt: skip
    out = root / multi_token.RESULTS_SUBDIR
    study.run_study(design, out, progress=False)
    study.write_results(out, design)
    return root, out, design


def _errors_by_hand(out, design, name, column, two=False):
    """(seeds, prompts) policy score - mean reference score - b, read with pandas and json only."""
    rows = []
    for seed in design.seeds:
        run = out / ("two_constraints" if two else "single") / f"seed{seed}" / name
        frame = pd.read_csv(run / "eval_scores.csv")
        means = frame.groupby(["model", "prompt_index"])[column].mean()
        scorers = frame.columns[3:-2].tolist()
        b = json.loads((run / "summary.json").read_text())["thresholds"][scorers.index(column) - 1]
        rows.append((means["policy"] - means["reference"]).to_numpy() - b)
    return np.array(rows)


def test_every_run_is_in_sigma_units_with_one_split_and_pool_for_all_seeds(finished):
    _, out, design = finished
    points = pd.read_csv(out / study.POINTS_FILE)
    assert len(points) == 2 * 4 + 1 + 2  # seeds x (caid, one_shot) x fractions, one baseline, two-constraint CAID
    single = points[(points["constraints"] == 1) & (points["method"] != "dpo_g")]
    # b is a fraction of one plug-in maximum: equal across seeds, and in the ratio of the fractions
    by_fraction = single.groupby("fractions")["b_1"].agg(["min", "max"])
    np.testing.assert_allclose(by_fraction["min"], by_fraction["max"])
    assert by_fraction.loc["0.75", "min"] == pytest.approx(3 * by_fraction.loc["0.25", "min"])
    for name in ("caid_b0.25", "one_shot_b0.75"):
        arm = study.load_arm([out / "single" / f"seed{s}" / name for s in design.seeds])
        np.testing.assert_allclose(arm.errors[0], _errors_by_hand(out, design, name, "-toxicity"), atol=1e-5)


def test_verdicts_are_the_pre_registered_tests_on_the_per_prompt_errors(finished):
    _, out, design = finished
    table = pd.read_csv(out / study.VERDICTS_FILE)
    assert len(table) == 3 * 2 + 2 + 2
    assert set(table["verdict"]) <= {"replicated", "refuted", "undecided"}
    track = table[(table["claim"] == "CAID tracks b") & table["setting"].str.startswith("b = 0.25 ")].iloc[0]
    expected = equivalence(_errors_by_hand(out, design, "caid_b0.25", "-toxicity"), study.MARGIN)
    assert track["estimate"] == pytest.approx(expected.estimate, abs=1e-5) and track["verdict"] == expected.verdict
    over = table[table["claim"] == "one-shot over at large b"].iloc[0]
    assert over["estimate"] == pytest.approx(
        one_sided(_errors_by_hand(out, design, "one_shot_b0.75", "-toxicity"), "above", study.MARGIN).estimate, abs=1e-5
    )
    points = pd.read_csv(out / study.POINTS_FILE)
    b = points[points["method"] == "caid"].groupby("fractions")["b_1"].first()
    np.testing.assert_allclose(table["halfwidth_per_spacing"], 1.96 * table["se"] / (b["0.75"] - b["0.25"]), rtol=1e-4)
    both = table[table["claim"].str.startswith("both constraints met (constraint 2)")].iloc[0]
    errors = _errors_by_hand(out, design, "caid_b0.5_0.5", "relevance", two=True)
    assert both["estimate"] == pytest.approx(non_inferiority(errors, study.MARGIN).estimate, abs=1e-5)


def test_figure_and_report_read_the_study(finished, tmp_path):
    root, _, _ = finished
    paths = multi_token.make_figure(root, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    rows = [c for c in claims(root, "quick") if c.key == "multi_token"]
    verdicts = pd.read_csv(root / multi_token.RESULTS_FILE)
    assert [c.verdict for c in rows] == verdicts["verdict"].tolist()
    assert any(c.key == "safety_sweeps" and c.verdict == "not run" for c in claims(root, "quick"))


def test_an_unstandardised_run_is_refused_by_name(finished, tmp_path):
    out = finished[1]
    copy = tmp_path / "caid"
    shutil.copytree(out / "single" / "seed0" / "caid_b0.25", copy)
    summary = copy / "summary.json"
    summary.write_text(summary.read_text().replace('"score_scales"', '"unused"'))
    with pytest.raises(ValueError, match=r"caid: scores are not standardised"):
        study.load_arm([copy])


def test_design_configurations_share_the_reference_seed():
    design = dataclasses.replace(study.SCALES["quick"], overrides=())
    one, two = design.run_config(2), design.run_config(1, two_constraints=True)
    assert one.seed == 2 and one.data_seed == two.data_seed == 0
    assert two.scorers.utilities == ["simplicity", "relevance"] and two.scorers.thresholds == [0.25, 0.5]
