"""Each run's attenuation in the multi-token study, against the exact tilt of a known finite distribution.

The fake runs are written with the pipeline's own writers (``eval_scores_csv``, :class:`RunSummary`): per held-out
prompt, a reference pool of K draws from a known pi_ref over V responses and the policy's n draws, so the exact
tilt's improvement is a sum over the V responses and every tolerance is a multiple of the estimate's standard
deviation at these K and n (plus the SNIS ratio's delta-method bias), not a guess.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from analysis import multi_token_study as study
from llm.paired_statistics import improvement
from llm.run_schema import EVAL_SCORES_FILE, RunSummary, eval_scores_csv
from tests.llm_run_fixture import write_run

X, V = 8, 6  # held-out prompts, responses per prompt
K = N = 4000  # reference pool draws and policy draws per prompt
BETA = 1.5  # not 1, so that a beta dropped or inverted shows
Z = 4.0  # standard deviations of the Monte Carlo error a check allows
SCORERS = ("sentiment", "simplicity")


@dataclasses.dataclass(frozen=True)
class Finite:
    """pi_ref over V responses per prompt with their reward and utility (sigma units)."""

    p: np.ndarray  # (X, V)
    r: np.ndarray  # (X, V)
    g: np.ndarray  # (X, V)

    def tilt(self, weight: float, lam: float) -> np.ndarray:
        """``(X, V)`` pi*(y|x) ~ pi_ref exp((w r + lambda g) / beta), by enumeration."""
        q = self.p * np.exp((weight * self.r + lam * self.g) / BETA)
        return q / q.sum(axis=1, keepdims=True)

    def improvement(self, policy: np.ndarray) -> float:
        """``E_x (E_policy g - E_ref g)``, exact."""
        return float(((policy - self.p) * self.g).sum(axis=1).mean())

    def snis_error(self, weight: float, lam: float) -> tuple[float, float, float]:
        """``(bias, sd, sd_tilt)`` from K pool draws (delta method, exact sums over the V responses).

        bias and sd: of the SNIS mean S of g over the prompts; sd_tilt: of the estimated tilt improvement S - R
        (R the pool's plain mean of g, from the same draws, so S and R are correlated). Per prompt, with
        ``v = pi* / pi_ref``, ``S - R - (mu* - mu_ref) ~ mean_k [v_k (g_k - mu*) - (g_k - mu_ref)]``: bias
        ``-E_ref[v^2 (g - mu*)] / K``, variances ``E_ref[v^2 (g - mu*)^2] / K`` and
        ``E_ref[(v (g - mu*) - (g - mu_ref))^2] / K``; the prompts are independent.
        """
        star = self.tilt(weight, lam)
        centred = self.g - (star * self.g).sum(axis=1, keepdims=True)
        v = star / self.p
        bias = -(self.p * v**2 * centred).sum(axis=1) / K
        var = (self.p * v**2 * centred**2).sum(axis=1) / K
        pool_centred = self.g - (self.p * self.g).sum(axis=1, keepdims=True)
        var_tilt = (self.p * (v * centred - pool_centred) ** 2).sum(axis=1) / K
        return float(bias.mean()), float(np.sqrt(var.sum()) / X), float(np.sqrt(var_tilt.sum()) / X)

    def mean_sd(self, policy: np.ndarray, draws: int) -> float:
        """SD of ``mean_x`` of the per-prompt sample mean of g over ``draws`` draws from ``policy``."""
        mu = (policy * self.g).sum(axis=1, keepdims=True)
        return float(np.sqrt(((policy * (self.g - mu) ** 2).sum(axis=1) / draws).sum()) / X)


def _finite(rng: np.random.Generator) -> Finite:
    logits = rng.normal(size=(X, V))
    r = rng.normal(size=(X, V))
    # g correlated with r, so that the reward-only tilt (DPO_h's) moves g as well
    return Finite(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), r, 0.6 * r + rng.normal(size=(X, V)))


def _draw(finite: Finite, probs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(2, X, n)`` reward and utility of n responses per prompt drawn from ``probs``."""
    y = np.stack([rng.choice(V, size=n, p=probs[x]) for x in range(X)])
    rows = np.arange(X)[:, None]
    return np.stack([finite.r[rows, y], finite.g[rows, y]])


def _write_run(run, method: str, lam: float, policy: np.ndarray, pool: np.ndarray, beta: float = BETA) -> None:
    """A finished, standardised run directory with these policy and reference-pool scores, trained at ``beta``."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"method": method, "caid": {"beta": beta}}}))
    texts = [""] * (X * policy.shape[2])
    (run / EVAL_SCORES_FILE).write_text(eval_scores_csv(SCORERS, {
        "policy": (policy, np.zeros(policy.shape[1:]), texts),
        "reference": (pool, np.zeros(pool.shape[1:]), [""] * (X * pool.shape[2])),
    }))  # fmt: skip
    RunSummary(
        method=method, thresholds=(0.3,), lambda_one_shot=(lam,), lambda_last=(lam,),
        improvements={s: improvement(policy[i], pool[i], None if i == 0 else 0.3) for i, s in enumerate(SCORERS)},
        constraints_satisfied=(True,), kl_estimate=0.0, last_iteration=1, best_iteration=1,
        measured_slack_by_iteration={"1": None}, reference_reward_utility_correlation={"simplicity": 0.5},
        n_train_prompts=1, n_test_prompts=X, reference_key="finite", score_scales=(1.0, 1.0),
    ).write(run)  # fmt: skip


@pytest.fixture(scope="module")
def seed_pool():
    """The finite distribution and one seed's held-out reference pool (K draws from pi_ref per prompt)."""
    rng = np.random.default_rng(7)
    finite = _finite(rng)
    return finite, _draw(finite, finite.p, K, rng), rng


def test_a_policy_that_is_the_tilt_has_attenuation_one_and_pi_ref_zero(seed_pool, tmp_path):
    finite, pool, rng = seed_pool
    lam = 0.8
    star = finite.tilt(1.0, lam)
    exact = finite.improvement(star)
    bias, sd_snis, sd_tilt = finite.snis_error(1.0, lam)
    sd_pool = finite.mean_sd(finite.p, K)
    # a - 1 = (P - S) / (S - R) (P, S, R: the policy's, the SNIS and the pool's mean g), and S - R >= exact - Z sd
    denominator = exact - abs(bias) - Z * sd_tilt
    assert denominator > 0.5 * exact  # the pool is large enough for the ratio to be a test
    _write_run(tmp_path / "tilt", "caid", lam, _draw(finite, star, N, rng), pool)
    tol_one = (abs(bias) + Z * np.hypot(finite.mean_sd(star, N), sd_snis)) / denominator
    got = study.run_attenuation(tmp_path / "tilt")
    assert got.attenuation[0] == pytest.approx(1.0, abs=tol_one)
    assert got.tilt[0] == pytest.approx(exact, abs=abs(bias) + Z * sd_tilt)
    assert tol_one < 0.1
    # pi_ref trained at the same lambda but not moved: a = (P - R) / (S - R), P from fresh pi_ref draws
    _write_run(tmp_path / "unmoved", "caid", lam, _draw(finite, finite.p, N, rng), pool)
    tol_zero = Z * np.hypot(finite.mean_sd(finite.p, N), sd_pool) / denominator
    assert study.run_attenuation(tmp_path / "unmoved").attenuation[0] == pytest.approx(0.0, abs=tol_zero)


@pytest.mark.parametrize(("method", "lam", "weight"), [
    ("caid", 1.3, 1.0), ("one_shot", 0.5, 1.0), ("dpo_h", 0.0, 1.0), ("dpo_g", 1.0, 0.0),
])  # fmt: skip
def test_each_method_is_compared_with_the_tilt_of_its_own_composite(seed_pool, tmp_path, method, lam, weight):
    finite, pool, rng = seed_pool
    _write_run(tmp_path / method, method, lam, _draw(finite, finite.p, 2, rng), pool)
    got = study.run_attenuation(tmp_path / method)
    assert got.reward_weight == weight and got.lam.tolist() == [lam]
    bias, _, sd_tilt = finite.snis_error(weight, lam)
    tol = abs(bias) + Z * sd_tilt
    exact = finite.improvement(finite.tilt(weight, lam))
    assert got.tilt[0] == pytest.approx(exact, abs=tol)
    assert got.attenuation[0] == pytest.approx(got.achieved[0] / got.tilt[0])
    assert np.all((got.ess >= 1) & (got.ess <= K)) and got.ess.shape == (X,)
    # the composite matters: the tilt with the other reward weight is further away than the tolerance
    assert abs(finite.improvement(finite.tilt(1.0 - weight, lam)) - exact) > 2 * tol


def test_the_reference_run_has_no_tilt_and_an_undefined_attenuation(seed_pool, tmp_path):
    finite, pool, rng = seed_pool
    _write_run(tmp_path / "reference", "reference", 0.0, _draw(finite, finite.p, 2, rng), pool)
    got = study.run_attenuation(tmp_path / "reference")
    assert got.reward_weight == 0.0 and got.tilt.tolist() == [0.0]  # pi*(0) without reward is pi_ref: exactly 0
    assert np.isnan(got.attenuation).all()
    np.testing.assert_allclose(got.ess, K)  # uniform weights


def test_tilt_multipliers_are_the_last_policys_lambda(tmp_path):
    rng = np.random.default_rng(3)
    for method, weight in (("caid", 1.0), ("one_shot", 1.0), ("dpo_g", 0.0)):
        write_run(tmp_path / method, method, SCORERS, [0.4], [0.1, 0.5], rng, score_scales=(1.0, 1.0))
        trajectory = pd.read_csv(tmp_path / method / "dual_trajectory.csv")
        got_weight, lam = study.tilt_multipliers(tmp_path / method)
        assert got_weight == weight
        assert lam.tolist() == [trajectory["lambda_1"].iloc[-1]]  # the lambda of the last iteration's primal step


def test_a_run_the_tilt_does_not_apply_to_is_refused_by_field(tmp_path):
    rng = np.random.default_rng(4)
    write_run(tmp_path / "raw", "caid", SCORERS, [0.4], [0.1, 0.5], rng)
    with pytest.raises(ValueError, match="raw: scores are not standardised"):
        study.tilt_multipliers(tmp_path / "raw")
    for name, field, value in (("short", "lambda_last", []), ("nan", "lambda_last", [float("nan")]),
                               ("pecaid", "constraint_units", "implicit_reward")):  # fmt: skip
        write_run(tmp_path / name, "caid", SCORERS, [0.4], [0.1, 0.5], rng, score_scales=(1.0, 1.0))
        path = tmp_path / name / "summary.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
        with pytest.raises(ValueError, match=f"{name}: summary.json field '{field}'"):
            study.tilt_multipliers(tmp_path / name)


def test_the_tilt_is_taken_at_the_runs_own_beta(seed_pool, tmp_path):
    finite, pool, rng = seed_pool
    lam = 1.3
    _write_run(tmp_path / "beta2", "caid", lam, _draw(finite, finite.p, 2, rng), pool, beta=2 * BETA)
    got = study.run_attenuation(tmp_path / "beta2")
    # pi_ref exp((r + lam g) / (2 beta)) is the tilt at beta with the composite halved
    exact = finite.improvement(finite.tilt(0.5, lam / 2))
    bias, _, sd_tilt = finite.snis_error(0.5, lam / 2)
    tol = abs(bias) + Z * sd_tilt
    assert got.tilt[0] == pytest.approx(exact, abs=tol)
    assert abs(finite.improvement(finite.tilt(1.0, lam)) - exact) > 2 * tol  # beta = BETA would be told apart
    (tmp_path / "beta2" / "config.json").unlink()
    with pytest.raises(ValueError, match=r"config\.json"):
        study.run_attenuation(tmp_path / "beta2")
