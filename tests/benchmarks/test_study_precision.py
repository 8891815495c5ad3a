"""The precision calculation behind the study's sizes, against brute force and Monte Carlo."""

import numpy as np

from benchmarks.study_precision import anova_variance, bootstrap_variance, components, expected_variance, rescaled


def _crossed(rng, parts, seeds, prompts):
    seed, prompt, res = parts
    return (rng.normal(0, np.sqrt(seed), (seeds, 1)) + rng.normal(0, np.sqrt(prompt), (1, prompts))
            + rng.normal(0, np.sqrt(res), (seeds, prompts)))  # fmt: skip


def test_closed_form_is_the_crossed_bootstraps_variance():
    """Resampling seeds and prompts independently (as analysis.decisions does), 20,000 times."""
    rng = np.random.default_rng(0)
    values = _crossed(rng, (0.05, 0.3, 1.0), 3, 40)
    means = np.array([values[np.ix_(rng.integers(0, 3, 3), rng.integers(0, 40, 40))].mean() for _ in range(20_000)])
    np.testing.assert_allclose(means.var(), bootstrap_variance(values), rtol=0.04)


def test_expected_variance_and_components_match_simulated_designs():
    """The expectation over 2,000 simulated studies (3 x 60) and the ANOVA components' means, to Monte Carlo error."""
    rng = np.random.default_rng(1)
    parts = (0.02, 0.25, 0.9)
    sims = [_crossed(rng, parts, 3, 60) for _ in range(2000)]
    np.testing.assert_allclose(np.mean([bootstrap_variance(v) for v in sims]), expected_variance(parts, 3, 60),
                               rtol=0.03)  # fmt: skip
    estimated = np.mean([components(v) for v in sims], axis=0)
    np.testing.assert_allclose(estimated[1:], parts[1:], rtol=0.03)
    assert abs(estimated[0] - parts[0]) < 0.004  # 2 degrees of freedom per study (clipped at 0)
    # The mean's variance (checked against the simulated means' spread) is what the ANOVA estimate is unbiased for.
    true = parts[0] / 3 + parts[1] / 60 + parts[2] / 180
    np.testing.assert_allclose(np.var([v.mean() for v in sims]), true, rtol=0.1)
    np.testing.assert_allclose(np.mean([anova_variance(v) for v in sims]), true, rtol=0.05)


def test_rescaled_components():
    """Two policy samples halve the residual; eight pool samples replace the pool's 1/4 by 1/8."""
    np.testing.assert_allclose(rescaled((0.001, 0.3, 1.0), (4, 8), (1, 2), 0.002), (0.002, 0.175, 0.5))
