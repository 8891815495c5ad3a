"""CAID on real causal language models: the parametrized dual method of arXiv 2505.19387 (Algorithms 1-3).

``python -m llm run --config FILE.toml`` runs one method at one threshold vector, ``python -m llm sweep``
several; :mod:`llm.methods` lists the methods. Modules: :mod:`llm.config` (typed TOML configuration),
:mod:`llm.pipeline` (one run: the reference phase, then :mod:`llm.trainer`'s ``CAIDTrainer``: one-shot dual,
DPO epochs with on-policy dual steps, evaluation), :mod:`llm.reference_phase` (the cached reference phase),
:mod:`llm.dpo` (DPO loss, pseudo-labels, the frozen-trunk cache),
:mod:`llm.models` and :mod:`llm.scorers` (models and reward/utility scorers, loaded offline),
:mod:`llm.caid` (the CAID core: multipliers, dual step, loop), :mod:`llm.paired_statistics` (improvements with CIs),
:mod:`llm.run_files` (the run directory: atomic writes, lock, validated reads), :mod:`llm.run_schema`
(``summary.json`` and ``eval_scores.csv``), :mod:`llm.data` and :mod:`llm.reviews` (prompt sources),
:mod:`llm.preference_pairs` (labelled preference files), :mod:`llm.sweep`, :mod:`llm.distributed`.

The names below are re-exported lazily: ``import llm`` imports neither torch nor transformers.

Every Hugging Face hub call of the toolkit is offline (``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``, set
here before any of them is imported): models come from the embedded GGUF, local folders or the local cache,
and an unknown name fails at once instead of retrying the network.
"""

from __future__ import annotations

import importlib
import os
import sys
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
    "load_config": "llm.config",
    "build_scorer": "llm.scorers",
    "dpo_loss": "llm.dpo",
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


def offline_hub() -> None:
    """Put every Hugging Face hub call of this process offline (also when the hub was imported first)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # it read the environment at import
        constants.HF_HUB_OFFLINE = True


offline_hub()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
