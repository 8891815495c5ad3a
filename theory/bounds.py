"""Calculators for every bound in the paper's theory (Lemmas 1-8, Theorems 1-6), and the constants they need.

Notation (as in Theorems 1-6): M = max_{i,x,y} max(|h_i|, |r|); nu = max(nu_1, nu_KL) is the parametrization gap
of Assumption 3; ``C(lambda) = M + beta + M |lambda|_1`` is the factor multiplying nu throughout;
lambda*_nu is the optimal dual of the M nu-tightened problem (Theorem 1); L_D is the smoothness constant
of D and mu*_D its strong-convexity constant at lambda* (Lemma 1, Assumption 5); eta, S^2 and eps_app
are the dual step size, the second moment of the stochastic subgradient and the Lagrangian
maximisation error of practical CAID (App. B.10, eqs. (27)-(28)).

Provenance: the theorem statements are the paper's, but the constants are reconstructed from its proof
narration (App. B): they may be grouped differently in the printed paper (e.g. an extra sqrt(2)
inside hat L_D). Each function says which result it implements and states the formula it evaluates.
All lambda arguments are dual vectors (only their l1 norms enter, except where noted).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from theory.dual import dual_hessian
from theory.dual_solver import DualSolution, solve_dual
from theory.problem import ConstrainedProblem

__all__ = [
    "ExactOptimum",
    "bound_constant_M",
    "conditioning_constant",
    "gap_factor",
    "lemma3_dual_function_gap",
    "lemma4_dual_distance",
    "lemma5_constraint_gap_multi_shot",
    "lemma6_constraint_gap_one_shot",
    "lemma7_dual_progress",
    "lemma8_best_iterate",
    "smoothness_constant",
    "strong_convexity_constant",
    "theorem1_duality_gap",
    "theorem2_primal_dual_gap",
    "theorem3_multi_shot",
    "theorem4_one_shot",
    "theorem5_practical_primal_dual_gap",
    "theorem6_practical",
    "tightened_dual",
]


def _l1(lam: np.ndarray | float) -> float:
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    if np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise ValueError(f"lam: dual vectors must be finite and non-negative, got {lam.tolist()}")
    return float(lam.sum())


def _nonneg(**values: float) -> None:
    for name, value in values.items():
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")


# ------------------------------------------------------------------------------------------------
# Constants of a finite problem.


def bound_constant_M(prob: ConstrainedProblem) -> float:
    """M = max_{i, x, y in supp} max(|h_i(x, y)|, |r(x, y)|) (the constant of Theorems 1-6)."""
    return prob.bound_M


def smoothness_constant(prob: ConstrainedProblem) -> float:
    """A certified L_D with hess D(lambda) <= L_D I for all lambda (Lemma 1).

    ``L_D = (1 / (4 beta)) E_x sum_i (max_y g_i(x, y) - min_y g_i(x, y))^2`` over the support: the Hessian
    is (1/beta) E_x Cov(g), and for any unit u, Var(u^T g) <= (range of u^T g)^2 / 4 (Popoviciu) <=
    |per-coordinate ranges|^2 / 4. The crude constant m M^2 / beta is never smaller.
    """
    ranges = prob.support_extreme(prob.utilities, "max") - prob.support_extreme(prob.utilities, "min")
    return float(prob.prompt_weights @ (ranges**2).sum(axis=0) / (4.0 * prob.beta))


def strong_convexity_constant(prob: ConstrainedProblem, lam: np.ndarray | float) -> float:
    """mu_D(lambda) = sigma_min(hess D(lambda)) (Lemma 1; at lambda = lambda* it is mu*_D of Assumption 5)."""
    return float(np.linalg.eigvalsh(dual_hessian(prob, lam))[0])


@dataclasses.dataclass(frozen=True, eq=False)
class ExactOptimum:
    """The exact solution of (U-CA) and the constants every bound needs.

    Attributes:
        prob: The problem.
        solution: ``solve_dual(prob)``: lambda*, D* (= P* by Lemma 2), pi*.
        M: :func:`bound_constant_M` (max |h|, |r|).
        L_D: :func:`smoothness_constant` of D (Lemma 1).
        hessian: hess D(lambda*).
        mu_D: mu*_D = sigma_min(hess D(lambda*)) (Assumption 5 at lambda*).
    """

    prob: ConstrainedProblem
    solution: DualSolution
    M: float
    L_D: float
    hessian: np.ndarray
    mu_D: float

    @classmethod
    def of(cls, prob: ConstrainedProblem) -> ExactOptimum:
        """Solve ``prob`` with :func:`theory.solve_dual` and compute its constants."""
        sol = solve_dual(prob)
        hessian = dual_hessian(prob, sol.lam)
        mu = float(np.linalg.eigvalsh(hessian)[0])
        return cls(prob, sol, bound_constant_M(prob), smoothness_constant(prob), hessian, mu)

    @property
    def P_star(self) -> float:
        """P* = D* (strong duality, Lemma 2)."""
        return self.solution.value


def tightened_dual(prob: ConstrainedProblem, nu: float) -> np.ndarray:
    """lambda*_nu = argmin_{lambda >= 0} D(lambda) - M nu |lambda|_1 (Theorem 1, eq. (8)).

    This is the optimal dual of the problem with constraints E h >= M nu, i.e. thresholds b + M nu.

    Raises:
        InfeasibleProblemError: If the tightened problem is infeasible (Assumption 4 fails).
    """
    _nonneg(nu=nu)
    return solve_dual(prob.with_thresholds(prob.thresholds + prob.bound_M * nu), return_policy=False).lam


# ------------------------------------------------------------------------------------------------
# Parametrization-gap bounds (Theorems 1-4, Lemmas 3-6).


def gap_factor(M: float, beta: float, lam: np.ndarray | float) -> float:
    """C(lambda) = M + beta + M |lambda|_1, the factor multiplying nu in every bound (e.g. Theorem 1, eq. (8))."""
    _nonneg(M=M, beta=beta)
    return M + beta + M * _l1(lam)


def theorem1_duality_gap(M: float, beta: float, nu: float, lam_nu: np.ndarray | float) -> float:
    """Theorem 1: 0 <= D*_p - P*_p <= (M + beta + M |lambda*_nu|_1) nu (eq. (8)). Returns the upper bound."""
    _nonneg(nu=nu)
    return gap_factor(M, beta, lam_nu) * nu


def lemma3_dual_function_gap(M: float, beta: float, nu: float, lam: np.ndarray | float) -> float:
    """Lemma 3: D(lambda) - (M + beta + M |lambda|_1) nu <= D_p(lambda) <= D(lambda). Returns the gap bound."""
    _nonneg(nu=nu)
    return gap_factor(M, beta, lam) * nu


def theorem2_primal_dual_gap(
    M: float, beta: float, nu: float, lam_p: np.ndarray | float, lam_nu: np.ndarray | float
) -> tuple[float, float]:
    """Theorem 2: -C(lambda*_p) nu <= D*_p - P* <= C(lambda*_nu) nu. Returns (lower, upper).

    (Since D_p <= D pointwise, D*_p - P* <= 0 always holds too; the reconstructed upper bound is looser.)
    """
    _nonneg(nu=nu)
    return -gap_factor(M, beta, lam_p) * nu, gap_factor(M, beta, lam_nu) * nu


def lemma4_dual_distance(M: float, beta: float, nu: float, lam_p: np.ndarray | float, mu_D: float) -> float:
    """Lemma 4: |lambda*_p - lambda*|_2 <= sqrt(2 C(lambda*_p) nu / mu*_D). Returns the distance bound."""
    _nonneg(nu=nu)
    if not mu_D > 0:
        raise ValueError(f"mu_D: strong convexity constant must be > 0, got {mu_D!r}")
    return float(np.sqrt(2.0 * gap_factor(M, beta, lam_p) * nu / mu_D))


def lemma5_constraint_gap_multi_shot(
    M: float, beta: float, nu: float, lam_p: np.ndarray | float, L_D: float
) -> float:
    """Lemma 5: |eps*_p(lambda*_p) - eps*(lambda*_p)|_2 <= sqrt(2 L_D C(lambda*_p) nu)."""
    _nonneg(nu=nu, L_D=L_D)
    return float(np.sqrt(2.0 * L_D * gap_factor(M, beta, lam_p) * nu))


def lemma6_constraint_gap_one_shot(
    M: float, beta: float, nu: float, lam_star: np.ndarray | float, L_D: float
) -> float:
    """Lemma 6: |eps*_p(lambda*) - eps*(lambda*)|_2 <= sqrt(2 L_D C(lambda*) nu)."""
    return lemma5_constraint_gap_multi_shot(M, beta, nu, lam_star, L_D)


def conditioning_constant(L_D: float, mu_D: float) -> float:
    """The conditioning constant hat L_D = L_D / sqrt(mu*_D) + sqrt(L_D) (Theorem 3; form reconstructed)."""
    _nonneg(L_D=L_D)
    if not mu_D > 0:
        raise ValueError(f"mu_D: strong convexity constant must be > 0, got {mu_D!r}")
    return float(L_D / np.sqrt(mu_D) + np.sqrt(L_D))


def theorem3_multi_shot(
    M: float,
    beta: float,
    nu: float,
    lam_p: np.ndarray | float,
    lam_nu: np.ndarray | float,
    L_D: float,
    mu_D: float,
) -> tuple[float, float]:
    """Theorem 3 (multi-shot policy pi*_p(lambda*_p)). Returns (U-OPT bound, R-OPT bound).

    ``U-OPT <= hat L_D sqrt(2 C(lambda*_p) nu)`` and
    ``R-OPT <= (M + beta + M max(|lambda*_nu|_1, |lambda*_p|_1)) nu + |lambda*_p|_1 * (U-OPT bound)``.
    """
    _nonneg(nu=nu)
    u_opt = conditioning_constant(L_D, mu_D) * float(np.sqrt(2.0 * gap_factor(M, beta, lam_p) * nu))
    worst = max(_l1(lam_nu), _l1(lam_p))
    r_opt = gap_factor(M, beta, worst) * nu + _l1(lam_p) * u_opt
    return u_opt, r_opt


def theorem4_one_shot(
    M: float, beta: float, nu: float, lam_star: np.ndarray | float, L_D: float
) -> tuple[float, float]:
    """Theorem 4 (one-shot policy pi*_p(lambda*)). Returns (U-OPT bound, R-OPT bound).

    ``U-OPT <= sqrt(2 L_D C(lambda*) nu)`` and ``R-OPT <= C(lambda*) nu + |lambda*|_1 sqrt(2 L_D C(lambda*) nu)``.
    """
    u_opt = lemma6_constraint_gap_one_shot(M, beta, nu, lam_star, L_D)
    return u_opt, gap_factor(M, beta, lam_star) * nu + _l1(lam_star) * u_opt


# ------------------------------------------------------------------------------------------------
# Practical (stochastic, inexact) CAID (Lemmas 7-8, Theorems 5-6; App. B.10).


def lemma7_dual_progress(dist_sq: float, eta: float, dual_excess: float, eps_app: float, S2: float) -> float:
    """Lemma 7: E[|lambda(t+1) - lambda*_p|^2 | lambda(t)] <= d^2 - 2 eta (D_p(lambda(t)) - D*_p - eps_app) + eta^2 S^2.

    Args:
        dist_sq: |lambda(t) - lambda*_p|^2.
        eta: Dual step size.
        dual_excess: D_p(lambda(t)) - D*_p (>= 0).
        eps_app: Lagrangian maximisation error of eq. (28).
        S2: Bound on E|u^dagger|^2.
    """
    _nonneg(dist_sq=dist_sq, eta=eta, dual_excess=dual_excess, eps_app=eps_app, S2=S2)
    return dist_sq - 2.0 * eta * (dual_excess - eps_app) + eta**2 * S2


def lemma8_best_iterate(eta: float, S2: float, eps_app: float) -> float:
    """Lemma 8 / eq. (31): some iterate has D_p(lambda(t_best)) - D*_p <= eta S^2 / 2 + eps_app. Returns the excess."""
    _nonneg(eta=eta, S2=S2, eps_app=eps_app)
    return eta * S2 / 2.0 + eps_app


def theorem5_practical_primal_dual_gap(
    M: float,
    beta: float,
    nu: float,
    lam_best: np.ndarray | float,
    lam_nu: np.ndarray | float,
    eta: float,
    S2: float,
    eps_app: float,
) -> tuple[float, float]:
    """Theorem 5: -C(lambda_best) nu <= D_p(lambda_best) - P* <= C(lambda*_nu) nu + eta S^2 / 2 + eps_app."""
    _nonneg(nu=nu)
    upper = gap_factor(M, beta, lam_nu) * nu + lemma8_best_iterate(eta, S2, eps_app)
    return -gap_factor(M, beta, lam_best) * nu, upper


def theorem6_practical(
    M: float,
    beta: float,
    nu: float,
    lam_best: np.ndarray | float,
    lam_nu: np.ndarray | float,
    L_D: float,
    mu_D: float,
    eta: float,
    S2: float,
    eps_app: float,
) -> tuple[float, float]:
    """Theorem 6 (practical CAID, policy pi*_p(lambda_best)). Returns (U-OPT bound, R-OPT bound).

    With ``Delta = C(lambda_best) nu + eta S^2 / 2 + eps_app``:
    ``U-OPT <= L_D sqrt(2 Delta / mu*_D) + sqrt(2 L_D C(lambda_best) nu)`` and
    ``R-OPT <= (M + beta + M max(|lambda*_nu|_1, |lambda_best|_1)) nu + eta S^2 / 2 + eps_app
    + |lambda_best|_1 * (U-OPT bound)``.
    """
    _nonneg(nu=nu, L_D=L_D)
    if not mu_D > 0:
        raise ValueError(f"mu_D: strong convexity constant must be > 0, got {mu_D!r}")
    stochastic = lemma8_best_iterate(eta, S2, eps_app)
    delta = gap_factor(M, beta, lam_best) * nu + stochastic
    u_opt = float(L_D * np.sqrt(2.0 * delta / mu_D) + np.sqrt(2.0 * L_D * gap_factor(M, beta, lam_best) * nu))
    worst = max(_l1(lam_nu), _l1(lam_best))
    r_opt = gap_factor(M, beta, worst) * nu + stochastic + _l1(lam_best) * u_opt
    return u_opt, r_opt
