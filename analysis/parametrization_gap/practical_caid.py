"""Practical CAID (MoCAID): DPO on Bernoulli pseudo-labels and stochastic on-policy dual steps.

The Lagrangian maximiser of exact CAID is replaced by DPO (Algorithm 2, eq. (13)) on response pairs drawn
from pi_ref and relabelled at every iteration: ``y_1`` is preferred with probability
``sigma(r_lambda(x, y_1) - r_lambda(x, y_0))``, ``r_lambda = r + lambda^T g``. The DPO reference is pi_ref
and its temperature is the problem's beta, so the population DPO optimum is pi*(lambda). The dual step
uses a sample mean of h over fresh (x, y) drawn from the current (DPO-trained) policy (eq. (27)). The schedule
is the one of the paper's experiments ("initialize the dual variable by an one-shot solution"; one DPO epoch
per iteration): DPO at lambda(0) = the warm start, then before each further epoch one on-policy dual
step. The loss, the labels and the dual step are :mod:`llm.dpo`'s, the ones the real-model pipeline uses,
applied to exact tables. One "epoch" here is a fixed budget of full-batch L-BFGS iterations on the pairs,
warm-started from the previous epoch's policy (the paper's AdamW/LoRA epoch has no analogue in this float64
toy).

Everything the analysis of practical CAID needs (App. B.10: eq. (27), (28), S^2) is measured exactly on the
enumerable world:
``eps_app = D_p(lambda) - L(pi_dpo, lambda)`` (eq. (28); D_p by exact maximisation in a second member
of the class that follows lambda(t)) and ``E|u_dagger|^2 = |E h|^2 + (E|h|^2 - |E h|^2) / n`` for n i.i.d. samples.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from analysis.parametrization_gap.exact_caid import lbfgs_minimize, maximize_lagrangian
from analysis.parametrization_gap.policy_classes import SequencePolicy, to_tensor
from llm.caid import Multipliers, composite_reward, inverse_cdf, run_caid
from llm.dpo import dpo_loss as sequence_dpo_loss
from llm.dpo import pseudo_labels as bernoulli_labels
from theory.lagrangian import lagrangian
from theory.problem import ConstrainedProblem

__all__ = [
    "PracticalTrajectory",
    "dpo_loss",
    "fit_dpo",
    "practical_caid",
    "pseudo_labels",
    "reference_pairs",
    "subgradient_second_moment",
]


def _sample_responses(rng: np.random.Generator, probs: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """One response per prompt index, from the rows of ``probs`` (:func:`llm.caid.inverse_cdf`).

    The uniforms are drawn prompt by prompt in increasing prompt order (the stream of every earlier run).
    """
    uniforms = np.empty(len(prompts))
    for x in np.unique(prompts):
        at = np.flatnonzero(prompts == x)
        uniforms[at] = rng.random(len(at))
    return inverse_cdf(probs[prompts], uniforms[:, None])[:, 0].astype(np.int64)


def _sample_prompts(rng: np.random.Generator, prob: ConstrainedProblem, n: int) -> np.ndarray:
    return rng.choice(len(prob.prompt_weights), size=n, p=prob.prompt_weights)


def reference_pairs(prob: ConstrainedProblem, n_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_pairs, 3)`` rows ``(x, y_0, y_1)``: prompts from the prompt distribution, two pi_ref responses each."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs: must be >= 1, got {n_pairs}")
    ref = np.exp(prob.ref_logprobs)
    x = _sample_prompts(rng, prob, n_pairs)
    return np.stack([x, _sample_responses(rng, ref, x), _sample_responses(rng, ref, x)], axis=1)


def pseudo_labels(
    prob: ConstrainedProblem, lam: np.ndarray, pairs: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel pairs by ``Bernoulli(sigma(r_lambda(y_1) - r_lambda(y_0)))`` (Algorithm 2's pseudo-preferences).

    Returns:
        ``(x, chosen, rejected)`` index arrays.
    """
    lam = prob.check_multipliers(lam)
    composite = composite_reward(np.concatenate([prob.reward[None], prob.utilities]), lam)
    x, y0, y1 = pairs.T
    prefer_y1 = bernoulli_labels(composite[x, y0], composite[x, y1], rng)
    return x, np.where(prefer_y1, y1, y0), np.where(prefer_y1, y0, y1)


