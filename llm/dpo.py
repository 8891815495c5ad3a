"""DPO on pseudo-preference pairs, the Lagrangian maximiser of practical CAID (Algorithm 2, eq. (13)).

A pair ``(x, y_0, y_1)`` of reference responses is relabelled for multipliers lambda by drawing
``y_1 > y_0`` with probability ``sigma(r_lambda(x, y_1) - r_lambda(x, y_0))``, ``r_lambda = r + lambda^T g``
(no 1/beta: with DPO temperature beta the population optimum is then pi_ref exp(r_lambda / beta) / Z,
the tilted policy of eq. (3)). The DPO loss always compares with the fixed pi_ref, whose log-probabilities
are computed once and cached.

:func:`dpo_epoch` is one DPO epoch free of any configuration: a model, its optimiser, the responses, the
labelled pairs, their cached reference log-probabilities and the batches (:func:`shuffled_batches`,
:func:`grouped_batches`). The pipeline's trainer and ``benchmarks/dpo_throughput.py`` run this very function.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from llm.distributed import Ranks
from llm.mixed_precision import MixedPrecision
from llm.sampling import Sample

__all__ = [
    "LABEL_STREAM",
    "DPOStats",
    "EpochStats",
    "TrunkCache",
    "all_pairs",
    "dpo_epoch",
    "dpo_loss",
    "epoch_batches",
    "grouped_batches",
    "label_uniforms",
    "oriented_pairs",
    "pairs_loss",
    "pseudo_labels",
    "sequence_logprobs",
    "shuffled_batches",
    "steps_per_epoch",
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


# --------------------------------------------------------------------------------------------------------------
# the DPO epoch, free of configuration
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """Means over an epoch's pairs: DPO loss, accuracy (positive implicit margin) and implicit reward margin."""

    dpo_loss: float
    dpo_accuracy: float
    dpo_margin: float

    def as_row(self) -> dict[str, float]:
        """The ``metrics.jsonl`` fields."""
        return dataclasses.asdict(self)


def pairs_loss(
    model: torch.nn.Module,
    responses: Sequence[Sample],
    pairs: np.ndarray,
    ref_logprobs: np.ndarray,
    beta: float,
    pad_id: int,
    trunk: TrunkCache | None = None,
    grouped: bool = True,
    targets: np.ndarray | None = None,
) -> tuple[torch.Tensor, DPOStats]:
    """The mean DPO loss (eq. (13)) of ``pairs``, by default with one forward per distinct response.

    With K responses per prompt and all K(K-1)/2 pairs (grouped losses), the K responses are forwarded once
    and every pair reads its two log-probabilities from that one pass. ``grouped=False`` forwards each pair's
    two responses (a response in two pairs twice), as the drawn-pairs runs always have: the same loss to
    float rounding, bit for bit the numbers of those runs.

    Args:
        model: The policy (or the module its steps run through).
        responses: The responses the pairs index.
        pairs: ``(n, 2)`` indices into ``responses``: chosen, rejected.
        ref_logprobs: ``(len(responses),)`` cached log pi_ref of each response.
        beta: DPO temperature.
        pad_id: Id used for padding.
        trunk: With top-layer training, the cache of the frozen trunk's hidden states.
        grouped: One forward per distinct response (else one per pair and side).
        targets: ``(n,)`` P(chosen preferred) of each pair for the label-averaged loss; None: drawn labels.
    """
    flat = np.concatenate([pairs[:, 0], pairs[:, 1]])  # chosen, then rejected
    # First-occurrence order: without a repeated response the batch is exactly (chosen, rejected).
    distinct = list(dict.fromkeys(flat.tolist())) if grouped else flat.tolist()
    position = {r: i for i, r in enumerate(distinct)}
    prompts = [responses[r].prompt_ids for r in distinct]
    texts = [responses[r].response_ids for r in distinct]
    logp = (
        trunk.sequence_logprobs(model, prompts, texts)
        if trunk is not None  # an empty cache has len 0: test identity, not truth
        else sequence_logprobs(model, prompts, texts, pad_id)
    )
    if grouped and len(distinct) < len(flat):
        logp = logp[torch.as_tensor([position[r] for r in flat.tolist()], device=logp.device)]
    ref_logp = torch.tensor(ref_logprobs[flat], dtype=logp.dtype, device=logp.device)
    n = len(pairs)
    target = None if targets is None else torch.as_tensor(targets, device=logp.device)
    return dpo_loss(logp[:n], logp[n:], ref_logp[:n], ref_logp[n:], beta, target)


