"""Policy classes of controlled capacity over an enumerable sequence world.

Over a :class:`~analysis.parametrization_gap.sequence_world.SequenceWorld`, every class is a
``torch.nn.Module`` whose :meth:`~SequencePolicy.log_probs` returns the exact ``(X, Y)`` table
``log pi_theta(y|x)`` over all responses (float64), so any expectation under pi_theta and its gradient in theta
are exact finite sums. Every class contains pi_ref at its initial parameters (training starts at
pi_ref, as in the paper):

* :class:`TabularPolicy`: ``pi_theta(.|x) = softmax(log pi_ref(.|x) + theta_x)`` contains every policy
  with pi_ref's support (parametrization gap nu = 0: the sanity row);
* :class:`LowRankPolicy`: ``softmax(log pi_ref + A Phi^T)``, a log-linear tilt on k fixed features;
* :class:`TransformerPolicy`: a causal transformer from ``transformers`` (GPT-2 architecture); its token
  logits are added to those of a frozen, trained reference transformer, and its output head starts at
  zero. Like a LoRA adapter, the trainable transformer's width and depth set the class's capacity.

Exact teacher forcing over ``V**L`` responses only needs the ``V**(L-1)`` prefixes: the logits at the last
position score all V final tokens at once (:func:`sequence_log_probs`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from analysis.parametrization_gap.sequence_world import SequenceWorld, all_sequences

__all__ = [
    "LowRankPolicy",
    "SequencePolicy",
    "TabularPolicy",
    "TransformerPolicy",
    "TransformerSize",
    "sequence_log_probs",
    "teacher_forcing_inputs",
    "tiny_gpt2",
    "to_tensor",
]

DTYPE = torch.float64


def to_tensor(values: np.ndarray) -> torch.Tensor:
    """A float64 tensor copy of ``values`` (problem arrays are read-only, which torch cannot wrap)."""
    return torch.tensor(np.asarray(values), dtype=DTYPE)


class SequencePolicy(torch.nn.Module):
    """A parametrized policy over an enumerated response set."""

    def log_probs(self) -> torch.Tensor:
        """The exact ``(X, Y)`` table log pi_theta(y|x), differentiable in the trainable parameters."""
        raise NotImplementedError

    @property
    def n_params(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def policy(self) -> np.ndarray:
        """pi_theta as an ``(X, Y)`` numpy array of probabilities (rows renormalised in float64)."""
        with torch.no_grad():
            logp = self.log_probs()
            return torch.softmax(logp, dim=1).numpy()


class TabularPolicy(SequencePolicy):
    """``pi_theta(.|x) = softmax(log pi_ref(.|x) + theta_x)``, one free logit per (x, y); theta = 0 is pi_ref."""

    def __init__(self, ref_logprobs: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("ref", to_tensor(ref_logprobs))
        self.theta = torch.nn.Parameter(torch.zeros_like(self.ref))

    def log_probs(self) -> torch.Tensor:  # noqa: D102
        return torch.log_softmax(self.ref + self.theta, dim=1)


class LowRankPolicy(SequencePolicy):
    """``pi_theta(.|x) = softmax(log pi_ref(.|x) + Phi a_x)``: a log-linear tilt of pi_ref on k fixed features.

    ``Phi`` is a fixed random ``(Y, k)`` matrix with orthonormal columns and ``a_x`` are trainable per-prompt
    coefficients (A = 0 is pi_ref), so the logit table ``A Phi^T`` has rank at most k and k = Y gives the
    tabular class. Fixing Phi (rather than training both factors) keeps the class's capacity set by k alone,
    without the symmetries of a bilinear fit.
    """

    def __init__(self, ref_logprobs: np.ndarray, rank: int, seed: int = 0) -> None:
        super().__init__()
        self.register_buffer("ref", to_tensor(ref_logprobs))
        n_prompts, n_responses = self.ref.shape
        if not 1 <= rank <= n_responses:
            raise ValueError(f"rank: must be in 1..{n_responses} (the number of responses), got {rank}")
        gen = torch.Generator().manual_seed(seed)
        features, _ = torch.linalg.qr(torch.randn(n_responses, rank, generator=gen, dtype=DTYPE))
        self.register_buffer("features", features)
        self.a = torch.nn.Parameter(torch.zeros(n_prompts, rank, dtype=DTYPE))

    def log_probs(self) -> torch.Tensor:  # noqa: D102
        return torch.log_softmax(self.ref + self.a @ self.features.T, dim=1)


@dataclasses.dataclass(frozen=True)
class TransformerSize:
    """The width and depth of a GPT-2-style transformer.

    Attributes:
        width: Embedding size (``n_embd``).
        depth: Number of blocks (``n_layer``).
        heads: Attention heads (must divide ``width``).
    """

    width: int
    depth: int
    heads: int

    def __post_init__(self) -> None:
        if min(self.width, self.depth, self.heads) < 1 or self.width % self.heads:
            raise ValueError(f"TransformerSize: need width, depth, heads >= 1 with heads | width, got {self}")

    @property
    def name(self) -> str:
        """A short label, e.g. ``d16xL2``."""
        return f"d{self.width}xL{self.depth}"


def tiny_gpt2(vocab_size: int, n_positions: int, size: TransformerSize, seed: int) -> GPT2LMHeadModel:
    """A freshly initialised float64 GPT-2 (no dropout, untied output head) from ``transformers``."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=size.width,
        n_layer=size.depth,
        n_head=size.heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
    )
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the global stream
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config).to(DTYPE)


