import numpy as np
import pytest
from scipy.special import log_softmax

import theory


def _arrays(x=3, y=4, m=2):
    rng = np.random.default_rng(0)
    return dict(
        ref_logprobs=log_softmax(rng.normal(size=(x, y)), axis=1),
        reward=rng.normal(size=(x, y)),
        utilities=rng.normal(size=(m, x, y)),
        thresholds=np.zeros(m),
        beta=0.1,
    )


def test_valid_problem_exposes_shapes_and_read_only_arrays():
    prob = theory.ConstrainedProblem(**_arrays())
    assert (prob.n_prompts, prob.n_responses, prob.n_constraints) == (3, 4, 2)
    assert np.allclose(prob.prompt_weights, 1 / 3)
    with pytest.raises(ValueError):
        prob.reward[0, 0] = 1.0


def test_single_utility_and_scalar_threshold_mean_one_constraint():
    a = _arrays(m=1)
    prob = theory.ConstrainedProblem(a["ref_logprobs"], a["reward"], a["utilities"][0], 0.2, 0.5)
    assert prob.n_constraints == 1 and prob.thresholds.shape == (1,)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("reward", lambda a: np.where(np.eye(3, 4, dtype=bool), np.nan, a["reward"]), "reward"),
        ("reward", lambda a: np.full((3, 4), np.inf), "reward"),
        ("utilities", lambda a: np.where(np.eye(3, 4, dtype=bool), np.nan, a["utilities"]), "utilities"),
        ("utilities", lambda a: -np.full((2, 3, 4), np.inf), "utilities"),
        ("beta", lambda a: 0.0, "beta"),
        ("beta", lambda a: -1.0, "beta"),
        ("beta", lambda a: np.nan, "beta"),
        ("ref_logprobs", lambda a: a["ref_logprobs"] + 0.1, "ref_logprobs.*sums to"),
        ("ref_logprobs", lambda a: np.full((3, 4), -np.inf), "ref_logprobs.*support"),
        ("ref_logprobs", lambda a: np.full((3, 4), np.nan), "ref_logprobs"),
        ("ref_logprobs", lambda a: np.zeros(4), "ref_logprobs"),
        ("reward", lambda a: a["reward"][:, :3], "reward.*shape"),
        ("utilities", lambda a: a["utilities"][:, :2], "utilities.*shape"),
        ("thresholds", lambda a: np.zeros(3), "thresholds"),
        ("thresholds", lambda a: [np.nan, 0.0], "thresholds"),
        ("prompt_weights", lambda a: np.array([1.0, -0.5, 1.0]), "prompt_weights"),
        ("prompt_weights", lambda a: np.ones(2), "prompt_weights"),
        ("prompt_weights", lambda a: np.zeros(3), "prompt_weights"),
        # Issue 26: these converted silently (text parsed, booleans as 0/1, dates as day counts, the mask dropped).
        ("utilities", lambda a: a["utilities"].astype(str), "utilities.*text"),
        ("reward", lambda a: a["reward"] > 0, "reward.*booleans"),
        ("reward", lambda a: np.full((3, 4), np.datetime64("2020-01-01")), "reward.*dates"),
        ("reward", lambda a: np.ma.array(a["reward"], mask=np.eye(3, 4)), "reward.*masked"),
        ("thresholds", lambda a: np.array([0.0, None]), "thresholds.*objects"),
        ("prompt_weights", lambda a: np.array([True, False, True]), "prompt_weights.*booleans"),
    ],
)
def test_bad_input_raises_value_error_naming_the_field(field, value, match):
    a = _arrays()
    a[field] = value(a)
    with pytest.raises(ValueError, match=match):
        theory.ConstrainedProblem(**a)


@pytest.mark.parametrize("weights", [[1e308, 1e308, 1e308], [1e308, 1.0, 5e307], [np.finfo(float).max] * 3])
def test_huge_prompt_weights_are_normalised_not_zeroed(weights):
    # Issue 26: prompt weights of 1e308 summed to inf and became 0.
    prob = theory.ConstrainedProblem(**_arrays(), prompt_weights=np.array(weights))
    expected = [w / max(weights) for w in weights]
    assert np.allclose(prob.prompt_weights, np.array(expected) / sum(expected), rtol=1e-15, atol=0)


def test_prompt_weights_are_normalised():
    a = _arrays()
    prob = theory.ConstrainedProblem(**a, prompt_weights=np.array([1.0, 1.0, 2.0]))
    assert np.allclose(prob.prompt_weights, [0.25, 0.25, 0.5])


def test_with_thresholds_validates_and_keeps_scores():
    prob = theory.ConstrainedProblem(**_arrays())
    moved = prob.with_thresholds([0.1, 0.2])
    assert np.array_equal(moved.thresholds, [0.1, 0.2])
    assert np.allclose(moved.absolute_thresholds - prob.absolute_thresholds, [0.1, 0.2])
    with pytest.raises(ValueError, match="thresholds"):
        prob.with_thresholds([0.1])


def test_policy_and_lambda_inputs_are_checked():
    prob = theory.ConstrainedProblem(**_arrays())
    with pytest.raises(ValueError, match="policy"):
        theory.objective(prob, np.full((3, 4), 0.3))
    with pytest.raises(ValueError, match="policy"):
        theory.constraint_slacks(prob, np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="lam"):
        theory.dual_value(prob, [1.0])
    with pytest.raises(ValueError, match="lam0"):
        theory.solve_dual(prob, lam0=[-1.0, 0.0])
    with pytest.raises(ValueError, match="lam"):
        theory.certify(prob, np.exp(prob.ref_logprobs), [-0.1, 0.0])


