"""The trained policy class: the last decoder block's MLP on a cached frozen trunk.

pi_theta(.|x) = softmax(head(norm(h + MLP(ln(h))))) with ``h`` the hidden state of the prompt's last position
after the last block's attention. Trained: that block's post-attention norm and MLP and the final norm;
frozen: everything below (so ``h`` is computed once per prompt, :func:`encode_trunk`) and the embedding with
its tied LM head (the convention of ``llm.trainable.trainable_parameters(..., "top_layers")``). At its
initialisation the policy is exactly pi_ref. One training step then costs a (batch x d) MLP and the head,
not a forward pass of the model; training the whole last block would need every position's keys and
values and costs ~40x more on 2 CPU cores.

Prompts are right-padded in the trunk forward: under causal attention no real position attends to padding,
so the last real position's state equals that of the unpadded prompt (no attention mask is needed).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["Distribution", "LastBlockPolicy", "Trunk", "encode_trunk", "right_padded"]


def right_padded(batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, last)``: right-padded token ids and each prompt's last real position."""
    if any(len(p) == 0 for p in batch):
        raise ValueError("prompt_ids: every prompt needs at least one token")
    length = max(len(p) for p in batch)
    ids = torch.zeros((len(batch), length), dtype=torch.long)
    for i, p in enumerate(batch):
        ids[i, : len(p)] = torch.as_tensor(list(p))
    return ids, torch.as_tensor([len(p) - 1 for p in batch])


@dataclasses.dataclass(frozen=True, eq=False)
class Trunk:
    """Cached frozen computation: ``hidden`` is ``(X, d)``, the last position's state after the last attention."""

    hidden: torch.Tensor

    def __len__(self) -> int:
        """X, the number of prompts."""
        return self.hidden.shape[0]

    def rows(self, index: np.ndarray | torch.Tensor) -> Trunk:
        """The trunk of a subset of prompts."""
        return Trunk(self.hidden[torch.as_tensor(index, dtype=torch.long)])


class _Stop(Exception):
    """Raised by the trunk hook: nothing above the captured state is needed."""


def _last_block(model: torch.nn.Module) -> torch.nn.Module:
    try:
        return model.model.layers[-1]
    except AttributeError as exc:
        raise ValueError(f"{type(model).__name__}: expected a Llama-style model with model.layers") from exc


@torch.no_grad()
def encode_trunk(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], batch_size: int = 32) -> Trunk:
    """Run the frozen part of ``model`` once per prompt and keep the state entering the trained MLP.

    Args:
        model: A Llama-style causal LM.
        prompt_ids: Token ids of each prompt.
        batch_size: Prompts per forward pass.
    """
    captured: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, args: tuple) -> None:
        captured.append(args[0].detach().clone())
        raise _Stop

    handle = _last_block(model).post_attention_layernorm.register_forward_pre_hook(hook)
    states = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            ids, last = right_padded(prompt_ids[start : start + batch_size])
            try:
                model(input_ids=ids)
            except _Stop:
                pass
            states.append(captured.pop()[torch.arange(len(last)), last])
    finally:
        handle.remove()
    return Trunk(torch.cat(states).float())


class Distribution:
    """``log_probs`` and ``distribution`` from a policy's ``logits(trunk)`` (the laboratory's policy interface)."""

    def logits(self, trunk: Trunk) -> torch.Tensor:  # pragma: no cover - defined by each policy
        """``(X, V)`` next-token logits after each prompt."""
        raise NotImplementedError

    def log_probs(self, trunk: Trunk) -> torch.Tensor:
        """``(X, V)`` log pi_theta(v|x)."""
        return torch.log_softmax(self.logits(trunk), dim=-1)

    @torch.no_grad()
    def distribution(self, trunk: Trunk, batch_size: int = 64) -> np.ndarray:
        """``(X, V)`` float64 pi_theta(.|x)."""
        return np.concatenate([
            torch.softmax(self.logits(trunk.rows(np.arange(s, min(s + batch_size, len(trunk))))).double(), -1).numpy()
            for s in range(0, len(trunk), batch_size)
        ])  # fmt: skip


class LastBlockPolicy(Distribution, torch.nn.Module):
    """pi_theta(.|x) = softmax(head(norm(h + MLP(ln(h))))) on a :class:`Trunk` (module docstring)."""

    def __init__(self, model: torch.nn.Module) -> None:
        """Copy the last block's post-attention norm and MLP and the final norm (trained); share the head."""
        super().__init__()
        block = _last_block(model)
        self.ln = copy.deepcopy(block.post_attention_layernorm).float()
        self.mlp = copy.deepcopy(block.mlp).float()
        self.norm = copy.deepcopy(model.model.norm).float()
        self.head_weight = model.get_output_embeddings().weight.detach().float()  # frozen (tied to the embedding)
        for p in self.parameters():
            p.requires_grad_(True)

    def trainable(self) -> list[torch.nn.Parameter]:
        """The trained parameters."""
        return list(self.parameters())

    def logits(self, trunk: Trunk) -> torch.Tensor:
        """``(X, V)`` next-token logits after each prompt."""
        h = trunk.hidden
        h = h + self.mlp(self.ln(h))
        return self.norm(h) @ self.head_weight.T
