"""Independent reference computations for the gap-laboratory tests (nothing here calls the code under test).

* :func:`minimax_margin`: the Slater margin ``max_pi min_i (E h_i - offset_i)`` for m = 2 by its minimax dual
  ``min_alpha E_x max_y alpha^T h(x, y) - alpha^T offsets`` (a grid, then ternary search on the convex
  piecewise-linear function);
* :func:`fd_hessian`: the Hessian of the closed-form dual D by central second differences of
  :func:`theory.dual_value` (no use of ``theory.dual_hessian``).
"""

from __future__ import annotations

import numpy as np

import theory


def minimax_margin(prob: theory.ConstrainedProblem, offsets=(0.0, 0.0)) -> float:
    """``min over alpha in [0, 1] of E_x max_{y in supp} (alpha h_1 + (1 - alpha) h_2) - alpha^T offsets``."""
    h = prob.constraint_functions()
    support = np.ones(h.shape[1:], dtype=bool) if prob.support is None else prob.support

    def value(a: float) -> float:
        combo = np.where(support, a * h[0] + (1 - a) * h[1], -np.inf)
        return float(combo.max(axis=1) @ prob.prompt_weights - (a * offsets[0] + (1 - a) * offsets[1]))

    grid = np.linspace(0.0, 1.0, 2001)
    a0 = grid[int(np.argmin([value(a) for a in grid]))]
    lo, hi = max(a0 - 1e-3, 0.0), min(a0 + 1e-3, 1.0)
    for _ in range(200):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        lo, hi = (lo, m2) if value(m1) <= value(m2) else (m1, hi)
    return value((lo + hi) / 2)


def fd_hessian(prob: theory.ConstrainedProblem, lam: np.ndarray, step: float = 3e-4) -> np.ndarray:
    """Central second differences of :func:`theory.dual_value` at ``lam``.

    The step balances truncation, O(step^2), against rounding, O(eps |D| / step^2): at 1e-4 the rounding of a dual
    value near 4 alone is about 1e-7, 4e-5 of a smallest eigenvalue near 3e-3.
    """
    m = len(lam)
    hess = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            ei, ej = np.eye(m)[i] * step, np.eye(m)[j] * step
            hess[i, j] = (
                theory.dual_value(prob, lam + ei + ej)
                - theory.dual_value(prob, lam + ei - ej)
                - theory.dual_value(prob, lam - ei + ej)
                + theory.dual_value(prob, lam - ei - ej)
            ) / (4 * step**2)
    return hess


def fd_segment_min_eigenvalue(prob: theory.ConstrainedProblem, start, end, points: int = 33) -> float:
    """The smallest eigenvalue of :func:`fd_hessian` over ``points`` equally spaced points of [start, end]."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    grid = np.linspace(0.0, 1.0, points)
    return float(min(np.linalg.eigvalsh(fd_hessian(prob, start + t * (end - start)))[0] for t in grid))
