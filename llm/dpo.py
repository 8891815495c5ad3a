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

__all__ = [
    "LABEL_STREAM",
    "DPOStats",
    "TrunkCache",
    "dpo_loss",
    "label_uniforms",
    "pseudo_labels",
    "sequence_logprobs",
]


def _packed(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(ids, attention, target)``: ``target`` marks the response tokens at their own positions."""
    if len(prompts) != len(responses):
        raise ValueError(f"responses: expected {len(prompts)} (one per prompt), got {len(responses)}")
    if any(len(p) == 0 for p in prompts) or any(len(r) == 0 for r in responses):
        raise ValueError("prompts/responses: every prompt and response needs at least one token")
    length = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    target = torch.zeros_like(ids, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor([*p, *r])
        attention[i, :n] = 1
        target[i, len(p) : n] = True
    return ids, attention, target


def _summed_logprobs(logits: torch.Tensor, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` sum of the response tokens' log-probabilities, from the ``(batch, length, vocab)`` logits.

    The log-softmax is taken as ``logit[y_t] - logsumexp(logits)`` so no (batch, length, vocab) log-prob
    tensor is materialised.
    """
    logits = logits[:, :-1].float()
    token_logp = logits.gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2) - torch.logsumexp(logits, dim=2)
    return (token_logp * target[:, 1:]).sum(dim=1)


def sequence_logprobs(
    model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> torch.Tensor:
    """``log pi(y|x) = sum_t log p(y_t | x, y_<t)`` for a batch of token-id prompts and responses.

    Sequences are right-padded with ``pad_id`` (masked out); only response tokens are summed, and the LM head
    runs only at the positions that predict one (in any row of the batch), never over the prompts.

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
    ids, attention, target = _packed(prompts, responses, pad_id)
    device = next(model.parameters()).device
    ids, attention, target = ids.to(device), attention.to(device), target.to(device)
    # Logits only at the positions that predict a response token in some row (transformers' logits_to_keep): a
    # long prompt costs hidden states, never (length, vocab) logits.
    keep = target[:, 1:].any(dim=0).nonzero().squeeze(1)
    try:
        logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits
    except TypeError as err:  # a model whose forward has no logits_to_keep: logits at every position
        if "logits_to_keep" not in str(err):
            raise
        logits = model(input_ids=ids, attention_mask=attention).logits
    if logits.shape[1] == ids.shape[1]:  # every position was kept
        return _summed_logprobs(logits, ids, target)
    logits = logits.float()
    token_logp = logits.gather(2, ids[:, keep + 1].unsqueeze(2)).squeeze(2) - torch.logsumexp(logits, dim=2)
    return (token_logp * target[:, keep + 1]).sum(dim=1)


class TrunkCache:
    """Hidden states below the trained top layers, computed once per sequence (top-k DPO on a frozen trunk).

    With ``model.train = "top_layers"`` the embeddings and the lower decoder layers of the policy are pi_ref's
    and never change, so the hidden state entering the first trained layer is a fixed function of the
    sequence. It is computed once (without gradient) and reused by every epoch, and by every method of a
    process that shares this cache; only the top ``k`` layers run per step, and the final norm and the LM head
    only at the positions that predict a response token.
    Sequences are right-padded, so under causal attention no real position attends to padding and the
    cached states equal the full forward's (to float rounding). Llama-style models only (``model.model``
    with ``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``; ``lm_head``).

    Args:
        frozen_layers: How many decoder layers lie below the trained ones.
        pad_id: Id used for padding.
        batch_size: Sequences per trunk forward when filling the cache.
    """

    def __init__(self, frozen_layers: int, pad_id: int, batch_size: int = 16) -> None:
        if frozen_layers < 0:
            raise ValueError(f"frozen_layers: must be >= 0, got {frozen_layers}")
        self.frozen_layers, self.pad_id, self.batch_size = frozen_layers, pad_id, batch_size
        self._hidden: dict[tuple[tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._hidden)

    @staticmethod
    def _parts(model: torch.nn.Module) -> torch.nn.Module:
        base = getattr(model, "model", None)
        needed = ("embed_tokens", "layers", "norm", "rotary_emb")
        if base is None or not all(hasattr(base, a) for a in needed) or not hasattr(model, "lm_head"):
            raise ValueError(
                f"training.cache_trunk: {type(model).__name__} is not a Llama-style causal LM; set it to false"
            )
        return base

    def _layers(
        self, model: torch.nn.Module, hidden: torch.Tensor, attention: torch.Tensor, layers: Sequence[torch.nn.Module]
    ) -> torch.Tensor:
        """Run ``layers`` of ``model`` on ``hidden`` as the model's own forward does (causal mask, rotary)."""
        from transformers.masking_utils import create_causal_mask

        base = self._parts(model)
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(
            config=base.config, inputs_embeds=hidden, attention_mask=attention, cache=None, position_ids=position_ids
        )
        rotary = base.rotary_emb(hidden, position_ids=position_ids)
        for layer in layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids)
        return hidden

    @torch.no_grad()
    def _fill(self, model: torch.nn.Module, keys: Sequence[tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
        base = self._parts(model)
        if not 0 <= self.frozen_layers < len(base.layers):
            raise ValueError(f"frozen_layers: must be in 0..{len(base.layers) - 1}, got {self.frozen_layers}")
        device = next(model.parameters()).device
        missing = list(dict.fromkeys(k for k in keys if k not in self._hidden))
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            ids, attention, _ = _packed([p for p, _ in batch], [r for _, r in batch], self.pad_id)
            ids, attention = ids.to(device), attention.to(device)
            hidden = self._layers(model, base.embed_tokens(ids), attention, base.layers[: self.frozen_layers])
            for i, (p, r) in enumerate(batch):
                self._hidden[(p, r)] = hidden[i, : len(p) + len(r)].clone()

    def sequence_logprobs(
        self, model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]
    ) -> torch.Tensor:
        """:func:`sequence_logprobs` of ``model``, with the trunk's hidden states from the cache (filled as needed).

        Only valid while ``model``'s embeddings and lower ``frozen_layers`` layers are those the cache was
        filled with: the policy of a ``top_layers`` run, whose lower layers are pi_ref's.
        """
        keys = [(tuple(p), tuple(r)) for p, r in zip(prompts, responses, strict=True)]
        ids, attention, target = _packed(prompts, responses, self.pad_id)
        self._fill(model, keys)
        base = self._parts(model)
        device = next(model.parameters()).device
        ids, attention, target = ids.to(device), attention.to(device), target.to(device)
        cached = [self._hidden[k] for k in keys]
        hidden = torch.zeros((len(keys), ids.shape[1], cached[0].shape[1]), dtype=cached[0].dtype, device=device)
        for i, h in enumerate(cached):
            hidden[i, : len(h)] = h
        hidden = self._layers(model, hidden, attention, base.layers[self.frozen_layers :])
        # The norm and LM head only where a response token is predicted: with a large vocabulary the head
        # dominates what is left once the trunk is cached, and prompt and padding positions need none of it.
        rows, cols = target[:, 1:].nonzero(as_tuple=True)
        logits = model.lm_head(base.norm(hidden[rows, cols])).float()
        token_logp = logits.gather(1, ids[rows, cols + 1].unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=1)
        return torch.zeros(len(keys), dtype=token_logp.dtype, device=device).index_add(0, rows, token_logp)


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
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, DPOStats]:
    """The DPO loss (eq. (13)): ``-mean log sigma(beta [(log pi - log pi_ref)(y+) - (log pi - log pi_ref)(y-)])``.

    With ``target`` p (the probability that y+ is preferred), the label-averaged loss
    ``-mean[p log sigma(m) + (1 - p) log sigma(-m)]``: its expectation over Bernoulli(p) labels is the same, so
    is its expected gradient and its optimum pi_ref exp(r / beta) / Z, but its optimal margins are finite
    (``logit p``), so DPO cannot fit the noise of drawn labels.

    Args:
        policy_chosen: ``(B,)`` log pi_theta(y+|x).
        policy_rejected: ``(B,)`` log pi_theta(y-|x).
        ref_chosen: ``(B,)`` log pi_ref(y+|x) (constants).
        ref_rejected: ``(B,)`` log pi_ref(y-|x).
        beta: DPO temperature (the KL weight of the constrained problem).
        target: ``(B,)`` P(y+ preferred) in [0, 1]; None: drawn labels (1).

    Returns:
        The differentiable loss and its :class:`DPOStats`.
    """
    if not beta > 0:
        raise ValueError(f"beta: must be > 0, got {beta}")
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    if target is None:
        loss = -torch.nn.functional.logsigmoid(margin).mean()
    else:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(margin, target.to(margin.dtype))
    detached = margin.detach()
    stats = DPOStats(float(loss.detach()), float((detached > 0).float().mean()), float(detached.mean()))
    return loss, stats


