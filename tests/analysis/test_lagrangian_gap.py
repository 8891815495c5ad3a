"""The real-model Lagrangian gap against the exact distribution-space quantities of `theory`.

A run directory is written by hand: each prompt's pi_ref samples are K distinct responses (so pi_ref is
uniform over them, the plug-in problem of `theory.ConstrainedProblem.plug_in`), and the "trained policy"
is a known distribution p over the same responses, sampled many times with its exact log-ratios.
"""

import csv
import json

import numpy as np
import pytest

from analysis.lagrangian_gap import lagrangian_gap, lagrangian_gap_table
from llm.run_schema import RunSummary
from theory import ConstrainedProblem
from theory.dual import dual_value, tilted_policy
from theory.lagrangian import lagrangian

N, K, DRAWS, BETA = 6, 4, 3000, 0.5
SCORERS = ("reward", "safety", "fun")


def write_run(run_dir, scores, policy, lam, thresholds, rng, method="caid", log_ratio=True, measured=N):
    """A finished run: pi_ref's K samples per prompt, DRAWS samples per prompt from ``policy`` (N, K); the
    log-ratios of the first ``measured`` prompts (NaN beyond: ``evaluation.log_ratio_prompts``)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": {"method": method, "caid": {"beta": BETA}}}))
    RunSummary(
        method=method, thresholds=tuple(thresholds), lambda_one_shot=tuple(lam), lambda_last=tuple(lam),
        improvements={}, constraints_satisfied=(), kl_estimate=0.0, last_iteration=1, best_iteration=1,
        measured_slack_by_iteration={}, reference_reward_utility_correlation={}, n_train_prompts=N,
        n_test_prompts=N, reference_key="test",
    ).write(run_dir)  # fmt: skip
    with open(run_dir / "eval_scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        ratio_column = ["log_ratio"] if log_ratio else []
        writer.writerow(["model", "prompt_index", "sample", *SCORERS, *ratio_column, "response"])
        for i in range(N):
            drawn = rng.choice(K, size=DRAWS, p=policy[i])
            for j, y in enumerate(drawn):
                ratio = [f"{np.log(policy[i, y] * K) if i < measured else np.nan:.17g}"] if log_ratio else []
                writer.writerow(["policy", i, j, *(f"{v:.17g}" for v in scores[:, i, y]), *ratio, f"y{y}"])
            for y in range(K):
                zero = ["0"] if log_ratio else []
                writer.writerow(["reference", i, y, *(f"{v:.17g}" for v in scores[:, i, y]), *zero, f"y{y}"])


@pytest.fixture
def problem():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(3, N, K))
    thresholds = np.array([0.1, 0.05])
    return scores, thresholds, ConstrainedProblem.plug_in(scores, thresholds, BETA)


def test_dual_side_is_theory_dual_and_lagrangian_matches_exact(problem, tmp_path):
    scores, thresholds, prob = problem
    rng = np.random.default_rng(0)
    lam = np.array([0.7, 0.3])
    policy = rng.dirichlet(np.ones(K), size=N)
    write_run(tmp_path / "run", scores, policy, lam, thresholds, rng)
    row = lagrangian_gap(tmp_path / "run")
    # D_hat needs no sampling here: pi_ref's samples are its whole support.
    assert row["dual_value"] == pytest.approx(dual_value(prob, lam), abs=1e-10)
    exact = lagrangian(prob, policy, lam)
    assert row["lagrangian_ci_low"] <= exact <= row["lagrangian_ci_high"]
    assert row["lagrangian"] == pytest.approx(exact, abs=0.05)
    assert row["gap"] == pytest.approx(dual_value(prob, lam) - exact, abs=0.05)
    assert row["gap"] > 0.1  # a random policy is far from the Lagrangian maximiser
    assert row["gap_ci_low"] > 0 and row["gap_boot_low"] > 0


def test_tilted_policy_closes_the_gap(problem, tmp_path):
    scores, thresholds, prob = problem
    rng = np.random.default_rng(1)
    lam = np.array([1.2, 0.4])
    policy = tilted_policy(prob, lam)
    assert lagrangian(prob, policy, lam) == pytest.approx(dual_value(prob, lam), abs=1e-9)
    write_run(tmp_path / "run", scores, policy, lam, thresholds, rng)
    row = lagrangian_gap(tmp_path / "run")
    assert row["gap_ci_low"] <= 0 <= row["gap_ci_high"]
    assert abs(row["gap"]) < 0.02
    assert row["kl"] == pytest.approx(float(np.mean(np.sum(policy * np.log(policy * K), axis=1))), abs=0.02)


def test_prompts_without_log_ratios_drop_out_of_both_sides(problem, tmp_path):
    """A run that measured the log-ratios of its first 3 held-out prompts only: D_hat and L_hat over those 3,
    against theory on the plug-in problem of the same 3 prompts."""
    scores, thresholds, _ = problem
    rng = np.random.default_rng(4)
    lam = np.array([0.7, 0.3])
    policy = rng.dirichlet(np.ones(K), size=N)
    write_run(tmp_path / "run", scores, policy, lam, thresholds, rng, measured=3)
    row = lagrangian_gap(tmp_path / "run")
    first = ConstrainedProblem.plug_in(scores[:, :3], thresholds, BETA)
    assert row["n_prompts"] == 3
    assert row["dual_value"] == pytest.approx(dual_value(first, lam), abs=1e-10)
    assert row["lagrangian"] == pytest.approx(lagrangian(first, policy[:3], lam), abs=0.05)
    assert np.isfinite(row["kl"])


def test_table_skips_baselines_and_old_runs_fail_clearly(problem, tmp_path):
    scores, thresholds, _ = problem
    rng = np.random.default_rng(2)
    uniform = np.full((N, K), 1 / K)
    write_run(tmp_path / "sweep" / "caid_b0.1", scores, uniform, [0.5, 0.5], thresholds, rng)
    write_run(tmp_path / "sweep" / "dpo_h", scores, uniform, [0.0, 0.0], thresholds, rng, method="dpo_h")
    table = lagrangian_gap_table(tmp_path / "sweep")
    assert table["run"].tolist() == ["caid_b0.1"]
    write_run(tmp_path / "old", scores, uniform, [0.5, 0.5], thresholds, rng, log_ratio=False)
    with pytest.raises(ValueError, match="no log_ratio column"):
        lagrangian_gap(tmp_path / "old")
    with pytest.raises(ValueError, match="expected 2 multipliers"):
        lagrangian_gap(tmp_path / "sweep" / "caid_b0.1", lam=[1.0])
