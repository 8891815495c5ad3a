"""The hypothesis checks against independent computations: a minimax over a grid, cvxpy, finite differences."""

import numpy as np
import pytest
from scipy.special import log_softmax

import theory
from analysis.parametrization_gap.hypotheses import (
    Hypothesis,
    assumption1,
    segment_min_eigenvalue,
    slater_margin,
    verdict,
)
from tests.analysis.parametrization_gap.independent import fd_hessian, fd_segment_min_eigenvalue, minimax_margin
from theory.problem import InfeasibleProblemError


def _problem(seed: int, thresholds=(0.1, 0.05), beta: float = 0.5, n_prompts: int = 3, n_responses: int = 7):
    rng = np.random.default_rng(seed)
    return theory.ConstrainedProblem(
        log_softmax(rng.normal(size=(n_prompts, n_responses)), axis=1),
        rng.normal(size=(n_prompts, n_responses)),
        rng.normal(size=(2, n_prompts, n_responses)),
        list(thresholds),
        beta,
        prompt_weights=rng.uniform(0.5, 1.5, n_prompts),
    )


@pytest.mark.parametrize("seed", range(4))
def test_slater_margin_matches_the_minimax_dual(seed):
    prob = _problem(seed)
    for offsets in (np.zeros(2), np.array([0.3, -0.2]), np.array([1.0, 1.5])):
        assert slater_margin(prob, offsets) == pytest.approx(minimax_margin(prob, offsets), abs=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_slater_margin_sign_decides_feasibility_for_cvxpy(seed):
    prob = _problem(seed)
    margin = slater_margin(prob)
    assert margin > 0.05
    # Thresholds raised by less than the margin: cvxpy solves; by more: no policy reaches them.
    feasible = theory.solve_primal(prob.with_thresholds(prob.thresholds + 0.8 * margin))
    assert np.all(feasible.slacks >= -1e-6)
    with pytest.raises(InfeasibleProblemError):
        theory.solve_primal(prob.with_thresholds(prob.thresholds + 1.2 * margin))


def test_slater_margin_respects_the_reference_support():
    prob = _problem(0)
    ref = np.array(prob.ref_logprobs)
    h = prob.constraint_functions()
    # Remove from the support the response that maximises h_1 + h_2 at prompt 0: the LP must not use it.
    ref[0, np.argmax(h[0, 0] + h[1, 0])] = -np.inf
    restricted = theory.ConstrainedProblem(
        log_softmax(ref, axis=1), prob.reward, prob.utilities, prob.thresholds, prob.beta, prob.prompt_weights
    )
    assert slater_margin(restricted) == pytest.approx(minimax_margin(restricted), abs=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_segment_min_eigenvalue_matches_finite_differences(seed):
    prob = _problem(seed)
    start, end = np.array([0.2, 0.5]), np.array([2.5, 0.1])
    fd = fd_segment_min_eigenvalue(prob, start, end)
    assert segment_min_eigenvalue(prob, start, end) == pytest.approx(fd, rel=1e-5)
    # A single point is sigma_min there.
    assert segment_min_eigenvalue(prob, start, start) == pytest.approx(
        np.linalg.eigvalsh(fd_hessian(prob, start))[0], rel=1e-5
    )
    # The minimum over the segment is at most the value at either end.
    assert segment_min_eigenvalue(prob, start, end) <= segment_min_eigenvalue(prob, end, end) + 1e-12


def test_assumption1_detects_a_missing_span_and_a_missing_zero():
    prob = _problem(0)
    g = np.array(prob.utilities)
    g[:, :, 0] = 0.0  # a response with g = 0 at every prompt
    ok = theory.ConstrainedProblem(prob.ref_logprobs, prob.reward, g, prob.thresholds, prob.beta)
    assert assumption1(ok).holds
    no_zero = theory.ConstrainedProblem(prob.ref_logprobs, prob.reward, g + 1.0, prob.thresholds, prob.beta)
    assert not assumption1(no_zero).holds and "g = 0" in assumption1(no_zero).detail
    collinear = g.copy()
    collinear[1, 1] = 2.0 * collinear[0, 1]  # prompt 1: g_2 = 2 g_1 for every response
    bad = theory.ConstrainedProblem(prob.ref_logprobs, prob.reward, collinear, prob.thresholds, prob.beta)
    result = assumption1(bad)
    assert not result.holds and "span at prompts [1]" in result.detail


def test_verdict_names_every_failure():
    ok = Hypothesis("Assumption 3", True, "nu = 0.1")
    a4 = Hypothesis("Assumption 4", False, "Mnu-tightened problem infeasible by 0.03")
    a6 = Hypothesis("Assumption 6", False, "at lambda*_p: margin -0.01")
    assert verdict([ok]) == "holds"
    assert verdict([ok, a4, a6]) == (
        "fails: Assumption 4 (Mnu-tightened problem infeasible by 0.03); Assumption 6 (at lambda*_p: margin -0.01)"
    )
