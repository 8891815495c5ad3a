"""Primal solver: (U-CA) as an exponential-cone program in cvxpy, independent of the closed-form dual.

A direct ``rel_entr(pi, pi_ref)`` model puts pi_ref inside each exponential cone; with reference
probabilities of 1e-30 the cones are badly scaled and Clarabel and ECOS fail on ordinary instances.
Instead we use ``KL(pi || pi_ref) = -entr(pi) - pi^T log pi_ref`` so pi_ref only enters linearly, and
rescale everything to order one::

    max_p  sum_x w'_x [ sum_y p (r / beta + log pi_ref - c_x) + entr(p) ]
    s.t.   sum_x w'_x sum_y p h_i / s_i >= 0,   sum_y p(.|x) = 1,   p >= 0,

over the supported entries only, with w'_x = X w_x (mean one), c_x the row maximum of the linear
coefficient, and s_i = max |h_i|. The multipliers map back as lambda_i = beta mu_i / s_i.
"""

from __future__ import annotations

import dataclasses
import warnings

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from theory.lagrangian import constraint_slacks, objective
from theory.problem import ConstrainedProblem, InfeasibleProblemError

__all__ = ["PrimalSolution", "PrimalSolverError", "solve_primal"]

# Attempts in order: interior-point solves to tight tolerances first (Clarabel sometimes stops at
# "almost solved" below 1e-9 on exponential cones), then looser ones, then the first-order SCS.
_ATTEMPTS: tuple[tuple[str, dict[str, float | int]], ...] = (
    *(
        ("CLARABEL", {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol, "max_iter": 500})
        for tol in (1e-10, 1e-9, 1e-8)
    ),
    ("SCS", {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000}),
)
# A returned policy whose constraint violation exceeds this (relative to max |h|) is rejected.
_MAX_VIOLATION = 1e-6


class PrimalSolverError(RuntimeError):
    """No cvxpy solver returned an accurate solution."""


@dataclasses.dataclass(frozen=True)
class PrimalSolution:
    """A solution of (U-CA) from a conic solver.

    Attributes:
        lam: ``(m,)`` the constraint multipliers (lambda* of the dual problem).
        value: P*, the objective of :attr:`policy` recomputed exactly by :func:`theory.objective`.
        policy: ``(X, Y)`` the optimal policy (clipped at zero and row-normalised).
        slacks: ``(m,)`` E_x E_pi h of :attr:`policy`.
        status: The cvxpy status string of the accepted solve.
        solver: The solver that produced it.
        solve_time: The solver's own time in seconds (excluding cvxpy compilation).
    """

    lam: np.ndarray
    value: float
    policy: np.ndarray
    slacks: np.ndarray
    status: str
    solver: str
    solve_time: float


def _build(prob: ConstrainedProblem) -> tuple[cp.Problem, cp.Variable, cp.Constraint, np.ndarray, np.ndarray]:
    n_prompts, beta = prob.n_prompts, prob.beta
    support = np.ones(prob.ref_logprobs.shape, bool) if prob.support is None else prob.support
    rows, cols = np.nonzero(support)
    linear = prob.reward[rows, cols] / beta + prob.ref_logprobs[rows, cols]
    row_max = np.full(n_prompts, -np.inf)
    np.maximum.at(row_max, rows, linear)
    linear = linear - row_max[rows]
    weights = prob.prompt_weights * n_prompts
    h = prob.constraint_functions()[:, rows, cols]
    h_scale = np.maximum(np.abs(h).max(axis=1), np.finfo(float).tiny)

    p = cp.Variable(len(rows), nonneg=True)
    row_sum = sp.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(n_prompts, len(rows)))
    constraint_matrix = (h * weights[rows]) / h_scale[:, None]
    slack_constraint = constraint_matrix @ p >= 0
    goal = cp.Maximize(weights[rows] @ cp.multiply(linear, p) + weights[rows] @ cp.entr(p))
    problem = cp.Problem(goal, [row_sum @ p == 1, slack_constraint])
    return problem, p, slack_constraint, np.stack([rows, cols]), h_scale


def solve_primal(
    prob: ConstrainedProblem, solvers: tuple[str, ...] = ("CLARABEL", "SCS"), verbose: bool = False
) -> PrimalSolution:
    """Solve (U-CA) directly with cvxpy (an independent check of :func:`theory.solve_dual`).

    Args:
        prob: The problem.
        solvers: cvxpy solvers allowed; each is tried at decreasing accuracy (Clarabel first, then SCS)
            until one returns an optimal solution that satisfies the constraints.
        verbose: Print the solvers' logs.

    Returns:
        The :class:`PrimalSolution`.

    Raises:
        InfeasibleProblemError: A threshold no policy can strictly reach, or jointly infeasible constraints.
        PrimalSolverError: No solver returned an optimal, feasible solution.
    """
    prob.check_feasible()
    problem, p, slack_constraint, (rows, cols), h_scale = _build(prob)
    installed = set(cp.installed_solvers())
    failures = [f"{name}: not installed" for name in solvers if name not in installed]
    for name, options in _ATTEMPTS:
        if name not in solvers or name not in installed:
            continue
        try:
            with warnings.catch_warnings():  # inaccurate solves are reported through the status
                warnings.simplefilter("ignore", UserWarning)
                problem.solve(solver=name, verbose=verbose, **options)
        except cp.error.SolverError as err:
            failures.append(f"{name}: {err}")
            continue
        if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            raise InfeasibleProblemError(
                f"the constraints are jointly infeasible ({name} reports '{problem.status}'), although each "
                f"constraint alone can reach its threshold (largest improvements {prob.max_improvements.tolist()}, "
                f"thresholds {prob.thresholds.tolist()}); lower the thresholds"
            )
        if problem.status != cp.OPTIMAL or p.value is None:
            failures.append(f"{name} {options}: status '{problem.status}'")
            continue
        policy = np.zeros(prob.ref_logprobs.shape)
        policy[rows, cols] = np.maximum(p.value, 0.0)
        policy /= policy.sum(axis=1, keepdims=True)
        slacks = constraint_slacks(prob, policy)
        violation = float(np.max(np.maximum(-slacks, 0.0) / h_scale))
        if violation > _MAX_VIOLATION:
            failures.append(f"{name}: returned a policy violating a constraint by {violation:.3g} (relative)")
            continue
        lam = prob.beta * np.maximum(np.asarray(slack_constraint.dual_value, dtype=float), 0.0) / h_scale
        return PrimalSolution(
            lam=lam,
            value=objective(prob, policy),
            policy=policy,
            slacks=slacks,
            status=problem.status,
            solver=name,
            solve_time=float(problem.solver_stats.solve_time or 0.0),
        )
    raise PrimalSolverError("solve_primal failed with every solver: " + "; ".join(failures))
