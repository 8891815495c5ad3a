import json

import numpy as np
import pandas as pd
import pytest

import theory
from analysis.parametrization_gap import laboratory as lab
from analysis.parametrization_gap.measurements import MeasurementSettings
from analysis.parametrization_gap.policy_classes import TransformerSize
from paper_figures.parametrization_gap import draw_run

TINY = lab.GapLabConfig(
    n_prompts=3,
    vocab_size=3,
    prompt_length=1,
    response_length=3,
    reference_size=TransformerSize(8, 1, 2),
    reference_iter=100,
    transformer_sizes=(TransformerSize(4, 1, 1),),
    lowrank_ranks=(1,),
    measurement=MeasurementSettings(
        caid_steps=4, refine_steps=3, max_iter=40, cold_iter=200, restoration_steps=4, practical_steps=3,
        dual_samples=64, dpo_pairs=300, dpo_iter=10,
    ),
)
TOL = 1e-9


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    lab.run(TINY, out, progress=False)
    return out


def _instance_problem(run_dir):
    data = np.load(run_dir / "instance.npz")
    return theory.ConstrainedProblem(
        data["ref_logprobs"], data["reward"], data["utilities"], data["thresholds"], float(data["beta"]),
        data["prompt_weights"],
    )


def test_files_and_columns(run_dir):
    summary = pd.read_csv(run_dir / "summary.csv")
    assert list(summary["label"]) == ["tabular", "lowrank-r1", "transformer-d4xL1"]
    for column in (*lab.SUMMARY_COLUMNS, "lam_star_1", "lam_star_2", "lam_p_star_1", "lam_p_star_2"):
        assert column in summary
    stems = {c[: -len("_measured")] for c in summary if c.endswith("_measured")}
    assert {"duality_gap", "dual_distance", "multi_u_opt", "multi_r_opt", "one_u_opt", "one_r_opt"} <= stems
    assert all(f"{s}_bound" in summary for s in stems)
    traj = pd.read_csv(run_dir / "trajectories.csv")
    assert set(traj["kind"]) == {"exact", "practical"}
    record = json.loads((run_dir / "config.json").read_text())
    assert record["config"]["n_prompts"] == 3 and "torch" in record["versions"]


def test_instance_is_the_solved_problem(run_dir):
    prob = _instance_problem(run_dir)
    summary = pd.read_csv(run_dir / "summary.csv")
    sol = theory.solve_dual(prob)
    np.testing.assert_allclose(summary["D_star"], sol.value, rtol=1e-10)
    np.testing.assert_allclose(summary[["lam_star_1", "lam_star_2"]].to_numpy()[0], sol.lam, rtol=1e-8)
    assert np.all(sol.lam > 0), "the world's thresholds must make every constraint active"


def test_weak_duality_on_every_class(run_dir):
    summary = pd.read_csv(run_dir / "summary.csv")
    # These hold mathematically for any class; a violation is a bug.
    assert np.all(summary["D_p_star"] <= summary["D_star"] + TOL)
    feasible = summary.dropna(subset=["P_p_star"])
    assert np.all(feasible["P_p_star"] <= feasible["P_star"] + TOL)
    assert np.all(feasible["P_p_star"] <= feasible["D_p_star"] + TOL)
    assert np.all(summary["dual_function_gap_measured"] >= -TOL)
    assert np.all(summary["nu"] >= 0)


def test_tabular_row_reproduces_the_exact_solution(run_dir):
    row = pd.read_csv(run_dir / "summary.csv").set_index("label").loc["tabular"]
    assert row["nu"] < 1e-3
    assert abs(row["D_p_star"] - row["D_star"]) < 1e-7
    assert abs(row["P_p_star"] - row["P_star"]) < 1e-4
    lam_p = np.array([row["lam_p_star_1"], row["lam_p_star_2"]])
    lam = np.array([row["lam_star_1"], row["lam_star_2"]])
    np.testing.assert_allclose(lam_p, lam, atol=1e-3 * (1 + np.abs(lam).max()))


def test_rerun_resumes_without_recomputing(run_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a finished class was measured again")

    monkeypatch.setattr(lab, "measure_policy_class", fail)
    before = pd.read_csv(run_dir / "summary.csv")
    after = lab.run(TINY, run_dir, progress=False)
    pd.testing.assert_frame_equal(before, after, check_dtype=False)


def test_rerun_after_a_killed_class_measures_only_that_class(run_dir, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "classes" / "lowrank-r1.json").unlink()
    calls = []
    real = lab.measure_policy_class
    monkeypatch.setattr(lab, "measure_policy_class", lambda *a, **k: calls.append(1) or real(*a, **k))
    lab.run(TINY, copy, progress=False)
    assert len(calls) == 1


def test_other_configuration_in_the_same_directory_is_refused(run_dir):
    import dataclasses

    with pytest.raises(ValueError, match="another configuration"):
        lab.run(dataclasses.replace(TINY, beta=0.5), run_dir, progress=False)


def test_figures(run_dir, tmp_path):
    paths = draw_run(run_dir, tmp_path)
    assert {p.name for p in paths} >= {"parametrization_gap_bounds.png", "caid_trajectories.png"}
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_missing_run_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"analysis\.parametrization_gap"):
        draw_run(tmp_path, tmp_path / "figs")
