"""Closed-form dual solver: min_{lambda >= 0} D(lambda) of the dual problem (4), certified by its KKT residual.

D is convex and smooth (Lemma 1); its gradient is the tilted policy's constraint slack and its Hessian is
the tilted covariance of g over beta (eq. (3) and Lemma 1). Each Newton iteration makes one pass over the
data (:func:`theory.dual.evaluate_dual`) and minimises the quadratic model over the box lambda >= 0
intersected with a trust region measured in nats of tilt. By Lemma 2 (strong duality, under strict
feasibility, Assumption 2) the minimiser gives the optimum of (U-CA): P* = D* and pi* = pi*(lambda*).

A solution is returned only when its KKT residual is small relative to the problem's scale (see
:func:`kkt_residual`): stationarity holds exactly for the tilted policy pi*(lambda), dual feasibility
lambda >= 0 by construction, and primal feasibility and complementary slackness are measured. For small
beta, D is a smoothed piecewise-linear function (the dual of an LP, smoothed at scale beta) on which
Newton from a cold start stalls; the solver then follows the path lambda*(beta') from a larger beta'
down to beta, warm-starting each stage from a linear extrapolation of the path. Otherwise it raises.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog, minimize

from theory.dual import DualEvaluation, dual_value, evaluate_dual, row_blocks, tilted_policy
from theory.problem import ConstrainedProblem, InfeasibleProblemError

__all__ = ["MAX_TOLERANCE", "DualSolution", "DualSolverError", "kkt_residual", "solve_dual"]

# Trust-region acceptance and update thresholds on actual / predicted decrease.
_ACCEPT, _SHRINK, _EXPAND = 1e-4, 0.25, 0.75
# Trust radius in nats of tilt: a step may change lambda_i * (slack scale_i) / beta by this much.
# Newton steps are unreliable when pi*(lambda) is nearly deterministic (hess D ~ 0). Below the smallest
# radius a step changes no logit by a representable amount: the run has stalled.
_INITIAL_RADIUS, _MAX_RADIUS, _MIN_RADIUS = 10.0, 1e8, 1e-12
# Newton iterations at the problem's own beta before the continuation takes over (the typical solve
# needs under ten).
_DIRECT_ITERS = 15
# beta-continuation (see _continuation): Newton iterations per stage, the tolerance of intermediate
# stages, the factor between climbing stages and the first ratio between descending ones, the largest
# and smallest such ratio (squared after a stage certified within _EASY_STAGE evaluations, square-rooted
# after a failed one), and the most climbing stages.
_STAGE_ITERS = 25
_STAGE_TOL = 1e-8
_BETA_UP = 10.0
_MAX_RATIO, _MIN_RATIO = 1e4, 1.05
_EASY_STAGE = 4
_MAX_CLIMB = 40
# A tilt of this many nats makes pi*(lambda) nearly deterministic in the direction of lambda; past it
# we test whether the problem is infeasible (D then decreases without bound).
_TILT_CHECK = 50.0
# Float64 logits (r + lambda^T g) / beta + log pi_ref carry rounding errors of about eps * |logit| nats,
# which move the tilted policy's slacks by about that fraction of their scale; no lambda can certify a
# smaller KKT residual than this many such units (see _ScoreSizes.rounding_floor).
_ROUNDING_UNITS = 16.0
# solve_dual rescales a problem whose beta, constraint scales s_i and 1 span more than this factor; within it
# the products in D's Hessian s_i s_j / beta stay far from float64's range limits.
_SCALE_RANGE = 1e50
# The largest relative KKT residual ever certified. Where the rounding floor exceeds it (beta tiny relative
# to the scores, or lambda so large that the logits span more than ~1e11 nats) float64 cannot resolve the
# tilted policy on the problem's own scale, and the solver raises rather than certify on a coarser one.
MAX_TOLERANCE = 1e-3


class DualSolverError(RuntimeError):
    """The dual solver could not certify an optimum (its KKT residual stayed above the tolerance)."""


@dataclasses.dataclass(frozen=True)
class DualSolution:
    """The solution of the dual problem (4), min_{lambda >= 0} D(lambda).

    Attributes:
        lam: ``(m,)`` lambda*.
        value: D* = D(lambda*) (= P* by strong duality, Lemma 2).
        gradient: ``(m,)`` grad D(lambda*) = E_x E_{pi*} h, the optimal policy's constraint slacks
            (>= 0 up to the tolerance; zero where lambda*_i > 0, complementary slackness).
        hessian: ``(m, m)`` hess D(lambda*); its smallest eigenvalue is mu*_D of Assumption 5.
        policy: ``(X, Y)`` pi*(lambda*) of eq. (3), or ``None`` if not requested.
        iterations: accepted Newton iterations of the final run (at the problem's own beta).
        evaluations: passes over the data (dual evaluations), continuation stages included.
        kkt_residual: the relative KKT residual of :func:`kkt_residual` at lambda* (<= the tolerance met).
        tolerance: the residual certified: ``max(tol, rounding floor)``, never above :data:`MAX_TOLERANCE`;
            the floor, about 16 eps max|logit| with logits (r + lambda^T g) / beta, exceeds ``tol`` only for
            tiny beta.
        continuation_betas: the betas of the continuation stages, largest first (empty if none ran).
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
    tolerance: float
    continuation_betas: tuple[float, ...]
    trajectory: np.ndarray

    @property
    def slacks(self) -> np.ndarray:
        """``(m,)`` E_x E_{pi*} h_i, an alias of :attr:`gradient`."""
        return self.gradient


def slack_scales(prob: ConstrainedProblem) -> np.ndarray:
    """``(m,)`` the scale s_i of constraint i's slack: its largest improvement, or |b_i| if that is larger."""
    return np.maximum(np.maximum(prob.max_improvements, np.abs(prob.thresholds)), np.finfo(float).tiny)


def kkt_residual(prob: ConstrainedProblem, lam: np.ndarray, value: float, slacks: np.ndarray) -> float:
    """The relative KKT residual of lambda >= 0, whose tilted policy pi*(lambda) has these slacks and D = value.

    Stationarity holds exactly for pi*(lambda) (it maximises the Lagrangian, eq. (3)) and lambda >= 0 is
    dual feasible, so the residual is the larger of

    - primal infeasibility ``max_i max(-slack_i, 0) / s_i`` (s_i from :func:`slack_scales`), and
    - complementary slackness ``sum_i lambda_i |slack_i| / (|D| + lambda^T s + beta)``, which bounds the
      duality gap D(lambda) - objective(pi*(lambda)) = lambda^T slack relative to the objective's scale.

    Together they bound |P* - D(lambda)| by about (residual) * (|D| + lambda^T s + beta).
    """
    scales = slack_scales(prob)
    infeasibility = float(np.max(np.maximum(-slacks, 0.0) / scales))
    objective_scale = abs(value) + float(lam @ scales) + prob.beta
    return max(infeasibility, float(np.abs(lam * slacks).sum()) / objective_scale)


def _residual(prob: ConstrainedProblem, ev: DualEvaluation) -> float:
    return kkt_residual(prob, ev.lam, ev.value, ev.gradient)


class _ScoreSizes:
    """max |r|, max |g_i| and max |log pi_ref| over the inputs, read once and lazily (no (X, Y) temporaries)."""

    def __init__(self, prob: ConstrainedProblem) -> None:
        self._prob = prob
        self._sizes: np.ndarray | None = None

    @property
    def sizes(self) -> np.ndarray:
        """``(m + 2,)`` max |r|, max |g_1|, ..., max |g_m|, max |log pi_ref| over the support."""
        if self._sizes is None:
            ref = self._prob.ref_logprobs
            scores = [self._prob.reward, *self._prob.utilities]
            self._sizes = np.array(
                [max(abs(a.max()), abs(a.min())) for a in scores] + [-ref.min(initial=0.0, where=np.isfinite(ref))]
            )
        return self._sizes

    def rounding_floor(self, prob: ConstrainedProblem, lam: np.ndarray) -> float:
        """The smallest KKT residual float64 can certify at ``lam``: ``_ROUNDING_UNITS eps (1 + max|logit|)``."""
        sizes = self.sizes
        logit = (sizes[0] + lam @ sizes[1:-1]) / prob.beta + sizes[-1]
        return _ROUNDING_UNITS * np.finfo(float).eps * (1.0 + logit)

    def smooth_beta(self) -> float:
        """A beta, (max |r| + sum_i max |g_i|) / 10, at which logits (r + lambda^T g) / beta span tens of nats."""
        return 0.1 * float(self.sizes[:-1].sum())


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


def _feasibility_margin(prob: ConstrainedProblem) -> tuple[float, np.ndarray]:
    """The LP ``max_pi min_i E_x E_pi h_i / s_i`` (> 0 iff the constraints are jointly strictly feasible).

    Returns the margin and the LP's optimal constraint weights mu (a Farkas combination when the margin is
    <= 0). Exact, but it builds an LP with one variable per supported (x, y): run only when Newton fails.
    """
    support = np.ones(prob.ref_logprobs.shape, bool) if prob.support is None else prob.support
    rows, cols = np.nonzero(support)
    n_vars = len(rows) + 1  # pi on the support, then the margin t
    h = prob.constraint_functions()[:, rows, cols] * prob.prompt_weights[rows] / slack_scales(prob)[:, None]
    a_ub = sp.hstack([sp.csr_matrix(-h), sp.csr_matrix(np.ones((prob.n_constraints, 1)))])  # t <= slack_i / s_i
    a_eq = sp.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(prob.n_prompts, n_vars))
    cost = np.zeros(n_vars)
    cost[-1] = -1.0
    bounds = [(0.0, None)] * len(rows) + [(None, None)]
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(prob.n_constraints), A_eq=a_eq, b_eq=np.ones(prob.n_prompts),
                  bounds=bounds, method="highs")
    if res.status != 0:
        raise DualSolverError(f"the feasibility LP failed ({res.message}); check the scores for extreme values")
    return float(-res.fun), np.abs(np.asarray(res.ineqlin.marginals, dtype=float))


