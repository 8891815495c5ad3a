"""The trained policy class: the top decoder layers of the LM on a cached frozen trunk.

Only the last ``top_k`` decoder layers and the final norm train; the embedding and the tied LM head stay
frozen (as in ``llm.models.trainable_parameters(..., "top_layers")``). The hidden states entering the first
trained layer depend on nothing trainable, so they are computed once per prompt (:func:`encode_trunk`) and
every training step runs only the top layers and the head on the last position. Prompts are right-padded:
under causal attention no real position attends to padding, so no attention mask is needed.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from analysis.next_token.world import _right_padded
from llm.models import trainable_parameters

__all__ = ["TopLayersPolicy", "Trunk", "encode_trunk"]


@dataclasses.dataclass(frozen=True, eq=False)
class Trunk:
    """Cached inputs of the first trained layer.

    Attributes:
        hidden: ``(X, L, d)`` hidden states entering decoder layer ``n_layers - top_k``.
        last: ``(X,)`` index of each prompt's last real position.
    """

    hidden: torch.Tensor
    last: torch.Tensor

    def rows(self, index: np.ndarray | torch.Tensor) -> Trunk:
        """The trunk of a subset of prompts."""
        index = torch.as_tensor(index, dtype=torch.long)
        return Trunk(self.hidden[index], self.last[index])


def _layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    return model.model.layers


@torch.no_grad()
def encode_trunk(
    model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]], top_k: int, batch_size: int = 32
) -> Trunk:
    """Run the frozen lower layers once and keep the hidden states entering the first trained layer.

    Args:
        model: A Llama-style causal LM (``model.model.layers``).
        prompt_ids: Token ids of each prompt.
        top_k: Number of trained top layers.
        batch_size: Prompts per forward pass.
    """
    layers = _layers(model)
    if not 1 <= top_k <= len(layers):
        raise ValueError(f"top_k: must be in 1..{len(layers)}, got {top_k}")
    captured: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append((args[0] if args else kwargs["hidden_states"]).detach().clone())
        raise _Stop  # the layers above are not needed

    handle = layers[len(layers) - top_k].register_forward_pre_hook(hook, with_kwargs=True)
    hidden, last = [], []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            ids, idx = _right_padded(prompt_ids[start : start + batch_size])
            try:
                model(input_ids=ids)
            except _Stop:
                pass
            hidden.append(captured.pop())
            last.append(idx)
    finally:
        handle.remove()
    width = max(h.shape[1] for h in hidden)
    padded = [torch.nn.functional.pad(h, (0, 0, 0, width - h.shape[1])) for h in hidden]
    return Trunk(torch.cat(padded), torch.cat(last))


class _Stop(Exception):
    """Raised by the trunk hook to skip the layers above the cached ones."""


class TopLayersPolicy(torch.nn.Module):
    """pi_theta(.|x) = softmax(head(norm(top layers(trunk(x))))) at the last position.

    Holds its own copies of the top layers and the final norm (the trained parameters, initialised at the
    pretrained weights so the policy starts at pi_ref) and shares the frozen rotary embedding and head.
    """

    def __init__(self, model: torch.nn.Module, top_k: int) -> None:
        """Copy the top ``top_k`` layers and the final norm of ``model``."""
        super().__init__()
        trainable_parameters(model, "top_layers", top_k)  # validates top_k; the copies below are what trains
        layers = _layers(model)
        self.layers = torch.nn.ModuleList(copy.deepcopy(layers[len(layers) - top_k :]))
        self.norm = copy.deepcopy(model.model.norm)
        self.rotary = model.model.rotary_emb
        self.head = model.get_output_embeddings()
        for p in self.parameters():
            p.requires_grad_(False)
        for p in (*self.layers.parameters(), *self.norm.parameters()):
            p.requires_grad_(True)

    def trainable(self) -> list[torch.nn.Parameter]:
        """The trained parameters (top layers and final norm)."""
        return [*self.layers.parameters(), *self.norm.parameters()]

    def logits(self, trunk: Trunk) -> torch.Tensor:
        """``(X, V)`` next-token logits after each prompt."""
        h = trunk.hidden
        positions = torch.arange(h.shape[1]).unsqueeze(0).expand(h.shape[0], -1)
        rotary = self.rotary(h, positions)
        for layer in self.layers:
            h = layer(h, position_embeddings=rotary, position_ids=positions)
        last = h[torch.arange(h.shape[0]), trunk.last]
        return self.head(self.norm(last)).float()

    def log_probs(self, trunk: Trunk) -> torch.Tensor:
        """``(X, V)`` log pi_theta(v|x)."""
        return torch.log_softmax(self.logits(trunk), dim=-1)

    @torch.no_grad()
    def distribution(self, trunk: Trunk, batch_size: int = 64) -> np.ndarray:
        """``(X, V)`` float64 pi_theta(.|x), computed without gradients in batches."""
        out = [
            torch.softmax(self.logits(trunk.rows(torch.arange(s, min(s + batch_size, len(trunk.last))))).double(), -1)
            for s in range(0, len(trunk.last), batch_size)
        ]
        return torch.cat(out).numpy()
