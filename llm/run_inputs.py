"""The objects a caller passes to :func:`llm.run`: a model, its tokenizer, prompts, preferences, scorers.

:meth:`RunInputs.of` validates them before any model loads and :meth:`RunInputs.fingerprints` identifies them by
content: the fingerprints enter the reference-phase cache key and the run record (``config.json``), so a changed
model, tokenizer, dataset or scorer builds a new cache entry, and ``resume`` refuses a run started with other
objects.

* ``model``: a ``transformers`` causal LM (``PreTrainedModel``) or a ``peft`` ``PeftModel``; the run's pi_ref is
  a frozen copy of it (:func:`reference_from`; the object itself is not changed) and the policy starts from it.
  Weights are identified by every tensor's name, shape, dtype and its first and last MiB (as
  :func:`llm.models.folder_fingerprint` reads files), plus the model's class and configuration.
* ``tokenizer``: the model's tokenizer (required with ``model``); the run uses a copy (left padding, a pad token).
* ``prompts``: a ``datasets.Dataset``, a pandas DataFrame, a list of strings or a
  :class:`~llm.prompts.PromptSet`, in place of ``data.prompts`` (``data.limit`` still applies).
* ``preferences``: PeCAID's labelled pairs as a ``datasets.Dataset`` or DataFrame in either layout of
  :mod:`llm.preference_pairs`, in place of ``pecaid.preferences``.
* ``scorers``: the caller's scorers by name (:class:`llm.python_scorers.PythonScorer`), named by ``scorers.reward``
  and ``scorers.utilities``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llm.config import ModelConfig, RunConfig
from llm.preference_pairs import PreferenceData, preferences_from_object
from llm.prompts import PromptSet, content_key, prompts_from_object
from llm.python_scorers import PythonScorer, ScoreFunction, python_scorers
from llm.scorers import parse_scorer_spec

if TYPE_CHECKING:
    import torch

__all__ = ["RunInputs", "object_fingerprint", "reference_from", "tokenizer_fingerprint"]

def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def object_fingerprint(model: torch.nn.Module) -> dict[str, str]:
    """The class, configuration (and PEFT adapters' settings) and weights of a model object, by content.

    The weights are :func:`llm.models.module_fingerprint`: every byte of every tensor, as the cache keys files by
    every byte, so weights changed anywhere (not only near a tensor's ends) change the key.
    """
    from llm.models import module_fingerprint

    config = getattr(model, "config", None)
    described = config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else repr(config)
    peft = getattr(model, "peft_config", None)
    if peft:  # the adapters' settings (rank, alpha, targets)
        described += repr(sorted((k, v.to_dict()) for k, v in peft.items()))
    return {"class": type(model).__qualname__, "config": _sha256(described), "weights": module_fingerprint(model)}


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, str]:
    """The class and the full serialisation (fast tokenizers) or vocabulary and special tokens of ``tokenizer``."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps(
        [str(getattr(tokenizer, "chat_template", None)), repr(getattr(tokenizer, "special_tokens_map", {}))]
    )
    return {"class": type(tokenizer).__qualname__, "tokenizer": _sha256(body + extra)}


@dataclasses.dataclass(frozen=True, eq=False)
class RunInputs:
    """The objects a run takes instead of (or besides) configuration names, validated (:meth:`of`).

    Attributes:
        model: The causal LM pi_ref copies (None: ``model.name`` is loaded).
        tokenizer: A prepared copy of its tokenizer (left padding, a pad token), or None.
        prompts: The prompt set in place of ``data.prompts``, or None.
        preferences: PeCAID's labelled pairs in place of ``pecaid.preferences``, or None.
        scorers: The caller's scorers by name.
    """

    model: Any = None
    tokenizer: Any = None
    prompts: PromptSet | None = None
    preferences: PreferenceData | None = None
    scorers: Mapping[str, PythonScorer] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(
        cls,
        config: RunConfig,
        *,
        model: Any = None,
        tokenizer: Any = None,
        prompts: Any = None,
        preferences: Any = None,
        scorers: Mapping[str, ScoreFunction] | None = None,
    ) -> RunInputs:
        """Check what a caller passed against ``config`` (no model loads; a table's rows are read).

        Raises:
            TypeError: For an object of the wrong kind (named, with what to pass).
            ValueError: For a tokenizer without its model (or the reverse), a tokenizer whose ids the model has
                no embeddings for, preferences outside PeCAID, a bad prompt or preference row (named), a
                scorer name no spec uses, or a scorer spec that names no scorer.
        """
        if (model is None) != (tokenizer is None):
            raise ValueError("model= and tokenizer= go together: pass the model object with its tokenizer")
        prepared = None
        if model is not None:
            prepared = _check_model(model, tokenizer)
        scorers = python_scorers(scorers or {})
        specs = config.scorers.specs
        used = {parse_scorer_spec(spec, tuple(scorers))[1] for spec in specs}  # raises for an unknown name
        unused = [name for name in scorers if name not in used]
        if unused:
            raise ValueError(
                f"scorers {unused}: no spec names them; set scorers.reward or scorers.utilities to their names "
                f"(now {specs})"
            )
        prompt_set = None
        if prompts is not None:
            prompt_set = prompts_from_object(prompts, "prompts")
            if config.data.limit and config.data.limit < len(prompt_set):
                prompt_set = prompt_set.select(range(config.data.limit))
        if config.scorers.none and not config.pecaid.preferences and preferences is None:
            raise ValueError("scorers: without any scorer PeCAID learns from labelled pairs only; give "
                             "pecaid.preferences (a file or hf: spec) or llm.run(preferences=...)")  # fmt: skip
        if config.pecaid.objectives and not config.pecaid.preferences and preferences is None:
            raise ValueError("pecaid.objectives: only applies with labelled pairs; give pecaid.preferences (a file "
                             "or hf: spec) or llm.run(preferences=...), or leave it empty")  # fmt: skip
        pairs = None
        if preferences is not None:
            if config.method != "pecaid":
                raise ValueError(f"preferences= are PeCAID's labelled pairs; set method = 'pecaid' (now "
                                 f"{config.method!r})")  # fmt: skip
            pairs = preferences_from_object(preferences, config.pecaid.objectives or None)
        return cls(model, prepared, prompt_set, pairs, scorers)

    @property
    def empty(self) -> bool:
        """Whether nothing was passed (a run from configuration names alone)."""
        return self.model is None and self.prompts is None and self.preferences is None and not self.scorers

    def fingerprints(self) -> dict[str, Any]:
        """What identifies each object passed (None for the ones not passed), for cache keys and the run record."""
        return {
            "model": None if self.model is None else object_fingerprint(self.model),
            "tokenizer": None if self.tokenizer is None else tokenizer_fingerprint(self.tokenizer),
            "prompts": None if self.prompts is None else content_key(self.prompts),
            "preferences": None if self.preferences is None else _preferences_key(self.preferences),
            "scorers": {name: scorer.fingerprint for name, scorer in sorted(self.scorers.items())},
        }


def reference_from(model: torch.nn.Module, model_config: ModelConfig) -> torch.nn.Module:
    """pi_ref from a caller's model: a copy in ``model.dtype``.

    A ``PeftModel`` keeps its adapters with ``train = "lora"`` (they go on training) and has them merged into its
    weights for full or top-layer training; either way pi_ref computes what the caller's model computes.
    """
    from llm.models import DTYPES

    reference = copy.deepcopy(model)
    if hasattr(reference, "peft_config") and model_config.train != "lora":
        reference = reference.merge_and_unload()
    return reference.to(DTYPES[model_config.dtype])


def _preferences_key(data: PreferenceData) -> str:
    digest = hashlib.sha256(json.dumps([data.source, data.schema, data.objectives]).encode())
    for pair in data.pairs:
        digest.update(json.dumps([pair.prompt, pair.responses, pair.preferred]).encode())
    return digest.hexdigest()


def _check_model(model: Any, tokenizer: Any) -> Any:
    """The run's copy of ``tokenizer`` (left padding, a pad token) after checking the pair."""
    import torch

    from llm.models import prepare_tokenizer

    if not isinstance(model, torch.nn.Module) or not hasattr(model, "generate"):
        raise TypeError(
            f"model=: a transformers causal LM (PreTrainedModel) or a peft PeftModel, got {type(model).__name__}"
        )
    if not callable(tokenizer) or not hasattr(tokenizer, "apply_chat_template"):
        raise TypeError(f"tokenizer=: a transformers tokenizer, got {type(tokenizer).__name__}")
    embeddings = model.get_input_embeddings()
    if embeddings is not None and embeddings.num_embeddings < len(tokenizer):
        raise ValueError(
            f"tokenizer=: {len(tokenizer)} tokens, but the model embeds {embeddings.num_embeddings}; pass the "
            "model's own tokenizer (or resize the model's embeddings)"
        )
    return prepare_tokenizer(copy.deepcopy(tokenizer), type(model).__name__)
