import csv
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.dual_trajectory import dual_trajectory_diagnostics, trajectory_diagnostics
from analysis.pareto import pareto_front
from analysis.statistics import (
    collect_runs,
    constraint_satisfaction,
    improvement_table,
    load_eval_scores,
    paired_improvement,
    score_histograms,
)
from llm.paired_statistics import improvement
from llm.run_schema import RunSummary

# ------------------------------------------------------------------------------------------------------
# Coverage of the two confidence intervals.

REPS, N_PROMPTS, SAMPLES, N_BOOT = 400, 60, 2, 1000


def _synthetic_scores(rng, distribution):
    """Paired (policy, reference) scores with a shared prompt effect; returns them and the true improvement."""
    prompt_effect = rng.normal(size=(N_PROMPTS, 1))
    reference = prompt_effect + rng.normal(size=(N_PROMPTS, SAMPLES))
    if distribution == "normal":
        return prompt_effect + 0.3 + rng.normal(size=(N_PROMPTS, SAMPLES)), reference, 0.3
    # Gamma(0.5, 1) noise: skewness 2.8 per sample, mean 0.5.
    return prompt_effect + rng.gamma(0.5, 1.0, size=(N_PROMPTS, SAMPLES)), reference, 0.5


@pytest.mark.parametrize(("distribution", "confidence"), [("normal", 0.95), ("skewed", 0.95), ("normal", 0.80)])
def test_normal_and_bootstrap_intervals_cover_the_true_improvement_at_the_nominal_rate(distribution, confidence):
    rng = np.random.default_rng(12345)
    covered = {"normal": 0, "bootstrap": 0}
    for _ in range(REPS):
        policy, reference, truth = _synthetic_scores(rng, distribution)
        imp = paired_improvement(policy, reference, confidence=confidence, n_boot=N_BOOT, rng=rng)
        covered["normal"] += imp.ci_low <= truth <= imp.ci_high
        covered["bootstrap"] += imp.boot_low <= truth <= imp.boot_high
    # A 99.9% binomial acceptance region for the number of covering intervals at the nominal rate.
    low, high = stats.binom.interval(0.999, REPS, confidence)
    for kind, count in covered.items():
        assert low <= count <= high, f"{kind} CI covered {count}/{REPS}, outside [{low}, {high}] at {confidence}"
    if confidence == 0.80:  # the check has power: 80% intervals are rejected as 95% intervals
        assert max(covered.values()) < stats.binom.interval(0.999, REPS, 0.95)[0]


def test_z_interval_is_the_pipelines_and_t_is_wider():
    rng = np.random.default_rng(0)
    policy, reference = rng.normal(size=(20, 2)), rng.normal(size=(20, 2))
    diff = policy.mean(axis=1) - reference.mean(axis=1)
    pipeline_half = 1.96 * diff.std(ddof=1) / np.sqrt(20)  # llm.pipeline.improvement's formula
    z = paired_improvement(policy, reference, interval="z")
    t = paired_improvement(policy, reference, interval="t")
    assert z.mean == pytest.approx(diff.mean(), abs=1e-15) and z.n_prompts == 20
    assert (z.ci_high - z.ci_low) / 2 == pytest.approx(pipeline_half, rel=1e-4)
    assert (t.ci_high - t.ci_low) / 2 == pytest.approx(pipeline_half * stats.t.ppf(0.975, 19) / 1.96, rel=1e-4)


def test_bootstrap_is_seeded_and_percentile():
    rng = np.random.default_rng(1)
    policy, reference = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    a = paired_improvement(policy, reference, n_boot=500, rng=7)
    b = paired_improvement(policy, reference, n_boot=500, rng=np.random.default_rng(7))
    c = paired_improvement(policy, reference, n_boot=500, rng=8)
    np.testing.assert_array_equal(a.boot_means, b.boot_means)
    assert a.boot_low != c.boot_low
    assert [a.boot_low, a.boot_high] == pytest.approx(np.quantile(a.boot_means, [0.025, 0.975]), rel=1e-12)
    # Bootstrap means are means of resampled per-prompt differences: they stay within their range.
    diff = policy.mean(axis=1) - reference.mean(axis=1)
    assert diff.min() <= a.boot_means.min() and a.boot_means.max() <= diff.max()


