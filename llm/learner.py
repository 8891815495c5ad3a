"""The model DPO trains, its optimiser and schedule, and the frozen-trunk caches runs share.

* :class:`Learner` / :func:`build_learner`: a trainable copy of pi_ref (full, top layers or LoRA, as
  configured), the (DDP/FSDP) module its steps run through, AdamW and the learning-rate schedule (Table 1).
* :class:`TrunkCaches`: the frozen-trunk caches (:class:`llm.dpo.TrunkCache`) of the runs of one process, keyed
  by the reference samples and the trunk depth. Its owner (one ``llm run``, a sweep, a study) passes it to every
  run that may share it, so the runs of a sweep over scorer sets forward each trunk once.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import get_scheduler

from llm.config import ModelConfig, TrainingConfig
from llm.distributed import Ranks, wrap_for_training
from llm.dpo import EpochStats, TrunkCache, dpo_epoch
from llm.mixed_precision import MixedPrecision
from llm.sampling import Sample
from llm.trainable import apply_lora, trainable_parameters

__all__ = ["Learner", "TrunkCaches", "build_learner", "lr_scheduler"]


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    """A model DPO trains.

    Attributes:
        model: The policy itself.
        module: The module the steps run through (the policy, or its DDP/FSDP wrapper).
        optimizer: AdamW over the trained parameters.
        scheduler: The learning-rate schedule, stepped after every optimiser step.
        names: The trained parameters' names (a tied weight under one name).
        accumulation: Batches per optimiser step (``training.gradient_accumulation_steps``).
        precision: Autocast and fp16 loss scaling (``training.mixed_precision``); its scale is training state.
    """

    model: torch.nn.Module
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    names: set[str]
    accumulation: int = 1
    precision: MixedPrecision = dataclasses.field(default_factory=MixedPrecision)

    def epoch(
        self,
        responses: Sequence[Sample],
        pairs: np.ndarray,
        ref_logprobs: np.ndarray,
        beta: float,
        batches: Sequence[np.ndarray],
        pad_id: int,
        **options: Any,
    ) -> EpochStats:
        """:func:`llm.dpo.dpo_epoch` through this learner's module, optimiser and schedule (``options``: its own)."""
        return dpo_epoch(
            self.module, self.optimizer, responses, pairs, ref_logprobs, beta, batches, pad_id,
            scheduler=self.scheduler, accumulation=self.accumulation, precision=self.precision, **options,
        )  # fmt: skip


def lr_scheduler(training: TrainingConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The Hugging Face Trainer's schedules (Table 1): warm-up, then constant or cosine to 0 over all steps."""
    return get_scheduler(
        {"cosine": "cosine", "constant": "constant_with_warmup"}[training.lr_scheduler],
        optimizer,
        num_warmup_steps=training.warmup_steps,
        num_training_steps=total_steps,
    )


def build_learner(
    model_config: ModelConfig,
    training: TrainingConfig,
    seed: int,
    ranks: Ranks,
    reference: torch.nn.Module,
    total_steps: int,
) -> Learner:
    """A trainable copy of pi_ref (trained weights as configured), wrapped for the job, with its optimiser.

    Args:
        model_config: Which weights train (``train``, ``top_k_layers``; LoRA rank, alpha, dropout and targets). A
            ``peft`` ``PeftModel`` as pi_ref with ``train = "lora"`` trains its own adapters.
        training: Learning rate, schedule, checkpointing, accumulation, mixed precision and the DDP/FSDP choice.
        seed: Seed of the LoRA adapters' initialisation.
        ranks: The processes sharing the run.
        reference: The frozen pi_ref the copy starts from.
        total_steps: Optimiser steps of the whole run (the schedule's length).
    """
    model = copy.deepcopy(reference)
    if training.gradient_checkpointing:
        # Non-reentrant checkpointing needs no gradient on the inputs, so frozen embeddings (LoRA, top layers) work.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if model_config.train == "lora" and hasattr(model, "peft_config"):  # a PeftModel: its adapters train
        for name, parameter in model.named_parameters():
            parameter.requires_grad_("lora_" in name)
    elif model_config.train == "lora":
        model = apply_lora(
            model, model_config.lora_rank, model_config.lora_alpha, seed=seed, dropout=model_config.lora_dropout,
            target_modules=model_config.lora_target_modules,
        )  # fmt: skip
    else:
        trainable_parameters(model, model_config.train, model_config.top_k_layers)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    # The optimiser is built after wrapping: FSDP replaces the parameters it shards.
    module = wrap_for_training(model, ranks, training.distributed)
    trained = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=training.learning_rate)
    precision = MixedPrecision(training.mixed_precision, next(model.parameters()).device)
    scheduler = lr_scheduler(training, optimizer, total_steps)
    return Learner(model, module, optimizer, scheduler, names, training.gradient_accumulation_steps, precision)


class TrunkCaches:
    """The frozen-trunk caches of one process's runs; only the latest key is kept (they hold hidden states).

    A run asks for the cache of its reference samples (``samples_key``: model weights, dtype, samples; not the
    scorers) at its trunk depth; runs that share both share the cache. Under ``torchrun`` the steps must run
    through the DDP/FSDP module, so there is no cache.
    """

    def __init__(self) -> None:
        self._key: tuple[str, int] | None = None
        self._cache: TrunkCache | None = None

    def get(
        self, samples_key: str, frozen_layers: int, pad_id: int, batch_size: int, enabled: bool, ranks: Ranks
    ) -> TrunkCache | None:
        """The cache of ``(samples_key, frozen_layers)`` (a new one replaces the last), or None when disabled.

        Args:
            samples_key: The key of pi_ref's weights and samples without the scorers.
            frozen_layers: Decoder layers below the trained ones.
            pad_id: Id used for padding.
            batch_size: Sequences per trunk forward when filling the cache.
            enabled: ``training.cache_trunk``.
            ranks: The processes sharing the run (more than one: no cache).
        """
        if not enabled or ranks.world_size > 1:
            return None
        key = (samples_key, frozen_layers)
        if key != self._key or self._cache is None:
            self._key, self._cache = key, TrunkCache(frozen_layers, pad_id, batch_size)
        return self._cache

    def __len__(self) -> int:
        """Hidden states held (0 when empty)."""
        return 0 if self._cache is None else len(self._cache)
