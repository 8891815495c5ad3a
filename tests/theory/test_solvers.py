import itertools

import numpy as np
import pytest

import theory
from tests.dense_dual import dense_constraint_functions, random_problem, reference_lam

# m, beta, reward scale, reference support (zero fraction, tiny fraction), thresholds as fractions of the
# largest improvement (negative = inactive constraint).
CASES = [
    dict(m=m, beta=beta, reward_scale=scale, zero_fraction=zf, tiny_fraction=tf, fraction=frac)
    for (m, frac), beta, scale, (zf, tf) in itertools.product(
        [(1, 0.5), (1, -0.5), (2, [0.6, 0.3]), (2, [0.6, -1.0]), (3, [0.4, 0.3, 0.2]), (3, [0.5, -0.5, 0.3])],
        [0.01, 0.1, 1.0],
        [0.01, 1.0, 100.0],
        [(0.0, 0.0), (0.3, 0.2)],
    )
]


def _sizes(i):
    return dict(n_prompts=4 + (7 * i) % 17, n_responses=5 + (11 * i) % 29)


@pytest.mark.parametrize("i", range(len(CASES)))
def test_dual_solution_satisfies_kkt_and_matches_an_independent_minimiser(i):
    prob = random_problem(i, **_sizes(i), **CASES[i])
    sol = theory.solve_dual(prob)
    scale = 1 + np.abs(dense_constraint_functions(prob)).max()
    # KKT: dual feasibility, primal feasibility, complementary slackness (stationarity holds by eq. (3)).
    assert np.all(sol.lam >= 0)
    assert np.all(sol.slacks >= -1e-9 * scale)
    assert np.all(np.abs(sol.lam * sol.slacks) <= 1e-9 * scale * (1 + sol.lam))
    np.testing.assert_allclose(theory.constraint_slacks(prob, sol.policy), sol.slacks, atol=1e-10 * scale)
    # Strong duality, with the primal objective computed from the policy alone.
    cert = theory.certify(prob, sol.policy, sol.lam)
    assert abs(cert.duality_gap) <= 1e-9 * (1 + abs(sol.value))
    # lambda* against L-BFGS-B on a dense re-implementation of D.
    ref_lam = reference_lam(prob)
    np.testing.assert_allclose(sol.lam, ref_lam, rtol=1e-5, atol=1e-6 * (1 + np.abs(ref_lam).max()))
    for j in np.flatnonzero(np.asarray(CASES[i]["fraction"]) < 0):
        assert sol.lam[j] == 0.0 and sol.slacks[j] > 0  # an inactive constraint


@pytest.mark.parametrize("i", range(0, len(CASES), 3))
def test_dual_and_primal_solvers_agree(i):
    prob = random_problem(i, **_sizes(i), **CASES[i])
    dual = theory.solve_dual(prob)
    primal = theory.solve_primal(prob)
    assert primal.status == "optimal"
    assert abs(dual.value - primal.value) <= 1e-7 * (1 + abs(primal.value))
    np.testing.assert_allclose(dual.lam, primal.lam, rtol=1e-4, atol=1e-6 * (1 + dual.lam.max()))
    assert np.abs(dual.policy - primal.policy).sum(axis=1).max() <= 1e-4


@pytest.mark.parametrize("seed", range(5))
def test_envelope_identity_dP_db_equals_minus_lambda(seed):
    prob = random_problem(100 + seed, m=2, beta=[0.05, 0.1, 0.5, 1.0, 0.2][seed], fraction=[0.5, 0.4])
    lam = theory.solve_dual(prob).lam
    step = 1e-5 * np.maximum(prob.max_improvements, 1)
    for i in range(2):
        e = np.eye(2)[i] * step[i]
        up = theory.solve_dual(prob.with_thresholds(prob.thresholds + e)).value
        down = theory.solve_dual(prob.with_thresholds(prob.thresholds - e)).value
        assert (up - down) / (2 * step[i]) == pytest.approx(-lam[i], rel=1e-5, abs=1e-8)


