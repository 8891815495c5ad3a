"""Simulated kills for the resume tests: a function that dies on its n-th call, and call counting."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, die_at: int | None = None) -> list[int]:
    """Wrap ``owner.name`` to record its calls; with ``die_at``, raise ``KeyboardInterrupt`` on that call.

    Returns:
        The call log (one entry per call).
    """
    real, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == die_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@contextlib.contextmanager
def killed_on_call(owner: object, name: str, n: int) -> Iterator[None]:
    """Within the block ``owner.name`` dies on its ``n``-th call, and the block must end by that kill."""
    with pytest.MonkeyPatch.context() as patch:
        count_calls(patch, owner, name, die_at=n)
        with pytest.raises(KeyboardInterrupt):
            yield
