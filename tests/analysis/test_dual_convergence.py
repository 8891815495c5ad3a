import numpy as np
import pandas as pd
import pytest

import analysis.dual_convergence as dc
import theory
from analysis.dual_convergence import dual_convergence, dual_convergence_from_cache


def _scores(n=200, k=8, m=1, seed=0):
    """(1 + m, N, K) reward and utilities that conflict (negatively correlated), with prompt effects."""
    rng = np.random.default_rng(seed)
    reward = rng.normal(size=(n, 1)) + rng.normal(size=(n, k))
    utilities = [-0.6 * reward + rng.normal(size=(n, k)) + rng.normal(size=(n, 1)) for _ in range(m)]
    return np.stack([reward, *utilities])


def _thresholds(scores, fraction):
    """Thresholds at ``fraction`` of each utility's largest plug-in improvement on all samples."""
    utilities = scores[1:]
    return fraction * (utilities.max(axis=2) - utilities.mean(axis=2)).mean(axis=1)


def _full_problem(scores, thresholds, beta):
    n, k = scores.shape[1:]
    return theory.ConstrainedProblem(np.full((n, k), -np.log(k)), scores[0], scores[1:], thresholds, beta)


def test_all_prompts_and_responses_reproduce_solve_dual_exactly():
    scores = _scores(n=60, k=6, m=2, seed=1)
    thresholds = _thresholds(scores, 0.3)
    sol = theory.solve_dual(_full_problem(scores, thresholds, 0.5), return_policy=False)
    assert np.all(sol.lam > 0)  # both constraints active: a real test of lambda*
    result = dual_convergence(scores, thresholds, 0.5, [60], [6], n_replicates=3)
    samples = result.samples
    assert samples["feasible"].all() and samples["converged"].all()
    for _, row in samples.iterrows():
        np.testing.assert_array_equal(row[["lambda_1", "lambda_2"]].to_numpy(dtype=float), sol.lam)
        assert row["dual_value"] == sol.value
    np.testing.assert_array_equal(result.lambda_full, sol.lam)
    assert result.value_full == sol.value
    summary = result.summary.iloc[0]
    assert summary["lambda_1_sd"] == 0 and summary["lambda_1_low"] == summary["lambda_1_high"] == sol.lam[0]


def test_spread_of_lambda_shrinks_as_prompts_grow():
    scores = _scores()
    thresholds = _thresholds(scores, 0.4)
    result = dual_convergence(scores, thresholds, 1.0, [20, 50, 100, 200], [8, 4], n_replicates=25, seed=3)
    assert result.samples["feasible"].all() and result.samples["converged"].all()
    by_n = result.summary[result.summary["k"] == 8].set_index("n_prompts")
    sd = by_n["lambda_1_sd"].to_numpy()
    width = (by_n["lambda_1_high"] - by_n["lambda_1_low"]).to_numpy()
    assert np.all(np.diff(sd) < 0) and np.all(np.diff(width) < 0)
    assert sd[0] > 3 * sd[2] and sd[-1] == 0  # n = N, k = K: every subsample is the whole pool
    # Subsampling responses alone (n = N, k < K) still varies lambda*, and biases it upwards: with fewer
    # responses the best reachable improvement is smaller, so a larger tilt is needed to reach b.
    k4 = result.summary[(result.summary["k"] == 4) & (result.summary["n_prompts"] == 200)].iloc[0]
    assert k4["lambda_1_sd"] > 0
    assert k4["lambda_1_mean"] > result.lambda_full[0] + 2 * k4["lambda_1_sd"] / np.sqrt(25)


def test_summary_bands_are_percentiles_of_the_solved_replicates():
    scores = _scores(n=80, k=6, seed=2)
    result = dual_convergence(scores, _thresholds(scores, 0.4), 1.0, [30], [3, 6], n_replicates=12, level=0.9)
    for (n, k), cell in result.samples.groupby(["n_prompts", "k"]):
        row = result.summary.set_index(["n_prompts", "k"]).loc[(n, k)]
        values = cell["dual_value"].to_numpy()
        assert row["dual_value_mean"] == pytest.approx(values.mean())
        assert row["dual_value_sd"] == pytest.approx(values.std(ddof=1))
        assert [row["dual_value_low"], row["dual_value_high"]] == pytest.approx(np.quantile(values, [0.05, 0.95]))
        assert row["n_replicates"] == 12 and row["n_infeasible"] == row["n_failed"] == 0


def test_infeasible_subsamples_are_flagged_not_raised():
    scores = _scores(n=100, k=8, seed=4)
    thresholds = _thresholds(scores, 0.5)
    # One response per prompt cannot improve on itself; thresholds near the full-data maximum are out of
    # reach of 2 responses.
    result = dual_convergence(scores, _thresholds(scores, 0.9), 1.0, [50], [1, 2, 8], n_replicates=4)
    by_k = result.summary.set_index("k")
    assert by_k.loc[1, "n_infeasible"] == 4 and np.isnan(by_k.loc[1, "lambda_1_mean"])
    assert by_k.loc[2, "n_infeasible"] == 4 and by_k.loc[8, "n_infeasible"] == 0
    flagged = result.samples[~result.samples["feasible"]]
    assert flagged["lambda_1"].isna().all() and flagged["dual_value"].isna().all()
    # Even the full problem may be infeasible: recorded as NaN, not raised.
    impossible = dual_convergence(scores, thresholds * 10, 1.0, [10], [8], n_replicates=2)
    assert np.isnan(impossible.lambda_full).all() and not impossible.samples["feasible"].any()


