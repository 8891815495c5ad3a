"""Ranks of a ``torchrun`` job: which work is this process's, gathering results, and wrapping the policy.

A run started with ``torchrun --nproc_per_node N -m llm run ...`` has N processes (ranks). Sampling,
scoring and log-probabilities are split into numbered units (a chunk of prompts, a generation batch) that
are seeded by their number, not by the rank that computes them: unit ``i`` goes to rank ``i mod N`` and
every rank gathers every result (:meth:`Ranks.map`), so any N gives the same samples as one process. DPO
steps split each batch of pairs across ranks and average gradients with DDP (or shard parameters with
FSDP); every rank draws the same labels and batches from the same seeded generator. Only rank 0 writes
run files.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) everything is a no-op on one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from tqdm import tqdm

__all__ = [
    "Ranks",
    "full_parameters",
    "init_ranks",
    "load_training_state",
    "load_weights",
    "training_state",
    "wrap_for_training",
]

# Whole tensors, on rank 0 only, trainable ones only: the same checkpoint for any number of ranks and either
# strategy, so a run can resume on another world size.
_SAVE = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
_LOAD = StateDictOptions(full_state_dict=True, strict=False)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place in the job.

    Attributes:
        rank: Global rank (0 writes run files and shows progress bars).
        world_size: Number of processes.
        device: Where this rank's models live.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    def map(self, n: int, compute: Callable[[int], T], desc: str | None = None, progress: bool = True) -> list[T]:
        """``[compute(0), ..., compute(n - 1)]`` on every rank, each unit computed once, by rank ``i mod N``.

        Args:
            n: Number of units.
            compute: The work of unit ``i``; its result must be picklable.
            desc: Progress-bar label (shown on rank 0).
            progress: Whether to show the bar.
        """
        units = range(self.rank, n, self.world_size)
        bar = tqdm(units, desc=desc, unit="unit", leave=False, disable=not (progress and self.is_main and desc))
        mine = {i: compute(i) for i in bar}
        if self.world_size == 1:
            return [mine[i] for i in range(n)]
        merged: dict[int, T] = {}
        for part in self.gather(mine):
            merged.update(part)
        return [merged[i] for i in range(n)]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def on_main(self, compute: Callable[[], None]) -> None:
        """Run ``compute`` on rank 0 only; its error, if any, is raised on every rank.

        So an error on rank 0 (e.g. a run directory that holds another run) leaves no rank waiting for it.
        """
        error: Exception | None = None
        if self.is_main:
            try:
                compute()
            except Exception as exc:  # handed to the other ranks below, then re-raised
                error = exc
        if self.world_size > 1:
            box = [None if error is None else f"{type(error).__name__}: {error}"]
            dist.broadcast_object_list(box, src=0)
            if box[0] is not None and not self.is_main:
                raise RuntimeError(f"rank 0 failed: {box[0]}")
        if error is not None:
            raise error


def init_ranks(device: str = "auto") -> Ranks:
    """Join the ``torchrun`` job described by the environment, or describe a single process.

    The backend is NCCL when the ranks use GPUs and gloo on CPUs.

    Args:
        device: ``"auto"`` (this rank's GPU when CUDA is available, else the CPU), ``"cpu"`` or ``"cuda"``.

    Raises:
        ValueError: ``device="cuda"`` without a CUDA device.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ValueError("model.device: 'cuda' was asked for but no CUDA device is visible; use 'auto' or 'cpu'")
    target = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(target)
    if world_size == 1:
        return Ranks(device=target)
    if not dist.is_initialized():
        # Long timeout: a rank may wait while another samples a long chunk.
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return Ranks(dist.get_rank(), dist.get_world_size(), target)


def wrap_for_training(model: torch.nn.Module, ranks: Ranks, strategy: str) -> torch.nn.Module:
    """The module DPO steps run through: the model itself on one process, else DDP or FSDP around it.

    DDP keeps a full copy per rank and averages gradients. FSDP (``fully_shard``, per decoder layer and
    then the whole model) shards parameters, gradients and optimiser state across ranks, for models that
    do not fit one device; it changes ``model`` in place, so build the optimiser from the returned module.
    """
    if ranks.world_size == 1:
        return model
    if strategy == "ddp":
        device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    layer_types = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in layer_types:
            fully_shard(module)
    fully_shard(model)
    return model


@contextlib.contextmanager
def full_parameters(*models: torch.nn.Module) -> Iterator[None]:
    """Hold FSDP's full parameters of ``models`` on every rank for the block (no-op without FSDP).

    Sampling runs a different number of forward passes on each rank (its own prompts, its own stopping
    times); with the parameters gathered once beforehand and kept, those passes need no collective.
    """
    modules = [m for model in models for m in model.modules() if isinstance(m, FSDPModule)]
    for m in modules:
        m.set_reshard_after_forward(False)
        m.unshard()
    try:
        yield
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(True)


def training_state(
    trainer: torch.nn.Module, optimizer: torch.optim.Optimizer, names: set[str]
) -> tuple[dict[str, torch.Tensor], dict]:
    """The trained weights and the optimiser state, whole, on rank 0 (empty elsewhere); call on every rank.

    Args:
        trainer: What :func:`wrap_for_training` returned.
        optimizer: Its optimiser.
        names: The trained parameters' names in the unwrapped model (a tied weight under one name only,
            as safetensors stores no shared tensors).

    Returns:
        ``(weights, optimizer_state)`` keyed by parameter name, the same for any world size and strategy.
    """
    weights = get_model_state_dict(trainer, options=_SAVE)
    weights = {name: tensor.contiguous() for name, tensor in weights.items() if name in names}
    return weights, get_optimizer_state_dict(trainer, optimizer, options=_SAVE)


def load_training_state(
    trainer: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optimizer_state: dict
) -> None:
    """Load what :func:`training_state` saved (every rank passes the whole state)."""
    load_weights(trainer, weights)
    set_optimizer_state_dict(trainer, optimizer, optimizer_state, options=_LOAD)


def load_weights(trainer: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load trained weights saved by :func:`training_state` (every rank passes them whole)."""
    set_model_state_dict(trainer, weights, options=_LOAD)
