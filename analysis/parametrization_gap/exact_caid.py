"""Exact CAID in a policy class: Lagrangian maximisation with exact gradients, and dual descent on D_p.

For a fixed lambda, ``L(pi_theta, lambda) = D(lambda) - beta E_x KL(pi_theta(.|x) || pi*(.|x; lambda))``
(eq. (3)), so maximising the Lagrangian over a class is the reverse-KL projection of the tilted policy
pi*(lambda) onto it; :func:`maximize_lagrangian` does it with L-BFGS on the exact finite sum.
``D_p(lambda) = max_theta L(pi_theta, lambda)`` and, by Danskin, its subgradient is the constraint slack
of the maximiser, ``eps*_p(lambda) = E_x E_{pi*_p(lambda)}[h]`` (eq. (10)). :func:`dual_descent`
is Algorithm 1 with these exact quantities: ``lambda <- [lambda - eta eps*_p(lambda)]_+``.

The maximisation over theta is non-convex for the low-rank and transformer classes, so the computed
D_p(lambda) is the value of a local maximum reached from a warm start: a lower estimate of D_p.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from analysis.parametrization_gap.policy_classes import SequencePolicy, to_tensor
from llm.caid import Multipliers, composite_reward, run_caid
from theory.lagrangian import constraint_slacks, lagrangian
from theory.problem import ConstrainedProblem

__all__ = ["DualDescentTrajectory", "dual_descent", "lbfgs_minimize", "maximize_lagrangian"]


def lbfgs_minimize(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], max_iter: int) -> None:
    """Minimise a deterministic loss with L-BFGS and a strong-Wolfe line search, in place."""
    if max_iter < 1:
        return
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=1e-20,
        tolerance_change=1e-14,
        history_size=30,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimizer.step(closure)


def maximize_lagrangian(
    policy: SequencePolicy, prob: ConstrainedProblem, lam: np.ndarray, max_iter: int = 200
) -> float:
    """Fit ``policy`` in place to (a local) ``argmax_theta L(pi_theta, lambda)``; return the attained L.

    Minimises ``E_x sum_y pi_theta (beta log(pi_theta / pi_ref) - r - lambda^T g)``, which differs from
    ``-L(pi_theta, lambda)`` by a constant. The returned value is recomputed in numpy by
    :func:`theory.lagrangian` from the fitted policy.

    Args:
        policy: The parametrized policy; its current parameters are the warm start.
        prob: The distribution-space problem (its pi_ref must be the policy's reference).
        lam: ``(m,)`` non-negative multipliers.
        max_iter: L-BFGS iterations.
    """
    lam = prob.check_multipliers(lam)
    weights = to_tensor(prob.prompt_weights)
    ref = to_tensor(prob.ref_logprobs)
    tilt = to_tensor(composite_reward(np.concatenate([prob.reward[None], prob.utilities]), lam))
    beta = prob.beta

    def loss() -> torch.Tensor:
        logp = policy.log_probs()
        return weights @ (logp.exp() * (beta * (logp - ref) - tilt)).sum(dim=1)

    lbfgs_minimize([p for p in policy.parameters() if p.requires_grad], loss, max_iter)
    return lagrangian(prob, policy.policy(), lam)


@dataclasses.dataclass(frozen=True)
class DualDescentTrajectory:
    """The iterates of dual descent on D_p.

    Attributes:
        lam: ``(T+1, m)`` lambda(t); row t is the multiplier the policy of step t maximised.
        dual_values: ``(T+1,)`` D_p(lambda(t)) (the attained Lagrangian).
        slacks: ``(T+1, m)`` eps*_p(lambda(t)), the subgradient of D_p at lambda(t).
        policies: ``(T+1, X, Y)`` the Lagrangian maximisers pi*_p(lambda(t)).
    """

    lam: np.ndarray
    dual_values: np.ndarray
    slacks: np.ndarray
    policies: np.ndarray


class _ExactLearner:
    """Exact CAID's side of the loop (:class:`llm.caid.PrimalDual`): the slack of the last exact maximiser."""

    def __init__(self, policy: SequencePolicy, prob: ConstrainedProblem, max_iter: int, first_iter: int,
                 on_step: Callable[[], None] | None) -> None:
        self.policy, self.prob, self.on_step = policy, prob, on_step
        self.max_iter, self.first_iter = max_iter, first_iter
        self.lams: list[np.ndarray] = []
        self.values: list[float] = []
        self.slacks: list[np.ndarray] = []
        self.policies: list[np.ndarray] = []

    def slack(self, iteration: int) -> np.ndarray:
        return self.slacks[-1]

    def fit(self, lam: np.ndarray, iteration: int) -> None:
        self.values.append(maximize_lagrangian(self.policy, self.prob, lam,
                                               self.first_iter if iteration == 1 else self.max_iter))
        pi = self.policy.policy()
        self.lams.append(lam)
        self.slacks.append(constraint_slacks(self.prob, pi))
        self.policies.append(pi)
        if self.on_step is not None:
            self.on_step()


def dual_descent(
    policy: SequencePolicy,
    prob: ConstrainedProblem,
    lam0: np.ndarray,
    steps: int,
    step_size: float | np.ndarray,
    max_iter: int = 200,
    on_step: Callable[[], None] | None = None,
    first_iter: int | None = None,
) -> DualDescentTrajectory:
    """Exact CAID (Algorithm 1): alternate Lagrangian maximisation and ``lambda <- [lambda - eta eps*_p]_+``.

    Args:
        policy: Fitted in place, each step warm-started from the last.
        prob: The distribution-space problem.
        lam0: Initial multipliers.
        steps: T, the number of dual steps.
        step_size: eta, a scalar or an ``(m, m)`` preconditioning matrix (then the step is
            ``lambda - eta @ eps*_p``).
        max_iter: L-BFGS iterations per Lagrangian maximisation.
        on_step: Called after each maximisation (e.g. to advance a progress bar).
        first_iter: L-BFGS iterations of the first maximisation (default ``max_iter``); more when the
            policy starts far from the maximiser, e.g. at pi_ref.
    """
    learner = _ExactLearner(policy, prob, max_iter, max_iter if first_iter is None else first_iter, on_step)
    run_caid(learner, Multipliers(prob.check_multipliers(lam0), step_size), steps + 1)
    lams, values, slacks, policies = learner.lams, learner.values, learner.slacks, learner.policies
    return DualDescentTrajectory(np.array(lams), np.array(values), np.array(slacks), np.array(policies))
