"""The design calculator behind the study's sizes: its bootstrap foil, its simulated arms and its table."""

import numpy as np
import pytest

from analysis.claims import TRACKS
from analysis.crossed_anova import estimate
from benchmarks.study_precision import Design, StudyModel, bootstrap_variance, evaluate, simulate_arms, truths


def test_closed_form_is_the_crossed_bootstraps_variance():
    """Resampling seeds and prompts independently (the previous study's interval), 20,000 times."""
    rng = np.random.default_rng(0)
    values = rng.normal(0, np.sqrt(0.05), (3, 1)) + rng.normal(0, np.sqrt(0.3), (1, 40)) + rng.normal(0, 1, (3, 40))
    means = np.array([values[np.ix_(rng.integers(0, 3, 3), rng.integers(0, 40, 40))].mean() for _ in range(20_000)])
    np.testing.assert_allclose(means.var(), bootstrap_variance(values), rtol=0.04)


def test_simulated_arms_have_the_models_structure():
    model, design = StudyModel(seed=0.02), Design(3, 192)
    errors, rewards = truths(model, design, "alternative", 0.1)
    rng = np.random.default_rng(1)
    draws = [simulate_arms(model, design, errors, rewards, rng) for _ in range(150)]
    labels = draws[0][1]
    caid = [estimate(arms["caid", 0.75].errors(), labels) for arms, _ in draws]
    assert np.mean([e.value for e in caid]) == pytest.approx(0.0, abs=0.02)
    # the mean's spread: seed / R + opener / 16 + (subject, prompt, residual, pool) / (R C), roughly
    expected = 0.02 / 3 + 0.01 / 16 + 0.005 / 24 + (0.015 + 1.0 + 0.25) / (3 * 192)
    assert np.var([e.value for e in caid]) == pytest.approx(expected, rel=0.35)
    reference = [arms["reference", 0.75] for arms, _ in draws]
    assert np.mean([np.nanmean(a.errors()) + a.b[0] for a in reference]) == pytest.approx(0.0, abs=0.01)
    held = np.isfinite(draws[0][0]["caid", 0.25].errors())
    assert (held.sum(axis=1) == 192).all() and not (held[0] == held[1]).all()  # a split per seed


def test_the_design_table_never_replicates_a_control():
    result = evaluate(StudyModel(), Design(3, 192), studies=25)
    controls = [k for k in result if k.startswith(("reference", "dpo_h")) and TRACKS in k]
    assert controls and all(result[k]["alternative_replicated"] == 0 for k in controls)
    assert all(0 <= v <= 1 for cell in result.values() for v in cell.values())
    assert Design(3, 192).seconds() < Design(3, 320).seconds() < Design(4, 320).seconds()
