"""A tiny one-token world: a random two-layer Llama over a 50-token vocabulary of known words."""

from __future__ import annotations

import types

import pytest

from tests.tiny_llama import tiny_llama

WORDS = [
    "good", "bad", "terrible", "great", "awful", "nice", "boring", "love", "hate", "fine", ",", " ", "", "the", "a",
    "x", "ok", "sad", "happy", "ugly", "wonderful", "poor", "best", "worst", "meh", "cool", "dull", "fun", "mess",
    "superb", "horrible", "calm", "angry", "kind", "cruel", "bright", "dark", "sweet", "bitter", "clean", "dirty",
    "safe", "danger", "win", "lose", "hope", "fear", "joy", "pain", ".",
]  # fmt: skip


class FakeTokenizer:
    """Characters to ids modulo the vocabulary; ``decode([v])`` is the v-th word."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> types.SimpleNamespace:
        """Token ids of ``text``."""
        return types.SimpleNamespace(input_ids=[ord(c) % len(WORDS) for c in text][:12])

    def decode(self, ids: list[int]) -> str:
        """The word of a single id."""
        return WORDS[ids[0]]


@pytest.fixture(scope="session")
def tiny() -> tuple[object, FakeTokenizer]:
    """The tiny model and its tokenizer."""
    return tiny_llama(vocab_size=len(WORDS), max_positions=64, seed=3), FakeTokenizer()
