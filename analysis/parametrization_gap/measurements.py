"""Measure one policy class against the distribution-space optimum and the paper's bounds (Sec. 4 of the paper).

For a class Theta the measurements are exact finite sums except where a maximisation over theta is
involved (a local L-BFGS maximum from a warm start). Every pi*_p(lambda) below is estimated by the in-class
policy found with the largest L(pi, lambda) (a pool of every maximiser visited), since
``L(pi, lambda) = D(lambda) - beta E_x KL(pi || pi*(lambda))`` makes that policy the best known one.

* one-shot policy pi*_p(lambda*): the Lagrangian maximiser at the distribution-space dual, trained from pi_ref
  (Theorem 4);
* multi-shot: exact CAID (Algorithm 1, :func:`~analysis.parametrization_gap.exact_caid.dual_descent`)
  warm-started at the one-shot solution, as in the paper's runs: plain steps ``eta = 1 / L_loc`` (``L_loc``
  the largest eigenvalue of hess D(lambda*)), then steps preconditioned by ``hess D(lambda*)^-1``. lambda*_p
  is its last iterate; ``dual_residual = |lambda*_p - [lambda*_p - eps*_p(lambda*_p)]_+|`` says how stationary it
  is. D*_p is the pool's best Lagrangian at lambda*_p (a lower estimate of D_p there) and pi*_p(lambda*_p)
  the policy attaining it (Theorem 3);
* P*_p: the best objective of a feasible in-class policy found (every maximiser visited, plus a restoration
  sweep that raises the multipliers of violated constraints from lambda*_p);
* practical CAID (MoCAID, :func:`~analysis.parametrization_gap.practical_caid.practical_caid`) as the paper's
  experiments run it: warm start at the one-shot dual lambda*, ``practical_iterations`` DPO epochs (T; the paper's
  T: 3 for its two-constraint runs, 4 for single-constraint) with an on-policy dual step before each
  but the first, 600 x 64 on-policy samples per dual step. The paper does not report its dual step size;
  we use ``eta = 1 / L_loc``. eps_app (eq. (28), the worst over the epochs), S^2 and eta are measured
  exactly; lambda_best minimises the pool estimate of D_p over the iterates (Lemma 8), and Theorem 6 bounds
  U-OPT / R-OPT of pi*_p(lambda_best). The policy practical CAID returns, its last DPO-trained iterate (the
  paper reports the final model), is measured too (``returned_u_opt``, ``returned_r_opt``): no theorem bounds
  it, so it has no bound column;
* nu_1, nu_KL (Assumption 3): the assumption quantifies over all of Pi; we measure it at every policy the
  proofs approximate: pi* (Theorems 3-4, Lemma 6), pi*(lambda*_p) (Lemma 3 at lambda*_p), pi*(lambda*_nu)
  (Theorem 1) and pi*(lambda_best) (Theorems 5-6), each approximated by its pool policy:
  ``nu_1 = max max_x |pi_theta - pi|_1``, ``nu_KL = max max_x |KL(pi|pi_ref) - KL(pi_theta|pi_ref)|``.
  lambda*_nu is computed from the nu of the other three, then recomputed once from the final nu if larger.

Hypotheses (:mod:`~analysis.parametrization_gap.hypotheses`), recorded per bound in ``<bound>_hypothesis``
("holds" or "fails: <assumption> (<by how much>)"); a bound whose hypotheses fail is NaN:

* Assumption 1 (span, g = 0) and Assumption 2 (Slater margin of (U-CA)) for every bound;
* Assumption 3 holds with the measured nu at the policies above, by definition of the proxy;
* Assumption 4 (Theorems 1-6): an in-class policy with every slack above M nu. It fails when the
  M nu-tightened problem is infeasible (``assumption4_margin`` = Slater margin - M nu < 0; lambda*_nu does not
  exist), and is not established when no policy found clears M nu (``assumption4_inclass_margin`` < 0); to
  look for one, the class maximises the Lagrangian at the dual of the problem tightened halfway between M nu
  and the Slater margin;
* Assumption 5 on the segment that matters: the bounds use as mu_D the smallest eigenvalue of hess D on
  [lambda*, lambda*_p] (Lemma 4, Theorem 3) or [lambda*, lambda_best] (Theorem 6), ``mu_D_segment_p`` /
  ``mu_D_segment_best`` (33-point grid), which can be below mu*_D = sigma_min(hess D(lambda*)) (``mu_D``);
  with mu*_D the bound would be evaluated outside Assumption 5 whenever the segment's minimum is smaller;
* Assumption 6 at lambda*_p (Lemma 5, Theorem 3) and at lambda* (Lemma 6, Theorem 4), Assumption 7 at
  lambda_best (Theorem 6): a policy strictly above ``max(eps*(lambda), eps*_p(lambda))`` (a Slater margin);
* eq. (31) for Theorems 5-6: ``D_p(lambda_best) - D*_p <= eta S^2 / 2 + eps_app`` (``lemma8_excess`` against
  ``lemma8_allowance``): with T = 3 epochs Lemma 8's almost-sure limit says nothing, so it is checked.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from analysis.parametrization_gap.exact_caid import DualDescentTrajectory, dual_descent, maximize_lagrangian
from analysis.parametrization_gap.hypotheses import (
    Hypothesis,
    assumption1,
    segment_min_eigenvalue,
    slater_margin,
    verdict,
)
from analysis.parametrization_gap.policy_classes import SequencePolicy
from analysis.parametrization_gap.practical_caid import PracticalTrajectory, practical_caid
from theory import bounds
from theory.dual import dual_gradient, dual_value, tilted_policy
from theory.dual_solver import solve_dual
from theory.lagrangian import constraint_slacks, kl_divergence, objective
from theory.problem import ConstrainedProblem, InfeasibleProblemError

__all__ = ["BOUNDED", "ClassMeasurement", "DistributionOptimum", "MeasurementSettings", "measure_policy_class"]

# A policy counts as feasible when every slack is at least this (absorbs float rounding only).
FEASIBILITY_TOL = 1e-10

# Every bounded quantity (the stem of its *_measured / *_bound / *_hypothesis columns) and its result.
BOUNDED = {
    "duality_gap": "Theorem 1",
    "dual_function_gap": "Lemma 3",
    "primal_dual_gap": "Theorem 2",
    "dual_distance": "Lemma 4",
    "multi_constraint_gap": "Lemma 5",
    "one_constraint_gap": "Lemma 6",
    "multi_u_opt": "Theorem 3",
    "multi_r_opt": "Theorem 3",
    "one_u_opt": "Theorem 4",
    "one_r_opt": "Theorem 4",
    "practical_primal_dual_gap": "Theorem 5",
    "practical_u_opt": "Theorem 6",
    "practical_r_opt": "Theorem 6",
}


@dataclasses.dataclass(frozen=True, eq=False)
class DistributionOptimum(bounds.ExactOptimum):
    """:class:`theory.bounds.ExactOptimum` with the hypotheses the laboratory checks once per problem.

    Attributes:
        slater: The Slater margin of (U-CA), max_pi min_i E h_i (Assumption 2; an LP over the support).
        assumption1: Assumption 1, checked.
    """

    slater: float
    assumption1: Hypothesis

    @classmethod
    def of(cls, prob: ConstrainedProblem) -> DistributionOptimum:
        """Solve ``prob`` exactly, compute its constants and check Assumptions 1 and 2."""
        exact = bounds.ExactOptimum.of(prob)
        fields = {f.name: getattr(exact, f.name) for f in dataclasses.fields(exact)}
        return cls(**fields, slater=slater_margin(prob), assumption1=assumption1(prob))


@dataclasses.dataclass(frozen=True)
class MeasurementSettings:
    """How hard to work on one class.

    Attributes:
        caid_steps: Plain exact-CAID dual steps (eta = 1 / L_loc) from the one-shot warm start lambda*.
        refine_steps: Further dual steps preconditioned by hess D(lambda*)^-1.
        max_iter: L-BFGS iterations per warm-started maximisation.
        cold_iter: L-BFGS iterations of the one-shot maximisation from pi_ref (every later fit is warm-started
            from it or its successors; the one at lambda*_nu gets ``5 * max_iter``).
        restoration_steps: At most this many multiplier increases to find a feasible in-class policy.
        practical_iterations: T, DPO epochs of practical CAID (the paper: 3 with two constraints, 4 with one).
        dual_samples: On-policy (x, y) samples per stochastic dual step (the paper: 600 prompts x 64).
        dpo_pairs: Reference pairs relabelled at every epoch (the paper: the ~27k PKU-SafeRLHF-30K train pairs).
        dpo_iter: L-BFGS iterations of each DPO epoch (a limited fit, warm-started from the previous epoch;
            fitted to convergence, DPO overfits the finite pairs).
    """

    caid_steps: int = 4
    refine_steps: int = 6
    max_iter: int = 60
    cold_iter: int = 300
    restoration_steps: int = 8
    practical_iterations: int = 3
    dual_samples: int = 600 * 64
    dpo_pairs: int = 27_000
    dpo_iter: int = 30

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value < (0 if field.name in ("caid_steps", "refine_steps", "restoration_steps") else 1):
                raise ValueError(f"MeasurementSettings.{field.name}: must be a positive count, got {value}")


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
        """The pool policy with the largest L(pi, lambda): the estimate of pi*_p(lambda)."""
        return self.policies[int(np.argmax(self._lagrangians(lam)))]

    def best_feasible_objective(self) -> float:
        """The best objective of a feasible pool policy (NaN if none is feasible)."""
        feasible = [o for o, s in zip(self.objectives, self.slacks, strict=True) if s.min() >= -FEASIBILITY_TOL]
        return max(feasible) if feasible else float("nan")

    def best_min_slack(self) -> float:
        """The largest min_i slack_i of a pool policy (a lower estimate of the in-class Slater margin)."""
        return float(np.array(self.slacks).min(axis=1).max())


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


def _opt_gaps(opt: DistributionOptimum, policy: np.ndarray) -> tuple[float, float]:
    """``(U-OPT, R-OPT)`` of ``policy``: |slacks - slacks(pi*)|_2 and |objective - P*| (Sec. 3.3 metrics)."""
    prob, sol = opt.prob, opt.solution
    u_opt = float(np.linalg.norm(constraint_slacks(prob, policy) - sol.slacks))
    return u_opt, abs(objective(prob, policy) - opt.P_star)


def _lam_columns(prefix: str, lam: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_{i + 1}": float(v) for i, v in enumerate(np.atleast_1d(lam))}


def _tightened_dual_or_none(opt: DistributionOptimum, nu: float) -> np.ndarray | None:
    """lambda*_nu, or None where the M nu-tightened problem is infeasible (Assumption 4 fails)."""
    if opt.slater <= opt.M * nu:  # the linear program says no policy reaches b + M nu
        return None
    try:
        return bounds.tightened_dual(opt.prob, nu)
    except InfeasibleProblemError:  # feasible by a margin too thin for the dual solver
        return None


def _perturbed_slater(
    name: str, where: str, opt: DistributionOptimum, lam: np.ndarray, in_class: np.ndarray
) -> tuple[Hypothesis, float]:
    """Assumption 6/7 at ``lam``: a policy strictly above max(eps*(lam), eps*_p(lam)); returns it and the margin."""
    offsets = np.maximum(dual_gradient(opt.prob, lam), constraint_slacks(opt.prob, in_class))
    margin = slater_margin(opt.prob, offsets)
    detail = f"at {where}: margin {margin:.3g}" + ("" if margin > 0 else f", short by {-margin:.3g}")
    return Hypothesis(name, margin > 0, detail), margin


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
        on_step: Called after each Lagrangian maximisation or practical epoch.

    Returns:
        The summary row (see :data:`analysis.parametrization_gap.laboratory.SUMMARY_COLUMNS`) and the
        trajectories.
    """
    prob, sol, M, beta = opt.prob, opt.solution, opt.M, opt.prob.beta
    eta = 1.0 / float(np.linalg.eigvalsh(opt.hessian)[-1])

    # One-shot: the Lagrangian maximiser at lambda*, trained from pi_ref.
    one_shot_policy = make_policy()
    n_params = one_shot_policy.n_params
    maximize_lagrangian(one_shot_policy, prob, sol.lam, settings.cold_iter)
    if on_step is not None:
        on_step()

    # Multi-shot: exact CAID from the one-shot warm start, then preconditioned steps to pin down lambda*_p.
    policy = copy.deepcopy(one_shot_policy)
    plain = dual_descent(policy, prob, sol.lam, settings.caid_steps, eta, settings.max_iter, on_step)
    refined = dual_descent(
        policy, prob, plain.lam[-1], settings.refine_steps, np.linalg.inv(opt.hessian), settings.max_iter, on_step
    )
    exact = _concat(plain, refined)
    lam_p = exact.lam[-1]
    pool = _PolicyPool(prob, [*exact.policies, one_shot_policy.policy()])
    pool.add(*_restoration_candidates(copy.deepcopy(policy), prob, lam_p.copy(), settings))
    maximize_lagrangian(policy, prob, lam_p, settings.max_iter)  # a further polish at lambda*_p
    pool.add(policy.policy())

    # Practical CAID from the one-shot warm start (its DPO policy starts at pi_ref; D_p(lambda(t)) is tracked
    # by a copy of the one-shot maximiser); its exact maximisers join the pool.
    practical = practical_caid(
        make_policy(), prob, sol.lam, eta, settings.practical_iterations, settings.dual_samples, settings.dpo_pairs,
        rng, settings.max_iter, on_step, dpo_iter=settings.dpo_iter, tracker=copy.deepcopy(one_shot_policy),
    )  # fmt: skip
    pool.add(*practical.maximizers)

    # lambda*_nu from the nu of the other three policies; its maximiser joins the pool; then an Assumption 4
    # witness: the maximiser at the dual of the problem tightened halfway between M nu and the Slater margin.
    def family_nu(lam_nu: np.ndarray | None) -> tuple[float, float]:
        lams = [sol.lam, lam_p, *([] if lam_nu is None else [lam_nu])]
        lams += [practical.lam[int(np.argmin([pool.dual_value(lam) for lam in practical.lam]))]]
        return _approximation_errors(prob, [(pool.maximizer(lam), tilted_policy(prob, lam)) for lam in lams])

    nu = max(family_nu(None))
    lam_nu = _tightened_dual_or_none(opt, nu)
    if lam_nu is not None:
        maximize_lagrangian(policy, prob, lam_nu, 5 * settings.max_iter)  # farther than a dual step away
        pool.add(policy.policy())
        halfway = (opt.slater + M * nu) / 2.0
        maximize_lagrangian(policy, prob, solve_dual(prob.with_thresholds(prob.thresholds + halfway)).lam,
                            settings.max_iter)  # fmt: skip
        pool.add(policy.policy())
    nu_1, nu_kl = family_nu(lam_nu)
    if max(nu_1, nu_kl) > nu:  # pi*(lambda*_nu) was harder to approximate: tighten by the final nu
        nu = max(nu_1, nu_kl)
        lam_nu = _tightened_dual_or_none(opt, nu)

    # The estimates, from the final pool.
    one_shot, multi_shot = pool.maximizer(sol.lam), pool.maximizer(lam_p)
    D_p_star, P_p_star = pool.dual_value(lam_p), pool.best_feasible_objective()
    slack_p = constraint_slacks(prob, multi_shot)
    dual_residual = float(np.linalg.norm(lam_p - np.maximum(lam_p - slack_p, 0.0)))
    t_best = int(np.argmin([pool.dual_value(lam) for lam in practical.lam]))
    lam_best = practical.lam[t_best]
    best = pool.maximizer(lam_best)
    S2 = float(np.nanmax(practical.second_moments))
    eps_app = float(practical.eps_app.max())
    lemma8_excess = pool.dual_value(lam_best) - D_p_star
    lemma8_allowance = bounds.lemma8_best_iterate(eta, S2, eps_app)

    # Hypotheses.
    a2 = Hypothesis("Assumption 2", opt.slater > 0, f"Slater margin {opt.slater:.3g}")
    at = "pi*, pi*(lambda*_p), " + ("" if lam_nu is None else "pi*(lambda*_nu), ") + "pi*(lambda_best)"
    a3 = Hypothesis("Assumption 3", True, f"nu = {nu:.3g} at {at}")
    a4_margin = opt.slater - M * nu
    a4_inclass = pool.best_min_slack() - M * nu
    if a4_margin <= 0:
        a4 = Hypothesis("Assumption 4", False, f"Mnu-tightened problem infeasible by {-a4_margin:.3g}")
    elif lam_nu is None:
        a4 = Hypothesis("Assumption 4", False, f"Mnu-tightened problem feasible by only {a4_margin:.3g}, no dual")
    elif a4_inclass <= 0:
        a4 = Hypothesis("Assumption 4", False, f"no in-class policy found clears Mnu, best short by {-a4_inclass:.3g}")
    else:
        a4 = Hypothesis("Assumption 4", True, f"in-class policy clears Mnu by {a4_inclass:.3g}")
    mu_seg_p = segment_min_eigenvalue(prob, sol.lam, lam_p)
    mu_seg_best = segment_min_eigenvalue(prob, sol.lam, lam_best)
    a5_p = Hypothesis("Assumption 5", mu_seg_p > 0, f"min eigenvalue on [lambda*, lambda*_p] {mu_seg_p:.3g}")
    a5_best = Hypothesis("Assumption 5", mu_seg_best > 0, f"min eigenvalue on [lambda*, lambda_best] {mu_seg_best:.3g}")
    a5_star = Hypothesis("Assumption 5", opt.mu_D > 0, f"mu*_D {opt.mu_D:.3g}")
    a6_p, a6_p_margin = _perturbed_slater("Assumption 6", "lambda*_p", opt, lam_p, multi_shot)
    a6_star, a6_star_margin = _perturbed_slater("Assumption 6", "lambda*", opt, sol.lam, one_shot)
    a7, a7_margin = _perturbed_slater("Assumption 7", "lambda_best", opt, lam_best, best)
    eq31 = Hypothesis(
        "eq. (31)",
        lemma8_excess <= lemma8_allowance,
        f"D_p(lambda_best) - D*_p = {lemma8_excess:.3g} vs eta S^2/2 + eps_app = {lemma8_allowance:.3g}",
    )
    base = [opt.assumption1, a2, a3]
    hypotheses = {
        "duality_gap": [*base, a4],
        "dual_function_gap": base,
        "primal_dual_gap": [*base, a4],
        "dual_distance": [*base, a5_p],
        "multi_constraint_gap": [*base, a6_p],
        "one_constraint_gap": [*base, a6_star],
        "multi_u_opt": [*base, a4, a5_p, a6_p],
        "one_u_opt": [*base, a4, a5_star, a6_star],
        "practical_primal_dual_gap": [*base, a4, eq31],
        "practical_u_opt": [*base, a4, a5_best, a7, eq31],
    }
    hypotheses["multi_r_opt"] = hypotheses["multi_u_opt"]
    hypotheses["one_r_opt"] = hypotheses["one_u_opt"]
    hypotheses["practical_r_opt"] = hypotheses["practical_u_opt"]
    verdicts = {stem: verdict(hypotheses[stem]) for stem in BOUNDED}

    # Bounds (evaluated with lambda*_nu = 0 where it does not exist; those are masked below).
    lam_nu_arg = np.zeros_like(sol.lam) if lam_nu is None else lam_nu
    multi_u_bound, multi_r_bound = bounds.theorem3_multi_shot(M, beta, nu, lam_p, lam_nu_arg, opt.L_D, mu_seg_p)
    one_u_bound, one_r_bound = bounds.theorem4_one_shot(M, beta, nu, sol.lam, opt.L_D)
    pd_lower, pd_upper = bounds.theorem2_primal_dual_gap(M, beta, nu, lam_p, lam_nu_arg)
    prac_lower, prac_upper = bounds.theorem5_practical_primal_dual_gap(
        M, beta, nu, lam_best, lam_nu_arg, eta, S2, eps_app
    )
    prac_u_bound, prac_r_bound = bounds.theorem6_practical(
        M, beta, nu, lam_best, lam_nu_arg, opt.L_D, mu_seg_best, eta, S2, eps_app
    )
    multi_u, multi_r = _opt_gaps(opt, multi_shot)
    one_u, one_r = _opt_gaps(opt, one_shot)
    prac_u, prac_r = _opt_gaps(opt, best)
    returned_u, returned_r = _opt_gaps(opt, practical.dpo_policies[-1])
    measured_and_bounds: dict[str, tuple[float, float] | tuple[float, float, float]] = {
        "duality_gap": (D_p_star - P_p_star, bounds.theorem1_duality_gap(M, beta, nu, lam_nu_arg)),
        "dual_function_gap": (dual_value(prob, lam_p) - D_p_star, bounds.lemma3_dual_function_gap(M, beta, nu, lam_p)),
        "primal_dual_gap": (D_p_star - opt.P_star, pd_upper, pd_lower),
        "dual_distance": (
            float(np.linalg.norm(lam_p - sol.lam)),
            bounds.lemma4_dual_distance(M, beta, nu, lam_p, mu_seg_p),
        ),
        "multi_constraint_gap": (
            float(np.linalg.norm(slack_p - dual_gradient(prob, lam_p))),
            bounds.lemma5_constraint_gap_multi_shot(M, beta, nu, lam_p, opt.L_D),
        ),
        # eps*(lambda*) = slacks(pi*): the same norm as U-OPT of the one-shot policy.
        "one_constraint_gap": (one_u, bounds.lemma6_constraint_gap_one_shot(M, beta, nu, sol.lam, opt.L_D)),
        "multi_u_opt": (multi_u, multi_u_bound),
        "multi_r_opt": (multi_r, multi_r_bound),
        "one_u_opt": (one_u, one_u_bound),
        "one_r_opt": (one_r, one_r_bound),
        "practical_primal_dual_gap": (pool.dual_value(lam_best) - opt.P_star, prac_upper, prac_lower),
        "practical_u_opt": (prac_u, prac_u_bound),
        "practical_r_opt": (prac_r, prac_r_bound),
    }
    gap_columns: dict[str, Any] = {}
    for stem, (measured, upper, *lower) in measured_and_bounds.items():
        holds = verdicts[stem] == "holds"
        gap_columns[f"{stem}_measured"] = measured
        if lower:
            gap_columns[f"{stem}_bound_lower"] = lower[0] if holds else float("nan")
        gap_columns[f"{stem}_bound"] = upper if holds else float("nan")
        gap_columns[f"{stem}_hypothesis"] = verdicts[stem]

    row: dict[str, Any] = {
        "n_params": n_params,
        "nu_1": nu_1,
        "nu_kl": nu_kl,
        "nu": nu,
        "M": M,
        "L_D": opt.L_D,
        "mu_D": opt.mu_D,
        "mu_D_segment_p": mu_seg_p,
        "mu_D_segment_best": mu_seg_best,
        "slater_margin": opt.slater,
        "assumption4_margin": a4_margin,
        "assumption4_inclass_margin": a4_inclass,
        "assumption6_margin_p": a6_p_margin,
        "assumption6_margin_star": a6_star_margin,
        "assumption7_margin": a7_margin,
        "P_star": opt.P_star,
        "D_star": sol.value,
        "P_p_star": P_p_star,
        "D_p_star": D_p_star,
        **_lam_columns("lam_star", sol.lam),
        **_lam_columns("lam_p_star", lam_p),
        **_lam_columns("lam_nu", np.full_like(sol.lam, np.nan) if lam_nu is None else lam_nu),
        **gap_columns,
        "multi_min_slack": float(slack_p.min()),
        "dual_residual": dual_residual,
        "one_min_slack": float(constraint_slacks(prob, one_shot).min()),
        "practical_eta": eta,
        "practical_S2": S2,
        "practical_eps_app": eps_app,
        "practical_t_best": t_best,
        **_lam_columns("practical_lam_best", lam_best),
        "lemma8_excess": lemma8_excess,
        "lemma8_allowance": lemma8_allowance,
        "returned_u_opt": returned_u,
        "returned_r_opt": returned_r,
        "returned_min_slack": float(constraint_slacks(prob, practical.dpo_policies[-1]).min()),
    }
    return ClassMeasurement(row, exact, practical)
