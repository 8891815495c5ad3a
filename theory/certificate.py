"""Duality certificates: how far any (policy, lambda) pair can be from optimal.

By weak duality, for every lambda >= 0 and every feasible policy pi,
``objective(pi) <= P* <= D(lambda)``; so ``D(lambda) - objective(pi)`` bounds the suboptimality of both.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from theory.dual import dual_value
from theory.lagrangian import constraint_slacks, objective
from theory.problem import ConstrainedProblem

__all__ = ["DualityCertificate", "certify"]


@dataclasses.dataclass(frozen=True)
class DualityCertificate:
    """Primal and dual evidence for one (policy, lambda) pair.

    Attributes:
        primal_value: objective(pi) = E_x [E_pi r - beta KL(pi || pi_ref)].
        dual_value: D(lambda), an upper bound on P* when lambda >= 0.
        slacks: ``(m,)`` E_x E_pi h; pi is feasible iff all are >= 0.
        complementary_slackness: lambda^T slacks (zero at a primal-dual optimum).
        lagrangian: L(pi, lambda) = primal_value + lambda^T slacks (<= dual_value always).
    """

    primal_value: float
    dual_value: float
    slacks: np.ndarray
    complementary_slackness: float
    lagrangian: float

    @property
    def duality_gap(self) -> float:
        """D(lambda) - objective(pi); if pi is feasible, both are within this of P*."""
        return self.dual_value - self.primal_value

    @property
    def max_violation(self) -> float:
        """The largest constraint violation max_i max(-slack_i, 0)."""
        return float(np.max(np.maximum(-self.slacks, 0.0)))

    @property
    def feasible(self) -> bool:
        """Whether pi satisfies every constraint."""
        return self.max_violation == 0.0


def certify(prob: ConstrainedProblem, policy: np.ndarray, lam: np.ndarray | float) -> DualityCertificate:
    """Duality certificate of the pair (``policy``, ``lam``); ``lam`` must be non-negative.

    Raises:
        ValueError: If ``lam`` has a negative entry (D(lambda) is then no bound on P*).
    """
    lam = prob.check_multipliers(lam, nonnegative=True)
    primal = objective(prob, policy)
    slacks = constraint_slacks(prob, policy)
    slackness = float(lam @ slacks)
    return DualityCertificate(
        primal_value=primal,
        dual_value=dual_value(prob, lam),
        slacks=slacks,
        complementary_slackness=slackness,
        lagrangian=primal + slackness,
    )
