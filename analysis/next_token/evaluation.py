"""Exact evaluation of a policy on the held-out instance, next to the bounds of Sec. 4.

Every quantity is a finite sum over the vocabulary (no sampling): per-prompt improvements of each utility
and of the reward, KL(pi || pi_ref), the Lagrangian L(pi, lambda) of eq. (1) at the policy's own lambda and
D(lambda) (so D(lambda) - L >= 0 is checked), distances to pi*(lambda) and to pi* = pi*(lambda*), and
U-OPT / R-OPT (Sec. 4, "R-OPT/U-OPT") against the exact P*.

nu (Assumption 3) is measured on the trained class at the policy's own lambda: ``nu_1 = max_x |pi_theta -
pi*(lambda)|_1`` and ``nu_KL = max_x |KL(pi*(lambda)|pi_ref) - KL(pi_theta|pi_ref)|``. It is the error of one
trained member, not the class's best approximation over all of Pi; the bounds use it as nu and say so.
Theorem 6 (practical CAID) is evaluated with the measured eps_app = D(lambda) - L(pi_theta, lambda) (an upper
estimate of the Lagrangian maximisation error of eq. (28), since D >= D_p) and the run's eta and S^2. Each
failed or unverified hypothesis is named in ``hypotheses``; a bound that cannot be evaluated is NaN with
its reason there, never a silent pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import xlogy

from theory import bounds
from theory.dual import dual_value, tilted_policy
from theory.lagrangian import constraint_slacks, kl_divergence, objective
from theory.problem import ConstrainedProblem, InfeasibleProblemError

__all__ = ["Evaluation", "evaluate"]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Exact quantities of one policy.

    Attributes:
        row: Scalar columns for the per-run table.
        improvements: ``(m, X)`` E_pi g_i(x) - E_ref g_i(x) per held-out prompt.
        reward: ``(X,)`` E_pi r(x) - E_ref r(x).
        kl: ``(X,)`` KL(pi(.|x) || pi_ref(.|x)).
    """

    row: dict[str, object]
    improvements: np.ndarray
    reward: np.ndarray
    kl: np.ndarray


def _per_prompt_gap(prob: ConstrainedProblem, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(|a - b|_1 per prompt, |KL(b|ref) - KL(a|ref)| per prompt)``."""
    return np.abs(a - b).sum(axis=1), np.abs(kl_divergence(prob, b) - kl_divergence(prob, a))


def evaluate(opt: bounds.ExactOptimum, policy: np.ndarray, lam: np.ndarray | None, *, eta: float = 0.0,
             second_moment: float = 0.0) -> Evaluation:
    """Evaluate ``policy`` exactly on ``opt.prob``.

    Args:
        opt: The exact solution of the held-out problem.
        policy: ``(X, V)`` pi_theta(.|x).
        lam: The multipliers the policy was trained for (``None`` for a policy with no lambda, DPO_g).
        eta: Dual step size of the run (0 for one-shot).
        second_moment: S^2, the measured mean squared dual subgradient of the run (0 for one-shot).
    """
    prob, sol = opt.prob, opt.solution
    p_ref = np.exp(prob.ref_logprobs)
    improvements = np.einsum("xv,ixv->ix", policy - p_ref, prob.utilities)
    reward = np.einsum("xv,xv->x", policy - p_ref, prob.reward)
    kl = kl_divergence(prob, policy)
    slacks = constraint_slacks(prob, policy)
    value = objective(prob, policy)
    l1_star = np.abs(policy - sol.policy).sum(axis=1)
    row: dict[str, object] = {
        **{f"improvement_{i + 1}": float(v) for i, v in enumerate(improvements @ prob.prompt_weights)},
        "reward_improvement": float(reward @ prob.prompt_weights), "kl": float(kl @ prob.prompt_weights),
        "objective": value, "u_opt": float(np.linalg.norm(slacks - sol.slacks)), "r_opt": abs(value - sol.value),
        "l1_to_pi_star": float(l1_star @ prob.prompt_weights),
    }  # fmt: skip
    if lam is None:
        row["hypotheses"] = "no lambda: bounds not applicable"
        return Evaluation(row, improvements, reward, kl)
    lam = prob.check_multipliers(lam, nonnegative=True)
    target = tilted_policy(prob, lam)
    l1, kl_gap = _per_prompt_gap(prob, policy, target)
    nu_1, nu_kl = float(l1.max()), float(kl_gap.max())
    nu = max(nu_1, nu_kl)
    lagrangian = value + float(lam @ slacks)
    dual = dual_value(prob, lam)
    eps_app = max(dual - lagrangian, 0.0)
    notes = ["A3: nu measured at this policy's lambda only"]
    try:
        lam_nu, r_ok = bounds.tightened_dual(prob, nu), True
    except InfeasibleProblemError:
        lam_nu, r_ok = lam, False  # the U-OPT bound does not involve lambda*_nu
        notes.append("A4 fails: the M nu-tightened problem is infeasible (R-OPT bound undefined)")
    if opt.mu_D > 0:
        u_bound, r_bound = bounds.theorem6_practical(
            opt.M, prob.beta, nu, lam, lam_nu, opt.L_D, opt.mu_D, eta, second_moment, eps_app
        )
    else:
        u_bound = r_bound = np.nan
        notes.append("A5 fails: mu_D = 0 (no bound)")
    r_bound = r_bound if r_ok else np.nan
    row.update({
        **{f"lam_{i + 1}": float(v) for i, v in enumerate(lam)},
        "lagrangian": lagrangian, "dual_value": dual, "dual_minus_lagrangian": dual - lagrangian,
        "l1_to_pi_lam": float(l1 @ prob.prompt_weights),
        "kl_to_pi_lam": float((xlogy(policy, policy) - xlogy(policy, target)).sum(axis=1) @ prob.prompt_weights),
        "nu_1": nu_1, "nu_kl": nu_kl, "nu": nu, "M": opt.M, "eps_app": eps_app,
        "u_opt_bound": u_bound, "r_opt_bound": r_bound, "bound": "Theorem 6 (eps_app measured)",
        "hypotheses": "; ".join(notes),
    })  # fmt: skip
    return Evaluation(row, improvements, reward, kl)