def dpo_loss(
    logp: torch.Tensor, ref: torch.Tensor, beta: float, x: np.ndarray, chosen: np.ndarray, rejected: np.ndarray
) -> torch.Tensor:
    """:func:`llm.dpo.dpo_loss` (eq. (13)) on the pairs, read from ``(X, Y)`` log-probability tables."""
    return sequence_dpo_loss(logp[x, chosen], logp[x, rejected], ref[x, chosen], ref[x, rejected], beta)[0]


def fit_dpo(
    policy: SequencePolicy,
    prob: ConstrainedProblem,
    x: np.ndarray,
    chosen: np.ndarray,
    rejected: np.ndarray,
    max_iter: int = 100,
) -> float:
    """Minimise the DPO loss over the given pairs (full batch, L-BFGS) in place; return the final loss."""
    ref = to_tensor(prob.ref_logprobs)
    idx = [torch.as_tensor(a) for a in (x, chosen, rejected)]

    def loss() -> torch.Tensor:
        return dpo_loss(policy.log_probs(), ref, prob.beta, *idx)

    lbfgs_minimize([p for p in policy.parameters() if p.requires_grad], loss, max_iter)
    with torch.no_grad():
        return float(loss())


def subgradient_second_moment(prob: ConstrainedProblem, policy: np.ndarray, n_samples: int) -> float:
    """Exact ``E|u_dagger|^2`` for the mean of h over ``n_samples`` i.i.d. (x, y) ~ prompt weights x policy."""
    h = prob.constraint_functions()  # (m, X, Y)
    joint = prob.prompt_weights[:, None] * policy
    mean = np.einsum("xy,ixy->i", joint, h)
    second = float(np.einsum("xy,ixy->", joint, h**2))
    return float(mean @ mean + (second - mean @ mean) / n_samples)


@dataclasses.dataclass(frozen=True)
class PracticalTrajectory:
    """The iterates of practical CAID; entry t belongs to the DPO policy trained at lambda(t).

    Attributes:
        lam: ``(T+1, m)`` lambda(t).
        sampled_slacks: ``(T+1, m)`` the stochastic subgradient u_dagger that produced lambda(t) (row 0: NaN).
        second_moments: ``(T+1,)`` exact E|u_dagger|^2 of that step (row 0: NaN).
        dual_values: ``(T+1,)`` D_p(lambda(t)), by exact maximisation.
        dpo_lagrangian: ``(T+1,)`` L(pi_dpo(t), lambda(t)).
        eps_app: ``(T+1,)`` D_p(lambda(t)) - L(pi_dpo(t), lambda(t)) >= 0.
        maximizers: ``(T+1, X, Y)`` the exact in-class Lagrangian maximisers pi*_p(lambda(t)).
        dpo_policies: ``(T+1, X, Y)`` the DPO-trained policies pi_dpo(t); the last is the one practical CAID
            returns (the paper's experiments report the final model).
    """

    lam: np.ndarray
    sampled_slacks: np.ndarray
    second_moments: np.ndarray
    dual_values: np.ndarray
    dpo_lagrangian: np.ndarray
    eps_app: np.ndarray
    maximizers: np.ndarray
    dpo_policies: np.ndarray


