"""The terms of a DPO step's memory formula, measured on small Llama models, then evaluated for a 7B model.

Usage::

    python -m benchmarks.memory_terms --out DIR [--tokens 64 128] [--smollm2]

What a DPO step of a LoRA policy holds besides the weights is the activations autograd saves for the backward
pass. They are counted exactly, not estimated: every tensor the forward pass of :func:`llm.dpo.sequence_logprobs`
saves for backward goes through a ``torch.autograd.graph.saved_tensors_hooks`` pack hook, and the distinct
storages that are not parameters are summed. The models are Llama decoders (the paper's Alpaca-7B is a LLaMA-7B)
in bfloat16 with float32 LoRA adapters (rank 8, every linear layer), run under bfloat16 autocast as
``training.mixed_precision = "bf16"`` runs them, at several widths h, MLP widths i, depths L and vocabularies V.

Least-squares fits of the saved bytes per token give the coefficients of the terms in :data:`TERMS` (each fit is
checked on configurations left out of it, and with ``--smollm2`` on SmolLM2-135M's shape): without checkpointing,
``L (a h + b i + c heads + d) + e V + f h``; with gradient checkpointing (non-reentrant, per decoder layer) the
forward keeps each layer's input, ``a L h + e V + f h + g``, and the backward recomputes one layer at a time, whose
saved bytes ``a h + b i + c heads + d`` come on top (measured as the difference of 2- and 1-layer models). The
backward also holds the gradient of the float32 logits while their saved copy is alive: one more ``4 V`` bytes per
token at its start. The per-token saved bytes of the attention are checked to be the same at two sequence lengths
(no T^2 term: the CPU's SDPA kernel saves O(T) per head, as flash attention does on a GPU).

The weights, LoRA optimiser state and KV cache are counted from the shapes (exact byte counts, no measurement
needed): parameters of a Llama model, 16 bytes per trainable LoRA parameter (float32 weight, gradient, AdamW's
two moments), and ``2 L h`` values per token of KV cache. Writes ``DIR/memory_terms.json`` and
``DIR/memory_terms.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm.dpo import sequence_logprobs
from llm.run_files import machine_description, package_versions, write_atomic
from llm.trainable import apply_lora

VERSIONS = ("caid-toolkit", "torch", "transformers", "peft", "numpy")
LORA_RANK = 8
# (h, i, L, V, heads): the fit set, then configurations held out of the fit.
FIT_SHAPES = [
    (64, 128, 1, 1000, 4), (64, 256, 2, 1000, 4), (128, 256, 2, 2000, 4), (128, 512, 3, 1000, 8),
    (96, 384, 1, 3000, 4), (64, 192, 3, 2500, 2), (160, 320, 2, 1500, 4), (96, 192, 4, 1200, 6),
    (128, 640, 1, 500, 2), (192, 384, 3, 800, 8),
]  # fmt: skip
HELD_OUT = [(192, 768, 2, 4000, 6), (128, 352, 4, 3000, 4)]
SMOLLM2 = (576, 1536, 30, 49152, 9)  # SmolLM2-135M's shape (3 KV heads there; here as many as query heads)
LLAMA_7B = {"h": 4096, "i": 11008, "L": 32, "V": 32000, "heads": 32}
"""LLaMA-7B (Alpaca-7B-reproduced, the paper's pi_ref, and the Beaver-7B reward and cost models' trunk)."""


def llama(h: int, i: int, layers: int, vocab: int, heads: int) -> torch.nn.Module:
    """A random bfloat16 Llama of that shape with float32 LoRA adapters on every linear layer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=h, intermediate_size=i, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, max_position_embeddings=4096, tie_word_embeddings=False,
        attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    return apply_lora(model, LORA_RANK, 16.0, seed=0)


def saved_bytes(model: torch.nn.Module, batch: int, tokens: int, checkpointing: bool) -> int:
    """Bytes of the distinct non-parameter storages the forward pass saves for backward (one DPO forward)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    model.train()
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, vocab, (tokens // 4,), generator=generator).tolist() for _ in range(batch)]
    responses = [torch.randint(1, vocab, (tokens - tokens // 4,), generator=generator).tolist() for _ in range(batch)]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logp = sequence_logprobs(model, prompts, responses, pad_id=0)
    logp.sum().backward()  # the graph is complete (and freed)
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


TERMS: dict[str, tuple[str, ...]] = {
    "saved_per_token": ("L*h", "L*i", "L*heads", "L", "V", "h"),
    "checkpointed_per_token": ("L*h", "V", "h", "1"),
    "one_layer_per_token": ("h", "i", "heads", "1"),
}
"""The regressors of each fitted quantity (bytes per token)."""


def features(terms: tuple[str, ...], shape: dict[str, int]) -> list[float]:
    """The values of ``terms`` (products of ``h``, ``i``, ``L``, ``V``, ``heads``; ``1``) at ``shape``."""
    return [float(np.prod([shape[f] for f in term.split("*")])) if term != "1" else 1.0 for term in terms]


def parameters(h: int, i: int, layers: int, vocab: int, tied: bool = False) -> int:
    """Parameters of a Llama decoder: embeddings (and head), 4 h^2 attention, 3 h i MLP and 2 norms per layer."""
    return vocab * h * (1 if tied else 2) + layers * (4 * h * h + 3 * h * i + 2 * h) + h


def lora_parameters(h: int, i: int, layers: int, rank: int = LORA_RANK) -> int:
    """LoRA parameters on every linear layer of a decoder: r (in + out) for q, k, v, o (h x h), gate, up, down."""
    return layers * rank * (4 * 2 * h + 3 * (h + i))


def measure(shapes: list[tuple[int, int, int, int, int]], batch: int, tokens: int) -> list[dict[str, Any]]:
    """Saved bytes per token of each shape: whole forward, checkpointed forward, and one decoder layer."""
    rows = []
    for h, i, layers, vocab, heads in shapes:
        model = llama(h, i, layers, vocab, heads)
        start = time.perf_counter()
        full = saved_bytes(model, batch, tokens, checkpointing=False)
        checkpointed = saved_bytes(model, batch, tokens, checkpointing=True)
        one_layer = saved_bytes(llama(h, i, 2, vocab, heads), batch, tokens, False) - saved_bytes(
            llama(h, i, 1, vocab, heads), batch, tokens, False
        )
        rows.append({
            "h": h, "i": i, "L": layers, "V": vocab, "heads": heads, "batch": batch, "tokens": tokens,
            "saved_per_token": full / (batch * tokens), "checkpointed_per_token": checkpointed / (batch * tokens),
            "one_layer_per_token": one_layer / (batch * tokens), "seconds": time.perf_counter() - start,
        })  # fmt: skip
    return rows


def fit(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Least-squares coefficients of :data:`TERMS` ``[key]`` over the measured rows."""
    x = np.array([features(TERMS[key], r) for r in rows])
    coefficients, *_ = np.linalg.lstsq(x, np.array([r[key] for r in rows]), rcond=None)
    return dict(zip(TERMS[key], map(float, coefficients), strict=True))


