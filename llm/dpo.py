"""DPO on pseudo-preference pairs, the Lagrangian maximiser of practical CAID (Algorithm 2, eq. (13)).

A pair ``(x, y_0, y_1)`` of reference responses is relabelled for multipliers lambda by drawing
``y_1 > y_0`` with probability ``sigma(r_lambda(x, y_1) - r_lambda(x, y_0))``, ``r_lambda = r + lambda^T g``
(no 1/beta: with DPO temperature beta the population optimum is then pi_ref exp(r_lambda / beta) / Z,
the tilted policy of eq. (3)). The DPO loss always compares with the fixed pi_ref, whose log-probabilities
are computed once and cached.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from llm.dual import dual_step  # its home is llm.dual; importable from here too, as the labs import it

__all__ = ["DPOStats", "dpo_loss", "dual_step", "pseudo_labels", "sequence_logprobs"]


def sequence_logprobs(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """``log pi(y|x) = sum_t log p(y_t | x, y_<t)`` for a batch of token-id prompts and responses.

    Sequences are right-padded with ``pad_id`` (masked out); only response tokens are summed. The
    log-softmax is taken as ``logit[y_t] - logsumexp(logits)`` so no (batch, length, vocab) log-prob
    tensor is materialised.

    Args:
        model: A causal LM returning ``.logits``.
        prompts: Token ids of each prompt (non-empty).
        responses: Token ids of each response (non-empty), same count as ``prompts``.
        pad_id: Id used for padding.

    Returns:
        ``(batch,)`` summed response log-probabilities (differentiable).

    Raises:
        ValueError: If counts differ or a prompt or response is empty.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"responses: expected {len(prompts)} (one per prompt), got {len(responses)}")
    if any(len(p) == 0 for p in prompts) or any(len(r) == 0 for r in responses):
        raise ValueError("prompts/responses: every prompt and response needs at least one token")
    length = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    target = torch.zeros_like(ids, dtype=torch.bool)  # response tokens, at their own positions
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor([*p, *r])
        attention[i, :n] = 1
        target[i, len(p) : n] = True
    device = next(model.parameters()).device
    ids, attention, target = ids.to(device), attention.to(device), target.to(device)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    next_ids = ids[:, 1:]
    token_logp = logits.gather(2, next_ids.unsqueeze(2)).squeeze(2) - torch.logsumexp(logits, dim=2)
    return (token_logp * target[:, 1:]).sum(dim=1)


@dataclasses.dataclass(frozen=True)
class DPOStats:
    """Diagnostics of one DPO batch.

    Attributes:
        loss: Mean DPO loss.
        accuracy: Fraction of pairs whose implicit reward margin is positive.
        margin: Mean implicit reward margin ``beta (log-ratio(y+) - log-ratio(y-))``.
    """

    loss: float
    accuracy: float
    margin: float


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, DPOStats]:
    """The DPO loss (eq. (13)): ``-mean log sigma(beta [(log pi - log pi_ref)(y+) - (log pi - log pi_ref)(y-)])``.

    Args:
        policy_chosen: ``(B,)`` log pi_theta(y+|x).
        policy_rejected: ``(B,)`` log pi_theta(y-|x).
        ref_chosen: ``(B,)`` log pi_ref(y+|x) (constants).
        ref_rejected: ``(B,)`` log pi_ref(y-|x).
        beta: DPO temperature (the KL weight of the constrained problem).

    Returns:
        The differentiable loss and its :class:`DPOStats`.
    """
    if not beta > 0:
        raise ValueError(f"beta: must be > 0, got {beta}")
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    detached = margin.detach()
    stats = DPOStats(float(loss.detach()), float((detached > 0).float().mean()), float(detached.mean()))
    return loss, stats


def pseudo_labels(composite_0: np.ndarray, composite_1: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bernoulli pseudo-labels: True where ``y_1`` wins, with probability ``sigma(r_lambda(y_1) - r_lambda(y_0))``.

    Args:
        composite_0: ``(n,)`` r_lambda of the first response of each pair.
        composite_1: ``(n,)`` r_lambda of the second response.
        rng: Source of the draws (one uniform per pair).
    """
    composite_0, composite_1 = np.asarray(composite_0, float), np.asarray(composite_1, float)
    if composite_0.shape != composite_1.shape or composite_0.ndim != 1:
        raise ValueError(f"composite scores: expected two (n,) arrays, got {composite_0.shape} and {composite_1.shape}")
    if not (np.all(np.isfinite(composite_0)) and np.all(np.isfinite(composite_1))):
        raise ValueError("composite scores: contain NaN or inf; check the scorers")
    return rng.random(composite_0.shape) < 1.0 / (1.0 + np.exp(composite_0 - composite_1))