@dataclasses.dataclass
class _Run:
    """The state of one Newton run: its last evaluation and residual, accepted iterates and pass count."""

    ev: DualEvaluation
    residual: float
    iterates: list[np.ndarray]
    evaluations: int
    certified: bool = False
    tolerance: float = 0.0
    stalled: bool = False


def _newton(prob: ConstrainedProblem, lam0: np.ndarray, tol: float, max_iter: int, sizes: _ScoreSizes) -> _Run:
    """Trust-region projected Newton from ``lam0`` until the KKT residual is at most ``tol``, or it stalls.

    A run whose trust region collapsed (no representable step improves lambda) is certified only if its
    residual is below the rounding floor (see :meth:`_ScoreSizes.rounding_floor`); a short step is never taken as
    evidence of convergence, and a run out of iterations is not certified.
    """
    ev = evaluate_dual(prob, lam0, order=2)
    run = _Run(ev, _residual(prob, ev), [ev.lam], 1, tolerance=tol)
    # lambda_i * nats_per_unit_i is the tilt, in nats, that lambda_i puts on the constraint's scale.
    nats_per_unit = slack_scales(prob) / prob.beta
    radius = _INITIAL_RADIUS
    checked_tilt = _TILT_CHECK
    stalled = False
    for _ in range(max_iter):
        if run.residual <= tol:
            run.certified = True
            return run
        ev = run.ev
        step = _newton_step(ev, radius / nats_per_unit)
        step_nats = float(np.max(np.abs(step) * nats_per_unit))
        if step_nats <= _MIN_RADIUS:
            stalled = True
            break
        trial = evaluate_dual(prob, np.maximum(ev.lam + step, 0.0), order=2)
        run.evaluations += 1
        trial_residual = _residual(prob, trial)
        predicted = -float(ev.gradient @ step + 0.5 * step @ ev.hessian @ step)
        if predicted <= 8 * np.finfo(float).eps * (1.0 + abs(ev.value)):
            # A decrease D cannot resolve (near the optimum, or at tiny beta): judge by the KKT residual.
            accept = trial_residual < run.residual
            if not accept:
                radius = 0.25 * step_nats
        else:
            ratio = (ev.value - trial.value) / predicted
            if ratio < _SHRINK:
                radius = 0.25 * step_nats
            elif ratio > _EXPAND and step_nats >= 0.99 * radius:
                radius = min(4.0 * radius, _MAX_RADIUS)
            accept = ratio > _ACCEPT
        if accept:
            run.ev, run.residual = trial, trial_residual
            run.iterates.append(trial.lam)
            tilt = float(trial.lam @ nats_per_unit)
            if tilt > checked_tilt:
                _raise_if_certified_infeasible(prob, trial.lam)
                checked_tilt = 4.0 * tilt
    run.stalled = stalled
    if stalled:  # no representable step improves lambda: accept a residual at the rounding floor (if resolvable)
        run.tolerance = max(tol, min(sizes.rounding_floor(prob, run.ev.lam), MAX_TOLERANCE))
    run.certified = run.residual <= run.tolerance
    return run


