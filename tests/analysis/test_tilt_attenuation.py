"""The SNIS estimate of the tilt's improvement against the exact tilt (theory), and its input checks."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.tilt_attenuation import attenuation, tilt_improvement
from theory import ConstrainedProblem, tilted_policy


def _problem(rng: np.random.Generator) -> ConstrainedProblem:
    x, y = 5, 30
    logits = rng.normal(size=(x, y))
    ref = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return ConstrainedProblem(ref, rng.normal(size=(x, y)), rng.normal(size=(2, x, y)), np.zeros(2), 0.7)


def test_snis_estimate_converges_to_the_exact_tilt():
    rng = np.random.default_rng(0)
    prob = _problem(rng)
    lam = np.array([0.8, 0.3])
    p_ref = np.exp(prob.ref_logprobs)
    exact = ((tilted_policy(prob, lam) - p_ref)[None] * prob.utilities).sum(axis=2)  # (m, X)
    k = 200_000
    draws = np.stack([rng.choice(prob.n_responses, size=k, p=p_ref[x]) for x in range(prob.n_prompts)])
    rows = np.arange(prob.n_prompts)[:, None]
    estimate = tilt_improvement(prob.reward[rows, draws], prob.utilities[:, rows, draws], lam, prob.beta)
    assert np.allclose(estimate.per_prompt, exact, atol=0.02)
    assert np.allclose(estimate.improvement, exact.mean(axis=1), atol=0.01)
    assert np.all((estimate.ess > 1) & (estimate.ess <= k))


def test_tilt_attenuation_is_one_for_the_tilt_and_zero_for_the_reference():
    rng = np.random.default_rng(1)
    prob = _problem(rng)
    lam = np.array([0.5, 0.5])
    p_ref = np.exp(prob.ref_logprobs)
    tilt = ((tilted_policy(prob, lam) - p_ref)[None] * prob.utilities).sum(axis=2).mean(axis=1)
    assert np.allclose(attenuation(tilt, tilt), 1.0)
    assert np.allclose(attenuation(np.zeros(2), tilt), 0.0)
    assert np.isnan(attenuation(np.array([0.3]), np.array([0.0]))).all()


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="utilities"):
        tilt_improvement(np.zeros((3, 4)), np.zeros((1, 3, 5)), np.array([1.0]), 1.0)
    with pytest.raises(ValueError, match="lam"):
        tilt_improvement(np.zeros((3, 4)), np.zeros((2, 3, 4)), np.array([1.0]), 1.0)
    with pytest.raises(ValueError, match="beta"):
        tilt_improvement(np.zeros((3, 4)), np.zeros((3, 4)), 1.0, 0.0)
    with pytest.raises(ValueError, match="reward"):
        tilt_improvement(np.full((3, 4), np.nan), np.zeros((3, 4)), 1.0, 1.0)
