"""``solve_dual`` is never silently wrong (issue 12): every answer is certified, or it raises.

60 random instances with order-one scores (m = 1..3 constraints; interior thresholds, thresholds within
1e-2..1e-4 of the joint feasibility edge, jointly infeasible thresholds, and an inactive constraint), each
solved at beta from 1 down to 1e-10. Joint feasibility is decided by an independent linear program
(:func:`tests.dense_dual.lp_max_improvement`). A returned solution must pass, with a tolerance relative to
the problem's scale,

- the duality certificate (:func:`theory.certify`, and the same quantities recomputed densely here):
  the policy is feasible and D(lambda) - objective(policy) ~ 0, so both bound P* tightly;
- an independent value of P*: cvxpy (:func:`theory.solve_primal`) where its conditioning allows
  (beta >= 1e-2), and at every beta the LP limit, P*_LP - beta K <= P* <= P*_LP with
  K = E_x max_y -log pi_ref(y|x) (:func:`tests.dense_dual.lp_optimum`).

Raising ``DualSolverError`` is allowed (but must be rare); a jointly infeasible instance must raise
``InfeasibleProblemError``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import pytest
from scipy.special import log_softmax, xlogy

import theory
import theory.dual_solver
from tests.dense_dual import dense_constraint_functions, dense_dual, lp_max_improvement, lp_optimum

BETAS = (1.0, 1e-2, 1e-5, 1e-7, 1e-9, 1e-10)
N_INSTANCES = 60
# Tolerance of a certified answer, relative to the problem's scale: TOL_BASE plus the resolution of
# float64 logits, eps * max|(r + lambda^T g) / beta + log pi_ref| (nats of error in the tilted policy).
TOL_BASE = 1e-7
# cvxpy's accuracy on these problems (it is the independent solve, not the code under test).
CVXPY_TOL = 1e-6


@dataclasses.dataclass(frozen=True)
class Instance:
    """A random problem (at beta = 1), whether its thresholds are jointly strictly feasible, and P*_LP."""

    prob: theory.ConstrainedProblem
    kind: str
    feasible: bool
    lp_value: float | None


@functools.cache
def make_instance(seed: int) -> Instance:
    """Thresholds ``f * t_max * d``: d = each utility's largest improvement, t_max from the joint LP."""
    rng = np.random.default_rng(1000 + seed)
    m = 1 + seed % 3
    n_prompts, n_responses = int(rng.integers(2, 7)), int(rng.integers(3, 10))
    logits = 2.0 * rng.normal(size=(n_prompts, n_responses))
    if seed % 7 == 0:  # responses outside the reference support
        logits[:, 1:][rng.random((n_prompts, n_responses - 1)) < 0.3] = -np.inf
    ref = log_softmax(logits, axis=1)
    reward, utilities = rng.normal(size=(n_prompts, n_responses)), rng.normal(size=(m, n_prompts, n_responses))
    base = theory.ConstrainedProblem(ref, reward, utilities, np.zeros(m), 1.0)
    support = np.isfinite(ref)
    mean_ref = np.einsum("xy,ixy->ix", np.exp(ref), utilities)
    best = np.where(support, utilities, -np.inf).max(axis=2)
    direction = (best - mean_ref).mean(axis=1)  # each utility's largest improvement, computed here
    t_max = lp_max_improvement(base, direction)
    kind = ("interior", "interior", "edge", "infeasible", "inactive")[seed % 5]
    fraction = {
        "interior": np.full(m, rng.uniform(0.1, 0.8)),
        "edge": np.full(m, 1.0 - 10.0 ** -rng.uniform(2, 4)),
        "infeasible": np.full(m, 1.0 + 10.0 ** -rng.uniform(1, 3)),
        "inactive": np.concatenate([[-0.5], np.full(m - 1, rng.uniform(0.1, 0.8))]),
    }[kind]
    prob = base.with_thresholds(fraction * t_max * direction)
    feasible = bool(np.all(fraction < 1.0))
    return Instance(prob, kind, feasible, lp_optimum(prob) if feasible else None)


