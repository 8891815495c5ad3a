"""Measure one policy class against the distribution-space optimum and the paper's bounds (spec §4).

For a class Theta the measurements are exact finite sums except where a maximisation over theta is
involved (a local L-BFGS maximum from a warm start):

* the one-shot policy pi*_p(lambda*) (Lagrangian maximiser at the distribution-space dual, trained from
  pi_ref) and the multi-shot policy pi*_p(lambda*_p) (exact CAID, :func:`~analysis.parametrization_gap.exact_caid.dual_descent`);
* lambda*_p: where dual descent on D_p settles, its last iterate after plain CAID steps ``eta = 1 / L_loc``
  (``L_loc`` the largest eigenvalue of hess D(lambda*)) and steps preconditioned by ``hess D(lambda*)^-1``;
  ``dual_residual = |lambda*_p - [lambda*_p - eps*_p(lambda*_p)]_+|`` says how stationary it is. (Not the
  iterate with the smallest D_p estimate: with warm starts the early maximisations are the least converged,
  so their D_p values are the most underestimated.) D*_p is the best Lagrangian at lambda*_p of every
  in-class policy found (a valid lower bound, ``D_p(lambda) >= objective(pi) + lambda^T slacks(pi)``) after
  a final polish there, and the multi-shot policy pi*_p(lambda*_p) is the policy attaining it;
* P*_p: the best objective of a feasible in-class policy found (every Lagrangian maximiser visited, plus
  a restoration sweep that raises the multipliers of violated constraints from lambda*_p);
* nu_1, nu_KL (Assumption 3): a documented proxy. The assumption quantifies over all of Pi; we take the
  worst error over the tilted policies the proofs approximate: pi* = pi*(lambda*) (Theorems 3-4),
  pi*(lambda*_p) (Lemma 3 at lambda*_p) and pi*(lambda*_nu) (Theorem 1; lambda*_nu is computed from the nu
  of the first two, then recomputed once from the final nu if that is larger), each approximated by its
  in-class reverse-KL projection (the Lagrangian maximiser): ``nu_1 = max max_x |pi_theta - pi|_1`` and
  ``nu_KL = max max_x |KL(pi|pi_ref) - KL(pi_theta|pi_ref)|``;
* the practical variant (:func:`~analysis.parametrization_gap.practical_caid.practical_caid`) with its measured eps_app, S^2, eta;
  lambda_best minimises the pool estimate of D_p over its iterates (Lemma 8), with the same caveat.

Each measured gap is paired with its bound from :mod:`theory.bounds` in ``*_measured`` / ``*_bound`` columns.
A bound that needs lambda*_nu is NaN when the M nu-tightened problem is infeasible (Assumption 4 fails).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from analysis.parametrization_gap.exact_caid import DualDescentTrajectory, dual_descent, maximize_lagrangian
from analysis.parametrization_gap.policy_classes import SequencePolicy
from analysis.parametrization_gap.practical_caid import PracticalTrajectory, practical_caid
from theory import bounds
from theory.dual import dual_gradient, dual_hessian, dual_value, tilted_policy
from theory.dual_solver import DualSolution, solve_dual
from theory.lagrangian import constraint_slacks, kl_divergence, objective
from theory.problem import ConstrainedProblem, InfeasibleProblemError

__all__ = ["ClassMeasurement", "DistributionOptimum", "MeasurementSettings", "measure_policy_class"]

# A policy counts as feasible when every slack is at least this (absorbs float rounding only).
FEASIBILITY_TOL = 1e-10


@dataclasses.dataclass(frozen=True, eq=False)
class DistributionOptimum:
    """The exact solution of (U-CA) and the constants the bounds need.

    Attributes:
        prob: The problem.
        solution: ``solve_dual(prob)``: lambda*, D* (= P* by Lemma 2), pi*.
        M: The bound constant (spec §4).
        L_D: Certified smoothness constant of D.
        mu_D: sigma_min(hess D(lambda*)) (Assumption 5).
        hessian: hess D(lambda*).
    """

    prob: ConstrainedProblem
    solution: DualSolution
    M: float
    L_D: float
    mu_D: float
    hessian: np.ndarray

    @classmethod
    def of(cls, prob: ConstrainedProblem) -> DistributionOptimum:
        """Solve ``prob`` exactly and compute its constants."""
        sol = solve_dual(prob)
        hessian = dual_hessian(prob, sol.lam)
        return cls(
            prob,
            sol,
            bounds.bound_constant_M(prob),
            bounds.smoothness_constant(prob),
            float(np.linalg.eigvalsh(hessian)[0]),
            hessian,
        )

    @property
    def P_star(self) -> float:
        """P* = D* (strong duality, Lemma 2)."""
        return self.solution.value


@dataclasses.dataclass(frozen=True)
class MeasurementSettings:
    """How hard to work on one class.

    Attributes:
        caid_steps: Plain exact-CAID dual steps (eta = 1 / L_loc) from lambda = 0.
        refine_steps: Further dual steps preconditioned by hess D(lambda*)^-1.
        max_iter: L-BFGS iterations per warm-started maximisation.
        cold_iter: L-BFGS iterations of the one-shot maximisation from pi_ref.
        restoration_steps: At most this many multiplier increases to find a feasible in-class policy.
        practical_steps: Stochastic dual steps of practical CAID.
        dual_samples: On-policy (x, y) samples per stochastic dual step.
        dpo_pairs: Reference pairs relabelled at every practical iteration.
        dpo_iter: L-BFGS iterations of each DPO fit (the analogue of one DPO epoch: a limited fit,
            warm-started from the previous iterate; fitted to convergence, DPO overfits the finite pairs).
    """

    caid_steps: int = 15
    refine_steps: int = 5
    max_iter: int = 60
    cold_iter: int = 300
    restoration_steps: int = 8
    practical_steps: int = 8
    dual_samples: int = 256
    dpo_pairs: int = 2000
    dpo_iter: int = 30


@dataclasses.dataclass(frozen=True)
class ClassMeasurement:
    """The summary row of one class and its two dual trajectories."""

    row: dict[str, Any]
    exact: DualDescentTrajectory
    practical: PracticalTrajectory


def _approximation_errors(prob: ConstrainedProblem, pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """``(nu_1, nu_KL)``: worst per-prompt L1 and |KL| gaps over (in-class policy, target) pairs."""
    nu_1 = nu_kl = 0.0
    for approx, target in pairs:
        nu_1 = max(nu_1, float(np.abs(approx - target).sum(axis=1).max()))
        nu_kl = max(nu_kl, float(np.abs(kl_divergence(prob, target) - kl_divergence(prob, approx)).max()))
    return nu_1, nu_kl


def _concat(a: DualDescentTrajectory, b: DualDescentTrajectory) -> DualDescentTrajectory:
    return DualDescentTrajectory(
        *(np.concatenate([x, y]) for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True))
    )


class _PolicyPool:
    """In-class policies found so far, each kept as (objective, slacks), so that L(pi, lambda) is linear."""

    def __init__(self, prob: ConstrainedProblem, policies: list[np.ndarray]) -> None:
        self.prob = prob
        self.policies: list[np.ndarray] = []
        self.objectives: list[float] = []
        self.slacks: list[np.ndarray] = []
        self.add(*policies)

    def add(self, *policies: np.ndarray) -> None:
        for pi in policies:
            self.policies.append(pi)
            self.objectives.append(objective(self.prob, pi))
            self.slacks.append(constraint_slacks(self.prob, pi))

    def _lagrangians(self, lam: np.ndarray) -> np.ndarray:
        return np.array(self.objectives) + np.array(self.slacks) @ lam

    def dual_value(self, lam: np.ndarray) -> float:
        """Max over the pool of L(pi, lambda): a lower estimate of D_p(lambda)."""
        return float(self._lagrangians(lam).max())

    def maximizer(self, lam: np.ndarray) -> np.ndarray:
        """The pool policy with the largest L(pi, lambda)."""
        return self.policies[int(np.argmax(self._lagrangians(lam)))]

    def best_feasible_objective(self) -> float:
        """The best objective of a feasible pool policy (NaN if none is feasible)."""
        feasible = [o for o, s in zip(self.objectives, self.slacks, strict=True) if s.min() >= -FEASIBILITY_TOL]
        return max(feasible) if feasible else float("nan")


def _restoration_candidates(
    policy: SequencePolicy, prob: ConstrainedProblem, lam: np.ndarray, settings: MeasurementSettings
) -> list[np.ndarray]:
    """Lagrangian maximisers at multipliers raised on the violated constraints until one is feasible."""
    found = []
    delta = 0.01 * max(1.0, float(lam.max()))
    for _ in range(settings.restoration_steps):
        maximize_lagrangian(policy, prob, lam, settings.max_iter)
        pi = policy.policy()
        found.append(pi)
        violated = constraint_slacks(prob, pi) < -FEASIBILITY_TOL
        if not violated.any():
            break
        lam = lam + delta * violated
        delta *= 2.0
    return found


def _tightened_dual_or_nan(prob: ConstrainedProblem, nu: float) -> np.ndarray:
    """lambda*_nu, or NaNs when the M nu-tightened problem is infeasible (Assumption 4 fails)."""
    try:
        return bounds.tightened_dual(prob, nu)
    except InfeasibleProblemError:
        return np.full(len(prob.thresholds), np.nan)


def _opt_gaps(opt: DistributionOptimum, policy: np.ndarray) -> tuple[float, float]:
    """``(U-OPT, R-OPT)`` of ``policy``: |slacks - slacks(pi*)|_2 and |objective - P*| (spec §4)."""
    prob, sol = opt.prob, opt.solution
    u_opt = float(np.linalg.norm(constraint_slacks(prob, policy) - sol.slacks))
    return u_opt, abs(objective(prob, policy) - opt.P_star)


def _lam_columns(prefix: str, lam: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_{i + 1}": float(v) for i, v in enumerate(np.atleast_1d(lam))}


def measure_policy_class(
    make_policy: Callable[[], SequencePolicy],
    opt: DistributionOptimum,
    settings: MeasurementSettings,
    rng: np.random.Generator,
    on_step: Callable[[], None] | None = None,
) -> ClassMeasurement:
    """Run every measurement of the module docstring on one class.

    Args:
        make_policy: Returns a fresh member of the class at pi_ref.
        opt: The exact distribution-space solution.
        settings: Iteration counts and sample sizes.
        rng: Source of the practical variant's samples and labels.
        on_step: Called after each Lagrangian maximisation or practical iteration.

    Returns:
        The summary row (see :data:`analysis.parametrization_gap.SUMMARY_COLUMNS`) and the trajectories.
    """
    prob, sol, M, beta = opt.prob, opt.solution, opt.M, opt.prob.beta
    zeros = np.zeros_like(sol.lam)
    eta = 1.0 / float(np.linalg.eigvalsh(opt.hessian)[-1])

    # One-shot: the Lagrangian maximiser at lambda*, trained from pi_ref.
    one_shot_policy = make_policy()
    n_params = one_shot_policy.n_params
    maximize_lagrangian(one_shot_policy, prob, sol.lam, settings.cold_iter)
    one_shot = one_shot_policy.policy()
    if on_step is not None:
        on_step()

    # Multi-shot: exact CAID from lambda = 0, then preconditioned steps to pin down lambda*_p.
    policy = make_policy()
    plain = dual_descent(
        policy, prob, zeros, settings.caid_steps, eta, settings.max_iter, on_step, first_iter=settings.cold_iter
    )
    refined = dual_descent(
        policy, prob, plain.lam[-1], settings.refine_steps, np.linalg.inv(opt.hessian), settings.max_iter, on_step
    )
    exact = _concat(plain, refined)

    # lambda*_p is where dual descent settles (its last iterate). Every in-class policy found bounds D_p from
    # below, D_p(lambda) >= objective + lambda^T slacks, so D*_p is the best of them after a polish there.
    lam_p = exact.lam[-1]
    pool = _PolicyPool(prob, [*exact.policies, one_shot])
    pool.add(*_restoration_candidates(policy, prob, lam_p.copy(), settings))
    maximize_lagrangian(policy, prob, lam_p, settings.cold_iter)
    pool.add(policy.policy())
    D_p_star, multi_shot = pool.dual_value(lam_p), pool.maximizer(lam_p)
    slack_p = constraint_slacks(prob, multi_shot)
    dual_residual = float(np.linalg.norm(lam_p - np.maximum(lam_p - slack_p, 0.0)))
    P_p_star = pool.best_feasible_objective()

    # nu over the tilted policies the proofs approximate (module docstring).
    family = [(one_shot, sol.policy), (multi_shot, tilted_policy(prob, lam_p))]
    nu = max(_approximation_errors(prob, family))
    lam_nu = _tightened_dual_or_nan(prob, nu)
    if np.all(np.isfinite(lam_nu)):
        maximize_lagrangian(policy, prob, lam_nu, settings.cold_iter)
        family.append((policy.policy(), tilted_policy(prob, lam_nu)))
        pool.add(policy.policy())
    nu_1, nu_kl = _approximation_errors(prob, family)
    if max(nu_1, nu_kl) > nu:  # pi*(lambda*_nu) was harder to approximate: tighten by the final nu
        nu = max(nu_1, nu_kl)
        lam_nu = _tightened_dual_or_nan(prob, nu)
    nu_ok = bool(np.all(np.isfinite(lam_nu)))
    lam_nu_arg = lam_nu if nu_ok else zeros

    def need_lam_nu(value: float) -> float:
        return value if nu_ok else float("nan")

    multi_u, multi_r = _opt_gaps(opt, multi_shot)
    one_u, one_r = _opt_gaps(opt, one_shot)
    multi_u_bound, multi_r_bound = bounds.theorem3_multi_shot(M, beta, nu, lam_p, lam_nu_arg, opt.L_D, opt.mu_D)
    one_u_bound, one_r_bound = bounds.theorem4_one_shot(M, beta, nu, sol.lam, opt.L_D)
    pd_lower, pd_upper = bounds.theorem2_primal_dual_gap(M, beta, nu, lam_p, lam_nu_arg)

    # Practical CAID: DPO on pseudo-labels, stochastic on-policy dual steps. lambda_best is chosen on the
    # pool estimate of D_p, as for the exact run.
    practical = practical_caid(
        make_policy(), prob, zeros, eta, settings.practical_steps, settings.dual_samples, settings.dpo_pairs, rng,
        settings.max_iter, on_step, first_iter=settings.cold_iter, dpo_iter=settings.dpo_iter,
    )  # fmt: skip
    pool.add(*practical.maximizers)
    lam_best = practical.lam[int(np.argmin([pool.dual_value(lam) for lam in practical.lam]))]
    S2 = float(np.nanmax(practical.second_moments))
    eps_app = float(practical.eps_app.max())
    prac_u, prac_r = _opt_gaps(opt, pool.maximizer(lam_best))
    prac_lower, prac_upper = bounds.theorem5_practical_primal_dual_gap(
        M, beta, nu, lam_best, lam_nu_arg, eta, S2, eps_app
    )
    prac_u_bound, prac_r_bound = bounds.theorem6_practical(
        M, beta, nu, lam_best, lam_nu_arg, opt.L_D, opt.mu_D, eta, S2, eps_app
    )

    row: dict[str, Any] = {
        "n_params": n_params,
        "nu_1": nu_1,
        "nu_kl": nu_kl,
        "nu": nu,
        "M": M,
        "L_D": opt.L_D,
        "mu_D": opt.mu_D,
        "P_star": opt.P_star,
        "D_star": sol.value,
        "P_p_star": P_p_star,
        "D_p_star": D_p_star,
        **_lam_columns("lam_star", sol.lam),
        **_lam_columns("lam_p_star", lam_p),
        **_lam_columns("lam_nu", lam_nu),
        "assumption4_tightened_feasible": nu_ok,
        "duality_gap_measured": D_p_star - P_p_star,
        "duality_gap_bound": need_lam_nu(bounds.theorem1_duality_gap(M, beta, nu, lam_nu_arg)),
        "dual_function_gap_measured": dual_value(prob, lam_p) - D_p_star,
        "dual_function_gap_bound": bounds.lemma3_dual_function_gap(M, beta, nu, lam_p),
        "primal_dual_gap_measured": D_p_star - opt.P_star,
        "primal_dual_gap_bound_lower": pd_lower,
        "primal_dual_gap_bound": need_lam_nu(pd_upper),
        "dual_distance_measured": float(np.linalg.norm(lam_p - sol.lam)),
        "dual_distance_bound": bounds.lemma4_dual_distance(M, beta, nu, lam_p, opt.mu_D),
        "multi_constraint_gap_measured": float(np.linalg.norm(slack_p - dual_gradient(prob, lam_p))),
        "multi_constraint_gap_bound": bounds.lemma5_constraint_gap_multi_shot(M, beta, nu, lam_p, opt.L_D),
        "one_constraint_gap_measured": one_u,  # eps*(lambda*) = slacks(pi*): the same norm as U-OPT
        "one_constraint_gap_bound": bounds.lemma6_constraint_gap_one_shot(M, beta, nu, sol.lam, opt.L_D),
        "multi_u_opt_measured": multi_u,
        "multi_u_opt_bound": multi_u_bound,
        "multi_r_opt_measured": multi_r,
        "multi_r_opt_bound": need_lam_nu(multi_r_bound),
        "one_u_opt_measured": one_u,
        "one_u_opt_bound": one_u_bound,
        "one_r_opt_measured": one_r,
        "one_r_opt_bound": one_r_bound,
        "multi_min_slack": float(slack_p.min()),
        "dual_residual": dual_residual,
        "one_min_slack": float(constraint_slacks(prob, one_shot).min()),
        "practical_eta": eta,
        "practical_S2": S2,
        "practical_eps_app": eps_app,
        **_lam_columns("practical_lam_best", lam_best),
        "practical_primal_dual_gap_measured": pool.dual_value(lam_best) - opt.P_star,
        "practical_primal_dual_gap_bound_lower": prac_lower,
        "practical_primal_dual_gap_bound": need_lam_nu(prac_upper),
        "practical_u_opt_measured": prac_u,
        "practical_u_opt_bound": prac_u_bound,
        "practical_r_opt_measured": prac_r,
        "practical_r_opt_bound": need_lam_nu(prac_r_bound),
    }
    return ClassMeasurement(row, exact, practical)
