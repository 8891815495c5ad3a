"""The ``hf:<dataset>[:<split>[:<column>]]`` source: a Hugging Face dataset, read with ``datasets``.

``<dataset>`` is a hub id (``PKU-Alignment/PKU-SafeRLHF``), a folder written by ``Dataset.save_to_disk`` or
``DatasetDict.save_to_disk`` (read with ``datasets.load_from_disk``; a saved ``Dataset`` holds one split, which
the spec must not contradict), or a folder of data files (read with
``datasets.load_dataset``). ``<split>`` defaults to ``train`` and ``<column>`` to ``prompt``; the same spec names
a labelled preference set (:mod:`llm.preference_pairs`), the column then being its prompt field.

Offline only where asked: with ``offline=True`` the hub's offline switch is on for the duration of the load
(:func:`hub_offline`) and put back after it; nothing changes ``os.environ``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm.prompts.prompt_set import PromptSet
from llm.prompts.tables import Records, prompts_from_records, table_records

__all__ = ["HF_PREFIX", "HFSpec", "hf_prompts", "hf_records", "hub_offline", "load_hf_table", "parse_hf_spec"]

HF_PREFIX = "hf:"
_FORM = "hf:<dataset>[:<split>[:<column>]] (e.g. hf:PKU-Alignment/PKU-SafeRLHF:train:prompt)"
_DATASETS_HINT = "pip install datasets (or pip install 'caid-toolkit[llm]')"


@dataclasses.dataclass(frozen=True)
class HFSpec:
    """A parsed ``hf:`` spec: the dataset (hub id or folder), its split and the prompt column."""

    dataset: str
    split: str = "train"
    column: str = "prompt"

    @property
    def name(self) -> str:
        """The prompt set's name: ``hf:<dataset>:<split>``."""
        return f"{HF_PREFIX}{self.dataset}:{self.split}"


def parse_hf_spec(spec: str) -> HFSpec:
    """Split ``hf:<dataset>[:<split>[:<column>]]`` into its parts (no I/O).

    Raises:
        ValueError: For a spec without the prefix, without a dataset, with an empty part or more than three.
    """
    if not isinstance(spec, str) or not spec.startswith(HF_PREFIX):
        raise ValueError(f"{spec!r} is not an hf: spec; use {_FORM}")
    parts = [part.strip() for part in spec.removeprefix(HF_PREFIX).split(":")]
    if len(parts) > 3 or not all(parts):
        raise ValueError(f"{spec!r}: empty or extra ':' parts; use {_FORM}")
    return HFSpec(*parts)


@contextlib.contextmanager
def hub_offline(offline: bool = True) -> Iterator[None]:
    """Turn the Hugging Face hub's offline switch on while the block runs (a no-op when ``offline`` is False).

    ``huggingface_hub`` and ``datasets`` read ``HF_HUB_OFFLINE`` once, at import, into module constants; this sets
    those constants and restores them afterwards, so the rest of the process keeps its own setting.
    """
    if not offline:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def load_hf_table(spec: HFSpec, *, offline: bool = False) -> Any:
    """The ``datasets.Dataset`` a spec names (one split).

    Raises:
        ValueError: If ``datasets`` is missing, the dataset cannot be loaded (offline: not in the local cache),
            or the split does not exist (the message lists the splits there are).
    """
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{spec.name}: reading hf: datasets needs the datasets package: {_DATASETS_HINT}") from None
    folder = Path(spec.dataset).expanduser()
    saved = folder.is_dir() and any((folder / f).is_file() for f in ("dataset_dict.json", "state.json"))
    try:
        with hub_offline(offline):
            if saved:
                loaded = datasets.load_from_disk(str(folder))
            else:
                loaded = datasets.load_dataset(spec.dataset, split=spec.split)
    except ValueError as err:
        if "split" in str(err).lower():
            raise ValueError(f"{spec.name}: no split {spec.split!r} ({err}); name one it has") from None
        raise ValueError(f"{spec.name}: cannot be read ({err})") from None
    except Exception as err:  # hub errors, missing files, connection errors: each with its own type
        where = "the local Hugging Face cache (offline)" if offline else "a folder or on the hub"
        raise ValueError(
            f"{spec.name}: dataset {spec.dataset!r} not found in {where} ({type(err).__name__}: {err}); pass a "
            f"folder written by save_to_disk, a folder of data files, or a hub id"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        if spec.split not in loaded:
            raise ValueError(f"{spec.name}: no split {spec.split!r}; the dataset has {', '.join(sorted(loaded))}")
        loaded = loaded[spec.split]
    elif getattr(loaded, "split", None) is not None and str(loaded.split) != spec.split:
        # One saved split: the spec must not name another (its default, train, names the usual one).
        raise ValueError(f"{spec.name}: the folder holds the split {str(loaded.split)!r} only; name that one")
    return loaded


def hf_records(spec: str, limit: int | None = None, *, offline: bool = False) -> tuple[HFSpec, Records]:
    """The parsed spec and the first ``limit`` rows (None: all) of the dataset it names."""
    parsed = parse_hf_spec(spec)
    return parsed, table_records(load_hf_table(parsed, offline=offline), parsed.name, limit)


def hf_prompts(spec: str, limit: int | None = None, *, offline: bool = False) -> PromptSet:
    """The prompts of an ``hf:`` spec's column (with PKU-SafeRLHF's ``response_i`` columns as fixed responses).

    Args:
        spec: ``hf:<dataset>[:<split>[:<column>]]``.
        limit: Keep the first this many rows; None keeps all.
        offline: Read the hub's local cache only.

    Returns:
        A ``PromptSet`` named ``hf:<dataset>:<split>``, duplicates kept.

    Raises:
        ValueError: For a bad spec, a dataset that cannot be read, or a row without a string prompt (named).
    """
    parsed, records = hf_records(spec, limit, offline=offline)
    return prompts_from_records(records, parsed.name, parsed.column)
