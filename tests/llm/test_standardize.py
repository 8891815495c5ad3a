import itertools
import json

import numpy as np
import pytest

from llm.scorers import (
    Signed,
    Simplicity,
    Standardization,
    build_scorer,
    plugin_maximum,
    score,
    standardize,
    within_prompt_sd,
)

# ---------------------------------------------------------------------------------------------------------------
# Simplicity: values worked out by hand from the definition -(letters + 4.7) / (words + 1)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "letters", "words"),
    [
        ("The cat sat.", 9, 3),
        ("", 0, 0),
        ("123 !!", 0, 0),  # digits and punctuation are no words
        ("don't", 4, 2),  # the apostrophe splits: "don", "t"
        ("café au lait", 10, 3),  # letters of any alphabet
        ("extraordinarily", 15, 1),
        ("  a  b_c9d ", 4, 4),  # underscores and digits split words too
    ],
)
def test_simplicity_by_hand(text, letters, words):
    expected = -(letters + 4.7) / (words + 1)
    assert score(Simplicity(), ["prompt"], [text])[0] == pytest.approx(expected, abs=1e-12)


def test_simplicity_prefers_short_words_and_ignores_the_prompt():
    s = Simplicity()
    plain, fancy = s(["x", "y"], ["it is a good day to go out", "extraordinary circumstances necessitate deliberation"])
    assert plain > fancy
    assert s(["a"], ["same text"])[0] == s(["completely different prompt"], ["same text"])[0]


def test_simplicity_through_build_scorer():
    assert build_scorer("simplicity").name == "simplicity"
    neg = build_scorer("-simplicity")
    assert neg(["p"], ["The cat sat."])[0] == pytest.approx((9 + 4.7) / 4)


# ---------------------------------------------------------------------------------------------------------------
# within_prompt_sd and standardize
# ---------------------------------------------------------------------------------------------------------------


def test_plugin_maximum_matches_enumerating_every_subset():
    pool = np.random.default_rng(0).normal(size=(5, 8))
    pool[0, :3] = 0.25  # ties
    for k in (2, 4, 6, 8):
        brute = np.mean([
            np.mean([max(row[list(s)]) - np.mean(row[list(s)]) for s in itertools.combinations(range(8), k)])
            for row in pool
        ])  # fmt: skip
        assert plugin_maximum(pool, k) == pytest.approx(brute, rel=1e-12)
    with pytest.raises(ValueError, match=r"k must be in \[2, 8\]"):
        plugin_maximum(pool, 9)


def test_plugin_maximum_defaults_to_all_samples_and_refuses_bad_pools():
    pool = np.array([[0.0, 1.0, 5.0], [2.0, 2.0, -1.0]])
    assert plugin_maximum(pool) == pytest.approx(((5 - 2) + (2 - 1)) / 2)  # mean of (max - mean) per prompt
    for bad in (np.ones(3), np.ones((2, 1)), np.array([[0.0, np.nan]])):
        with pytest.raises(ValueError, match="expected finite \\(prompts, K >= 2\\)"):
            plugin_maximum(bad)


def _brute_force_sd(pool: np.ndarray) -> list[float]:
    out = []
    for objective in pool:
        total, dof = 0.0, 0
        for row in objective:
            mean = sum(row) / len(row)
            total += sum((v - mean) ** 2 for v in row)
            dof += len(row) - 1
        out.append((total / dof) ** 0.5)
    return out


def test_within_prompt_sd_matches_brute_force():
    pool = np.random.default_rng(0).normal(size=(3, 7, 5)) * np.array([1.0, 0.1, 30.0])[:, None, None]
    assert within_prompt_sd(pool) == pytest.approx(_brute_force_sd(pool), rel=1e-12)


def test_within_prompt_sd_ignores_between_prompt_spread():
    # Monte Carlo: per-prompt means with SD 5 and within-prompt noise with SD 0.3. The overall SD is ~5; the
    # pooled within-prompt SD must recover 0.3 (N (K - 1) = 3000 degrees of freedom: relative SE ~1.3%).
    rng = np.random.default_rng(1)
    pool = rng.normal(0, 5, size=(1, 1000, 1)) + rng.normal(0, 0.3, size=(1, 1000, 4))
    assert within_prompt_sd(pool)[0] == pytest.approx(0.3, rel=0.05)
    assert pool.std() > 4


