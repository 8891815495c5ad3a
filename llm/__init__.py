"""CAID on real causal language models: the parametrized dual method of arXiv 2505.19387 (Algorithms 1-3).

``python -m llm run --config FILE.toml`` runs one method at one threshold vector, ``python -m llm sweep``
several; :mod:`llm.methods` lists the methods. Modules: :mod:`llm.config` (typed configuration),
:mod:`llm.config_files` (read from TOML and ``--set`` overrides),
:mod:`llm.pipeline` (one run: the reference phase, then :mod:`llm.trainer`'s ``CAIDTrainer``: one-shot dual,
DPO epochs with on-policy dual steps, evaluation), :mod:`llm.reference_phase` (the cached reference phase),
:mod:`llm.dpo` (DPO loss, pseudo-labels, the frozen-trunk cache),
:mod:`llm.models` and :mod:`llm.scorers` (models and reward/utility scorers, loaded offline),
:mod:`llm.caid` (the CAID core: multipliers, dual step, loop), :mod:`llm.paired_statistics` (improvements with CIs),
:mod:`llm.run_files` (the run directory: atomic writes, lock, validated reads), :mod:`llm.run_schema`
(``summary.json`` and ``eval_scores.csv``), :mod:`llm.prompts` (prompt sources by spec, and prompts given as
objects), :mod:`llm.run_inputs` (objects given to :func:`run`), :mod:`llm.preference_pairs` (labelled preference
sets), :mod:`llm.policy_export` (``llm.export``: the trained policy as a ``save_pretrained`` or PEFT folder),
:mod:`llm.sweep`, :mod:`llm.distributed`.

The names below are re-exported lazily: ``import llm`` imports neither torch nor transformers, and changes no
environment variable. The toolkit reads the hub offline only where asked (``model.offline``, ``--offline``),
and always for the embedded default model, which needs no hub.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "METHODS",
    "REGISTRY",
    "CAIDTrainer",
    "Method",
    "Multipliers",
    "RunConfig",
    "build_scorer",
    "composite_reward",
    "dpo_epoch",
    "dpo_loss",
    "export",
    "load_config",
    "load_model",
    "method",
    "paired_improvement",
    "pseudo_labels",
    "run",
    "run_caid",
    "run_setup",
    "run_sweep",
    "sequence_logprobs",
]

_EXPORTS = {
    "METHODS": "llm.methods",
    "REGISTRY": "llm.methods",
    "Method": "llm.methods",
    "method": "llm.methods",
    "RunConfig": "llm.config",
    "load_config": "llm.config_files",
    "build_scorer": "llm.scorers",
    "dpo_loss": "llm.dpo",
    "export": "llm.policy_export",
    "pseudo_labels": "llm.dpo",
    "sequence_logprobs": "llm.dpo",
    "load_model": "llm.models",
    "paired_improvement": "llm.paired_statistics",
    "run_setup": "llm.pipeline",
    "run": "llm.pipeline",
    "run_sweep": "llm.sweep",
    "CAIDTrainer": "llm.trainer",
    "dpo_epoch": "llm.dpo",
    "Multipliers": "llm.caid",
    "composite_reward": "llm.caid",
    "run_caid": "llm.caid",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