def predict(coefficients: dict[str, float], shape: dict[str, int]) -> float:
    """Bytes per token at ``shape`` from fitted coefficients."""
    return float(np.dot(list(coefficients.values()), features(tuple(coefficients), shape)))


def seven_b(coefficients: dict[str, dict[str, float]], step_tokens: int, kv_tokens: int) -> dict[str, float]:
    """Bytes per component of the paper's LoRA run on one GPU, from the fitted terms and exact counts."""
    h, i, layers, vocab = LLAMA_7B["h"], LLAMA_7B["i"], LLAMA_7B["L"], LLAMA_7B["V"]
    p = parameters(h, i, layers, vocab)
    lora = lora_parameters(h, i, layers)
    peak = (
        predict(coefficients["checkpointed_per_token"], LLAMA_7B)
        + predict(coefficients["one_layer_per_token"], LLAMA_7B)
        + 4 * vocab  # the float32 logits' gradient at the start of the backward pass
    )
    return {
        "parameters": p,
        "lora_parameters": lora,
        "policy_weights_bf16": 2 * p,
        "reference_weights_bf16": 2 * p,
        "reward_and_cost_models_bf16": 2 * 2 * (p - vocab * h),  # a score head in place of the LM head
        "lora_weights_grads_adamw_fp32": 16 * lora,
        "activations_saved_no_checkpointing": predict(coefficients["saved_per_token"], LLAMA_7B) * step_tokens,
        "activations_peak_checkpointing": peak * step_tokens,
        "kv_cache_generation_bf16": 2 * layers * h * 2 * kv_tokens,
        "step_tokens": step_tokens,
        "kv_tokens": kv_tokens,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, nargs=2, default=[64, 128], help="two sequence lengths (T^2 check)")
    parser.add_argument("--batch", type=int, default=2, help="sequences per forward")
    parser.add_argument("--smollm2", action="store_true", help="also check the fit on SmolLM2-135M's shape")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    short, long = args.tokens
    rows = measure(FIT_SHAPES, args.batch, long)
    held = measure(HELD_OUT + ([SMOLLM2] if args.smollm2 else []), args.batch, long)
    lengths = measure(FIT_SHAPES[:2], args.batch, short)
    coefficients = {key: fit(rows, key) for key in TERMS}
    checks = [
        {
            **{k: r[k] for k in ("h", "i", "L", "V", "heads")},
            **{f"{key}_measured": r[key] for key in coefficients},
            **{f"{key}_predicted": predict(c, r) for key, c in coefficients.items()},
        }
        for r in held
    ]
    # The paper's step on one GPU: 7 pairs = 14 sequences of up to 512 + ~100 prompt tokens, padded to the longest;
    # generation batches of 32 sequences of the same length.
    budget = seven_b(coefficients, step_tokens=14 * 612, kv_tokens=32 * 612)
    result = {
        "coefficients": coefficients, "fit_rows": rows, "held_out": checks,
        "length_check": [
            {"h": a["h"], "L": a["L"], f"T{short}": b["saved_per_token"], f"T{long}": a["saved_per_token"]}
            for a, b in zip(rows[:2], lengths, strict=True)
        ],
        "llama_7b": LLAMA_7B, "llama_7b_bytes": budget,
        "machine": machine_description(), "versions": package_versions(VERSIONS),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "memory_terms.json", json.dumps(result, indent=2) + "\n")
    gib = 2.0**30
    lines = ["| component (LLaMA-7B, one GPU) | GiB |", "|---|---:|"]
    counts = ("parameters", "lora_parameters", "step_tokens", "kv_tokens")
    lines += [f"| {k} | {v / gib:.2f} |" for k, v in budget.items() if k not in counts]
    write_atomic(args.out / "memory_terms.md", "\n".join(lines) + "\n")
    print(json.dumps({k: result[k] for k in ("coefficients", "held_out", "length_check")}, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
