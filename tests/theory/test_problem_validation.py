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
    ],
)
def test_bad_input_raises_value_error_naming_the_field(field, value, match):
    a = _arrays()
    a[field] = value(a)
    with pytest.raises(ValueError, match=match):
        theory.ConstrainedProblem(**a)


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