def pseudo_labels(
    composite_0: np.ndarray, composite_1: np.ndarray, source: np.random.Generator | np.ndarray
) -> np.ndarray:
    """Bernoulli pseudo-labels: True where ``y_1`` wins, with probability ``sigma(r_lambda(y_1) - r_lambda(y_0))``.

    Args:
        composite_0: ``(n,)`` r_lambda of the first response of each pair.
        composite_1: ``(n,)`` r_lambda of the second response.
        source: Source of the draws (one uniform per pair), or the ``(n,)`` uniforms themselves (common random
            numbers, :func:`label_uniforms`: label ``u < sigma(...)``, so two lambdas' labels differ only on
            the pairs whose ``u`` lies between their probabilities).
    """
    composite_0, composite_1 = np.asarray(composite_0, float), np.asarray(composite_1, float)
    if composite_0.shape != composite_1.shape or composite_0.ndim != 1:
        raise ValueError(f"composite scores: expected two (n,) arrays, got {composite_0.shape} and {composite_1.shape}")
    if not (np.all(np.isfinite(composite_0)) and np.all(np.isfinite(composite_1))):
        raise ValueError("composite scores: contain NaN or inf; check the scorers")
    if isinstance(source, np.random.Generator):
        uniforms = source.random(composite_0.shape)
    else:
        uniforms = np.asarray(source, float)
        if uniforms.shape != composite_0.shape:
            raise ValueError(f"uniforms: expected shape {composite_0.shape}, one per pair, got {uniforms.shape}")
    return uniforms < 1.0 / (1.0 + np.exp(composite_0 - composite_1))


LABEL_STREAM = 0x4C41424C  # "LABL": the label stream's key, apart from every other stream of a run


def label_uniforms(seed: int, epoch: int, n_pairs: int) -> np.ndarray:
    """The dedicated label stream: one uniform per pair for ``epoch``, a function of ``(seed, epoch, pair)`` only.

    Pair ``i``'s uniform is the ``i``-th draw of a generator keyed by ``(seed, LABEL_STREAM, epoch)``, so every
    method of a sweep sees the same uniforms (common random numbers, Sec. 4.1.1's comparison at equal seeds)
    and a resumed run draws what the uninterrupted one did.
    """
    if n_pairs < 0 or epoch < 0 or seed < 0:
        raise ValueError(f"seed, epoch and n_pairs must be >= 0, got {seed}, {epoch}, {n_pairs}")
    return np.random.default_rng([seed, LABEL_STREAM, epoch]).random(n_pairs)
