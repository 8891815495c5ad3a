"""Pre-registered decision statistics: verdicts on clear cases, errors on bad input, power by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.decisions import (
    equivalence,
    non_inferiority,
    one_sided,
    paired_abs_difference,
    paired_difference,
    paired_statistic,
)


def test_clear_cases():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (3, 400))
    assert equivalence(noise, 0.5, n_boot=300).verdict == "replicated"
    assert equivalence(noise + 2, 0.5, n_boot=300).verdict == "refuted"
    assert one_sided(noise - 1, "below", -1, n_boot=300).verdict == "replicated"
    assert one_sided(noise + 1, "below", -1, n_boot=300).verdict == "refuted"
    assert non_inferiority(noise, 0.5, n_boot=300).verdict == "replicated"
    assert paired_abs_difference(noise * 0.1, noise * 0.1 + 1, -0.5, n_boot=300).verdict == "replicated"
    assert paired_difference(noise + 1, noise, 0.5, n_boot=300).verdict == "replicated"
    ratio = paired_statistic([noise + 3, noise + 1], lambda a, b: a.mean() / b.mean() - 1, "above", 1, n_boot=300)
    assert ratio.verdict == "replicated"
    assert ratio.estimate == pytest.approx((noise.mean() + 3) / (noise.mean() + 1) - 1)


def test_a_well_powered_absent_effect_is_refuted_and_a_small_real_one_replicated():
    """Directional claims: the interval excluding the stated effect is a decided negative; excluding 0, a positive."""
    noise = np.random.default_rng(3).normal(0, 1, (3, 2000))
    a, b = noise[:, :1000], noise[:, 1000:]  # independent arms: the difference's SE is ~0.026
    null = paired_difference(a, b, 0.2, n_boot=300)
    assert null.verdict == "refuted" and 0 < null.high < 0.2 and null.power > 0.99
    small = paired_difference(a + 0.1, b, 0.2, n_boot=300)  # real, but below the stated effect
    assert small.verdict == "replicated" and small.low > 0 and small.high < 0.2
    assert one_sided(noise, "below", -0.2, n_boot=300).verdict == "refuted"  # short by far less than 0.2
    assert non_inferiority(noise - 0.1, 0.25, n_boot=300).verdict == "replicated"  # below 0, above -margin


def test_undecided_states_low_power():
    values = np.random.default_rng(1).normal(0, 1, 8)
    d = equivalence(values, 0.25, n_boot=300)
    assert d.verdict == "undecided" and d.power < 0.2


def test_one_sided_power_matches_simulation():
    """The stated power agrees with the replication rate of simulated studies at the stated effect."""
    rng = np.random.default_rng(2)
    n, effect, se = 100, -0.25, 1.0 / 10
    rates, powers = [], []
    for _ in range(120):
        d = one_sided(rng.normal(effect, 1.0, n), "below", effect, n_boot=200, seed=int(rng.integers(1 << 30)))
        rates.append(d.verdict == "replicated")
        powers.append(d.power)
    from scipy.stats import norm

    assert np.mean(powers) == pytest.approx(norm.cdf(0.25 / se - norm.ppf(0.95)), abs=0.08)
    assert np.mean(rates) == pytest.approx(np.mean(powers), abs=0.12)


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="values"):
        equivalence(np.array([1.0, np.nan, 2.0]), 0.1)
    with pytest.raises(ValueError, match="margin"):
        equivalence(np.zeros(5), 0.0)
    with pytest.raises(ValueError, match="errors_b"):
        paired_abs_difference(np.zeros(5), np.zeros(6), -0.1)
