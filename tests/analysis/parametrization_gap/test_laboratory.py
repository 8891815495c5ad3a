"""The laboratory end to end on a tiny world: every bound whose hypotheses hold is a number and holds; the
recorded hypotheses, margins and optima agree with independent computations (cvxpy, a minimax dual, finite
differences); runs resume; saved files are validated.
"""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import theory
from analysis.parametrization_gap import laboratory as lab
from analysis.parametrization_gap.measurements import BOUNDED, MeasurementSettings
from analysis.parametrization_gap.policy_classes import TransformerSize
from paper_figures.parametrization_gap import PANELS, draw_bounds, draw_run, draw_trajectories
from tests.analysis.parametrization_gap.independent import fd_segment_min_eigenvalue, minimax_margin
from theory.problem import InfeasibleProblemError

TINY = lab.GapLabConfig(
    n_prompts=3,
    vocab_size=3,
    prompt_length=1,
    response_length=3,
    reference_size=TransformerSize(8, 1, 2),
    reference_iter=100,
    transformer_sizes=(TransformerSize(2, 1, 1), TransformerSize(8, 1, 1)),
    lowrank_ranks=(20,),
    measurement=MeasurementSettings(
        caid_steps=2, refine_steps=3, max_iter=40, cold_iter=200, restoration_steps=4, practical_iterations=3,
        dual_samples=2000, dpo_pairs=2000, dpo_iter=10,
    ),
)  # fmt: skip
TOL = 1e-9


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    lab.run(TINY, out, progress=False)
    return out


@pytest.fixture(scope="module")
def summary(run_dir):
    return pd.read_csv(run_dir / "summary.csv")


@pytest.fixture(scope="module")
def prob(run_dir):
    data = np.load(run_dir / "instance.npz")
    return theory.ConstrainedProblem(
        data["ref_logprobs"], data["reward"], data["utilities"], data["thresholds"], float(data["beta"]),
        data["prompt_weights"],
    )  # fmt: skip


def _lam(row, prefix):
    return np.array([row[f"{prefix}_1"], row[f"{prefix}_2"]])


def assert_bounds_hold_where_hypotheses_hold(summary: pd.DataFrame) -> int:
    """Each (class, bound): a number within the bound where the hypotheses hold, NaN with a reason where not."""
    checked = 0
    for stem, result in BOUNDED.items():
        holds = summary[f"{stem}_hypothesis"] == "holds"
        bound, measured = summary[f"{stem}_bound"], summary[f"{stem}_measured"]
        assert summary.loc[~holds, f"{stem}_hypothesis"].str.match(r"fails: Assumption|fails: eq\.").all()
        assert bound[~holds].isna().all(), f"{stem}: a bound is reported although its hypotheses fail"
        assert bound[holds].notna().all() and measured[holds].notna().all(), f"{stem}: hypotheses hold, no check"
        over = summary.loc[holds & (measured > bound + TOL), "label"].tolist()
        assert not over, f"{result} ({stem}) violated on {over}"
        if f"{stem}_bound_lower" in summary:
            under = summary.loc[holds & (measured < summary[f"{stem}_bound_lower"] - TOL), "label"].tolist()
            assert not under, f"{result} ({stem}) lower side violated on {under}"
        checked += int(holds.sum())
    return checked


def test_every_bound_whose_hypotheses_hold_is_checked_and_holds(summary):
    assert list(summary["label"]) == ["tabular", "lowrank-r20", "transformer-d2xL1", "transformer-d8xL1"]
    checked = assert_bounds_hold_where_hypotheses_hold(summary)
    assert checked >= len(BOUNDED)  # at least the tabular row (next test)


