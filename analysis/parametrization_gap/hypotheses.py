"""The hypotheses of the paper's bounds (Sec. 4 of arXiv 2505.19387), each checked on a finite problem.

A bound is only a claim where its assumptions hold, so the laboratory evaluates every bound next to a
:class:`Hypothesis` record per assumption it needs, and reports the bound as NaN with the failed
hypothesis (and by how much) where one fails. The checks here need no torch:

* :func:`slater_margin`: ``max_pi min_i (E_x E_pi h_i - offset_i)`` over every policy with pi_ref's
  support, a linear program. With zero offsets it is the Slater margin of Assumption 2; with offsets
  ``M nu`` it decides whether the M nu-tightened problem behind lambda*_nu (Theorem 1, Assumption 4) is
  feasible; with offsets ``max(eps*(lambda), eps*_p(lambda))`` it is Assumption 6 (lambda = lambda*_p or
  lambda*) and Assumption 7 (lambda = lambda_best);
* :func:`segment_min_eigenvalue`: the smallest eigenvalue of hess D on a grid along a segment
  [lambda*, lambda]: the strong-convexity constant Assumption 5 needs between lambda* and the dual point
  a proof compares it with (lambda*_p for Lemma 4 and Theorem 3, lambda_best for Theorem 6);
* :func:`assumption1`: Assumption 1 (for every prompt the utilities of its responses span R^m and some
  response has g = 0), which makes D strictly convex and smooth (Lemma 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linprog

from theory.dual import dual_hessian
from theory.problem import ConstrainedProblem

__all__ = ["Hypothesis", "assumption1", "segment_min_eigenvalue", "slater_margin", "verdict"]


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """One assumption of one bound, checked.

    Attributes:
        name: The paper's name, e.g. ``Assumption 4``.
        holds: Whether it holds on this class.
        detail: What was measured, e.g. ``Mnu-tightened problem infeasible by 0.03``.
    """

    name: str
    holds: bool
    detail: str


def verdict(hypotheses: Sequence[Hypothesis]) -> str:
    """``holds`` if every hypothesis holds, else ``fails: <name> (<detail>); ...`` naming each failure."""
    failed = [f"{h.name} ({h.detail})" for h in hypotheses if not h.holds]
    return "fails: " + "; ".join(failed) if failed else "holds"


def slater_margin(prob: ConstrainedProblem, offsets: np.ndarray | float = 0.0) -> float:
    """``max over pi of min_i (E_x E_pi h_i - offsets_i)``, pi ranging over every policy with pi_ref's support.

    Solved as a linear program in (pi, s): maximise s subject to ``E_x E_pi h_i - offsets_i >= s`` and each
    pi(.|x) in the simplex. Positive means some policy satisfies every constraint ``E h_i >= offsets_i``
    strictly, with that much to spare; negative means none reaches them, short by that much.

    Raises:
        RuntimeError: If the LP solver fails (it cannot be infeasible or unbounded: h is bounded).
    """
    offsets = np.broadcast_to(np.asarray(offsets, dtype=np.float64), (prob.n_constraints,))
    h = prob.constraint_functions()  # (m, X, Y)
    support = np.ones(h.shape[1:], dtype=bool) if prob.support is None else prob.support
    rows, cols = np.nonzero(support)
    n = len(rows)
    weighted = prob.prompt_weights[rows] * h[:, rows, cols]  # (m, n): E_x E_pi h_i = weighted_i @ pi
    # Variables (pi over the support, s); minimise -s.
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    a_ub = np.hstack([-weighted, np.ones((prob.n_constraints, 1))])  # s - E h_i <= -offset_i
    a_eq = np.zeros((prob.n_prompts, n + 1))
    a_eq[rows, np.arange(n)] = 1.0
    bounds = [(0.0, None)] * n + [(None, None)]
    result = linprog(cost, A_ub=a_ub, b_ub=-offsets, A_eq=a_eq, b_eq=np.ones(prob.n_prompts), bounds=bounds)
    if result.status != 0:
        raise RuntimeError(f"slater_margin: the linear program failed ({result.message})")
    return float(result.x[-1])


def segment_min_eigenvalue(prob: ConstrainedProblem, start: np.ndarray, end: np.ndarray, points: int = 33) -> float:
    """The smallest eigenvalue of hess D(lambda) over ``points`` equally spaced lambda on [start, end].

    Both ends are included; with ``start == end`` it is sigma_min(hess D(start)).
    """
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    grid = np.linspace(0.0, 1.0, points if np.any(start != end) else 1)
    return float(min(np.linalg.eigvalsh(dual_hessian(prob, start + t * (end - start)))[0] for t in grid))


def assumption1(prob: ConstrainedProblem) -> Hypothesis:
    """Assumption 1: for every prompt, {g(x, y)} over the support spans R^m and contains g = 0."""
    bad_span, bad_zero = [], []
    for x in range(prob.n_prompts):
        keep = slice(None) if prob.support is None else prob.support[x]
        g = prob.utilities[:, x, keep]  # (m, Y_x)
        if np.linalg.matrix_rank(g) < prob.n_constraints:
            bad_span.append(x)
        if not np.any(np.all(np.abs(g) <= 1e-12, axis=0)):
            bad_zero.append(x)
    details = ([f"no span at prompts {bad_span}"] if bad_span else []) + (
        [f"no response with g = 0 at prompts {bad_zero}"] if bad_zero else []
    )
    return Hypothesis("Assumption 1", not details, "; ".join(details) or "span and g = 0 at every prompt")
