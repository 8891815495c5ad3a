"""Primal quantities of (U-CA) for an explicit policy: objective, KL, constraint slacks, Lagrangian.

All functions take a policy as an ``(X, Y)`` array of probabilities pi(y|x) whose rows sum to one.
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from theory.problem import ROW_SUM_TOL, ConstrainedProblem

__all__ = ["constraint_slacks", "kl_divergence", "lagrangian", "objective"]


def _check_policy(prob: ConstrainedProblem, policy: np.ndarray) -> np.ndarray:
    policy = np.asarray(policy, dtype=np.float64)
    if policy.shape != prob.ref_logprobs.shape:
        raise ValueError(f"policy: expected shape {prob.ref_logprobs.shape}, got {policy.shape}")
    if not np.all(np.isfinite(policy)) or np.any(policy < 0):
        raise ValueError("policy: probabilities must be finite and non-negative")
    row_sums = policy.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > ROW_SUM_TOL:
        raise ValueError(f"policy: row {worst} sums to {row_sums[worst]:.9g}, not 1")
    return policy


def kl_divergence(prob: ConstrainedProblem, policy: np.ndarray) -> np.ndarray:
    """``(X,)`` KL(pi(.|x) || pi_ref(.|x)) = sum_y pi log(pi / pi_ref); ``inf`` where pi leaves the support."""
    policy = _check_policy(prob, policy)
    # Take log pi_ref only where pi > 0: 0 * log 0 terms vanish, and pi > 0 = pi_ref gives +inf.
    log_ref = np.where(policy > 0, prob.ref_logprobs, 0.0)
    kl = (xlogy(policy, policy) - policy * log_ref).sum(axis=1)
    return kl


def objective(prob: ConstrainedProblem, policy: np.ndarray) -> float:
    """E_x [ E_{pi(.|x)} r - beta KL(pi(.|x) || pi_ref(.|x)) ], the objective of (U-CA) (Sec. 2)."""
    policy = _check_policy(prob, policy)
    expected_reward = np.einsum("xy,xy->x", policy, prob.reward)
    return float(prob.prompt_weights @ (expected_reward - prob.beta * kl_divergence(prob, policy)))


def constraint_slacks(prob: ConstrainedProblem, policy: np.ndarray) -> np.ndarray:
    """``(m,)`` E_x E_{pi(.|x)} h_i: the constraint values of (U-CA); ``>= 0`` means satisfied (Sec. 2)."""
    policy = _check_policy(prob, policy)
    expected_g = np.einsum("xy,ixy->ix", policy, prob.utilities)
    return expected_g @ prob.prompt_weights - prob.absolute_thresholds


def lagrangian(prob: ConstrainedProblem, policy: np.ndarray, lam: np.ndarray | float) -> float:
    """L(pi, lambda) = E_x [ E_pi (r + lambda^T h) - beta KL(pi || pi_ref) ] of eq. (1)."""
    lam = prob.check_multipliers(lam)
    return objective(prob, policy) + float(lam @ constraint_slacks(prob, policy))
