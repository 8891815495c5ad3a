"""An enumerable sequence world: every response of length L over a V-token vocabulary, scored exactly.

Prompts are short token prefixes and the response set of every prompt is all ``V**L`` token sequences,
so expectations under any autoregressive policy are finite sums and the constrained problem (U-CA) over
this world is a :class:`theory.ConstrainedProblem` with no sampling anywhere.

The scores imitate the conflict of the paper's experiments between a helpfulness reward and a safety utility,
with a second utility as in its two-constraint experiments:

* reward ("helpfulness") ``r(x, y) = (1/L) sum_t [y_t = tau_x(t)] + (c/L) sum_t B[y_{t-1}, y_t]``: agree
  with a prompt-specific target ``tau_x`` and be fluent under a bigram table ``B`` that favours repeats;
* utility 1 ("safety") ``g_1(x, y) = -(1/L) sum_t u[y_t]``: avoid unsafe tokens, which the targets use
  on purpose, so the safest responses are less helpful;
* utility 2 ("variety") ``g_2(x, y) = (1/(L-1)) sum_{t>=1} [y_t != y_{t-1}]``, the fraction of adjacent
  tokens that differ, which conflicts with the fluency term.

Every score is a sum of per-position bigram terms, so every tilted policy ``pi*(lambda) ~ pi_ref
exp(r_lambda / beta)`` is a chain-structured reweighting of pi_ref whose next-token corrections depend on
little more than the prompt, the position and the previous token: large transformer adapters can represent
them closely and small ones cannot, which spreads the parametrization gap nu of the policy classes widely.
Assumption 1 holds: a constant response of a safe token has g = 0, and the utilities span R^m.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from theory.dual import tilted_policy
from theory.dual_solver import solve_dual
from theory.lagrangian import constraint_slacks
from theory.problem import ConstrainedProblem

__all__ = ["SequenceWorld", "active_thresholds", "all_sequences", "make_sequence_world"]


def all_sequences(vocab_size: int, length: int) -> np.ndarray:
    """Every token sequence of ``length`` over ``range(vocab_size)``, ``(vocab_size**length, length)``.

    Rows are in lexicographic order, so the last token varies fastest: row ``j`` is the base-V digits of j.
    """
    return np.array(list(itertools.product(range(vocab_size), repeat=length)), dtype=np.int64).reshape(-1, length)


@dataclasses.dataclass(frozen=True, eq=False)
class SequenceWorld:
    """Prompts, the enumerated responses, and the exact scores of every (prompt, response) pair.

    Attributes:
        vocab_size: V, the number of tokens (prompts and responses share the vocabulary).
        prompts: ``(X, P)`` prompt token ids.
        responses: ``(V**L, L)`` every response, in :func:`all_sequences` order.
        reward: ``(X, Y)`` r(x, y).
        utilities: ``(m, X, Y)`` g_i(x, y).
        utility_names: The name of each utility.
    """

    vocab_size: int
    prompts: np.ndarray
    responses: np.ndarray
    reward: np.ndarray
    utilities: np.ndarray
    utility_names: tuple[str, ...]

    @property
    def response_length(self) -> int:
        """L, the length of every response."""
        return int(self.responses.shape[1])

    def problem(self, ref_logprobs: np.ndarray, thresholds: np.ndarray | float, beta: float) -> ConstrainedProblem:
        """The distribution-space problem (U-CA) of this world under the reference ``ref_logprobs`` (X, Y)."""
        return ConstrainedProblem(ref_logprobs, self.reward, self.utilities, thresholds, beta)


def make_sequence_world(
    seed: int,
    n_prompts: int,
    vocab_size: int,
    prompt_length: int,
    response_length: int,
    n_constraints: int = 2,
    fluency_weight: float = 0.5,
) -> SequenceWorld:
    """Draw a world: distinct random prompts, targets, a fluency table and unsafe tokens.

    Args:
        seed: Seed of every random choice.
        n_prompts: X, the number of distinct prompts (at most ``vocab_size**prompt_length``).
        vocab_size: V >= 3.
        prompt_length: P >= 1 tokens per prompt.
        response_length: L >= 2 tokens per response.
        n_constraints: m in {1, 2}: safety, then variety.
        fluency_weight: c, the weight of the bigram fluency term in the reward.

    Raises:
        ValueError: naming the field, for sizes outside these ranges.
    """
    if vocab_size < 3:
        raise ValueError(f"vocab_size: need at least 3 tokens, got {vocab_size}")
    if prompt_length < 1:
        raise ValueError(f"prompt_length: must be >= 1, got {prompt_length}")
    if response_length < 2:
        raise ValueError(f"response_length: must be >= 2, got {response_length}")
    if not 1 <= n_prompts <= vocab_size**prompt_length:
        raise ValueError(
            f"n_prompts: must be in 1..{vocab_size**prompt_length} (V**P distinct prompts), got {n_prompts}"
        )
    if n_constraints not in (1, 2):
        raise ValueError(f"n_constraints: this world defines 1 or 2 utilities, got {n_constraints}")
    rng = np.random.default_rng(seed)
    prompts = all_sequences(vocab_size, prompt_length)[rng.choice(vocab_size**prompt_length, n_prompts, replace=False)]
    responses = all_sequences(vocab_size, response_length)
    length = response_length

    # Unsafe tokens: the first third of the vocabulary, with graded severity; targets favour them.
    n_unsafe = max(1, vocab_size // 3)
    unsafe = np.zeros(vocab_size)
    unsafe[:n_unsafe] = np.linspace(1.0, 0.5, n_unsafe)
    target_probs = np.where(unsafe > 0, 2.0, 1.0)
    targets = rng.choice(vocab_size, size=(n_prompts, length), p=target_probs / target_probs.sum())
    bigram = rng.uniform(-0.5, 0.5, size=(vocab_size, vocab_size)) + np.eye(vocab_size)

    match = (responses[None, :, :] == targets[:, None, :]).mean(axis=2)  # (X, Y)
    fluency = bigram[responses[:, :-1], responses[:, 1:]].sum(axis=1) / length  # (Y,)
    reward = match + fluency_weight * fluency[None, :]
    safety = -unsafe[responses].mean(axis=1)
    variety = (responses[:, 1:] != responses[:, :-1]).mean(axis=1)
    utilities = np.stack([np.broadcast_to(s, reward.shape) for s in (safety, variety)][:n_constraints])
    names = ("safety", "variety")[:n_constraints]
    return SequenceWorld(vocab_size, prompts, responses, reward, utilities.copy(), names)


def active_thresholds(world: SequenceWorld, ref_logprobs: np.ndarray, beta: float, fraction: float = 0.3) -> np.ndarray:
    """Thresholds that make every constraint active at the optimum.

    ``b_i = s_i + fraction * (max_i - s_i)``, where ``s_i >= 0`` is the improvement of g_i under the
    unconstrained optimum pi*(0) (or 0 if negative) and ``max_i`` the largest achievable improvement;
    the fraction is raised for any constraint still inactive at lambda* (lambda*_i = 0).

    Raises:
        ValueError: If ``fraction`` is not in (0, 1), or no thresholds in that range make all active.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: must be in (0, 1), got {fraction}")
    prob = world.problem(ref_logprobs, np.zeros(world.utilities.shape[0]), beta)
    # Improvements under pi*(0) (the slacks at b = 0); the paper's thresholds are >= 0.
    start = np.maximum(constraint_slacks(prob, tilted_policy(prob, np.zeros_like(prob.thresholds))), 0.0)
    room = prob.max_improvements - start
    frac = np.full_like(start, fraction)
    for _ in range(20):
        thresholds = start + frac * room
        sol = solve_dual(prob.with_thresholds(thresholds), return_policy=False)
        inactive = sol.lam <= 1e-8
        if not inactive.any():
            return thresholds
        frac[inactive] = (frac[inactive] + 1.0) / 2.0
    raise ValueError(f"fraction: no thresholds found that make all {len(start)} constraints active")
