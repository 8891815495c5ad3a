import numpy as np
import pytest

import theory
from tests.dense_dual import dense_constraint_functions, dense_dual, random_problem, reference_lam
from theory import bounds

M, BETA, NU = 2.0, 0.1, 0.01
LAM = np.array([1.0, 0.5])  # |LAM|_1 = 1.5, so C(LAM) = 2 + 0.1 + 2 * 1.5 = 5.1


def test_gap_factor_and_parametrization_bounds_by_hand():
    assert bounds.gap_factor(M, BETA, LAM) == pytest.approx(5.1)
    assert bounds.theorem1_duality_gap(M, BETA, NU, LAM) == pytest.approx(0.051)
    assert bounds.lemma3_dual_function_gap(M, BETA, NU, LAM) == pytest.approx(0.051)
    assert bounds.theorem2_primal_dual_gap(M, BETA, NU, [0.5], LAM) == pytest.approx((-0.031, 0.051))
    assert bounds.lemma4_dual_distance(M, BETA, NU, LAM, mu_D=0.5) == pytest.approx(np.sqrt(0.204))
    assert bounds.lemma5_constraint_gap_multi_shot(M, BETA, NU, LAM, L_D=3.0) == pytest.approx(np.sqrt(0.306))
    assert bounds.lemma6_constraint_gap_one_shot(M, BETA, NU, LAM, L_D=3.0) == pytest.approx(np.sqrt(0.306))
    assert bounds.conditioning_constant(4.0, 0.25) == pytest.approx(10.0)
    u, r = bounds.theorem3_multi_shot(M, BETA, NU, LAM, [2.0], L_D=4.0, mu_D=0.25)
    assert u == pytest.approx(10 * np.sqrt(0.102))
    assert r == pytest.approx((2 + 0.1 + 2 * 2.0) * NU + 1.5 * 10 * np.sqrt(0.102))
    u, r = bounds.theorem4_one_shot(M, BETA, NU, LAM, L_D=3.0)
    assert (u, r) == pytest.approx((np.sqrt(0.306), 0.051 + 1.5 * np.sqrt(0.306)))


def test_practical_caid_bounds_by_hand():
    eta, s2, eps = 0.1, 4.0, 0.02  # eta S^2 / 2 + eps_app = 0.22
    assert bounds.lemma8_best_iterate(eta, s2, eps) == pytest.approx(0.22)
    assert bounds.lemma7_dual_progress(1.0, eta, 0.5, eps, s2) == pytest.approx(1.0 - 0.2 * 0.48 + 0.04)
    lo, hi = bounds.theorem5_practical_primal_dual_gap(M, BETA, NU, [0.5], LAM, eta, s2, eps)
    assert (lo, hi) == pytest.approx((-0.031, 0.051 + 0.22))
    u, r = bounds.theorem6_practical(M, BETA, NU, LAM, [2.0], 4.0, 0.25, eta, s2, eps)
    delta = 0.051 + 0.22
    expected_u = 4.0 * np.sqrt(2 * delta / 0.25) + np.sqrt(2 * 4.0 * 0.051)
    assert u == pytest.approx(expected_u)
    assert r == pytest.approx(6.1 * NU + 0.22 + 1.5 * expected_u)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: bounds.theorem1_duality_gap(M, BETA, -0.1, LAM), "nu"),
        (lambda: bounds.gap_factor(M, BETA, [-1.0]), "lam"),
        (lambda: bounds.gap_factor(-1.0, BETA, LAM), "M"),
        (lambda: bounds.lemma4_dual_distance(M, BETA, NU, LAM, mu_D=0.0), "mu_D"),
        (lambda: bounds.lemma8_best_iterate(-0.1, 1.0, 0.0), "eta"),
        (lambda: bounds.theorem6_practical(M, BETA, NU, LAM, LAM, 1.0, -1.0, 0.1, 1.0, 0.0), "mu_D"),
    ],
)
def test_bound_arguments_are_validated(call, field):
    with pytest.raises(ValueError, match=field):
        call()


@pytest.mark.parametrize("seed", range(6))
def test_smoothness_constant_bounds_the_hessian_everywhere(seed):
    prob = random_problem(seed, m=1 + seed % 3, beta=[0.05, 0.5][seed % 2], zero_fraction=0.2)
    l_d = bounds.smoothness_constant(prob)
    rng = np.random.default_rng(seed)
    worst = max(
        np.linalg.eigvalsh(theory.dual_hessian(prob, lam))[-1]
        for lam in rng.exponential(scale=rng.choice([0.1, 1, 10]), size=(40, prob.n_constraints))
    )
    assert worst <= l_d <= prob.n_constraints * bounds.bound_constant_M(prob) ** 2 / prob.beta


def test_bound_constant_M_is_the_largest_score_in_the_support():
    prob = random_problem(1, m=2, zero_fraction=0.3)
    support = np.isfinite(prob.ref_logprobs)
    h = dense_constraint_functions(prob)
    expected = max(np.abs(prob.reward[support]).max(), np.abs(h[:, support]).max())
    assert bounds.bound_constant_M(prob) == expected


def test_tightened_dual_minimises_the_penalised_dual():
    prob = random_problem(2, m=2, fraction=[0.3, 0.2])
    nu = 0.01
    lam_nu = bounds.tightened_dual(prob, nu)
    expected = reference_lam(prob, extra_linear=np.full(2, -bounds.bound_constant_M(prob) * nu))
    np.testing.assert_allclose(lam_nu, expected, rtol=1e-5, atol=1e-7)
    assert np.all(lam_nu >= theory.solve_dual(prob).lam)  # tighter constraints cost more here


def _fd_hessian(prob, lam, step=1e-5):
    """Hessian of D by central differences of the dense re-implementation's gradient (not theory.dual)."""
    eye = np.eye(prob.n_constraints)
    cols = [(dense_dual(prob, lam + step * e)[1] - dense_dual(prob, lam - step * e)[1]) / (2 * step) for e in eye]
    fd = np.array(cols).T
    return (fd + fd.T) / 2


@pytest.mark.parametrize("seed", range(3))
def test_strong_convexity_constant_matches_finite_differences_along_a_segment(seed):
    prob = random_problem(20 + seed, m=2 + seed % 2, beta=[0.1, 0.5, 1.0][seed], zero_fraction=0.2)
    lam_star = reference_lam(prob)  # independent minimiser (L-BFGS-B on the dense dual)
    direction = np.random.default_rng(seed).uniform(0.5, 1.5, size=prob.n_constraints)
    segment = [lam_star + t * direction for t in np.linspace(0.0, 1.0, 6)]
    mu_code = np.array([bounds.strong_convexity_constant(prob, lam) for lam in segment])
    mu_fd = np.array([np.linalg.eigvalsh(_fd_hessian(prob, lam))[0] for lam in segment])
    np.testing.assert_allclose(mu_code, mu_fd, rtol=1e-5, atol=1e-8)
    assert mu_code[0] > 0  # mu*_D of Assumption 5 at lambda*
    # Strong convexity on the segment with its smallest mu, checked on the dense D (Lemma 1):
    # D(b) >= D(a) + grad D(a)^T (b - a) + mu_min |b - a|^2 / 2.
    mu_min = mu_fd.min()
    (d_a, g_a), d_b = dense_dual(prob, segment[0]), dense_dual(prob, segment[-1])[0]
    gap = segment[-1] - segment[0]
    assert d_b >= d_a + g_a @ gap + 0.5 * mu_min * gap @ gap - 1e-12
