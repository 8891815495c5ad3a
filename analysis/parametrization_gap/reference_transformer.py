"""The reference model pi_ref of the sequence world: a small transformer pretrained on a synthetic language.

As in the paper, pi_ref is a trained language model: a GPT-2-style transformer fitted by exact maximum
likelihood (cross-entropy over all responses, no sampling) to a "language" in which each prompt starts a
Markov chain over response tokens. Its exact sequence probabilities by teacher forcing are the reference
distribution of the constrained problem.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from analysis.parametrization_gap.exact_caid import lbfgs_minimize
from analysis.parametrization_gap.policy_classes import (
    TransformerPolicy,
    TransformerSize,
    sequence_log_probs,
    to_tensor,
)
from analysis.parametrization_gap.sequence_world import SequenceWorld

__all__ = ["ReferenceModel", "markov_language", "train_reference"]


def markov_language(world: SequenceWorld, seed: int, concentration: float = 1.0) -> np.ndarray:
    """``(X, Y)`` log-probabilities of a prompt-conditioned Markov chain over response tokens.

    Each prompt's last token selects a start distribution and a transition matrix, drawn from a symmetric
    Dirichlet(``concentration``); the first token of the response follows the start distribution and each
    further token the transition row of its predecessor.
    """
    rng = np.random.default_rng(seed)
    vocab = world.vocab_size
    start = rng.dirichlet(np.full(vocab, concentration), size=vocab)  # (last prompt token, v)
    trans = rng.dirichlet(np.full(vocab, concentration), size=(vocab, vocab))  # (last prompt token, prev, v)
    key = world.prompts[:, -1]
    ys = world.responses
    logp = np.log(start[key][:, ys[:, 0]])  # (X, Y)
    for t in range(1, ys.shape[1]):
        logp += np.log(trans[key][:, ys[:, t - 1], ys[:, t]])
    return logp


@dataclasses.dataclass(frozen=True, eq=False)
class ReferenceModel:
    """A trained reference transformer and its exact sequence distribution.

    Attributes:
        policy: The trained transformer (frozen).
        token_logprobs: ``(X * V**(L-1), L, V)`` its next-token log-probabilities, the base of every
            :class:`~analysis.parametrization_gap.policy_classes.TransformerPolicy` adapter.
        ref_logprobs: ``(X, Y)`` log pi_ref(y|x), rows normalised in float64.
        cross_entropy: The fitted model's cross-entropy to the language, in nats per response.
    """

    policy: TransformerPolicy
    token_logprobs: torch.Tensor
    ref_logprobs: np.ndarray
    cross_entropy: float


def train_reference(
    world: SequenceWorld,
    size: TransformerSize,
    seed: int,
    max_iter: int = 300,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> ReferenceModel:
    """Pretrain a transformer of ``size`` on :func:`markov_language` by exact cross-entropy (L-BFGS).

    Args:
        world: The sequence world.
        size: The reference transformer's width and depth.
        seed: Seed of the language and of the initialisation.
        max_iter: L-BFGS iterations.
        state_dict: Weights of an earlier run's reference (``policy.state_dict()``): load them instead
            of training.
    """
    target = to_tensor(np.exp(markov_language(world, seed)))
    policy = TransformerPolicy(world, size, seed, zero_head=False)

    def loss() -> torch.Tensor:
        return -(target * policy.log_probs()).sum(dim=1).mean()

    if state_dict is None:
        lbfgs_minimize(list(policy.parameters()), loss, max_iter)
    else:
        policy.load_state_dict(state_dict)
    policy.requires_grad_(False)
    with torch.no_grad():
        token_logprobs = policy.token_logprobs()
        logp = sequence_log_probs(token_logprobs, policy.inputs, policy.n_prompts)
        ref_logprobs = torch.log_softmax(logp, dim=1).numpy()
        cross_entropy = float(-(target * logp).sum(dim=1).mean())
    return ReferenceModel(policy, token_logprobs, ref_logprobs, cross_entropy)