def _continuation(
    prob: ConstrainedProblem, lam0: np.ndarray, tol: float, max_iter: int, sizes: _ScoreSizes
) -> tuple[_Run, list[float]]:
    """Follow lambda*(beta') from a smooth beta' down to beta; returns the last run and the stages' betas.

    When (r + lambda^T g) / beta spans thousands of nats, D is nearly piecewise linear and quadratic models
    fail far from lambda*. lambda*(beta) is a smooth path with an LP limit as beta -> 0 (lambda*(beta) is
    close to affine in beta there), so we solve from ``lam0`` at a beta' where the logits span a few nats
    (raised further until Newton certifies), then lower beta stage by stage, each stage started from the
    linear extrapolation of the last two: near the LP limit that start is already accurate. A failed stage
    is retried with a smaller ratio between the betas.
    """
    total, betas = 0, []
    beta = max(sizes.smooth_beta(), _BETA_UP * prob.beta)
    for _ in range(_MAX_CLIMB):
        betas.append(beta)
        run = _newton(prob.with_beta(beta), lam0, _STAGE_TOL, _STAGE_ITERS, sizes)
        total += run.evaluations
        if run.certified:
            break
        beta *= _BETA_UP
    if not run.certified:
        run.evaluations = total
        return run, betas
    path = [(beta, run.ev.lam)]
    ratio = _BETA_UP
    while path[-1][0] > prob.beta:
        beta, lam = path[-1]
        target = max(beta / ratio, prob.beta)
        final = target == prob.beta
        stage = prob if final else prob.with_beta(target)
        start = lam
        if len(path) > 1:
            (previous_beta, previous_lam) = path[-2]
            start = np.maximum(lam + (lam - previous_lam) * (target - beta) / (beta - previous_beta), 0.0)
        run = _newton(stage, start, tol if final else _STAGE_TOL, max_iter if final else _STAGE_ITERS, sizes)
        total += run.evaluations
        betas.append(target)
        if run.certified:
            path.append((target, run.ev.lam))
            if run.evaluations <= _EASY_STAGE:  # the extrapolated start was accurate: take longer strides
                ratio = min(ratio**2, _MAX_RATIO)
        else:
            ratio = math.sqrt(ratio)
            if ratio < _MIN_RATIO:
                break
    run.evaluations = total
    return run, betas


