"""Mixed precision for DPO steps (``training.mixed_precision``): autocast forward passes, float32 trained weights.

``"bf16"`` and ``"fp16"`` run each forward pass under ``torch.autocast`` in that dtype (matrix products in 16 bits,
reductions such as the log-softmax in float32) while the trained weights, their gradients and the optimiser
state stay float32. ``"fp16"`` has 5 exponent bits, so small gradients would underflow: its loss is multiplied by
a dynamic scale before the backward pass and the gradients divided by it before the optimiser step
(``torch.amp.GradScaler``: a step whose gradients hold inf or NaN is skipped and the scale halved). The scale is
part of the training state a checkpoint saves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch

__all__ = ["MixedPrecision", "Precision"]

Precision = Literal["no", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    """Autocast and (fp16) loss scaling for one model's DPO steps.

    Args:
        mode: ``"no"`` (plain float32 or the weights' own dtype), ``"bf16"`` or ``"fp16"``.
        device: Where the model runs (its type picks the autocast backend).
    """

    def __init__(self, mode: Precision = "no", device: torch.device | str = "cpu") -> None:
        if mode not in ("no", *_DTYPES):
            raise ValueError(f"training.mixed_precision: use 'no', 'bf16' or 'fp16', got {mode!r}")
        self.mode = mode
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if mode == "fp16" else None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward pass's context: autocast in the mode's dtype (nothing for ``"no"``)."""
        if self.mode == "no":
            yield
            return
        with torch.autocast(self.device_type, dtype=_DTYPES[self.mode]):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, the loss scaled first under fp16."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser step (under fp16: on unscaled gradients, skipped on inf/NaN, then the scale updated)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The loss scale and its growth tracker (empty without fp16): plain numbers, stored as JSON."""
        return {} if self.scaler is None else {k: float(v) for k, v in self.scaler.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a checkpoint of the same mode)."""
        if self.scaler is not None and state:
            restored = dict(state)
            for key in ("growth_interval", "_growth_tracker"):
                if key in restored:
                    restored[key] = int(restored[key])
            self.scaler.load_state_dict(restored)
