"""Which parameters train: the top decoder layers (and final norm), the whole model, or LoRA adapters (``peft``).

``model.train`` chooses (``top_layers``, ``full``, ``lora``); :func:`llm.learner.build_learner` calls these.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["apply_lora", "trainable_parameters"]


def _decoder_parts(model: torch.nn.Module) -> tuple[torch.nn.ModuleList, torch.nn.Module]:
    """The decoder-layer list and the final norm of a causal LM (Llama/Mistral/Qwen/GPT-2 style)."""
    candidates = [model]
    for attr in ("model", "transformer", "gpt_neox"):
        if isinstance(getattr(model, attr, None), torch.nn.Module):
            candidates.insert(0, getattr(model, attr))
    for base in candidates:
        layers = [getattr(base, a) for a in ("layers", "h") if isinstance(getattr(base, a, None), torch.nn.ModuleList)]
        norms = [getattr(base, a) for a in ("norm", "ln_f", "final_layer_norm") if hasattr(base, a)]
        norms = [n for n in norms if isinstance(n, torch.nn.Module)]
        if layers and norms:
            return layers[0], norms[0]
    raise ValueError(f"cannot find the decoder layers and final norm of {type(model).__name__}")


def trainable_parameters(model: torch.nn.Module, mode: str, top_k_layers: int = 2) -> list[torch.nn.Parameter]:
    """Choose which parameters train, set ``requires_grad`` accordingly, and return the trainable ones.

    Modes:
        ``"full"``: every parameter trains.
        ``"top_layers"``: only the last ``top_k_layers`` decoder layers and the final norm train; embeddings
        (hence a tied LM head), lower layers and an untied LM head are frozen (``requires_grad=False``), which
        also skips their backward pass. For LoRA adapters use :func:`apply_lora` instead.

    Args:
        model: A causal LM (Llama-style ``model.layers``/``model.norm``, or GPT-2-style ``h``/``ln_f``).
        mode: ``"full"`` or ``"top_layers"``.
        top_k_layers: Number of top decoder layers to train in ``"top_layers"`` mode.

    Returns:
        The trainable parameters (each once, tied weights included once), for the optimiser.

    Raises:
        ValueError: Unknown mode, or ``top_k_layers`` outside ``1..number of layers``.
    """
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())
    if mode != "top_layers":
        raise ValueError(f"unknown trainable-parameter mode {mode!r}; use 'full' or 'top_layers' (LoRA: apply_lora)")
    layers, norm = _decoder_parts(model)
    if not 1 <= top_k_layers <= len(layers):
        raise ValueError(f"top_k_layers must be in 1..{len(layers)} for this model, got {top_k_layers}")
    for p in model.parameters():
        p.requires_grad_(False)
    for module in (*layers[len(layers) - top_k_layers:], norm):
        for p in module.parameters():
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def apply_lora(
    model: torch.nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    seed: int = 0,
    *,
    dropout: float = 0.0,
    target_modules: Sequence[str] = (),
) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters (``peft``), by default on every linear layer except the output head.

    The base weights are frozen and each adapter starts at zero (B = 0), so the wrapped model computes
    exactly what ``model`` did; only the adapters' parameters have ``requires_grad``. The random A
    matrices are drawn from their own stream seeded with ``seed`` (torch's global RNG is untouched), so
    runs, and the ranks of a sharded run, start from the same adapters.

    Args:
        model: A causal LM.
        rank: LoRA rank r (the paper's runs use 8).
        alpha: LoRA scaling alpha (the paper's runs use 16).
        seed: Seed of the adapters' initialisation.
        dropout: Dropout on each adapter's input (in training mode only), in [0, 1).
        target_modules: Names (or name suffixes) of the modules that get adapters, e.g. ``("q_proj", "v_proj")``;
            empty: every linear layer except the output head (peft's ``"all-linear"``).

    Raises:
        ValueError: For a rank below 1, a dropout outside [0, 1), or target modules the model does not have.
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise ValueError(f"rank: must be >= 1, got {rank}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
    targets = list(target_modules) or "all-linear"
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, config)
        except ValueError as err:  # peft names the modules it did not find
            raise ValueError(f"model.lora_target_modules {list(target_modules)}: {err}") from None
