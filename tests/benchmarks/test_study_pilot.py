import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm

from benchmarks import study_pilot as sp


@pytest.mark.parametrize(("k", "tabulated"), [(4, 1.02938), (6, 1.26721), (8, 1.42360)])
def test_gaussian_plugin_maximum(k, tabulated):
    # Tabulated expected maxima of k standard normals, and a Monte Carlo check (SE ~ 0.002).
    assert sp.gaussian_plugin_maximum(k) == pytest.approx(tabulated, abs=1e-4)
    draws = np.random.default_rng(k).normal(size=(200_000, k)).max(axis=1)
    assert sp.gaussian_plugin_maximum(k) == pytest.approx(draws.mean(), abs=0.01)


def test_within_prompt_correlation_removes_prompt_means():
    # Monte Carlo: large shared prompt effects (which alone would give rho ~ 1) and a within-prompt rho of -0.3.
    rng = np.random.default_rng(1)
    shift = rng.normal(0, 10, size=(2000, 1))
    e1, e2 = rng.normal(size=(2, 2000, 6))
    a, b = shift + e1, shift - 0.3 * e1 + math.sqrt(1 - 0.09) * e2
    assert sp.within_prompt_correlation(a, b) == pytest.approx(-0.3, abs=0.03)
    centred = [x - x.mean(axis=1, keepdims=True) for x in (a, b)]
    pearson = np.corrcoef(centred[0].ravel(), centred[1].ravel())[0, 1]
    assert sp.within_prompt_correlation(a, b) == pytest.approx(pearson)


def test_between_prompt_sd_removes_sampling_noise():
    rng = np.random.default_rng(2)
    pool = rng.normal(0, 0.5, size=(4000, 1)) + rng.normal(0, 1, size=(4000, 8))
    raw, corrected = sp.between_prompt_sd(pool)
    assert raw == pytest.approx(math.sqrt(0.25 + 1 / 8), rel=0.05)
    assert corrected == pytest.approx(0.5, rel=0.06)
    assert sp.between_prompt_sd(rng.normal(size=(50, 8)))[1] >= 0  # clipped, never NaN


def _simulated_tost_power(n: int, v: float, reps: int = 20_000) -> float:
    rng = np.random.default_rng(3)
    se = math.sqrt(v / n)
    estimates = rng.normal(0, se, reps)  # true error 0
    z = norm.ppf(1 - sp.ALPHA)
    return float(np.mean((estimates - z * se > -sp.MARGIN) & (estimates + z * se < sp.MARGIN)))


def test_sample_sizes_reach_their_targets_by_simulation():
    sizes = sp.sample_sizes(1.2, k=6, policy_samples=1, reference_samples=4, dual_samples=2)
    v = 1 + 1 / 4
    assert sizes["variance_per_prompt"] == v
    assert sizes["thresholds_sigma"] == pytest.approx([0.3, 0.9])
    # TOST power at n (and not at n / 2).
    assert _simulated_tost_power(sizes["n_tost"], v) == pytest.approx(0.8, abs=0.02)
    assert _simulated_tost_power(sizes["n_tost"] // 2, v) < 0.6
    # Half-width (1.96 SE) / spacing (0.5 M) <= 0.3 at n_spacing.
    assert 1.96 * math.sqrt(v / sizes["n_spacing"]) / (0.5 * 1.2) <= 0.3 + 1e-9
    # One-sided power at d = MARGIN.
    se = math.sqrt(v / sizes["n_one_sided"])
    assert norm.sf(norm.ppf(1 - sp.ALPHA) - sp.MARGIN / se) == pytest.approx(0.8, abs=0.01)


def test_dual_step_prompts_give_the_slack_se_by_simulation():
    # Slack = mean over prompts of (mean of s policy samples - mean of the K reference samples), sigma_w = 1,
    # with large between-prompt differences that the per-prompt reference mean must cancel.
    sizes = sp.sample_sizes(1.2, k=6, dual_samples=2)
    n, rng = sizes["n_dual"], np.random.default_rng(4)
    mu = rng.normal(0, 3, size=n)
    slacks = [
        np.mean(rng.normal(mu[:, None], 1, (n, 2)).mean(1) - rng.normal(mu[:, None], 1, (n, 6)).mean(1))
        for _ in range(4000)
    ]
    assert np.std(slacks) <= sp.SLACK_SE * 1.03 and np.std(slacks) > sp.SLACK_SE * 0.9


def test_minimum_detectable_has_the_stated_power():
    d = sp.minimum_detectable(256, 1.25)
    se = math.sqrt(1.25 / 256)
    assert norm.sf(norm.ppf(0.95) - d / se) == pytest.approx(0.8, abs=1e-9)


def test_throughput_summary_ratios_by_hand():
    rows = []
    for r, scale in enumerate((1.0, 0.5)):  # round 1 twice as slow: ratios must not change
        for batch, top_p in itertools.product(sp.BATCHES, sp.TOP_PS):
            rate = scale * batch * (1.1 if top_p == 1.0 else 1.0)
            rows.append({"round": r, "batch": batch, "top_p": top_p, "threads": 1, "slot_tokens_per_s": rate,
                         "load_1min": 2.0 + r})  # fmt: skip
        rows.append({"round": r, "batch": 16, "top_p": 1.0, "threads": 2, "slot_tokens_per_s": scale * 1.76,
                     "load_1min": 3.0})  # fmt: skip
    summary = sp.throughput_summary(rows, threads=1)
    assert summary["ratio_top_p_1_over_0_9"] == pytest.approx({"b16": 1.1, "b32": 1.1, "b64": 1.1})
    assert summary["ratio_over_batch_16"]["b64_p0.9"] == pytest.approx(4.0)
    assert summary["ratio_threads_2_over_1_b16_p1.0"] == pytest.approx(0.1)
    assert summary["median_tokens_per_s"]["b32_p1.0"] == pytest.approx(0.75 * 32 * 1.1)
    assert summary["load_1min_range"] == [2.0, 3.0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--pool-k", "1"], "--pool-k must be >= 2"), (["--rounds", "-1"], "--rounds must be >= 0"),
     (["--threads", "0"], "--threads must be >= 1"), (["--dpo-beta", "0"], "--dpo-beta must be > 0")],
)  # fmt: skip
def test_bad_arguments_exit_2_without_loading_the_model(tmp_path, argv, message, capsys):
    assert sp.main(["--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_out_that_is_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert sp.main(["--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err