def test_problems_built_from_one_reused_buffer_stay_distinct():
    a = _arrays()
    buffer = a["reward"].copy()
    first = theory.ConstrainedProblem(a["ref_logprobs"], buffer, a["utilities"], a["thresholds"], a["beta"])
    first_value = theory.solve_dual(first).value
    buffer += 5.0  # reuse the buffer for a second problem
    second = theory.ConstrainedProblem(a["ref_logprobs"], buffer, a["utilities"], a["thresholds"], a["beta"])
    np.testing.assert_array_equal(first.reward, a["reward"])
    np.testing.assert_array_equal(second.reward, a["reward"] + 5.0)
    assert theory.solve_dual(first).value == first_value
    assert theory.solve_dual(second).value == pytest.approx(first_value + 5.0)  # E r shifts by 5 for any policy


def test_mutating_inputs_after_construction_changes_nothing():
    a = _arrays()
    inputs = {k: np.array(v) for k, v in a.items()}
    weights = np.array([1.0, 2.0, 3.0])
    prob = theory.ConstrainedProblem(**inputs, prompt_weights=weights)
    snapshot = {k: np.array(getattr(prob, k)) for k in ("ref_logprobs", "reward", "utilities", "thresholds")}
    inputs["reward"][0, 0] = np.nan  # would be refused by validation
    inputs["utilities"][:] = np.inf
    inputs["ref_logprobs"][0] = 5.0  # a row that no longer sums to one
    inputs["thresholds"][:] = 1e9
    weights[:] = -1.0
    for key, value in snapshot.items():
        np.testing.assert_array_equal(getattr(prob, key), value)
    assert np.allclose(prob.prompt_weights, [1 / 6, 2 / 6, 3 / 6])


@pytest.mark.parametrize("field", ["ref_logprobs", "reward", "utilities", "thresholds", "prompt_weights"])
def test_stored_arrays_cannot_be_made_writeable(field):
    prob = theory.ConstrainedProblem(**_arrays(), prompt_weights=np.ones(3))
    array = getattr(prob, field)
    with pytest.raises(ValueError):
        array.flags.writeable = True
    with pytest.raises(ValueError):
        array.base.flags.writeable = True


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("beta", lambda a: np.array([0.1, 0.2]), r"beta: expected one number > 0, got an array of shape \(2,\)"),
        ("beta", lambda a: [0.1], r"beta: expected one number.*shape \(1,\)"),
        ("beta", lambda a: True, "beta: expected one number > 0, got a bool"),
        ("beta", lambda a: 0.1 + 0.2j, "beta: expected real numbers, got complex"),
        ("beta", lambda a: np.inf, "beta: must be a finite number"),
        ("beta", lambda a: "0.1x", "beta: expected real numbers, got text"),
        ("reward", lambda a: a["reward"] + 0j, "reward: expected real numbers, got complex"),
        ("utilities", lambda a: a["utilities"] * 1j, "utilities: expected real numbers"),
        ("thresholds", lambda a: np.array([0.1j, 0.0]), "thresholds: expected real numbers"),
        ("ref_logprobs", lambda a: a["ref_logprobs"].astype(complex), "ref_logprobs: expected real numbers"),
        ("prompt_weights", lambda a: np.ones(3, dtype=complex), "prompt_weights: expected real numbers"),
        ("reward", lambda a: np.where(np.eye(3, 4, k=1, dtype=bool), -np.inf, a["reward"]),
         r"reward: contains -inf at index \(0, 1\); scores must be finite"),
        ("utilities", lambda a: np.concatenate([a["utilities"][:1], np.full((1, 3, 4), np.nan)]),
         r"utilities\[1\]: contains nan at index \(0, 0\); scores must be finite"),
        ("thresholds", lambda a: np.array([0.0, np.inf]), r"thresholds: contains inf at index \(1,\)"),
        ("ref_logprobs", lambda a: np.where(np.eye(3, 4, dtype=bool), np.inf, a["ref_logprobs"]),
         r"ref_logprobs: contains inf at index \(0, 0\).*-inf marks"),
        ("prompt_weights", lambda a: np.array([1.0, np.nan, 1.0]), r"prompt_weights: contains nan at index \(1,\)"),
    ],
)
def test_array_beta_complex_and_non_finite_inputs_name_the_field(field, value, match):
    a = _arrays()
    a[field] = value(a)
    with pytest.raises(ValueError, match=match):
        theory.ConstrainedProblem(**a)


def test_with_beta_and_plug_in_validate_like_the_constructor():
    prob = theory.ConstrainedProblem(**_arrays())
    with pytest.raises(ValueError, match="beta: expected one number"):
        prob.with_beta(np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="beta: must be a finite number"):
        prob.with_beta(np.nan)
    scores = np.random.default_rng(0).normal(size=(2, 3, 4))
    with pytest.raises(ValueError, match="reward: expected real numbers"):
        theory.ConstrainedProblem.plug_in(scores * (1 + 1j), [0.0], 0.1)
    scores[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match=r"utilities\[0\]: contains nan at index \(0, 2\)"):
        theory.ConstrainedProblem.plug_in(scores, [0.0], 0.1)
