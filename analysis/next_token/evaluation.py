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
from theory.dual import dual_value, evaluate_dual, tilted_policy
from theory.lagrangian import constraint_slacks, kl_divergence, objective
from theory.problem import ConstrainedProblem, InfeasibleProblemError

__all__ = ["Evaluation", "Measurement", "TableProblem", "TiltQuantities", "evaluate", "measure", "table_means",
           "tilt_quantities"]


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


@dataclasses.dataclass(frozen=True)
class Measurement:
    """The exact quantities of one policy that the nu dial records (:func:`measure`).

    Attributes:
        improvements: ``(m, X)`` E_pi g_i(x) - E_ref g_i(x) per held-out prompt.
        reward: ``(X,)`` E_pi r(x) - E_ref r(x).
        kl: ``(X,)`` KL(pi(.|x) || pi_ref(.|x)).
        objective: E_x [E_pi r - beta KL] (the objective of (U-CA)).
        slacks: ``(m,)`` E_x E_pi h_i.
        u_opt: |slacks - slacks of pi*|_2.
        r_opt: |objective - P*|.
        l1_to_pi_star: E_x |pi - pi*|_1.
        lam: The multipliers (``None`` for a policy without one: pi_ref).
        tilt_improvements: ``(m,)`` the improvements of pi*(lambda) (NaN without lambda).
        tilt_slacks: ``(m,)`` E_x E_{pi*(lambda)} h_i (NaN without lambda).
        tilt_objective: The objective of pi*(lambda) (NaN without lambda).
        l1: ``(X,)`` |pi - pi*(lambda)|_1 per prompt (NaN without lambda).
        kl_gap: ``(X,)`` |KL(pi*(lambda)|ref) - KL(pi|ref)| per prompt (NaN without lambda).
        dual_value: D(lambda) (NaN without lambda).
        lagrangian: L(pi, lambda) (NaN without lambda).
    """

    improvements: np.ndarray
    reward: np.ndarray
    kl: np.ndarray
    objective: float
    slacks: np.ndarray
    u_opt: float
    r_opt: float
    l1_to_pi_star: float
    lam: np.ndarray | None
    tilt_improvements: np.ndarray
    tilt_slacks: np.ndarray
    tilt_objective: float
    l1: np.ndarray
    kl_gap: np.ndarray
    dual_value: float
    lagrangian: float