class _PracticalLearner:
    """Practical CAID's side of the loop (:class:`llm.caid.PrimalDual`): sampled slacks, DPO fits, measurements."""

    def __init__(self, policy: SequencePolicy, prob: ConstrainedProblem, pairs: np.ndarray, n_dual_samples: int,
                 rng: np.random.Generator, tracker: SequencePolicy, iters: tuple[int, int, int]) -> None:
        self.policy, self.prob, self.pairs, self.rng, self.exact = policy, prob, pairs, rng, tracker
        self.n = n_dual_samples
        self.first_iter, self.max_iter, self.dpo_iter = iters
        self.h = prob.constraint_functions()
        self.rows: dict[str, list] = {k: [] for k in ("u", "s2", "dual", "dpo", "maximizer", "dpo_policy")}
        self.last_u, self.last_s2 = np.full(len(prob.thresholds), np.nan), np.nan

    def slack(self, iteration: int) -> np.ndarray:
        """The mean of h over n i.i.d. (x, y) from the current DPO policy (eq. (27)), and its exact S^2."""
        current = self.policy.policy()
        x = _sample_prompts(self.rng, self.prob, self.n)
        y = _sample_responses(self.rng, current, x)
        self.last_u = self.h[:, x, y].mean(axis=1)
        self.last_s2 = subgradient_second_moment(self.prob, current, self.n)
        return self.last_u

    def fit(self, lam: np.ndarray, iteration: int) -> None:
        """The DPO fit at lambda, then D_p(lambda) by exact maximisation in the tracker; records both."""
        prob = self.prob
        fit_dpo(self.policy, prob, *pseudo_labels(prob, lam, self.pairs, self.rng), max_iter=self.dpo_iter)
        dpo_value = lagrangian(prob, self.policy.policy(), lam)
        exact_value = maximize_lagrangian(self.exact, prob, lam, self.first_iter if iteration == 1 else self.max_iter)
        # A local maximisation can end below the DPO policy; that is then the best known member.
        best = self.exact if exact_value >= dpo_value else self.policy
        values = (self.last_u, self.last_s2, max(exact_value, dpo_value), dpo_value, best.policy(),
                  self.policy.policy())
        for key, value in zip(self.rows, values, strict=True):
            self.rows[key].append(value)


def practical_caid(
    policy: SequencePolicy,
    prob: ConstrainedProblem,
    lam0: np.ndarray,
    dual_step_size: float,
    iterations: int,
    n_dual_samples: int,
    n_pairs: int,
    rng: np.random.Generator,
    max_iter: int = 100,
    on_step: Callable[[], None] | None = None,
    first_iter: int | None = None,
    dpo_iter: int | None = None,
    tracker: SequencePolicy | None = None,
) -> PracticalTrajectory:
    """Run MoCAID: T DPO epochs with a stochastic dual step before each but the first (:func:`llm.caid.run_caid`).

    The policy is trained in place, each epoch warm-started from the last; the DPO reference is pi_ref.

    Args:
        policy: The parametrized policy (starts at pi_ref).
        prob: The distribution-space problem.
        lam0: lambda(0), the warm start (the paper's experiments use the one-shot solution).
        dual_step_size: eta.
        iterations: T, the number of DPO epochs (T - 1 stochastic dual steps).
        n_dual_samples: i.i.d. (x, y) samples from the current policy per dual step.
        n_pairs: Reference pairs, drawn once and relabelled at every iteration.
        rng: Source of every sample and label.
        max_iter: L-BFGS iterations of each warm-started exact maximisation.
        on_step: Called after each iteration.
        first_iter: L-BFGS iterations of the first exact maximisation (default ``max_iter``).
        dpo_iter: L-BFGS iterations of each DPO fit (default ``max_iter``).
        tracker: The member of the class that measures D_p(lambda(t)) by exact maximisation, warm-started
            from its last maximiser (default: a copy of ``policy``, at pi_ref). It only measures; it never
            touches the DPO-trained policy.
    """
    first_iter = max_iter if first_iter is None else first_iter
    dpo_iter = max_iter if dpo_iter is None else dpo_iter
    if n_dual_samples < 1:
        raise ValueError(f"n_dual_samples: must be >= 1, got {n_dual_samples}")
    multipliers = Multipliers(prob.check_multipliers(lam0), dual_step_size)
    pairs = reference_pairs(prob, n_pairs, rng)
    # D_p(lambda(t)) is tracked by a second member of the class, warm-started from its own last maximiser
    # (a DPO fit on few pairs can end far from the maximiser and be a poor starting point).
    exact = copy.deepcopy(policy) if tracker is None else tracker
    learner = _PracticalLearner(policy, prob, pairs, n_dual_samples, rng, exact, (first_iter, max_iter, dpo_iter))
    run_caid(learner, multipliers, iterations, on_iteration=None if on_step is None else lambda _: on_step())
    us, s2s, dual, dpo, maximizers, dpo_policies = (np.array(v) for v in learner.rows.values())
    return PracticalTrajectory(np.array(multipliers.trajectory), us, s2s, dual, dpo, dual - dpo, maximizers,
                               dpo_policies)