def test_unconstrained_limit_matches_closed_form():
    prob = random_problem(7, m=1, fraction=-1.0)
    sol = theory.solve_dual(prob)
    assert sol.lam[0] == 0.0
    logits = prob.ref_logprobs + prob.reward / prob.beta
    expected = np.exp(logits - np.logaddexp.reduce(logits, axis=1, keepdims=True))
    np.testing.assert_allclose(sol.policy, expected, atol=1e-14)


@pytest.mark.parametrize("solver", [theory.solve_dual, theory.solve_primal])
def test_single_unreachable_threshold_names_the_constraint(solver):
    prob = random_problem(3, m=2, fraction=[0.5, 1.2])
    with pytest.raises(theory.InfeasibleProblemError, match=r"constraint 1.*largest achievable improvement") as err:
        solver(prob)
    assert f"{prob.max_improvements[1]:.6g}" in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("solver", [theory.solve_dual, theory.solve_primal])
def test_jointly_infeasible_constraints_are_refused(solver):
    base = random_problem(4, m=1)
    g = base.utilities[0]
    # g_2 = -g_1: improving one worsens the other, so b_1 > 0 and b_2 > 0 cannot both hold.
    prob = theory.ConstrainedProblem(base.ref_logprobs, base.reward, np.stack([g, -g]), [0.0, 0.0], base.beta)
    prob = prob.with_thresholds(0.3 * prob.max_improvements)
    with pytest.raises(theory.InfeasibleProblemError, match="jointly infeasible"):
        solver(prob)


@pytest.mark.parametrize("margin", [1e-2, 1e-4])
def test_near_infeasible_thresholds_still_solve(margin):
    prob = random_problem(8, m=1, beta=0.1, fraction=1 - margin)
    sol = theory.solve_dual(prob)
    assert sol.lam[0] > 1.0 and abs(sol.slacks[0]) <= 1e-9
    assert abs(theory.certify(prob, sol.policy, sol.lam).duality_gap) <= 1e-9 * (1 + abs(sol.value))
    primal = theory.solve_primal(prob)
    assert abs(primal.value - sol.value) <= 1e-6 * (1 + abs(sol.value))


def test_deterministic_tilt_with_large_rewards_and_small_beta():
    # r / beta ~ 1e4: pi*(0) is a point mass and hess D(0) underflows to ~0; the trust region copes.
    prob = random_problem(26, m=2, beta=0.01, reward_scale=100.0, fraction=[0.02, 0.8])
    sol = theory.solve_dual(prob)
    assert sol.lam[1] > 0 and np.all(np.abs(sol.lam * sol.slacks) <= 1e-8 * (1 + sol.lam))
    assert abs(theory.certify(prob, sol.policy, sol.lam).duality_gap) <= 1e-9 * (1 + abs(sol.value))


def test_perturbation_function_is_concave_with_supergradient_minus_lambda():
    prob = random_problem(9, m=1, fraction=0.3)
    eps = np.linspace(-0.5, 1.2, 18)[:, None] * prob.max_improvements
    curve = theory.perturbation_function(prob, eps)
    finite = np.isfinite(curve.values)
    assert finite[:10].all() and not finite[-1]  # beyond the largest improvement P* = -inf
    vals, lam, e = curve.values[finite], curve.lam[finite, 0], eps[finite, 0]
    assert np.all(np.diff(vals) <= 1e-12)  # larger requirements cost objective
    for k in range(len(e)):  # concavity via the supergradient inequality
        assert np.all(vals <= vals[k] - lam[k] * (e - e[k]) + 1e-10)
    at_zero = theory.perturbation_function(prob, np.zeros(1))
    assert at_zero.values[0] == pytest.approx(theory.solve_dual(prob).value, abs=1e-12)