def table_means(policy: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """``(X, k)`` E_{pi(.|x)} of each row of a ``(k, V)`` table (einsum: a thin product, no BLAS threads)."""
    return np.einsum("xv,kv->xk", policy, tables)


def _kl_rows(policy: np.ndarray, ref_logprobs: np.ndarray) -> np.ndarray:
    """``(X,)`` KL(pi(.|x) || pi_ref(.|x)) with 0 log 0 = 0 (pi_ref has full support here)."""
    logp = np.log(policy, out=np.zeros_like(policy), where=policy > 0)
    logp -= ref_logprobs
    return np.einsum("xv,xv->x", policy, logp)


@dataclasses.dataclass(frozen=True, eq=False)
class TableProblem:
    """A held-out problem whose scores are token tables (the one-token world), its reference moments computed once.

    Attributes:
        opt: The exact solution of the problem.
        tables: ``(1 + m, V)`` the reward table, then each constrained utility's.
        p_ref: ``(X, V)`` pi_ref.
        ref_means: ``(X, 1 + m)`` E_ref r and E_ref g_i per prompt.
    """

    opt: bounds.ExactOptimum
    tables: np.ndarray
    p_ref: np.ndarray
    ref_means: np.ndarray

    @classmethod
    def of(cls, opt: bounds.ExactOptimum, tables: np.ndarray) -> TableProblem:
        """Wrap ``opt``, whose reward and utilities are the rows of ``tables`` broadcast over the prompts."""
        tables = np.asarray(tables, dtype=np.float64)
        if tables.shape != (1 + opt.prob.n_constraints, opt.prob.n_responses):
            raise ValueError(f"tables: expected shape {(1 + opt.prob.n_constraints, opt.prob.n_responses)}, "
                             f"got {tables.shape}")
        p_ref = np.exp(opt.prob.ref_logprobs)
        return cls(opt, tables, p_ref, table_means(p_ref, tables))


def measure(problem: TableProblem, policy: np.ndarray, lam: np.ndarray | None) -> Measurement:
    """The quantities of :class:`Measurement` (the one-token world's token-table scores).

    The same quantities as :func:`evaluate` (which it is tested against) in fewer passes over the ``(X, V)``
    arrays and without the bounds (the nu dial evaluates them once per rung and setting).

    Args:
        problem: The held-out problem.
        policy: ``(X, V)`` pi(.|x) on the held-out prompts.
        lam: The multipliers the policy was obtained at (``None`` for pi_ref).
    """
    prob, sol = problem.opt.prob, problem.opt.solution
    w = prob.prompt_weights
    means = table_means(policy, problem.tables)
    gain = means - problem.ref_means
    improvements, reward = gain[:, 1:].T, gain[:, 0]
    kl = _kl_rows(policy, prob.ref_logprobs)
    objective = float(w @ (means[:, 0] - prob.beta * kl))
    slacks = w @ means[:, 1:] - prob.absolute_thresholds
    nan_m = np.full(prob.n_constraints, np.nan)
    common = {
        "improvements": improvements, "reward": reward, "kl": kl, "objective": objective, "slacks": slacks,
        "u_opt": float(np.linalg.norm(slacks - sol.slacks)), "r_opt": abs(objective - sol.value),
        "l1_to_pi_star": float(w @ np.abs(policy - sol.policy).sum(axis=1)),
    }  # fmt: skip
    if lam is None:
        nan_x = np.full(prob.n_prompts, np.nan)
        return Measurement(**common, lam=None, tilt_improvements=nan_m, tilt_slacks=nan_m, tilt_objective=np.nan,
                           l1=nan_x, kl_gap=nan_x, dual_value=np.nan, lagrangian=np.nan)
    lam = prob.check_multipliers(lam, nonnegative=True)
    tilt = tilt_quantities(problem, lam)
    return Measurement(
        **common, lam=lam, tilt_improvements=tilt.improvements, tilt_slacks=tilt.slacks,
        tilt_objective=tilt.objective, l1=np.abs(policy - tilt.policy).sum(axis=1), kl_gap=np.abs(tilt.kl - kl),
        dual_value=tilt.dual_value, lagrangian=objective + float(lam @ slacks),
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class TiltQuantities:
    """The tilt pi*(lambda) on the held-out prompts and what the dial compares a policy with.

    Attributes:
        policy: ``(X, V)`` pi*(lambda) (eq. (3)).
        improvements: ``(m,)`` its improvements E_x E g_i - E_x E_ref g_i.
        slacks: ``(m,)`` its constraint slacks.
        objective: Its objective E_x [E r - beta KL].
        kl: ``(X,)`` its KL to pi_ref per prompt.
        dual_value: D(lambda).
    """

    policy: np.ndarray
    improvements: np.ndarray
    slacks: np.ndarray
    objective: float
    kl: np.ndarray
    dual_value: float


def tilt_quantities(problem: TableProblem, lam: np.ndarray) -> TiltQuantities:
    """The tilt at ``lam`` (``theory.dual``, eq. (3)) and its improvements, slacks, objective, KL and D(lambda).

    Args:
        problem: The held-out problem.
        lam: ``(m,)`` non-negative multipliers.
    """
    prob = problem.opt.prob
    w = prob.prompt_weights
    target = np.empty(prob.ref_logprobs.shape)
    dual = evaluate_dual(prob, lam, order=0, policy_out=target).value
    means = table_means(target, problem.tables)
    kl = _kl_rows(target, prob.ref_logprobs)
    return TiltQuantities(target, w @ (means - problem.ref_means)[:, 1:], w @ means[:, 1:] - prob.absolute_thresholds,
                          float(w @ (means[:, 0] - prob.beta * kl)), kl, dual)