def _check_options(tol: object, max_iter: object) -> tuple[float, int]:
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.floating | np.integer):
        raise ValueError(f"tol: expected a number in (0, 1), got {tol!r}")
    if not (math.isfinite(tol) and 0 < tol < 1):
        raise ValueError(f"tol: expected a finite relative tolerance in (0, 1), e.g. 1e-10, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter: expected a positive integer, e.g. 200, got {max_iter!r}")
    return float(tol), int(max_iter)


def solve_dual(
    prob: ConstrainedProblem,
    lam0: np.ndarray | None = None,
    *,
    tol: float = 1e-10,
    max_iter: int = 200,
    return_policy: bool = True,
) -> DualSolution:
    """Solve the dual problem (4) and recover the primal optimum pi*(lambda*) (Lemma 2).

    Args:
        prob: The problem.
        lam0: ``(m,)`` non-negative starting multipliers (default zero); a start with D(lam0) > D(0) (or not
            finite) is replaced by zero.
        tol: Certify lambda* once its relative KKT residual (:func:`kkt_residual`: primal infeasibility
            relative to each constraint's scale, complementary slackness relative to the objective's) is at
            most ``tol``. For tiny beta float64 cannot resolve that much; the tolerance certified is then
            ``max(tol, 16 eps max|logit|)`` with logits (r + lambda^T g) / beta (reported as
            :attr:`DualSolution.tolerance`), never more than :data:`MAX_TOLERANCE`.
        max_iter: Most Newton iterations at the problem's own beta (each continuation stage has its own
            budget of 40).
        return_policy: Also compute pi*(lambda*) (an (X, Y) array; one more pass over the data).

    Returns:
        The :class:`DualSolution`.

    Raises:
        ValueError: ``tol`` not in (0, 1), ``max_iter`` not a positive integer, or a malformed ``lam0``.
        InfeasibleProblemError: A threshold no policy absolutely continuous w.r.t. pi_ref can strictly
            reach, or jointly infeasible constraints (no policy satisfies them all strictly).
        DualSolverError: The KKT residual could not be certified, even by beta-continuation, or float64 cannot
            resolve the logits to :data:`MAX_TOLERANCE` (beta below about 1e-11 of the scores' scale).
    """
    tol, max_iter = _check_options(tol, max_iter)
    prob.check_feasible()
    lam = np.zeros(prob.n_constraints) if lam0 is None else prob.check_multipliers(lam0, nonnegative=True, field="lam0")
    try:
        _raise_if_unresolvable(prob, _ScoreSizes(prob), np.zeros(prob.n_constraints))
    except DualSolverError:
        _raise_if_lp_infeasible(prob)  # infeasible thresholds are that at every beta: say so instead
        raise
    scales = slack_scales(prob)
    if max(1.0, prob.beta, *scales) / min(1.0, prob.beta, *scales) <= _SCALE_RANGE:
        return _solve(prob, lam, tol, max_iter, return_policy)
    # Extreme scales (beta or a constraint's scale s_i far from 1): solve the equivalent problem with r' = r / beta,
    # g'_i = g_i / s_i, b'_i = b_i / s_i and beta' = 1, whose multipliers are lambda'_i = lambda_i s_i / beta (the
    # same tilted policy); D = beta D', grad_i D = s_i grad_i D', hess D = s s^T hess D' / beta.
    beta = prob.beta
    with np.errstate(over="ignore", under="ignore"):
        reward = prob.reward / beta
        if not np.all(np.isfinite(reward)):
            raise DualSolverError(
                f"solve_dual: beta={beta:.3g} is so small relative to the reward (max |r| = "
                f"{np.abs(prob.reward).max():.3g}) that the logits r / beta overflow float64; increase beta"
            )
        unit = ConstrainedProblem(prob.ref_logprobs, reward, prob.utilities / scales[:, None, None],
                                  prob.thresholds / scales, 1.0, prob.prompt_weights)
        sol = _solve(unit, lam * scales / beta, tol, max_iter, return_policy)
        lam = sol.lam * beta / scales
    if not np.all(np.isfinite(lam)):
        raise DualSolverError(
            f"solve_dual: lambda* = {(sol.lam * beta / scales).tolist()} (beta={beta:.3g}, constraint scales "
            f"{scales.tolist()}) is beyond float64's range; rescale the utilities or beta"
        )
    return dataclasses.replace(
        sol, lam=lam, value=sol.value * beta, gradient=sol.gradient * scales,
        hessian=sol.hessian * np.outer(scales / beta, scales),
        continuation_betas=tuple(b * beta for b in sol.continuation_betas),
        trajectory=sol.trajectory * beta / scales,
    )  # fmt: skip


