"""The perturbation function P*(eps) of Sec. 3.3 (used in the proofs of Lemma 5 and App. B.6).

``P*(eps) = max_pi E_x [E_pi r - beta KL(pi || pi_ref)]  s.t.  E_x E_pi h >= eps``. It is concave,
``-lambda*(eps)`` is a supergradient (so dP*/deps_i = -lambda*_i where differentiable), and
``P*(eps) = -inf`` where the perturbed constraints cannot be strictly satisfied.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from theory.dual_solver import solve_dual
from theory.problem import ConstrainedProblem, InfeasibleProblemError

__all__ = ["PerturbationCurve", "perturbation_function"]


@dataclasses.dataclass(frozen=True)
class PerturbationCurve:
    """P*(eps) at a list of perturbations.

    Attributes:
        eps: ``(K, m)`` the perturbations.
        values: ``(K,)`` P*(eps_k); ``-inf`` where infeasible.
        lam: ``(K, m)`` lambda*(eps_k) (``nan`` where infeasible); -lambda* is a supergradient of P*.
    """

    eps: np.ndarray
    values: np.ndarray
    lam: np.ndarray


def perturbation_function(prob: ConstrainedProblem, eps: np.ndarray | float) -> PerturbationCurve:
    """Evaluate P*(eps) for one perturbation ``(m,)`` or many ``(K, m)`` by solving the dual.

    Perturbing E h >= 0 to E h >= eps is raising the thresholds b to b + eps, so each value is a dual
    solve; consecutive solves warm-start from the previous lambda*.
    """
    eps = np.asarray(eps, dtype=np.float64).reshape(-1, prob.n_constraints)
    values = np.full(len(eps), -np.inf)
    lams = np.full(eps.shape, np.nan)
    lam0 = None
    for k, e in enumerate(eps):
        try:
            sol = solve_dual(prob.with_thresholds(prob.thresholds + e), lam0, return_policy=False)
        except InfeasibleProblemError:
            continue
        values[k], lams[k], lam0 = sol.value, sol.lam, sol.lam
    return PerturbationCurve(eps=eps, values=values, lam=lams)
