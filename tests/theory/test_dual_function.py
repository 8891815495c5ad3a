import numpy as np
import pytest
from scipy.special import xlogy

import theory
import theory.dual
from tests.dense_dual import dense_constraint_functions, dense_dual, random_problem


@pytest.mark.parametrize("seed", range(6))
def test_dual_value_and_gradient_match_dense_formulas(seed):
    prob = random_problem(seed, m=1 + seed % 3, zero_fraction=0.2 * (seed % 2), tiny_fraction=0.1)
    lam = np.random.default_rng(seed).uniform(0, 3, size=prob.n_constraints)
    value, grad = dense_dual(prob, lam)
    ev = theory.evaluate_dual(prob, lam)
    assert ev.value == pytest.approx(value, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(ev.gradient, grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_gradient_and_hessian_match_finite_differences(seed):
    prob = random_problem(seed, m=3, beta=[0.05, 0.3, 1.0, 0.1][seed], zero_fraction=0.1)
    lam = np.random.default_rng(seed).uniform(0, 2, size=3)
    step = 1e-5
    eye = np.eye(3)
    value = theory.dual_value
    fd_grad = [(value(prob, lam + step * e) - value(prob, lam - step * e)) / (2 * step) for e in eye]
    fd_hess = np.array(
        [(theory.dual_gradient(prob, lam + step * e) - theory.dual_gradient(prob, lam - step * e)) / (2 * step)
         for e in eye]
    )
    np.testing.assert_allclose(theory.dual_gradient(prob, lam), fd_grad, rtol=1e-6, atol=1e-8)
    hess = theory.dual_hessian(prob, lam)
    np.testing.assert_allclose(hess, fd_hess, rtol=1e-5, atol=1e-7)
    assert np.allclose(hess, hess.T) and np.linalg.eigvalsh(hess)[0] > 0


@pytest.mark.parametrize("seed", range(3))
def test_hessian_matches_second_differences_of_the_dense_dual_value(seed):
    prob = random_problem(40 + seed, m=2, beta=[0.5, 1.0, 2.0][seed], zero_fraction=0.1)
    lam = np.random.default_rng(seed).uniform(0, 2, size=2)
    step, eye = 1e-4, np.eye(2)

    def value(x):
        return dense_dual(prob, x)[0]

    fd = np.array(
        [[(value(lam + step * (a + b)) - value(lam + step * (a - b)) - value(lam - step * (a - b))
           + value(lam - step * (a + b))) / (4 * step**2) for b in eye] for a in eye]
    )
    np.testing.assert_allclose(theory.dual_hessian(prob, lam), fd, rtol=1e-5, atol=1e-6)


def test_tilted_policy_maximises_the_lagrangian():
    prob = random_problem(3, m=2, zero_fraction=0.3)
    lam = np.array([0.7, 0.2])
    pi = theory.tilted_policy(prob, lam)
    assert np.allclose(pi.sum(axis=1), 1.0)
    assert np.all(pi[~np.isfinite(prob.ref_logprobs)] == 0.0)
    # L(pi*(lam), lam) = D(lam), computed here from its definition.
    h = dense_constraint_functions(prob)
    ref = np.where(pi > 0, prob.ref_logprobs, 0.0)
    kl = (xlogy(pi, pi) - pi * ref).sum(axis=1)
    lagr = prob.prompt_weights @ ((pi * (prob.reward + np.tensordot(lam, h, axes=1))).sum(axis=1) - prob.beta * kl)
    assert lagr == pytest.approx(theory.dual_value(prob, lam), abs=1e-12)
    assert theory.lagrangian(prob, pi, lam) == pytest.approx(lagr, abs=1e-12)
    # ... and every other policy does worse (Donsker-Varadhan).
    rng = np.random.default_rng(0)
    for _ in range(20):
        other = np.where(np.isfinite(prob.ref_logprobs), rng.random(pi.shape) ** 4, 0.0)
        other /= other.sum(axis=1, keepdims=True)
        assert theory.lagrangian(prob, other, lam) < lagr


def test_blocked_evaluation_matches_dense_across_many_blocks(monkeypatch):
    prob = random_problem(11, n_prompts=37, n_responses=50, m=2, zero_fraction=0.2)
    lam = np.array([0.3, 1.1])
    whole = theory.evaluate_dual(prob, lam)
    monkeypatch.setattr(theory.dual, "_BLOCK_ELEMS", 3 * 50)  # 13 uneven blocks of 3 rows
    blocked = theory.evaluate_dual(prob, lam)
    pi = np.empty((37, 50))
    theory.evaluate_dual(prob, lam, order=0, policy_out=pi)
    assert blocked.value == pytest.approx(whole.value, abs=1e-13)
    np.testing.assert_allclose(blocked.hessian, whole.hessian, rtol=1e-12)
    np.testing.assert_allclose(pi, theory.tilted_policy(prob, lam), atol=1e-15)


def test_kl_is_infinite_outside_the_support_and_zero_at_the_reference():
    prob = random_problem(5, zero_fraction=0.3)
    ref = np.exp(prob.ref_logprobs)
    assert np.allclose(theory.kl_divergence(prob, ref), 0.0, atol=1e-12)
    outside = np.argwhere(~np.isfinite(prob.ref_logprobs))[0]
    leak = ref.copy()
    leak[outside[0]] *= 0.5
    leak[tuple(outside)] = 0.5
    kl = theory.kl_divergence(prob, leak)
    assert np.isinf(kl[outside[0]]) and np.isfinite(np.delete(kl, outside[0])).all()
    assert theory.objective(prob, leak) == -np.inf


def test_constraint_functions_follow_the_relative_convention():
    prob = random_problem(6, m=3, zero_fraction=0.2)
    np.testing.assert_allclose(prob.constraint_functions(), dense_constraint_functions(prob), atol=1e-14)