def _solve(prob: ConstrainedProblem, lam: np.ndarray, tol: float, max_iter: int, return_policy: bool) -> DualSolution:
    """:func:`solve_dual` on validated arguments at the problem's own scale."""
    with np.errstate(all="ignore"):  # a huge lam0 overflows the logits: D(lam0) is then NaN or inf
        worse = lam.any() and not dual_value(prob, lam) <= dual_value(prob, np.zeros_like(lam))
    if worse:
        # A start worse than lambda = 0 is far from lambda* (D is convex): its tilt of up to ~1e16 nats would take
        # the trust region thousands of steps to undo, so start from zero instead.
        lam = np.zeros_like(lam)
    sizes = _ScoreSizes(prob)
    try:
        run = _newton(prob, lam, tol, min(max_iter, _DIRECT_ITERS), sizes)
        betas: list[float] = []
        if not run.certified:
            direct = run.evaluations
            run, betas = _continuation(prob, lam, tol, max_iter, sizes)
            run.evaluations += direct
    except np.linalg.LinAlgError as err:  # a Hessian under- or overflowing float64: no step to take
        raise DualSolverError(
            f"solve_dual: the Newton step failed at beta={prob.beta:.3g} ({err}); rescale the scores to order one"
        ) from None
    if not run.certified:
        _raise_uncertified(prob, run, betas, sizes)
    ev = run.ev
    return DualSolution(
        lam=ev.lam,
        value=ev.value,
        gradient=ev.gradient,
        hessian=ev.hessian,
        policy=tilted_policy(prob, ev.lam) if return_policy else None,
        iterations=len(run.iterates) - 1,
        evaluations=run.evaluations + int(return_policy),
        kkt_residual=run.residual,
        tolerance=run.tolerance,
        continuation_betas=tuple(betas),
        trajectory=np.array(run.iterates),
    )


