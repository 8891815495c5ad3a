"""Labelled preference pairs read from a file: the data of PeCAID (Algorithm 3) at paper scale.

PeCAID assumes a preference set of tuples ``(x, y_1, y_0, 1_r(y_1 > y_0), {1_{g_i}(y_1 > y_0)})``: one pair of
responses per row and one human (or AI) label per objective, with no reward or utility model. This module
reads such a set, validates every row, and returns typed frozen records (:class:`PreferenceData`).

**Accepted schemas** (detected from the first record's fields; JSON lines ``.jsonl``/``.json`` -- a ``.json``
file holding one array of objects works too -- ``.parquet``, an ``hf:<dataset>[:<split>[:<prompt column>]]``
spec read with ``datasets`` (:mod:`llm.prompts.hf_datasets`), or in memory a ``datasets.Dataset``, a pandas
DataFrame or a list of dicts, :func:`preferences_from_object`):

* ``pku`` (PKU-SafeRLHF's layout): ``prompt``, ``response_0``, ``response_1`` and, per objective ``<o>``, a
  field ``<o>_response_id`` holding the index (0 or 1) of the preferred response. PKU-SafeRLHF's
  ``better_response_id`` and ``safer_response_id`` give the objectives ``better`` (helpfulness, the reward r)
  and ``safer`` (safety, the utility g). Its other fields (``is_response_0_safe``, severity levels, ...) are
  ignored.
* ``chosen_rejected``: ``prompt`` and, per objective ``<o>``, ``<o>_chosen`` and ``<o>_rejected`` (the two
  responses' texts, as that objective orders them). Every objective must order the same two texts. A file
  with plain ``chosen``/``rejected`` fields is the single objective ``preference``. The pair's ``response_0``
  is the first objective's chosen text. (HH-RLHF's ``chosen``/``rejected`` hold the whole dialogue: split the
  prompt off into a ``prompt`` field first.)

Other fields are ignored. Every row must carry every selected objective; labels are the numbers 0 or 1
(``1.0`` is accepted, as Parquet stores an integer column with gaps as floats; ``true`` or ``"1"`` are refused:
a label in another encoding, guessed, could silently flip preferences; a missing label is an error). A pair whose two
responses are identical carries no preference and is refused. Prompts may repeat (several pairs per prompt).

**How PeCAID consumes it** (``pecaid.preferences``, :func:`llm.pecaid.load_labelled_pairs`): Algorithm 3, line 3
pre-aligns pi_r and each pi_{g_i} by DPO from pi_ref on these pairs, pi_r on the reward objective's labels and
pi_{g_i} on the i-th utility's (``pecaid.objectives`` names them, e.g. ``better``, ``safer``), in place of the
simulated annotators. Each pair's two responses are tokenised as the run feeds its model (chat template, then
the end-of-sequence token) and their pi_ref log-probabilities computed once. The implicit rewards
``beta log(pi / pi_ref)`` (:mod:`llm.implicit_rewards`) then score pi_ref's sampled pairs in the CAID epochs
(line 8) and the on-policy samples of the dual steps (line 7, with the KL correction). Thresholds b are then in
implicit-reward units; scorers, when available, serve only the evaluation.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from llm.prompts.files import read_records
from llm.prompts.hf_datasets import HF_PREFIX, hf_records
from llm.prompts.tables import Records, table_records

__all__ = ["PreferenceData", "PreferencePair", "Schema", "load_preference_pairs", "preferences_from_object"]

Schema = Literal["pku", "chosen_rejected"]

_PKU_LABEL = re.compile(r"^(.+)_response_id$")
_CHOSEN = re.compile(r"^(.+)_chosen$")
_SCHEMAS = (
    "pku: prompt, response_0, response_1, <objective>_response_id (0 or 1) per objective "
    "(PKU-SafeRLHF: better_response_id, safer_response_id); "
    "chosen_rejected: prompt, <objective>_chosen and <objective>_rejected per objective (or plain chosen/rejected)"
)


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """One labelled pair.

    Attributes:
        prompt: the prompt x.
        responses: the two responses ``(y_0, y_1)``, distinct.
        preferred: per objective (in :attr:`PreferenceData.objectives` order), the index 0 or 1 of the preferred
            response.
    """

    prompt: str
    responses: tuple[str, str]
    preferred: tuple[Literal[0, 1], ...]


@dataclasses.dataclass(frozen=True)
class PreferenceData:
    """The pairs of one file (or dataset, or table), every row validated.

    Attributes:
        source: the file (dataset, table) read.
        schema: which layout it had.
        objectives: the objectives' names, in label order.
        pairs: the rows, in file order.
    """

    source: str
    schema: Schema
    objectives: tuple[str, ...]
    pairs: tuple[PreferencePair, ...]

    def __len__(self) -> int:
        return len(self.pairs)

    def prefer_1(self, objective: str) -> np.ndarray:
        """``(n_pairs,)`` booleans: True where ``response_1`` is preferred under ``objective``.

        Raises:
            ValueError: for an objective the file does not label (the message lists those it does).
        """
        if objective not in self.objectives:
            raise ValueError(
                f"{self.source}: no labels for objective {objective!r}; it labels {', '.join(self.objectives)}"
            )
        i = self.objectives.index(objective)
        return np.array([pair.preferred[i] == 1 for pair in self.pairs], dtype=bool)


def _string(record: dict, field: str, where: str) -> str:
    if field not in record:
        fields = ", ".join(map(str, record)) or "none"
        raise ValueError(f"{where}: missing field {field!r} (fields: {fields}); expected schemas: {_SCHEMAS}")
    value = record[field]
    if not isinstance(value, str):
        raise ValueError(
            f"{where}: field {field!r} is {value!r} ({type(value).__name__}), expected a string; fill it in or drop "
            "the row"
        )
    return value


def _label(record: dict, field: str, where: str) -> Literal[0, 1]:
    if field not in record:
        raise ValueError(f"{where}: missing label field {field!r}; every row needs a label for every objective")
    value = record[field]
    if isinstance(value, float) and math.isnan(value):  # Parquet's missing integer (the column becomes float)
        raise ValueError(f"{where}: label field {field!r} is missing (NaN); label the pair or drop the row")
    # Numbers equal to 0 or 1 only (1.0 from a float column is fine): true/false or "1" suggest another
    # encoding, and guessing could flip labels.
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or value not in (0, 1):
        raise ValueError(
            f"{where}: field {field!r} is {value!r} ({type(value).__name__}); expected the number 0 or 1 (the "
            "index of the preferred response)"
        )
    return 0 if int(value) == 0 else 1


def _detect(first: dict, where: str) -> tuple[Schema, tuple[str, ...]]:
    fields = [str(f) for f in first]
    if "response_0" in fields or "response_1" in fields:
        extra = sorted(f for f in fields if re.fullmatch(r"response_\d+", f) and f not in ("response_0", "response_1"))
        if extra:
            raise ValueError(f"{where}: has {', '.join(extra)}; a pair has exactly response_0 and response_1 (drop "
                             "the others or split the row into pairs)")  # fmt: skip
        objectives = tuple(m.group(1) for f in fields if (m := _PKU_LABEL.match(f)))
        if not objectives:
            raise ValueError(
                f"{where}: has response_0/response_1 but no <objective>_response_id label field (PKU-SafeRLHF: "
                "better_response_id, safer_response_id); add the labels"
            )
        return "pku", objectives
    objectives = tuple(m.group(1) for f in fields if (m := _CHOSEN.match(f)))
    if not objectives and "chosen" in fields:
        objectives = ("preference",)
    if not objectives:
        raise ValueError(f"{where}: no preference fields found (fields: {', '.join(fields) or 'none'}); "
                         f"expected schemas: {_SCHEMAS}")  # fmt: skip
    return "chosen_rejected", objectives


def _chosen_rejected_fields(objective: str, plain: bool) -> tuple[str, str]:
    return ("chosen", "rejected") if plain else (f"{objective}_chosen", f"{objective}_rejected")


def _pair(record: dict, where: str, schema: Schema, objectives: Sequence[str], plain: bool, prompt_field: str):
    prompt = _string(record, prompt_field, where)
    if not prompt.strip():
        raise ValueError(f"{where}: field {prompt_field!r} is empty; fill in the prompt or drop the row")
    if schema == "pku":
        responses = (_string(record, "response_0", where), _string(record, "response_1", where))
        preferred = tuple(_label(record, f"{o}_response_id", where) for o in objectives)
    else:
        preferred_list: list[Literal[0, 1]] = []
        responses = ()
        for objective in objectives:
            chosen_field, rejected_field = _chosen_rejected_fields(objective, plain)
            chosen, rejected = _string(record, chosen_field, where), _string(record, rejected_field, where)
            if not responses:
                responses = (chosen, rejected)
            if {chosen, rejected} != set(responses):
                raise ValueError(
                    f"{where}: {chosen_field!r}/{rejected_field!r} are not the two responses of "
                    f"{_chosen_rejected_fields(objectives[0], plain)[0]!r}/"
                    f"{_chosen_rejected_fields(objectives[0], plain)[1]!r}; every objective must order the same pair"
                )
            preferred_list.append(0 if chosen == responses[0] else 1)
        preferred = tuple(preferred_list)
    if responses[0] == responses[1]:
        raise ValueError(f"{where}: the two responses are identical, so no preference can hold; drop the row")
    return PreferencePair(prompt, responses, preferred)


def load_preference_pairs(
    path: Path | str, objectives: Sequence[str] | None = None, prompt_field: str = "prompt", *, offline: bool = False
) -> PreferenceData:
    """Read and validate labelled preference pairs (schemas in the module docstring).

    Args:
        path: a ``.jsonl``, ``.json`` or ``.parquet`` file, or an ``hf:<dataset>[:<split>[:<prompt column>]]``
            spec (whose column, ``prompt`` by default, is then the prompt field).
        objectives: the objectives to read, in this order (e.g. ``["better", "safer"]``: the reward first, then
            the utilities); None reads every objective the first record labels, in its field order.
        prompt_field: name of the prompt field of a file.
        offline: read an ``hf:`` dataset from the local Hugging Face cache only.

    Returns:
        The :class:`PreferenceData`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file, the row (1-based line, or 0-based Parquet row) and the field, with the fix:
            unknown extension, invalid JSON, an empty file, an unknown schema, a missing or mistyped field, a
            label other than 0/1, identical responses, objectives that order different pairs, or an objective
            the file does not label.
    """
    if isinstance(path, str) and path.startswith(HF_PREFIX):
        spec, records = hf_records(path, offline=offline)
        return preference_data(records, spec.name, objectives, spec.column)
    path = Path(path)
    records = read_records(path, "preference file", f"one preference pair per record ({_SCHEMAS})")
    return preference_data(records, str(path), objectives, prompt_field)


def preferences_from_object(
    table: object, objectives: Sequence[str] | None = None, prompt_field: str = "prompt", name: str = "preferences"
) -> PreferenceData:
    """Labelled pairs from a ``datasets.Dataset``, a pandas DataFrame or a list of dicts (either schema).

    Raises:
        TypeError: For another type.
        ValueError: As :func:`load_preference_pairs`, naming the row.
    """
    return preference_data(table_records(table, name), name, objectives, prompt_field)


def preference_data(
    records: Records, source: str, objectives: Sequence[str] | None = None, prompt_field: str = "prompt"
) -> PreferenceData:
    """Validate ``(location, record)`` pairs as labelled preference pairs (:func:`load_preference_pairs`).

    Raises:
        ValueError: For no records, an unknown schema, or a bad row (named by its location).
    """
    if not records:
        raise ValueError(f"{source}: no records; it must hold one preference pair per record ({_SCHEMAS})")
    first_where, first = records[0]
    schema, found = _detect(first, first_where)
    plain = schema == "chosen_rejected" and found == ("preference",) and "preference_chosen" not in first
    if objectives is None:
        selected = found
    else:
        selected = tuple(objectives)
        missing = [o for o in selected if o not in found]
        if not selected or len(set(selected)) != len(selected) or missing:
            raise ValueError(
                f"{source}: objectives {list(selected)!r} must be distinct and labelled by the file; it labels "
                f"{', '.join(found)}"
            )
    pairs = tuple(_pair(record, where, schema, selected, plain, prompt_field) for where, record in records)
    return PreferenceData(source, schema, selected, pairs)
