"""The method registry (llm.methods): one definition read by the config, the CLI, the sweep and the pipeline."""

import subprocess
import sys
import typing

import numpy as np
import pytest

from llm import methods
from llm.config import RunConfig


def test_registry_matches_the_config_literal_and_derived_tuples():
    hints = typing.get_type_hints(RunConfig)
    assert typing.get_args(hints["method"]) == methods.METHODS == tuple(methods.REGISTRY)
    assert methods.DPO_BASELINES == ("dpo_h", "dpo_g")
    assert set(methods.CONSTRAINED_METHODS) == {"caid", "one_shot", "pecaid"}
    assert set(methods.SWEEP_DEFAULT_METHODS) <= set(methods.METHODS)
    assert len({m.color for m in methods.REGISTRY.values()}) == len(methods.REGISTRY)


def test_pseudo_label_weights_follow_the_paper():
    """Composite w r + lambda^T g of each method (Algorithm 2; DPO_h and DPO_s of Fig. 1), written out by hand."""
    one_shot = np.array([0.7, 0.2])
    expected = {
        "caid": (1.0, [0.7, 0.2], True),
        "one_shot": (1.0, [0.7, 0.2], False),
        "pecaid": (1.0, [0.7, 0.2], True),
        "dpo_h": (1.0, [0.0, 0.0], False),
        "dpo_g": (0.0, [1.0, 0.0], False),
    }
    for key, (weight, lam, steps) in expected.items():
        m = methods.method(key)
        assert m.reward_weight == weight and m.dual_steps is steps
        np.testing.assert_array_equal(m.initial_multipliers(one_shot), lam)
    with pytest.raises(ValueError, match="method: use one of caid"):
        methods.method("ppo")


def test_cli_help_shows_the_choices_and_the_default_methods():
    run = subprocess.run(
        [sys.executable, "-m", "llm", "sweep", "--help"], capture_output=True, text=True, check=True
    )
    assert "{caid,one_shot,dpo_h,dpo_g,pecaid,reference}" in run.stdout.replace("\n", "").replace(" ", "")
    assert "default: caid one_shot dpo_h dpo_g" in " ".join(run.stdout.split())
    run = subprocess.run([sys.executable, "-m", "llm", "run", "--help"], capture_output=True, text=True, check=True)
    assert "[one of: float32, bfloat16]" in " ".join(run.stdout.split())