def _raise_if_lp_infeasible(prob: ConstrainedProblem) -> float:
    """Raise InfeasibleProblemError if the feasibility LP finds no strictly feasible policy; else return its margin."""
    margin, mu = _feasibility_margin(prob)
    if margin <= 0:
        raise InfeasibleProblemError(
            f"the constraints are jointly infeasible: no policy satisfies them all strictly (the best policy's "
            f"smallest slack is {margin:.3g} of its constraint's scale; constraint weights of the Farkas "
            f"certificate {np.round(mu, 6).tolist()}), although each constraint alone can reach its threshold "
            f"(largest improvements {prob.max_improvements.tolist()}, thresholds {prob.thresholds.tolist()}); "
            "lower the thresholds"
        )
    return margin


def _raise_if_unresolvable(prob: ConstrainedProblem, sizes: _ScoreSizes, lam: np.ndarray, stages: str = "") -> None:
    """Raise DualSolverError if float64 rounding of the logits at ``lam`` exceeds :data:`MAX_TOLERANCE`."""
    with np.errstate(over="ignore"):
        floor = sizes.rounding_floor(prob, lam)
    if floor > MAX_TOLERANCE:
        raise DualSolverError(
            f"solve_dual cannot certify the optimum at beta={prob.beta:.3g} in float64: the logits "
            f"(r + lambda^T g) / beta span about {floor / (_ROUNDING_UNITS * np.finfo(float).eps):.3g} nats (max |r| "
            f"= {sizes.sizes[0]:.3g}), so rounding alone moves the slacks by {floor:.2g} of their scale (more than "
            f"{MAX_TOLERANCE:g}){stages}. Increase beta: the optimum at beta is within beta * E_x max_y "
            "(-log pi_ref(y|x)) of the beta -> 0 linear program's value"
        )


def _raise_uncertified(prob: ConstrainedProblem, run: _Run, betas: list[float], sizes: _ScoreSizes) -> None:
    """Raise InfeasibleProblemError if the feasibility LP says so, else a DualSolverError saying what failed."""
    ev = run.ev
    if ev.lam.sum() > 0:
        _raise_if_certified_infeasible(prob, ev.lam)
    margin = _raise_if_lp_infeasible(prob)
    stages = f"; {len(betas)} continuation stages from beta={betas[0]:.3g} failed to reach it" if betas else ""
    if run.stalled:  # no representable step helped: is that float64's limit?
        _raise_if_unresolvable(prob, sizes, ev.lam, stages)
    raise DualSolverError(
        f"solve_dual could not certify the optimum at beta={prob.beta:.3g}: relative KKT residual "
        f"{run.residual:.3g} > tolerance {run.tolerance:.3g} after {run.evaluations} evaluations at lambda = "
        f"{ev.lam.tolist()} (slacks {ev.gradient.tolist()}){stages}. The thresholds are feasible with a margin "
        f"of {margin:.3g} of the constraint scales; if that is small the problem is nearly infeasible (lower "
        "the thresholds), otherwise increase beta, rescale the scores to order one, or raise tol/max_iter"
    )