def dpo_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    responses: Sequence[Sample],
    pairs: np.ndarray,
    ref_logprobs: np.ndarray,
    beta: float,
    batches: Iterable[np.ndarray],
    pad_id: int,
    *,
    scheduler: Any = None,
    ranks: Ranks | None = None,
    trunk: TrunkCache | None = None,
    grouped: bool = True,
    targets: np.ndarray | None = None,
    progress: bool = False,
    accumulation: int = 1,
    precision: MixedPrecision | None = None,
) -> EpochStats:
    """One DPO epoch: an optimiser step per ``accumulation`` batches of labelled pairs (eq. (13), pi_ref cached).

    Each batch is split across ranks; a rank's loss is weighted by its share of the step's pairs (all the
    batches it accumulates), so the gradient DDP averages and the batches add up is the gradient of the mean
    loss over the step's pairs. A rank with no pair in a (last, small) batch still takes part with a
    zero-weighted pair, as every rank must join every gradient exchange.

    Args:
        model: The module the steps run through (the policy, or its DDP/FSDP wrapper).
        optimizer: Its optimiser.
        responses: The responses the pairs index (e.g. pi_ref's samples).
        pairs: ``(n, 2)`` indices into ``responses``: the chosen, then the rejected response of each pair.
        ref_logprobs: ``(len(responses),)`` cached log pi_ref of each response.
        beta: DPO temperature.
        batches: Pair indices of each step, in order (:func:`shuffled_batches`, :func:`grouped_batches`).
        pad_id: Id used for padding.
        scheduler: A learning-rate scheduler stepped after every optimiser step, or None.
        ranks: The processes sharing each batch (None: this process alone).
        trunk: With top-layer training, the cache of the frozen trunk's hidden states (one process only).
        grouped: One forward per distinct response of a step (:func:`pairs_loss`).
        targets: ``(n,)`` P(chosen preferred) of each pair: the label-averaged loss; None: drawn labels.
        progress: Whether to show a progress bar.
        accumulation: Batches (forward-backward passes) per optimiser step (``training.gradient_accumulation_steps``).
        precision: Autocast and fp16 loss scaling (``training.mixed_precision``); None: neither.

    Returns:
        The epoch's mean loss, accuracy and margin over its pairs.
    """
    ranks = ranks or Ranks()
    precision = precision or MixedPrecision()
    pairs, batches = np.asarray(pairs), list(batches)
    totals = np.zeros(4)  # pairs, and the sums of loss, accuracy and margin over them
    model.train()
    steps = range(0, len(batches), accumulation)
    for first in tqdm(steps, desc="DPO epoch", unit="step", leave=False, disable=not (progress and ranks.is_main)):
        group = batches[first : first + accumulation]
        step_pairs = sum(len(idx) for idx in group)
        optimizer.zero_grad()
        for idx in group:
            local = idx[ranks.rank :: ranks.world_size]
            weight = len(local) * ranks.world_size / step_pairs
            if len(local) == 0:
                local, weight = idx[:1], 0.0
            target = None if targets is None else targets[local]
            with precision.autocast():
                loss, stats = pairs_loss(
                    model, responses, pairs[local], ref_logprobs, beta, pad_id, trunk, grouped, target
                )
            precision.backward(loss * weight)
            if weight:
                totals += len(local) * np.array([1.0, stats.loss, stats.accuracy, stats.margin])
        precision.step(optimizer)
        if scheduler is not None:
            scheduler.step()
    model.eval()
    n, loss, accuracy, margin = np.sum(ranks.gather(totals), axis=0)
    return EpochStats(loss / n, accuracy / n, margin / n)


def shuffled_batches(n_pairs: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The pairs in one random order (one ``rng.permutation``), cut into steps of ``batch_size``."""
    order = rng.permutation(n_pairs)
    return [order[start : start + batch_size] for start in range(0, n_pairs, batch_size)]


def grouped_batches(pair_prompts: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Whole prompts per step, in one random order: every pair of a prompt in the same step (grouped losses).

    Each step takes ``max(1, batch_size // pairs per prompt)`` prompts, so a response is forwarded once per
    epoch however many pairs it is in.

    Args:
        pair_prompts: ``(n,)`` the prompt of each pair.
        batch_size: Pairs per step, rounded to whole prompts.
        rng: Source of the prompt order.
    """
    prompts, counts = np.unique(pair_prompts, return_counts=True)
    per_step = max(1, batch_size // int(counts.max()))
    order = rng.permutation(prompts)
    return [np.flatnonzero(np.isin(pair_prompts, order[s : s + per_step])) for s in range(0, len(order), per_step)]


def all_pairs(n_prompts: int, k: int) -> np.ndarray:
    """``(n_prompts * k(k-1)/2, 3)`` rows ``(prompt, j_0, j_1)``: every pair of each prompt's ``k`` responses."""
    return np.array([(i, a, b) for i in range(n_prompts) for a, b in itertools.combinations(range(k), 2)])


def oriented_pairs(pairs: np.ndarray, prefer_1: np.ndarray, k: int) -> np.ndarray:
    """Flat ``(chosen, rejected)`` indices into the ``N * K`` reference samples of labelled pairs.

    Args:
        pairs: ``(n, 3)`` rows ``(prompt, j_0, j_1)`` into each prompt's K samples.
        prefer_1: ``(n,)`` True where ``j_1`` is the chosen response.
        k: K, samples per prompt.
    """
    base = pairs[:, 0] * k
    chosen = base + np.where(prefer_1, pairs[:, 2], pairs[:, 1])
    rejected = base + np.where(prefer_1, pairs[:, 1], pairs[:, 2])
    return np.stack([chosen, rejected], axis=1)


def epoch_batches(
    pairs: np.ndarray, batch_size: int, whole_prompts: bool, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch's steps over ``(n, 3)`` pairs: whole prompts (:func:`grouped_batches`), else shuffled pairs."""
    if whole_prompts:
        return grouped_batches(pairs[:, 0], batch_size, rng)
    return shuffled_batches(len(pairs), batch_size, rng)


def steps_per_epoch(pairs: np.ndarray, batch_size: int, whole_prompts: bool, k: int, accumulation: int = 1) -> int:
    """Optimiser steps of one :func:`epoch_batches` epoch over ``(n, 3)`` pairs, ``accumulation`` batches each."""
    if whole_prompts:
        batches = math.ceil(len(np.unique(pairs[:, 0])) / max(1, batch_size // math.comb(k, 2)))
    else:
        batches = math.ceil(len(pairs) / batch_size)
    return math.ceil(batches / accumulation)