@pytest.mark.parametrize(
    ("policy", "reference", "kwargs", "match"),
    [
        (np.zeros((5, 2)), np.zeros((4, 2)), {}, "reference: expected the policy's 5 prompts"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), {}, "policy: contains NaN"),
        (np.zeros((1, 2)), np.zeros((1, 2)), {}, "at least 2 prompts"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"confidence": 95}, "confidence"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"n_boot": 0}, "n_boot"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"interval": "normal"}, "interval"),
    ],
)
def test_paired_improvement_rejects_bad_input(policy, reference, kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_improvement(policy, reference, **kwargs)


# ------------------------------------------------------------------------------------------------------
# One-sided satisfaction verdicts.


def _improvement_of(diff):
    return paired_improvement(np.asarray(diff)[:, None], np.zeros((len(diff), 1)), n_boot=2000, rng=0)


def test_verdicts_on_clear_and_borderline_cases():
    imp = _improvement_of(1.0 + 0.1 * np.tile([-1.0, 1.0], 25))  # mean 1, se ~0.014
    clear = imp.check(0.5)
    assert (clear.satisfied, clear.verdict, clear.p_satisfied) == (True, "satisfied", 1.0)
    violated = imp.check(1.5)
    assert (violated.satisfied, violated.verdict, violated.p_satisfied) == (False, "violated", 0.0)
    at_mean = imp.check(imp.mean)  # the paper's definition holds, but no confidence either way
    assert at_mean.satisfied and at_mean.verdict == "undetermined" and 0.3 < at_mean.p_satisfied < 0.7
    slightly_above = imp.check(imp.mean + 0.005)
    assert not slightly_above.satisfied and slightly_above.verdict == "undetermined"
    # The one-sided bounds are mean -/+ t_{0.95, n-1} se, and the verdict flips exactly at them.
    half = stats.t.ppf(0.95, 49) * imp.standard_error
    assert clear.lower_bound == pytest.approx(imp.mean - half) and clear.upper_bound == pytest.approx(imp.mean + half)
    assert imp.check(clear.lower_bound).verdict == "satisfied"
    assert imp.check(np.nextafter(clear.lower_bound, 2.0)).verdict == "undetermined"
    assert imp.check(np.nextafter(clear.upper_bound, 2.0)).verdict == "violated"
    # A lower confidence narrows the bounds.
    assert imp.check(imp.mean - 0.015, confidence=0.95).verdict == "undetermined"
    assert imp.check(imp.mean - 0.015, confidence=0.60).verdict == "satisfied"


def test_what_the_mean_hides_per_prompt():
    """The share of prompts below b and the 10% / 90% quantiles, against counts and numpy's quantiles."""
    diff = np.arange(20.0) / 10  # 0.0 .. 1.9
    imp = _improvement_of(diff)
    assert imp.check(0.55).share_missing_b == 6 / 20 and imp.check(0.0).share_missing_b == 0.0
    row = imp.as_row()
    assert (row["q10"], row["q90"]) == pytest.approx(tuple(np.quantile(diff, [0.1, 0.9])))
    summary = improvement(diff[:, None], np.zeros((20, 1)), threshold=1.0)
    assert summary["share_missing_b"] == 0.5 and summary["q10"] == row["q10"]
    assert "share_missing_b" not in improvement(diff[:, None], np.zeros((20, 1)))


def test_verdict_with_no_spread_is_decided_by_the_mean():
    imp = _improvement_of(np.full(10, 0.25))
    assert imp.sd == 0 and (imp.ci_low, imp.ci_high) == (0.25, 0.25)
    assert imp.check(0.25).verdict == "satisfied" and imp.check(0.3).verdict == "violated"


# ------------------------------------------------------------------------------------------------------
# Pareto front.

POINTS = [
    (0.0, 5.0),  # 0 front: the largest y
    (1.0, 4.0),  # 1 dominated by 2: same y, smaller x
    (2.0, 4.0),  # 2 front
    (2.0, 4.0),  # 3 front: an exact copy of 2
    (2.0, 3.0),  # 4 dominated by 2: same x, smaller y
    (3.0, 1.0),  # 5 front: the largest x
    (0.5, 4.5),  # 6 front
    (3.0, 0.0),  # 7 dominated by 5: same x
    (-1.0, 5.0),  # 8 dominated by 0: same y
    (1.0, 1.0),  # 9 dominated
]


def test_pareto_front_of_a_hand_made_set_with_ties_and_duplicates():
    front = pareto_front(np.array(POINTS))
    assert front.index.tolist() == [0, 6, 2, 3, 5]
    assert list(front.columns) == ["x", "y"]
    np.testing.assert_array_equal(front.to_numpy(), np.array(POINTS)[[0, 6, 2, 3, 5]])
    assert pareto_front(np.array(POINTS))[lambda f: ~f.duplicated()].index.tolist() == [0, 6, 2, 5]


def test_pareto_front_keeps_dataframe_labels_and_matches_the_definition():
    frame = pd.DataFrame(POINTS, columns=["safety", "helpfulness"], index=[f"run{i}" for i in range(10)])
    front = pareto_front(frame)
    assert front.index.tolist() == ["run0", "run6", "run2", "run3", "run5"]
    assert list(front.columns) == ["safety", "helpfulness"]
    rng = np.random.default_rng(3)
    for _ in range(20):
        pts = rng.integers(0, 6, size=(40, 2)).astype(float)  # many ties and copies
        dominated = [any((q >= p).all() and (q > p).any() for q in pts) for p in pts]  # the O(n^2) definition
        expected = sorted(np.flatnonzero(~np.array(dominated)), key=lambda i: (pts[i, 0], i))
        assert pareto_front(pts).index.tolist() == expected


def test_pareto_front_rejects_bad_points():
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([[0.0, np.nan]])
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        pareto_front(np.zeros((3, 3)))


# ------------------------------------------------------------------------------------------------------
# Dual trajectory diagnostics.

TRAJECTORY = np.array([[1.0, 0.0], [2.0, 0.0], [1.5, 0.5], [1.5, 0.25], [3.0, 0.25], [2.0, 0.5]])


def test_trajectory_diagnostics_on_a_hand_made_trajectory():
    slacks = np.array([[-0.5, 0.1], [0.2, -0.25], [np.nan, np.nan], [0.0, 0.5], [-0.125, -0.125], [0.25, 0.0]])
    diag = trajectory_diagnostics(TRAJECTORY, [1.0, 0.0], [2.0, 0.5], measured_slacks=slacks, best_iteration=4)
    # coordinate 1 steps +1, -0.5, 0, +1.5, -1: three flips; coordinate 2 steps 0, +0.5, -0.25, 0, +0.25: two.
    assert diag.per_coordinate["sign_changes"].tolist() == [3, 2]
    assert diag.per_coordinate["total_variation"].tolist() == [4.0, 1.0]
    assert diag.per_coordinate["net_change"].tolist() == [1.0, 0.5]
    rows = diag.per_iteration
    assert rows["iteration"].tolist() == [1, 2, 3, 4, 5, 6]
    expected = [0, 1, np.hypot(0.5, 0.5), np.hypot(0.5, 0.25), np.hypot(2, 0.25), np.hypot(1, 0.5)]
    np.testing.assert_allclose(rows["dist_one_shot"], expected)
    np.testing.assert_allclose(rows["dist_last"].iloc[[0, 3, 5]], [np.hypot(1, 0.5), np.hypot(0.5, 0.25), 0])
    np.testing.assert_array_equal(rows["violation"], [0.5, 0.25, np.nan, 0.0, 0.25, 0.0])
    assert rows["is_best"].tolist() == [False, False, False, True, False, False]
    assert (diag.best_iteration, diag.last_iteration) == (4, 6)
    assert diag.best_to_last == pytest.approx(np.hypot(0.5, 0.25))


def test_a_monotone_or_fixed_trajectory_does_not_oscillate():
    diag = trajectory_diagnostics(np.array([0.5, 0.75, 0.75, 2.0]), [0.5])
    assert diag.per_coordinate["sign_changes"].tolist() == [0]
    assert diag.per_coordinate["total_variation"].tolist() == diag.per_coordinate["net_change"].tolist() == [1.5]
    assert diag.best_iteration is None and np.isnan(diag.best_to_last) and "violation" not in diag.per_iteration
    fixed = trajectory_diagnostics(np.ones((3, 1)), [1.0])
    assert fixed.per_coordinate["total_variation"].tolist() == [0.0]
    with pytest.raises(ValueError, match="lambda_one_shot"):
        trajectory_diagnostics(TRAJECTORY, [1.0])
    with pytest.raises(ValueError, match="best_iteration"):
        trajectory_diagnostics(TRAJECTORY, [1.0, 0.0], best_iteration=9)


# ------------------------------------------------------------------------------------------------------
# Readers of run directories (synthetic files in the formats `python -m llm run` writes).

SCORERS = ["relevance", "-toxicity"]


def _run_scores(seed, utility_gain, n=30):
    """(scorer, model) -> (n, 2) scores; the utility's per-prompt improvement is exactly utility_gain +/- 0.05."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=(2, n, 2)).round(3)
    policy = reference + rng.normal(0.1, 0.2, size=(2, n, 2)).round(3)
    policy[1] = reference[1] + utility_gain + 0.05 * np.array([1.0, -1.0])[np.arange(n) % 2][:, None]
    return policy, reference


def _write_run(run_dir, policy, reference, thresholds, method="caid", finished=True):
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": {"method": method}, "versions": {}}))
    if not finished:
        return
    with open(run_dir / "eval_scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["model", "prompt_index", "sample", *SCORERS, "response"])
        for label, data in (("policy", policy), ("reference", reference)):
            for i in range(data.shape[1]):
                for j in range(data.shape[2]):
                    text = f'answer {i}, "quoted",\nsecond line' if j == 0 else "NA"
                    writer.writerow([label, i, j, *(f"{v:.6g}" for v in data[:, i, j]), text])
    lam = [[1.0], [1.25], [1.5]]
    with open(run_dir / "dual_trajectory.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["iteration", "lambda_1", "slack_1"])
        writer.writerows([[1, *lam[0], "nan"], [2, *lam[1], -0.04], [3, *lam[2], -0.03]])
    RunSummary(
        method=method, thresholds=tuple(thresholds), lambda_one_shot=tuple(lam[0]), lambda_last=tuple(lam[2]),
        improvements={}, constraints_satisfied=(), kl_estimate=2.5, last_iteration=3,
        best_iteration=2, measured_slack_by_iteration={"1": (-0.04,), "2": (-0.03,), "3": (-0.05,)},
        reference_reward_utility_correlation={}, n_train_prompts=60, n_test_prompts=policy.shape[1],
        reference_key="abc",
    ).write(run_dir)  # fmt: skip


def test_run_directory_readers(tmp_path):
    policy, reference = _run_scores(0, 0.5)
    _write_run(tmp_path / "run", policy, reference, [0.1])
    scores = load_eval_scores(tmp_path / "run")
    assert scores.scorers == tuple(SCORERS) and scores.prompt_index.tolist() == list(range(30))
    after, before = scores.scores("-toxicity")
    np.testing.assert_allclose(after, policy[1], rtol=1e-5)
    np.testing.assert_allclose(before, reference[1], rtol=1e-5)

    table = improvement_table(tmp_path / "run", n_boot=300, seed=4)
    assert table["scorer"].tolist() == SCORERS and table["role"].tolist() == ["reward", "utility"]
    expected = paired_improvement(scores.policy[0], scores.reference[0], n_boot=300, rng=4)
    assert table.iloc[0][["mean", "ci_low", "ci_high", "boot_low", "boot_high"]].tolist() == pytest.approx(
        [expected.mean, expected.ci_low, expected.ci_high, expected.boot_low, expected.boot_high]
    )
    assert table.iloc[1]["mean"] == pytest.approx(0.5, abs=1e-6) and table["n_prompts"].tolist() == [30, 30]

    hist = score_histograms(tmp_path / "run", bins=7)
    for name in SCORERS:
        part = hist[hist["scorer"] == name]
        assert len(part) == 7 and part["policy"].sum() == part["reference"].sum() == 60
        np.testing.assert_array_equal(part["bin_low"].iloc[1:], part["bin_high"].iloc[:-1])
        values = np.concatenate([scores.scores(name)[0].ravel(), scores.scores(name)[1].ravel()])
        assert (part["bin_low"].min(), part["bin_high"].max()) == (values.min(), values.max())

    diag = dual_trajectory_diagnostics(tmp_path / "run")
    assert diag.per_iteration["lambda_1"].tolist() == [1.0, 1.25, 1.5]
    assert diag.per_iteration["measured_slack_1"].tolist() == [-0.04, -0.03, -0.05]
    assert diag.per_iteration["dist_one_shot"].tolist() == [0.0, 0.25, 0.5]
    assert (diag.best_iteration, diag.last_iteration, diag.best_to_last) == (2, 3, 0.25)


def test_sweep_folder_collects_finished_runs_and_warns_about_unfinished_ones(tmp_path):
    for b in (0.1, 0.5, 2.0):
        _write_run(tmp_path / f"b{b}", *_run_scores(1, 0.5), [b])
    _write_run(tmp_path / "b9", None, None, [9.0], finished=False)
    (tmp_path / "figures").mkdir()  # not a run: ignored
    with pytest.warns(UserWarning, match="b9: no summary.json"):
        runs = collect_runs(tmp_path, n_boot=300)
    assert runs["run"].tolist() == ["b0.1", "b0.1", "b0.5", "b0.5", "b2.0", "b2.0"]
    assert runs["role"].tolist() == ["reward", "utility"] * 3
    assert runs["thresholds"].tolist() == [(0.1,), (0.1,), (0.5,), (0.5,), (2.0,), (2.0,)]
    assert runs["kl"].eq(2.5).all() and runs["best_iteration"].eq(2).all()
    assert runs[runs["role"] == "reward"]["satisfied"].isna().all()

    with pytest.warns(UserWarning):
        sat = constraint_satisfaction(tmp_path, n_boot=300)
    assert sat["threshold"].tolist() == [0.1, 0.5, 2.0] and sat["scorer"].eq("-toxicity").all()
    assert sat["verdict"].tolist() == ["satisfied", "undetermined", "violated"]
    assert sat["satisfied"].iloc[[0, 2]].tolist() == [True, False]
    assert sat["p_satisfied"].iloc[0] == 1.0 and sat["p_satisfied"].iloc[2] == 0.0
    # A single run directory, and a list of them, work too.
    assert len(constraint_satisfaction(tmp_path / "b0.1", n_boot=300)) == 1
    assert len(collect_runs([tmp_path / "b0.1", tmp_path / "b2.0"], n_boot=300)) == 4


def test_run_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"eval_scores\.csv"):
        load_eval_scores(tmp_path)
    policy, reference = _run_scores(2, 0.5)
    _write_run(tmp_path / "two_thresholds", policy, reference, [0.1, 0.2])
    with pytest.raises(ValueError, match="2 threshold"):
        collect_runs(tmp_path / "two_thresholds", n_boot=10)
    frame = pd.read_csv(tmp_path / "two_thresholds" / "eval_scores.csv")
    frame = frame[~((frame["model"] == "reference") & (frame["prompt_index"] == 3))]
    frame.loc[(frame["model"] == "reference") & (frame["prompt_index"] == 4), "prompt_index"] = 3
    frame.to_csv(tmp_path / "two_thresholds" / "eval_scores.csv", index=False)
    with pytest.raises(ValueError, match="different prompts"):
        load_eval_scores(tmp_path / "two_thresholds")