def teacher_forcing_inputs(world: SequenceWorld) -> torch.Tensor:
    """``(X * V**(L-1), P + L - 1)`` token ids: every prompt followed by every response prefix of length L-1."""
    prefixes = all_sequences(world.vocab_size, world.response_length - 1)
    n_prompts, n_prefixes = len(world.prompts), len(prefixes)
    prompts = np.repeat(world.prompts, n_prefixes, axis=0)
    return torch.as_tensor(np.concatenate([prompts, np.tile(prefixes, (n_prompts, 1))], axis=1))


def sequence_log_probs(token_logprobs: torch.Tensor, inputs: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """Assemble exact sequence log-probabilities from next-token log-probabilities.

    Args:
        token_logprobs: ``(X * V**(L-1), L, V)`` log p(. | x, y_<t) at the L response positions.
        inputs: The :func:`teacher_forcing_inputs` (their last L-1 columns are the response prefixes).
        n_prompts: X.

    Returns:
        ``(X, V**L)`` log pi(y|x) = sum_t log p(y_t | x, y_<t), responses in :func:`all_sequences` order.
    """
    n_rows, length, vocab = token_logprobs.shape
    prefix = inputs[:, inputs.shape[1] - (length - 1) :]
    head = token_logprobs[:, :-1, :].gather(2, prefix.unsqueeze(2)).squeeze(2).sum(dim=1)  # (rows,)
    full = head.unsqueeze(1) + token_logprobs[:, -1, :]  # (rows, V): prefix j then last token v -> j * V + v
    return full.reshape(n_prompts, (n_rows // n_prompts) * vocab)


class TransformerPolicy(SequencePolicy):
    """A GPT-2 whose token logits are added to fixed base logits (a frozen reference's, or zero).

    ``log p_theta(.|x, y_<t) = log_softmax(base(x, y_<t) + f_theta(x, y_<t))``. With ``zero_head`` the
    output head of f_theta starts at zero, so the initial policy is exactly the base model.

    Args:
        world: The sequence world (prompts and response length).
        size: Width and depth of the trainable transformer f_theta.
        seed: Initialisation seed.
        base_token_logprobs: ``(X * V**(L-1), L, V)`` fixed logits (e.g. :meth:`token_logprobs` of a trained
            reference); None for zero (a plain transformer).
        zero_head: Start f_theta at zero output, so the policy starts at the base model: the output head
            starts at zero, except at width 1, where the final LayerNorm outputs its bias alone (zero at
            initialisation) and a zero head as well would be a saddle with zero gradient; that adapter adds one
            learned logit vector at every position.
    """

    def __init__(
        self,
        world: SequenceWorld,
        size: TransformerSize,
        seed: int,
        base_token_logprobs: torch.Tensor | None = None,
        zero_head: bool = True,
    ) -> None:
        super().__init__()
        self.size = size
        self.n_prompts = len(world.prompts)
        self.length = world.response_length
        self.register_buffer("inputs", teacher_forcing_inputs(world))
        self.model = tiny_gpt2(world.vocab_size, self.inputs.shape[1], size, seed)
        if zero_head and size.width > 1:
            torch.nn.init.zeros_(self.model.lm_head.weight)
        base = torch.zeros(()) if base_token_logprobs is None else base_token_logprobs.detach()
        self.register_buffer("base", base.to(DTYPE))

    def token_logprobs(self) -> torch.Tensor:
        """``(X * V**(L-1), L, V)`` next-token log-probabilities at the L response positions."""
        logits = self.model(input_ids=self.inputs).logits[:, -self.length :, :]
        return torch.log_softmax(self.base + logits, dim=2)

    def log_probs(self) -> torch.Tensor:  # noqa: D102
        return sequence_log_probs(self.token_logprobs(), self.inputs, self.n_prompts)
