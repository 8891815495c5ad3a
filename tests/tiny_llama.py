"""A randomly initialised two-layer Llama with a small vocabulary, for tests that need no tokenizer."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(vocab_size: int = 50, max_positions: int = 64, seed: int = 0) -> LlamaForCausalLM:
    """Width 16, two layers, two heads, in eval mode; weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=max_positions,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()