def outcome(
    solve: Callable[..., object], inst: Instance, beta: float, errors: tuple[type, ...], tolerance: float | None = None
) -> str:
    """'correct', 'raised' (DualSolverError on a feasible instance), 'infeasible' (correctly refused) or 'WRONG: ...'.

    ``solve`` is :func:`theory.solve_dual` or another implementation with the same interface;
    ``errors`` are the exception types it raises when it gives up. ``tolerance`` replaces the default one
    (TOL_BASE plus float64's resolution of the logits at the returned lambda) by a fixed relative tolerance.
    """
    prob = inst.prob.with_beta(beta)
    try:
        sol = solve(prob)
    except theory.InfeasibleProblemError:
        return "infeasible" if not inst.feasible else "WRONG: a feasible problem was declared infeasible"
    except errors:
        return "raised" if inst.feasible else "WRONG: infeasible thresholds raised a solver error"
    if not inst.feasible:
        return "WRONG: jointly infeasible thresholds were 'solved'"
    lam, policy = np.asarray(sol.lam), np.asarray(sol.policy)
    if not (np.all(np.isfinite(lam)) and np.all(lam >= 0)):
        return f"WRONG: lambda = {lam} is not dual feasible"
    # The certificate, recomputed densely: slacks, objective and D(lambda) from their definitions.
    h = dense_constraint_functions(prob)
    w = prob.prompt_weights
    slacks = np.einsum("xy,ixy->ix", policy, h) @ w
    kl = (xlogy(policy, policy) - policy * np.where(policy > 0, prob.ref_logprobs, 0.0)).sum(axis=1)
    primal = float(w @ ((policy * prob.reward).sum(axis=1) - beta * kl))
    dual = dense_dual(prob, lam)[0]
    cert = theory.certify(prob, policy, lam)
    support = np.isfinite(prob.ref_logprobs)
    s = np.maximum(np.where(support, h, -np.inf).max(axis=2) @ w, np.abs(prob.thresholds))  # slack scales
    scale = 1.0 + abs(inst.lp_value) + float(lam @ s)
    logit = (np.abs(prob.reward).max() + lam @ np.abs(prob.utilities).max(axis=(1, 2))) / beta
    tol = TOL_BASE + np.finfo(float).eps * (logit - prob.ref_logprobs[support].min())
    if tolerance is not None:
        tol = tolerance
    violation = float(np.max(np.maximum(-slacks, 0.0) / s))
    if violation > tol:
        return f"WRONG: the policy violates a constraint by {violation:.2e} of its scale (tol {tol:.1e})"
    if abs(dual - primal) > tol * scale or abs(cert.duality_gap - (dual - primal)) > tol * scale:
        return f"WRONG: duality gap {dual - primal:.2e} (certify: {cert.duality_gap:.2e}; tol {tol * scale:.1e})"
    value = float(sol.value)
    k = float(np.mean(-np.where(support, prob.ref_logprobs, np.inf).min(axis=1)))
    if not inst.lp_value - beta * k - tol * scale <= value <= inst.lp_value + tol * scale:
        return f"WRONG: value {value:.9g} outside the LP bracket [{inst.lp_value - beta * k:.9g}, {inst.lp_value:.9g}]"
    if beta >= 1e-2:
        try:
            reference = theory.solve_primal(prob).value
        except theory.PrimalSolverError:
            return "correct"  # cvxpy could not solve it; the certificate and LP bracket stand
        if abs(value - reference) > CVXPY_TOL * scale:
            return f"WRONG: value {value:.9g} but cvxpy finds P* = {reference:.9g}"
    return "correct"


@pytest.mark.parametrize("beta", BETAS)
def test_solve_dual_is_certified_or_raises(beta):
    results = {seed: outcome(theory.solve_dual, make_instance(seed), beta, (theory.DualSolverError,))
               for seed in range(N_INSTANCES)}
    wrong = {seed: r for seed, r in results.items() if r.startswith("WRONG")}
    assert not wrong, f"beta={beta}: {len(wrong)} silently wrong answers: {wrong}"
    feasible = [seed for seed in range(N_INSTANCES) if make_instance(seed).feasible]
    solved = [seed for seed in feasible if results[seed] == "correct"]
    assert len(solved) >= 0.9 * len(feasible), f"beta={beta}: only {len(solved)}/{len(feasible)} solved"
    assert sum(r == "infeasible" for r in results.values()) == N_INSTANCES - len(feasible)


def test_instances_cover_every_kind():
    kinds = [make_instance(seed) for seed in range(N_INSTANCES)]
    assert {i.kind for i in kinds} == {"interior", "edge", "infeasible", "inactive"}
    assert sum(not i.feasible and i.prob.n_constraints > 1 for i in kinds) >= 6  # jointly infeasible ones


def test_solution_reports_its_certified_residual():
    inst = make_instance(1)
    for beta in (1.0, 1e-9):
        sol = theory.solve_dual(inst.prob.with_beta(beta))
        assert sol.kkt_residual <= sol.tolerance
        assert sol.kkt_residual == pytest.approx(
            theory.dual_solver.kkt_residual(inst.prob.with_beta(beta), sol.lam, sol.value, sol.slacks)
        )
    assert sol.continuation_betas and sol.continuation_betas[-1] == 1e-9


def test_uncertifiable_solve_raises_naming_beta_and_the_fix(monkeypatch):
    monkeypatch.setattr(theory.dual_solver, "_STAGE_ITERS", 1)
    monkeypatch.setattr(theory.dual_solver, "_DIRECT_ITERS", 1)
    prob = make_instance(1).prob.with_beta(1e-9)
    with pytest.raises(theory.DualSolverError, match=r"could not certify the optimum at beta=1e-09.*increase beta"):
        theory.solve_dual(prob, max_iter=1)


