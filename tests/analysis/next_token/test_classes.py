"""The policy classes of the nu dial against independent computations (finite differences of theory.lagrangian)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax

from analysis.next_token.classes import (
    BiasLagrangian,
    LogitBiasPolicy,
    class_trunk,
    fit_lagrangian,
    logit_gradient,
    top_tokens,
)
from analysis.next_token.policy import LastBlockPolicy
from analysis.next_token.problem import exact_problem
from analysis.next_token.world import load_or_build_world, make_split, normalised
from theory import lagrangian, tilted_policy

LAM = np.array([0.7])


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    model, tok = tiny
    train, held_out = make_split(10, 8, seed=1)
    return load_or_build_world(model, tok, train, held_out, tmp_path_factory.mktemp("cache"), "tiny")


def _theory_lagrangian(world, logits: np.ndarray) -> float:
    """L(pi, lambda) of eq. (1) by theory.lagrangian, pi = softmax(logits) on the train prompts."""
    prob = exact_problem(world, (1,), np.zeros(1), 1.0, train=True)
    return lagrangian(prob, np.exp(log_softmax(logits, axis=1)), LAM)


def test_bias_lagrangian_gradient_matches_finite_differences(world):
    ref = normalised(world.ref_train)
    composite = world.scores[0] + LAM @ world.scores[[1]]
    tokens = top_tokens(ref, 20)
    objective = BiasLagrangian(tokens, composite, ref, 1.0)
    b = np.random.default_rng(0).normal(size=tokens.size)
    value, grad = objective.value_and_grad(b)

    def theory_at(bias: np.ndarray) -> float:
        shift = np.zeros(ref.shape[1])
        shift[tokens] = bias
        return _theory_lagrangian(world, ref + shift)

    h = 1e-5
    fd = np.array([(theory_at(b + h * e) - theory_at(b - h * e)) / (2 * h) for e in np.eye(tokens.size)])
    assert np.allclose(grad, fd, atol=1e-8)
    # theory's L carries the constant -lambda^T (E_ref g + b) of h; the fit drops it (b = 0 here)
    prob = exact_problem(world, (1,), np.zeros(1), 1.0, train=True)
    assert value == pytest.approx(theory_at(b) + LAM @ prob.absolute_thresholds, abs=1e-10)


def test_mlp_class_gradient_matches_finite_differences(world, tiny):
    model, _ = tiny
    policy = LastBlockPolicy(model).double()  # float64 so that finite differences resolve the gradient
    policy.head_weight = policy.head_weight.double()
    trunk = class_trunk(world.trunk_train, normalised(world.ref_train))
    trunk = type(trunk)(trunk.hidden.double(), trunk.ref_logp)
    composite = torch.as_tensor(world.scores[0] + LAM @ world.scores[[1]])
    ref = torch.as_tensor(normalised(world.ref_train))
    logits = policy.logits(trunk)
    _, grad_logits = logit_gradient(logits, composite, ref, 1.0)
    logits.backward(grad_logits)
    params = policy.trainable()
    grad = torch.cat([p.grad.reshape(-1) for p in params])
    # transformers' RMSNorm computes in float32 inside a float64 model, so finite differences resolve a
    # directional derivative to ~1e-7 / h: take a direction with a large one (a random mix leaning on the gradient)
    direction = grad / grad.norm() + 0.5 * torch.as_tensor(np.random.default_rng(1).normal(size=grad.numel())) / \
        np.sqrt(grad.numel())
    direction /= direction.norm()
    theta = torch.nn.utils.parameters_to_vector(params).detach()

    def theory_at(step: float) -> float:
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta + step * direction, params)
            return _theory_lagrangian(world, policy.logits(trunk).numpy())

    h = 1e-3
    fd = (theory_at(h) - theory_at(-h)) / (2 * h)
    assert float(grad @ direction) == pytest.approx(fd, rel=1e-3)


def test_fits_reach_the_tilt_and_order_by_capacity(world):
    ref, ref_eval = normalised(world.ref_train), normalised(world.ref_eval)
    composite = world.scores[0] + LAM @ world.scores[[1]]
    train, held = class_trunk(world.trunk_train, ref), class_trunk(world.trunk_eval, ref_eval)
    target = tilted_policy(exact_problem(world, (1,), np.zeros(1), 1.0), LAM)
    values, distances = [], []
    for n in (5, 15, 30, ref.shape[1]):
        policy = LogitBiasPolicy(ref.shape[1], top_tokens(ref, n))
        fit = fit_lagrangian(policy, train, composite, ref, 1.0, tol=1e-8)
        assert fit.converged
        values.append(fit.lagrangian)
        distances.append(np.abs(policy.distribution(held) - target).sum(axis=1).max())
    assert np.all(np.diff(values) >= -1e-12)  # nested classes: a larger one never fits worse
    assert distances[-1] < 1e-8  # the full logit bias represents the tilt
    assert distances[0] > 1e-3  # a small class cannot


def test_mlp_fit_raises_the_lagrangian(world, tiny):
    """From pi_ref, L-BFGS on the MLP class raises the Lagrangian; the value it reports is theory's."""
    model, _ = tiny
    ref = normalised(world.ref_train)
    composite = world.scores[0] + LAM @ world.scores[[1]]
    trunk = class_trunk(world.trunk_train, ref)
    constant = LAM @ exact_problem(world, (1,), np.zeros(1), 1.0, train=True).absolute_thresholds
    policy = LastBlockPolicy(model)
    start = _theory_lagrangian(world, policy.logits(trunk).detach().double().numpy()) + constant
    fit = fit_lagrangian(policy, trunk, composite, ref, 1.0, tol=1e-6, max_iter=50)
    end = _theory_lagrangian(world, policy.logits(trunk).detach().double().numpy()) + constant
    assert fit.lagrangian == pytest.approx(end, abs=1e-5)
    assert end > start + 1e-3


def test_bias_expectations_match_the_full_softmax(world):
    ref = normalised(world.ref_train)
    p_ref = np.exp(ref)
    policy = LogitBiasPolicy(ref.shape[1], top_tokens(ref, 12))
    with torch.no_grad():
        policy.bias.copy_(torch.as_tensor(np.random.default_rng(2).normal(size=12) * 3))
    tables = world.scores[[1, 2]]
    full = policy.distribution(class_trunk(world.trunk_train, ref)) @ tables.T
    assert np.allclose(policy.expectations(p_ref, tables, p_ref @ tables.T), full, atol=1e-10)