def test_solver_failures_are_recorded(monkeypatch):
    def failing(prob, **kwargs):
        raise theory.DualSolverError("did not converge")

    monkeypatch.setattr(dc, "solve_dual", failing)
    scores = _scores(n=20, k=4, seed=5)
    result = dual_convergence(scores, _thresholds(scores, 0.3), 1.0, [10], [4], n_replicates=2)
    assert result.samples["feasible"].all() and not result.samples["converged"].any()
    assert result.summary["n_failed"].tolist() == [2]


def test_results_are_reproducible_and_cells_independent_of_the_grid():
    scores = _scores(n=100, k=8, seed=6)
    thresholds = _thresholds(scores, 0.4)
    a = dual_convergence(scores, thresholds, 1.0, [20, 50], [4, 8], n_replicates=3, seed=11)
    b = dual_convergence(scores, thresholds, 1.0, [20, 50], [4, 8], n_replicates=3, seed=11)
    pd.testing.assert_frame_equal(a.samples, b.samples)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    c = dual_convergence(scores, thresholds, 1.0, [20, 50], [4, 8], n_replicates=3, seed=12)
    assert not np.allclose(a.samples["lambda_1"], c.samples["lambda_1"])
    alone = dual_convergence(scores, thresholds, 1.0, [50], [4], n_replicates=3, seed=11).samples
    part = a.samples[(a.samples["n_prompts"] == 50) & (a.samples["k"] == 4)].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, part)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_prompts": [0, 10]}, "n_prompts: \\[0\\] outside 1..40"),
        ({"n_prompts": [41]}, "outside 1..40"),
        ({"k_responses": [2.5]}, "k_responses: expected a non-empty list of integers"),
        ({"k_responses": [5]}, "outside 1..4"),
        ({"thresholds": [0.1, 0.2]}, "thresholds"),
        ({"beta": 0.0}, "beta"),
        ({"n_replicates": 0}, "n_replicates"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_refused_with_the_field_named(kwargs, match):
    args = {"thresholds": [0.1], "beta": 1.0, "n_prompts": [10], "k_responses": [4]} | kwargs
    call = {k: v for k, v in args.items() if k in ("n_replicates", "seed")}
    with pytest.raises(ValueError, match=match):
        dual_convergence(
            _scores(n=40, k=4), args["thresholds"], args["beta"], args["n_prompts"], args["k_responses"], **call
        )
    with pytest.raises(ValueError, match="scores"):
        dual_convergence(np.zeros((1, 5, 5)), [0.1], 1.0, [5], [5])


def test_reference_cache_file(tmp_path):
    pytest.importorskip("transformers")
    from llm.reference_phase import ReferenceData
    from llm.sampling import Sample

    scores = _scores(n=30, k=4, seed=7)
    train = [Sample(i, (1, 2), (3,), f"response {i}.{j}") for i in range(30) for j in range(4)]
    test = [Sample(i, (1,), (2,), "t") for i in range(3) for _ in range(2)]
    entry = ReferenceData("key0", train, scores, np.zeros((30, 4)), test, np.zeros((2, 3, 2)))
    (tmp_path / "key0.npz").write_bytes(entry.to_bytes())
    thresholds = _thresholds(scores, 0.3)
    from_file = dual_convergence_from_cache(tmp_path / "key0.npz", thresholds, 1.0, [10, 30], [2, 4], n_replicates=2)
    from_array = dual_convergence(scores, thresholds, 1.0, [10, 30], [2, 4], n_replicates=2)
    pd.testing.assert_frame_equal(from_file.samples, from_array.samples)
    full = theory.solve_dual(entry.problem(thresholds, 1.0), return_policy=False)
    np.testing.assert_array_equal(from_file.lambda_full, full.lam)

    (tmp_path / "key0.npz").rename(tmp_path / "other.npz")  # the stem is the key: a renamed entry is foreign
    with pytest.raises(ValueError, match="not a readable reference cache entry"):
        dual_convergence_from_cache(tmp_path / "other.npz", thresholds, 1.0, [10], [4])
    with pytest.raises(FileNotFoundError):
        dual_convergence_from_cache(tmp_path / "missing.npz", thresholds, 1.0, [10], [4])


def test_command_line_studies_a_configurations_reference_phase(tmp_path):
    import json

    from analysis.dual_convergence import main
    from llm.config_files import load_config
    from llm.pipeline import run_setup

    sets = ["--set", f"model.cache_dir={tmp_path / 'cache'}", "--set", "data.limit=4"]
    out = tmp_path / "study"
    assert main(["--config", "configs/smoke.toml", "--out", str(out), "--replicates", "3", *sets]) == 0
    record = json.loads((out / "dual_convergence.json").read_text())
    summary = pd.read_csv(out / "dual_convergence_summary.csv")
    config = load_config("configs/smoke.toml", [sets[1], sets[3]])
    ref = run_setup(config).ref  # read back from the cache the command filled
    assert record["reference_key"] == ref.key and (record["n_total"], record["k_total"]) == (6, 4)
    # the default prompt grid stops at N / 2: at n = N every subsample would be the whole pool (spread 0)
    assert sorted(summary["n_prompts"].unique()) == [3] and sorted(summary["k"].unique()) == [2, 4]
    assert (summary["lambda_1_sd"] > 0).all()
    full = theory.solve_dual(ref.problem(config.scorers.thresholds, config.caid.beta), return_policy=False)
    assert np.allclose(record["lambda_full"], full.lam)
    assert len(pd.read_csv(out / "dual_convergence.csv")) == 2 * 3