def test_standardize_gives_unit_within_prompt_sd_and_keeps_the_scales():
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(2, 20, 6)) * np.array([0.2, 7.0])[:, None, None] + 3.0
    scaled, st = standardize(pool, ["relevance", "sentiment"])
    assert _brute_force_sd(scaled) == pytest.approx([1.0, 1.0], rel=1e-12)
    assert st.scales == pytest.approx(_brute_force_sd(pool), rel=1e-12)
    assert (st.names, st.n_prompts, st.samples_per_prompt) == (("relevance", "sentiment"), 20, 6)
    np.testing.assert_allclose(scaled * np.array(st.scales)[:, None, None], pool, rtol=1e-12)


def test_standardization_leaves_the_tilted_policy_unchanged():
    # eq. (3) on a discrete response set: pi ~ pi_ref exp((r + lam g) / beta). With r / s_r, g / s_g, beta / s_r and
    # lam' = lam s_g / s_r the policy must be the same (the docstring's claim, checked numerically).
    rng = np.random.default_rng(3)
    ref = rng.dirichlet(np.ones(50))
    r, g = rng.normal(size=50), rng.normal(size=50)
    pool = np.stack([r, g])[:, None, :]  # one prompt, 50 "samples"
    _, st = standardize(pool, ["r", "g"])
    s_r, s_g = st.scales
    beta, lam = 0.7, 1.3

    def tilted(reward, utility, b, multiplier):
        w = ref * np.exp((reward + multiplier * utility) / b)
        return w / w.sum()

    np.testing.assert_allclose(tilted(r, g, beta, lam), tilted(r / s_r, g / s_g, beta / s_r, lam * s_g / s_r))


class _Zero:
    name = "relevance"

    def __call__(self, prompts, responses):
        return np.zeros(len(prompts))


def test_standardization_scorer_and_apply():
    st = Standardization(("simplicity",), (2.0,), 4, 3)
    wrapped = st.scorer(Simplicity())
    assert isinstance(wrapped, Signed)
    assert wrapped(["p"], ["The cat sat."])[0] == pytest.approx(-(9 + 4.7) / 4 / 2.0)
    with pytest.raises(ValueError, match="no scale for scorer 'relevance'"):
        st.scorer(_Zero())
    np.testing.assert_allclose(st.apply(np.array([[4.0, -2.0]])), [[2.0, -1.0]])
    with pytest.raises(ValueError, match="first axis of 1"):
        st.apply(np.ones((2, 3)))


@pytest.mark.parametrize(
    ("pool", "names", "match"),
    [
        (np.ones((4, 3)), ["a"], "expected \\(objectives, prompts, K >= 2"),
        (np.ones((1, 4, 1)), ["a"], "K >= 2"),
        (np.full((1, 2, 3), np.nan), ["a"], "NaN or inf"),
        (np.random.default_rng(0).normal(size=(2, 3, 4)), ["a"], "1 names for 2 objectives"),
    ],
)
def test_standardize_refuses_malformed_pools(pool, names, match):
    with pytest.raises(ValueError, match=match):
        standardize(pool, names)


def test_standardize_refuses_a_utility_constant_within_prompts():
    pool = np.random.default_rng(0).normal(size=(2, 3, 4))
    pool[1] = np.arange(3)[:, None]  # varies between prompts only
    with pytest.raises(ValueError, match="toxicity never varies within a prompt"):
        standardize(pool, ["relevance", "toxicity"])


def test_standardization_round_trips_through_json():
    st = Standardization(("relevance", "sentiment"), (0.12, 0.45), 96, 8)
    assert Standardization.from_dict(json.loads(json.dumps(st.to_dict())), "scales.json") == st


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ([1, 2], "expected a JSON object"),
        ({"scales": [1.0], "n_prompts": 2, "samples_per_prompt": 2}, "field 'names'"),
        ({"names": ["a"], "scales": ["x"], "n_prompts": 2, "samples_per_prompt": 2}, "must hold numbers"),
        ({"names": ["a"], "scales": [0.0], "n_prompts": 2, "samples_per_prompt": 2}, "finite and > 0"),
        ({"names": ["a"], "scales": [1.0], "n_prompts": True, "samples_per_prompt": 2}, "field 'n_prompts'"),
        ({"names": ["a"], "scales": [1.0], "n_prompts": 2, "samples_per_prompt": 1}, ">= 2 samples"),
        ({"names": ["a", "b"], "scales": [1.0], "n_prompts": 2, "samples_per_prompt": 2}, "one non-empty name"),
    ],
)
def test_standardization_from_dict_names_the_file_and_the_fix(record, match):
    with pytest.raises(ValueError, match=match) as err:
        Standardization.from_dict(record, "run/scales.json")
    assert "run/scales.json" in str(err.value) and "measure the scales again" in str(err.value)
