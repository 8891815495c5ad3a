"""Closed-form dual solver: min_{lambda >= 0} D(lambda) by projected Newton on the covariance Hessian.

D is convex and smooth (Lemma 1); its gradient is the tilted policy's constraint slack and its Hessian
is the tilted covariance of g over beta (spec §2.2). Each iteration makes one pass over the data
(:func:`theory.dual.evaluate_dual`) and minimises the quadratic model over the box lambda >= 0
intersected with a trust region measured in nats of tilt. By Lemma 2 (strong duality, under strict
feasibility) the minimiser gives the optimum of (U-CA): P* = D* and pi* = pi*(lambda*).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize

from theory.dual import DualEvaluation, evaluate_dual, row_blocks, tilted_policy
from theory.problem import ConstrainedProblem, InfeasibleProblemError

__all__ = ["DualSolution", "DualSolverError", "solve_dual"]

# Trust-region acceptance and update thresholds on actual / predicted decrease.
_ACCEPT, _SHRINK, _EXPAND = 1e-4, 0.25, 0.75
# Initial trust radius: a step may change the tilt lambda_i * (largest improvement_i) / beta by this
# many nats. Newton steps are unreliable when pi*(lambda) is nearly deterministic (hess D ~ 0).
_INITIAL_RADIUS, _MAX_RADIUS = 10.0, 1e8
# beta-continuation (see _minimize_with_continuation): Newton iterations per stage before a stage
# counts as stalled, beta multiplier between stages, most stages, and intermediate tolerance.
_STAGE_ITERS = 40
_BETA_FACTOR = 4.0
_MAX_STAGES = 30
_STAGE_TOL = 1e-8
# A tilt of this many nats makes pi*(lambda) nearly deterministic in the direction of lambda; past it
# we test whether the problem is infeasible (D then decreases without bound).
_TILT_CHECK = 50.0


class DualSolverError(RuntimeError):
    """The dual solver did not reach its tolerance."""


@dataclasses.dataclass(frozen=True)
class DualSolution:
    """The solution of the dual problem (4), min_{lambda >= 0} D(lambda).

    Attributes:
        lam: ``(m,)`` lambda*.
        value: D* = D(lambda*) (= P* by strong duality, Lemma 2).
        gradient: ``(m,)`` grad D(lambda*) = E_x E_{pi*} h, the optimal policy's constraint slacks
            (>= 0; zero where lambda*_i > 0, complementary slackness).
        hessian: ``(m, m)`` hess D(lambda*); its smallest eigenvalue is mu*_D of Assumption 5.
        policy: ``(X, Y)`` pi*(lambda*) of eq. (3), or ``None`` if not requested.
        iterations: accepted Newton iterations of the final run (at the problem's own beta).
        evaluations: passes over the data (dual evaluations), continuation stages included.
        kkt_residual: ``max_i |lambda_i - max(lambda_i - grad_i, 0)|``, the projected-gradient residual.
        trajectory: ``(iterations + 1, m)`` the accepted iterates of the final run, its start first.
    """

    lam: np.ndarray
    value: float
    gradient: np.ndarray
    hessian: np.ndarray
    policy: np.ndarray | None
    iterations: int
    evaluations: int
    kkt_residual: float
    trajectory: np.ndarray

    @property
    def slacks(self) -> np.ndarray:
        """``(m,)`` E_x E_{pi*} h_i, an alias of :attr:`gradient`."""
        return self.gradient


def _newton_step(ev: DualEvaluation, radius: np.ndarray) -> np.ndarray:
    """The minimiser d of the model g^T d + d^T H d / 2 subject to lambda + d >= 0 and |d_i| <= radius_i.

    The m-dimensional box QP is solved by L-BFGS-B, started from the better of two classic steps: the
    Newton step on the free coordinates (quadratic convergence once the active set is found) and the
    Cauchy point along the clipped steepest descent (the decrease trust-region convergence needs).
    H can be nearly singular (a deterministic pi*, or Assumption 1 failing), so nothing inverts it blindly.
    """
    g, h, lam = ev.gradient, ev.hessian, ev.lam
    scale = np.where(np.isfinite(radius), radius, 1.0)  # work in units of the trust box
    g_s, h_s = g * scale, h * np.outer(scale, scale)
    lower, upper = np.maximum(-lam, -radius) / scale, radius / scale

    def model(u: np.ndarray) -> tuple[float, np.ndarray]:
        return float(g_s @ u + 0.5 * u @ h_s @ u), g_s + h_s @ u

    free = (lam > 0) | (g < 0)
    newton = np.zeros_like(g_s)
    with np.errstate(all="ignore"):  # a denormal H (point-mass pi*) gives a non-finite step: skipped
        newton[free] = -np.linalg.lstsq(h_s[np.ix_(free, free)], g_s[free], rcond=1e-14)[0]
    free &= np.all(np.isfinite(newton))
    if free.any():
        grad = model(newton)[1]
        stationary = np.all(np.abs(grad[free]) <= 1e-9 * np.abs(g_s).max())  # fails if H_FF is singular
        inside = np.all(newton >= lower) and np.all(newton <= upper)
        if stationary and inside and np.all(grad[~free] >= 0):
            return newton * scale  # KKT holds: the free Newton step is the exact minimiser
    direction = np.clip(-g_s, lower, upper)
    curvature, slope = direction @ h_s @ direction, g_s @ direction
    candidates = [direction * (1.0 if curvature <= -slope else -slope / curvature)]
    if free.any():
        candidates.append(np.clip(newton, lower, upper))
    start = min(candidates, key=lambda u: model(u)[0])
    polished = minimize(
        model, start, jac=True, method="L-BFGS-B", bounds=list(zip(lower, upper, strict=True)),
        options={"ftol": 1e-15, "gtol": 1e-14, "maxiter": 200},
    )
    return (polished.x if polished.fun < model(start)[0] else start) * scale


def _projected_residual(ev: DualEvaluation) -> float:
    return float(np.max(np.abs(ev.lam - np.maximum(ev.lam - ev.gradient, 0.0))))


def _raise_if_certified_infeasible(prob: ConstrainedProblem, lam: np.ndarray) -> None:
    """Raise if mu = lambda / |lambda|_1 certifies infeasibility (Farkas).

    For every policy pi, mu^T E_x E_pi h <= phi(mu) := E_x max_{y in supp} mu^T h(x, y). So phi(mu) <= 0
    means no policy satisfies all constraints strictly, and D decreases without bound along mu.
    """
    mu = lam / lam.sum()
    best = np.empty(prob.n_prompts)
    for rows in row_blocks(prob):  # blockwise: no (X, Y) temporary at N = 1e7
        combined = np.tensordot(mu, prob.utilities[:, rows], axes=1)
        if prob.support is not None:
            combined[~prob.support[rows]] = -np.inf
        best[rows] = combined.max(axis=1)
    offset = mu @ (prob.ref_utility_means + prob.thresholds[:, None])
    phi = float(prob.prompt_weights @ (best - offset))
    if phi <= 0:
        raise InfeasibleProblemError(
            f"the constraints are jointly infeasible: for the combination mu = {np.round(mu, 6).tolist()} "
            f"every policy has sum_i mu_i (E g_i - E_ref g_i - b_i) <= {phi:.6g}, although each constraint "
            f"alone can reach its threshold (largest improvements {prob.max_improvements.tolist()}, "
            f"thresholds {prob.thresholds.tolist()}); lower the thresholds"
        )


@dataclasses.dataclass
class _Run:
    """The state of one Newton run: its last evaluation, accepted iterates and pass count."""

    ev: DualEvaluation
    iterates: list[np.ndarray]
    evaluations: int
    converged: bool = False


def _minimize(prob: ConstrainedProblem, lam0: np.ndarray, tol: float, max_iter: int) -> _Run:
    """Trust-region projected Newton from ``lam0``."""
    run = _Run(evaluate_dual(prob, lam0, order=2), [np.asarray(lam0, dtype=float)], 1)
    # lambda_i * nats_per_unit_i is the tilt, in nats, that lambda_i puts on the best responses.
    nats_per_unit = np.maximum(prob.max_improvements, np.finfo(float).tiny) / prob.beta
    radius = _INITIAL_RADIUS
    checked_tilt = _TILT_CHECK
    for _ in range(max_iter):
        ev = run.ev
        step = _newton_step(ev, radius / nats_per_unit)
        if np.max(np.abs(step)) <= tol * (1.0 + np.max(ev.lam)):
            run.converged = True
            return run
        trial = evaluate_dual(prob, np.maximum(ev.lam + step, 0.0), order=2)
        run.evaluations += 1
        predicted = -float(ev.gradient @ step + 0.5 * step @ ev.hessian @ step)
        step_nats = float(np.max(np.abs(step) * nats_per_unit))
        if predicted <= 8 * np.finfo(float).eps * (1.0 + abs(ev.value)):
            if step_nats >= 0.99 * radius:
                return run  # the trust region collapsed: stalled, not converged
            # A full Newton step whose decrease D cannot resolve: judge it by the projected gradient.
            run.converged = _projected_residual(trial) >= _projected_residual(ev)
            if run.converged:
                return run
            run.ev = trial
            run.iterates.append(trial.lam)
            continue
        ratio = (ev.value - trial.value) / predicted
        if ratio < _SHRINK:
            radius = 0.25 * step_nats
        elif ratio > _EXPAND and step_nats >= 0.99 * radius:
            radius = min(4.0 * radius, _MAX_RADIUS)
        if ratio > _ACCEPT:
            run.ev = trial
            run.iterates.append(trial.lam)
            tilt = float(trial.lam @ nats_per_unit)
            if tilt > checked_tilt:
                _raise_if_certified_infeasible(prob, trial.lam)
                checked_tilt = 4.0 * tilt
    return run


def _minimize_with_continuation(prob: ConstrainedProblem, lam0: np.ndarray, tol: float, max_iter: int) -> _Run:
    """Newton from ``lam0``; if it stalls, follow lambda*(beta') down from a smoother beta' = 4^k beta.

    When r / beta spans thousands of nats, D is nearly piecewise linear (an LP's dual smoothed at scale
    beta) and local quadratic models fail. lambda*(beta) is continuous in beta, so we increase beta until
    Newton converges, then decrease it stage by stage, warm-starting each solve.
    """
    run = _minimize(prob, lam0, tol, _STAGE_ITERS)
    if run.converged:
        return run
    total = run.evaluations
    betas = [prob.beta]
    while not run.converged:
        if len(betas) > _MAX_STAGES:
            return run
        betas.append(betas[-1] * _BETA_FACTOR)
        run = _minimize(prob.with_beta(betas[-1]), run.ev.lam, _STAGE_TOL, _STAGE_ITERS)
        total += run.evaluations
    for beta in reversed(betas[:-1]):
        final = beta == prob.beta
        stage = prob if final else prob.with_beta(beta)
        run = _minimize(stage, run.ev.lam, tol if final else _STAGE_TOL, max_iter if final else _STAGE_ITERS)
        total += run.evaluations
    run.evaluations = total
    return run


def solve_dual(
    prob: ConstrainedProblem,
    lam0: np.ndarray | None = None,
    *,
    tol: float = 1e-12,
    max_iter: int = 200,
    return_policy: bool = True,
) -> DualSolution:
    """Solve the dual problem (4) and recover the primal optimum pi*(lambda*) (Lemma 2).

    Args:
        prob: The problem.
        lam0: ``(m,)`` non-negative starting multipliers (default zero).
        tol: Stop when the Newton step satisfies ``|d|_inf <= tol * (1 + |lambda|_inf)``; Newton converges
            quadratically, so lambda is then accurate to about ``tol`` relative.
        max_iter: Maximum Newton iterations.
        return_policy: Also compute pi*(lambda*) (an (X, Y) array; one more pass over the data).

    Returns:
        The :class:`DualSolution`.

    Raises:
        InfeasibleProblemError: A threshold no policy absolutely continuous w.r.t. pi_ref can strictly
            reach, or jointly infeasible constraints.
        DualSolverError: The tolerance was not reached in ``max_iter`` iterations.
    """
    prob.check_feasible()
    lam = np.zeros(prob.n_constraints) if lam0 is None else prob.check_multipliers(lam0, nonnegative=True, field="lam0")


    run = _minimize_with_continuation(prob, lam, tol, max_iter)
    ev = run.ev
    residual = _projected_residual(ev)
    if not run.converged:
        if ev.lam.sum() > 0:
            _raise_if_certified_infeasible(prob, ev.lam)
        raise DualSolverError(
            f"solve_dual did not converge ({run.evaluations} evaluations) at lambda = {ev.lam.tolist()}, "
            f"projected-gradient residual {residual:.3g}; the problem may be nearly infeasible "
            "(try smaller thresholds) or badly scaled"
        )
    return DualSolution(
        lam=ev.lam,
        value=ev.value,
        gradient=ev.gradient,
        hessian=ev.hessian,
        policy=tilted_policy(prob, ev.lam) if return_policy else None,
        iterations=len(run.iterates) - 1,
        evaluations=run.evaluations + int(return_policy),
        kkt_residual=residual,
        trajectory=np.array(run.iterates),
    )