def test_tabular_row_meets_every_hypothesis_and_reproduces_the_exact_solution(summary, prob):
    row = summary.set_index("label").loc["tabular"]
    assert all(row[f"{stem}_hypothesis"] == "holds" for stem in BOUNDED), row.filter(like="_hypothesis")
    assert row["nu"] < 1e-3
    primal = theory.solve_primal(prob)  # cvxpy, independent of the dual solver behind P_star
    assert row["P_star"] == pytest.approx(primal.value, abs=1e-5)
    assert abs(row["D_p_star"] - primal.value) < 1e-5 and abs(row["P_p_star"] - primal.value) < 1e-4
    np.testing.assert_allclose(_lam(row, "lam_p_star"), _lam(row, "lam_star"), atol=1e-3)


def test_restricted_classes_never_beat_the_cvxpy_optimum(summary, prob):
    primal = theory.solve_primal(prob)
    feasible = summary.dropna(subset=["P_p_star"])
    assert len(feasible) >= 3
    assert np.all(feasible["P_p_star"] <= primal.value + 1e-6)
    for _, row in summary.iterrows():  # weak duality in the class: D_p(lambda) <= D(lambda), closed form
        assert row["D_p_star"] <= theory.dual_value(prob, _lam(row, "lam_p_star")) + TOL


def test_assumption4_margin_decides_cvxpy_feasibility_of_the_tightened_problem(summary, prob):
    slater = minimax_margin(prob)
    M = float(max(np.abs(prob.constraint_functions()).max(), np.abs(prob.reward).max()))
    for _, row in summary.iterrows():
        assert row["M"] == pytest.approx(M, rel=1e-12)
        assert row["slater_margin"] == pytest.approx(slater, abs=1e-7)
        margin = slater - M * row["nu"]
        assert row["assumption4_margin"] == pytest.approx(margin, abs=1e-7)
        tightened = prob.with_thresholds(prob.thresholds + M * row["nu"])
        if margin > 1e-3:
            assert np.all(theory.solve_primal(tightened).slacks >= -1e-6)
            assert np.all(np.isfinite(_lam(row, "lam_nu")))
        elif margin < -1e-3:
            with pytest.raises(InfeasibleProblemError):
                theory.solve_primal(tightened)
            assert np.all(np.isnan(_lam(row, "lam_nu")))
            assert row["duality_gap_hypothesis"].startswith("fails: Assumption 4 (Mnu-tightened problem infeasible")


def test_assumption5_segment_constant_matches_finite_differences(summary, prob):
    for _, row in summary.iterrows():
        fd = fd_segment_min_eigenvalue(prob, _lam(row, "lam_star"), _lam(row, "lam_p_star"))
        assert row["mu_D_segment_p"] == pytest.approx(fd, rel=1e-4)
        assert row["mu_D_segment_p"] <= row["mu_D"] + 1e-12  # the segment contains lambda*


def test_practical_caid_starts_at_the_one_shot_dual_and_runs_the_paper_epochs(run_dir, summary):
    traj = pd.read_csv(run_dir / "trajectories.csv")
    for _, row in summary.iterrows():
        prac = traj[(traj["label"] == row["label"]) & (traj["kind"] == "practical")].sort_values("t")
        assert len(prac) == TINY.measurement.practical_iterations
        np.testing.assert_allclose(prac[["lam_1", "lam_2"]].to_numpy()[0], _lam(row, "lam_star"), rtol=1e-12)
        best = prac[["lam_1", "lam_2"]].to_numpy()[int(row["practical_t_best"])]
        np.testing.assert_allclose(best, _lam(row, "practical_lam_best"), rtol=1e-12)
        exact = traj[(traj["label"] == row["label"]) & (traj["kind"] == "exact")].sort_values("t")
        np.testing.assert_allclose(exact[["lam_1", "lam_2"]].to_numpy()[0], _lam(row, "lam_star"), rtol=1e-12)
        assert row["returned_u_opt"] >= 0 and np.isfinite(row["returned_r_opt"])