def test_jointly_infeasible_thresholds_found_by_the_lp_raise_infeasible(monkeypatch):
    # Disable the cheap Farkas check along lambda: the exact LP decides.
    monkeypatch.setattr(theory.dual_solver, "_raise_if_certified_infeasible", lambda prob, lam: None)
    inst = next(make_instance(s) for s in range(N_INSTANCES) if make_instance(s).kind == "infeasible"
                and make_instance(s).prob.n_constraints > 1 and np.all(make_instance(s).prob.thresholds
                                                                          < make_instance(s).prob.max_improvements))
    with pytest.raises(theory.InfeasibleProblemError, match="jointly infeasible"):
        theory.solve_dual(inst.prob.with_beta(1e-3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(tol=0.0), "tol"),
        (dict(tol=-1e-9), "tol"),
        (dict(tol=float("nan")), "tol"),
        (dict(tol=float("inf")), "tol"),
        (dict(tol="1e-9"), "tol"),
        (dict(max_iter=0), "max_iter"),
        (dict(max_iter=2.5), "max_iter"),
        (dict(max_iter=True), "max_iter"),
    ],
)
def test_solver_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        theory.solve_dual(make_instance(0).prob, **kwargs)


# Issue 26: the tolerance certified grew with |logit| and with lambda0 (scores x1000 at beta = 1e-10 "certified"
# lambda = 0 with slacks -46.5 of scale ~1000; lambda0 = 1e16 returned at tolerance 696). A held-out sweep (instances
# not used to tune the solver) at a fixed tolerance on the problem's own scale: every answer is correct to 1e-3 of
# that scale (the largest tolerance solve_dual may certify) and states a tolerance no larger, or it raises.
HELD_OUT_TOL = 1e-3
SWEEP_SCALES = (1.0, 10.0, 100.0, 1e3)
SWEEP_BETAS = (1.0, 1e-2, 1e-5, 1e-7, 1e-10, 1e-13)
SWEEP_STARTS = (None, 1.0, 1e4, 1e8, 1e16)


def scaled(inst: Instance, c: float, beta: float = 1.0) -> Instance:
    """The instance with every score and threshold times ``c`` (P*_LP times ``c``), at ``beta``."""
    p = inst.prob
    prob = theory.ConstrainedProblem(p.ref_logprobs, p.reward * c, p.utilities * c, p.thresholds * c, beta)
    return Instance(prob, inst.kind, inst.feasible, None if inst.lp_value is None else inst.lp_value * c)


def held_out_outcome(inst: Instance, c: float, beta: float, lam0: float | None) -> str:
    def solve(prob):
        sol = theory.solve_dual(prob, None if lam0 is None else np.full(prob.n_constraints, lam0))
        assert sol.kkt_residual <= sol.tolerance <= HELD_OUT_TOL, (sol.kkt_residual, sol.tolerance)
        return sol

    return outcome(solve, scaled(inst, c), beta, (theory.DualSolverError,), tolerance=HELD_OUT_TOL)


def _check_sweep(seeds, scales, betas, starts) -> None:
    results = {
        (seed, c, beta, lam0): held_out_outcome(make_instance(seed), c, beta, lam0)
        for seed in seeds for c in scales for beta in betas for lam0 in starts
    }  # fmt: skip
    wrong = {case: r for case, r in results.items() if r.startswith("WRONG")}
    assert not wrong, f"{len(wrong)} silently wrong answers (seed, scale, beta, lam0): {wrong}"
    # Where float64 resolves the logits (scores x1, beta >= 1e-7), the solver must answer, whatever the start.
    easy = [case for case in results if case[1] == 1.0 and case[2] >= 1e-7 and make_instance(case[0]).feasible]
    assert all(results[case] == "correct" for case in easy), {case: results[case] for case in easy}


def test_held_out_scales_betas_and_starts_are_correct_or_raise():
    _check_sweep(range(100, 105), (1.0, 1e3), (1.0, 1e-10, 1e-13), (None, 1e16))


@pytest.mark.slow
def test_held_out_sweep_is_correct_or_raises():
    _check_sweep(range(100, 124), SWEEP_SCALES, SWEEP_BETAS, SWEEP_STARTS)


@pytest.mark.parametrize(
    ("c", "beta"),
    [(1e-300, 1.0), (1.0, 1e300), (1e-200, 1e-200), (1e200, 1e200), (1e-20, 1.0), (1e40, 1e40)],
)
def test_extreme_scales_are_rescaled(c, beta):
    # Issue 26: beta = 1e300 raised LinAlgError; scores of 1e-300 could not be solved at all. (U-CA) with every
    # score and threshold times c is c times the problem at beta / c: the same lambda* and policy, P* times c.
    inst = make_instance(1)
    unit = theory.solve_dual(inst.prob.with_beta(beta / c))
    assert outcome(theory.solve_dual, scaled(inst, c, beta), beta, (), tolerance=1e-7) == "correct"
    sol = theory.solve_dual(scaled(inst, c, beta).prob)
    assert np.allclose(sol.lam, unit.lam, rtol=1e-6)
    assert sol.value / c == pytest.approx(unit.value, rel=1e-9)


@pytest.mark.parametrize(("c", "beta"), [(1e300, 1.0), (1e150, 1.0), (1.0, 1e-150), (1e3, 1e-14)])
def test_logits_beyond_float64_resolution_are_refused(c, beta):
    with pytest.raises(theory.DualSolverError, match=r"cannot certify the optimum .* in float64.*Increase beta"):
        theory.solve_dual(scaled(make_instance(1), c, beta).prob)