def test_rerun_resumes_without_recomputing(run_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a finished class was measured again")

    monkeypatch.setattr(lab, "measure_policy_class", fail)
    before = pd.read_csv(run_dir / "summary.csv")
    after = lab.run(TINY, run_dir, progress=False)
    pd.testing.assert_frame_equal(before, after, check_dtype=False)


def test_rerun_after_a_killed_class_measures_only_that_class(run_dir, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "classes" / "lowrank-r20.json").unlink()
    calls = []
    real = lab.measure_policy_class
    monkeypatch.setattr(lab, "measure_policy_class", lambda *a, **k: calls.append(1) or real(*a, **k))
    lab.run(TINY, copy, progress=False)
    assert len(calls) == 1


def test_corrupt_class_file_is_named_with_the_fix(run_dir, tmp_path):
    copy = tmp_path / "corrupt"
    shutil.copytree(run_dir, copy)
    path = copy / "classes" / "tabular.json"
    path.write_text(json.dumps({"row": {"label": "lowrank-r20"}, "trajectories": []}))
    with pytest.raises(ValueError, match=r"tabular\.json.*delete"):
        lab.run(TINY, copy, progress=False)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"tabular\.json: unreadable"):
        lab.run(TINY, copy, progress=False)


def test_other_configuration_in_the_same_directory_is_refused(run_dir):
    with pytest.raises(ValueError, match="another configuration"):
        lab.run(dataclasses.replace(TINY, beta=0.5), run_dir, progress=False)


def _scatter(fig, gid):
    found = [c for ax in fig.axes for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1, gid
    return np.asarray(found[0].get_offsets())


def test_bounds_figure_plots_the_summary_and_only_applicable_bounds(summary):
    fig = draw_bounds(summary)
    for stem, _ in PANELS:
        for family, rows in summary.groupby("policy_class"):
            measured = _scatter(fig, f"{stem}:{family}:measured")
            np.testing.assert_allclose(measured[:, 0], rows["nu"].clip(lower=1e-12))
            np.testing.assert_allclose(measured[:, 1], rows[f"{stem}_measured"].abs().clip(lower=1e-12))
            applies = rows[rows[f"{stem}_hypothesis"] == "holds"]
            bound = _scatter(fig, f"{stem}:{family}:bound")
            np.testing.assert_allclose(bound.reshape(-1, 2), applies[["nu", f"{stem}_bound"]].to_numpy().reshape(-1, 2))


def test_trajectory_figure_plots_the_saved_dual_iterates(run_dir, summary):
    traj = pd.read_csv(run_dir / "trajectories.csv")
    fig = draw_trajectories(summary, traj)
    for ax, label in zip(fig.axes, summary["label"], strict=False):
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
        part = traj[(traj["label"] == label) & (traj["kind"] == "exact")]
        expected = [part["lam_1"].to_numpy(), part["lam_2"].to_numpy()]
        drawn = [np.asarray(line.get_ydata()) for line in lines if len(line.get_ydata()) == len(part)]
        for values in expected:
            assert any(np.allclose(values, d) for d in drawn), label


def test_draw_run_writes_both_figures(run_dir, tmp_path):
    paths = draw_run(run_dir, tmp_path)
    assert {p.name for p in paths} == {
        "parametrization_gap_bounds.png", "parametrization_gap_bounds.pdf", "caid_trajectories.png",
        "caid_trajectories.pdf",
    }  # fmt: skip


def test_missing_run_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"analysis\.parametrization_gap"):
        draw_run(tmp_path, tmp_path / "figs")


@pytest.mark.slow
def test_quick_world_bounds_and_nu_range(tmp_path):
    """The quick laboratory (minutes): every applicable bound holds and nu spans two decades."""
    summary = lab.run(lab.SCALES["quick"], tmp_path, progress=False)
    checked = assert_bounds_hold_where_hypotheses_hold(summary)
    assert checked >= len(summary) * len(BOUNDED) // 2
    parametrized = summary[summary["policy_class"] != "tabular"]
    assert parametrized["nu"].max() / parametrized["nu"].min() >= 100
    adapters = summary[summary["policy_class"] == "transformer"]["nu"]
    assert adapters.max() >= 0.3 and adapters.min() <= 3e-3


def test_a_damaged_reference_weights_file_is_named(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    weights = copy / "reference_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"reference_model\.safetensors: unreadable"):
        lab.run(TINY, copy, progress=False)
