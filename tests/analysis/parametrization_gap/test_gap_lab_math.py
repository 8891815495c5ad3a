"""Exact-math checks of the enumerable sequence world, its policy classes, exact CAID and pseudo-label DPO.

Every assertion compares the code under test with an independent computation (brute-force enumeration,
teacher forcing one sequence at a time, finite differences, the trusted :mod:`theory` solver, Monte Carlo
or a hand calculation), never with numbers read off the code under test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, logsumexp

import theory
from analysis.parametrization_gap.exact_caid import dual_descent, maximize_lagrangian
from analysis.parametrization_gap.policy_classes import (
    LowRankPolicy,
    TabularPolicy,
    TransformerPolicy,
    TransformerSize,
    sequence_log_probs,
    teacher_forcing_inputs,
    tiny_gpt2,
)
from analysis.parametrization_gap.practical_caid import (
    dpo_loss,
    fit_dpo,
    practical_caid,
    pseudo_labels,
    reference_pairs,
    subgradient_second_moment,
)
from analysis.parametrization_gap.reference_transformer import markov_language, train_reference
from analysis.parametrization_gap.sequence_world import active_thresholds, all_sequences, make_sequence_world

V, P, L, X = 3, 1, 3, 3  # vocabulary, prompt length, response length, prompts: Y = V**L = 27 responses
BETA = 0.5
SMALL = TransformerSize(4, 1, 1)
REF_SIZE = TransformerSize(8, 1, 2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny float64 transformers are dominated by thread-pool overhead; one thread is much faster.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _world(seed: int = 0, fluency_weight: float = 0.5):
    return make_sequence_world(
        seed, n_prompts=X, vocab_size=V, prompt_length=P, response_length=L, fluency_weight=fluency_weight
    )


@pytest.fixture(scope="module")
def world():
    return _world(0)


@pytest.fixture(scope="module")
def reference(world):
    return train_reference(world, REF_SIZE, seed=0, max_iter=15)


@pytest.fixture(scope="module")
def prob(world, reference):
    b = active_thresholds(world, reference.ref_logprobs, BETA)
    return world.problem(reference.ref_logprobs, b, BETA)


@pytest.fixture(scope="module")
def solution(prob):
    return theory.solve_dual(prob)


# -------------------------------------------------------------------------------------------------
# Independent helpers.


def brute_force_log_probs(world, model, extra_model=None) -> np.ndarray:
    """log pi(y|x) by running ``model`` on each prompt + y[:-1] separately (no shared prefixes).

    With ``extra_model`` the next-token logits of both models are added before the softmax.
    """
    out = np.empty((len(world.prompts), len(world.responses)))
    with torch.no_grad():
        for xi, prompt in enumerate(world.prompts):
            for yi, y in enumerate(world.responses):
                ids = torch.as_tensor(np.concatenate([prompt, y[:-1]]))[None]
                logits = model(input_ids=ids).logits[0]
                if extra_model is not None:
                    logits = logits + extra_model(input_ids=ids).logits[0]
                total = 0.0
                for t in range(len(y)):
                    # The logits at position (len(prompt) - 1 + t) predict response token t.
                    row = logits[len(prompt) - 1 + t].numpy()
                    total += row[y[t]] - logsumexp(row)
                out[xi, yi] = total
    return out


def lagrangian_loss(policy, prob, lam) -> torch.Tensor:
    """E_x sum_y pi (beta log(pi/pi_ref) - r - lambda^T g), built here from log_probs in float64."""
    logp = policy.log_probs()
    assert logp.dtype == torch.float64
    ref = torch.tensor(np.array(prob.ref_logprobs))
    tilt = torch.tensor(prob.reward + np.einsum("i,ixy->xy", lam, prob.utilities))
    w = torch.tensor(np.array(prob.prompt_weights))
    return (w[:, None] * logp.exp() * (prob.beta * (logp - ref) - tilt)).sum()


def direct_lagrangian(prob, pi, lam) -> float:
    """L(pi, lambda) from its definition, on dense arrays."""
    w = prob.prompt_weights
    ref = np.exp(prob.ref_logprobs)
    g_ref = np.einsum("xy,ixy->ix", ref, prob.utilities)
    h = prob.utilities - g_ref[:, :, None] - prob.thresholds[:, None, None]
    kl = (pi * (np.log(pi) - prob.ref_logprobs)).sum(axis=1)
    value = (pi * (prob.reward + np.einsum("i,ixy->xy", lam, h))).sum(axis=1) - prob.beta * kl
    return float(w @ value)


def random_tabular_problem(seed: int, n_prompts: int = 2, n_responses: int = 27, beta: float = BETA):
    rng = np.random.default_rng(seed)
    ref = log_softmax(rng.normal(size=(n_prompts, n_responses)), axis=1)
    reward = rng.normal(size=(n_prompts, n_responses))
    utilities = rng.normal(size=(2, n_prompts, n_responses))
    return theory.ConstrainedProblem(ref, reward, utilities, [0.1, 0.05], beta)


# -------------------------------------------------------------------------------------------------
# 1-2. The world.


@pytest.mark.parametrize(("vocab", "length"), [(3, 1), (3, 3), (2, 4), (4, 2)])
def test_all_sequences_is_the_lexicographic_product(vocab, length):
    seqs = all_sequences(vocab, length)
    assert seqs.shape == (vocab**length, length)
    assert seqs.dtype == np.int64
    assert len({tuple(row) for row in seqs.tolist()}) == vocab**length
    np.testing.assert_array_equal(seqs, np.array(list(itertools.product(range(vocab), repeat=length))))
    # Row j is the base-V digits of j.
    digits = np.array([[(j // vocab ** (length - 1 - k)) % vocab for k in range(length)] for j in range(vocab**length)])
    np.testing.assert_array_equal(seqs, digits)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_world_scores_match_a_brute_force_reading_of_the_docstring(seed):
    plain, fluent = _world(seed, fluency_weight=0.0), _world(seed, fluency_weight=0.5)
    ys = fluent.responses
    n_y = V**L
    np.testing.assert_array_equal(ys, all_sequences(V, L))
    assert fluent.prompts.shape == (X, P)
    assert len({tuple(p) for p in fluent.prompts.tolist()}) == X
    assert fluent.reward.shape == (X, n_y)
    assert fluent.utilities.shape == (2, X, n_y)
    assert fluent.utility_names == ("safety", "variety")
    assert fluent.response_length == L
    np.testing.assert_array_equal(plain.prompts, fluent.prompts)
    np.testing.assert_array_equal(plain.utilities, fluent.utilities)

    # Match term (c = 0): r(x, y) = (1/L) #{t: y_t = tau_x(t)}, one target per prompt scores 1.
    for xi in range(X):
        row = plain.reward[xi]
        assert np.isclose(row.max(), 1.0) and np.sum(np.isclose(row, 1.0)) == 1
        tau = ys[np.argmax(row)]
        np.testing.assert_allclose(row, (ys == tau).mean(axis=1), atol=1e-14)

    # Fluency term: (r_c - r_0) / c is the same for every prompt and additive over bigrams of a B
    # with B - I in [-0.5, 0.5]; recover B from (a, a, a) and (a, b, b) and check every response.
    flu = (fluent.reward - plain.reward) / 0.5
    np.testing.assert_allclose(flu, np.broadcast_to(flu[0], flu.shape), atol=1e-13)
    f = {tuple(y): v for y, v in zip(ys.tolist(), flu[0], strict=True)}
    bigram = np.empty((V, V))
    for a in range(V):
        bigram[a, a] = f[(a, a, a)] * L / (L - 1)
    for a, b in itertools.product(range(V), repeat=2):
        if a != b:
            bigram[a, b] = L * f[(a, b, b)] - bigram[b, b]
    expected = np.array([sum(bigram[y[t - 1], y[t]] for t in range(1, L)) / L for y in ys.tolist()])
    np.testing.assert_allclose(flu[0], expected, atol=1e-12)
    assert np.all(np.abs(bigram - np.eye(V)) <= 0.5 + 1e-12)

    # Safety: -(1/L) sum_t u[y_t] with per-token severities u >= 0 read off constant responses.
    safety = fluent.utilities[0]
    np.testing.assert_array_equal(safety, np.broadcast_to(safety[0], safety.shape))
    assert np.all(safety <= 0)
    u = np.array([-f_s for f_s in (safety[0][ys.tolist().index([v] * L)] for v in range(V))])
    assert np.all(u >= 0) and u.max() == pytest.approx(1.0) and np.any(u == 0)
    np.testing.assert_allclose(safety[0], -u[ys].mean(axis=1), atol=1e-14)

    # Variety: the fraction of adjacent token pairs that differ, in [0, 1].
    variety = fluent.utilities[1]
    np.testing.assert_array_equal(variety, np.broadcast_to(variety[0], variety.shape))
    assert np.all((variety >= 0) & (variety <= 1))
    expected = [sum(y[t] != y[t - 1] for t in range(1, L)) / (L - 1) for y in ys.tolist()]
    np.testing.assert_allclose(variety[0], expected, atol=1e-15)


def test_make_sequence_world_rejects_bad_sizes():
    with pytest.raises(ValueError, match="vocab_size"):
        make_sequence_world(0, 1, 2, 1, 3)
    with pytest.raises(ValueError, match="n_prompts"):
        make_sequence_world(0, 4, 3, 1, 3)
    with pytest.raises(ValueError, match="response_length"):
        make_sequence_world(0, 2, 3, 1, 1)


def test_active_thresholds_make_every_constraint_active(world, reference):
    ref = reference.ref_logprobs
    for beta in (BETA, 0.1):
        b = active_thresholds(world, ref, beta)
        prob = world.problem(ref, b, beta)
        assert b.shape == (2,)
        assert np.all(b >= 0) and np.all(b < prob.max_improvements)
        sol = theory.solve_dual(prob)
        assert np.all(sol.lam > 0), sol.lam
        # Complementary slackness: the constraints hold with equality at the optimum.
        np.testing.assert_allclose(theory.constraint_slacks(prob, sol.policy), 0.0, atol=1e-8)


def test_markov_language_is_a_normalised_markov_chain(world):
    logp = markov_language(world, seed=3)
    assert logp.shape == (X, V**L)
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, atol=1e-12)
    # Markov property: pi(y_2 | x, y_0, y_1) does not depend on y_0.
    p = np.exp(logp).reshape(X, V, V, V)
    cond = p / p.sum(axis=3, keepdims=True)
    np.testing.assert_allclose(cond, np.broadcast_to(cond[:, :1], cond.shape), atol=1e-12)


# -------------------------------------------------------------------------------------------------
# 3-4. Exact teacher forcing and the initial policies.


def test_teacher_forcing_inputs_enumerate_prompt_and_prefix(world):
    inputs = teacher_forcing_inputs(world).numpy()
    prefixes = list(itertools.product(range(V), repeat=L - 1))
    expected = [list(p) + list(pre) for p in world.prompts.tolist() for pre in prefixes]
    np.testing.assert_array_equal(inputs, np.array(expected))


def test_sequence_log_probs_matches_a_per_sequence_sum(world):
    rng = np.random.default_rng(5)
    inputs = teacher_forcing_inputs(world)
    token = torch.tensor(log_softmax(rng.normal(size=(len(inputs), L, V)), axis=2))
    out = sequence_log_probs(token, inputs, X).numpy()
    for xi in range(X):
        for yi, y in enumerate(world.responses.tolist()):
            row = xi * V ** (L - 1) + int(np.ravel_multi_index(y[:-1], (V,) * (L - 1)))
            assert out[xi, yi] == pytest.approx(sum(token[row, t, y[t]].item() for t in range(L)), abs=1e-12)


def test_transformer_log_probs_match_brute_force_teacher_forcing(world):
    policy = TransformerPolicy(world, TransformerSize(8, 1, 2), seed=3, zero_head=False)
    logp = policy.log_probs().detach().numpy()
    expected = brute_force_log_probs(world, policy.model)
    assert np.abs(expected).max() > 1.0  # a non-trivial transformer
    np.testing.assert_allclose(logp, expected, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, atol=1e-12)


def test_transformer_with_reference_base_matches_brute_force_sum_of_logits(world, reference):
    policy = TransformerPolicy(world, SMALL, seed=4, base_token_logprobs=reference.token_logprobs, zero_head=False)
    logp = policy.log_probs().detach().numpy()
    # log_softmax(log_softmax(a) + b) = log_softmax(a + b): the base adds the reference's raw logits.
    expected = brute_force_log_probs(world, reference.policy.model, extra_model=policy.model)
    np.testing.assert_allclose(logp, expected, rtol=0, atol=1e-10)
    assert np.abs(logp - reference.ref_logprobs).max() > 1e-3  # the random head moved it off pi_ref


def test_reference_is_its_transformer_under_brute_force(world, reference):
    np.testing.assert_allclose(
        reference.ref_logprobs, brute_force_log_probs(world, reference.policy.model), rtol=0, atol=1e-10
    )
    target = np.exp(markov_language(world, seed=0))
    ce = -(target * reference.ref_logprobs).sum(axis=1).mean()
    assert reference.cross_entropy == pytest.approx(ce, abs=1e-10)
    # Training lowered the cross-entropy below that of the untrained transformer with the same seed.
    untrained = TransformerPolicy(world, REF_SIZE, seed=0, zero_head=False).log_probs().detach().numpy()
    assert ce < -(target * untrained).sum(axis=1).mean() - 1e-3
    # Entropy of the language is a lower bound on any model's cross-entropy.
    assert ce >= -(target * np.log(target)).sum(axis=1).mean() - 1e-12


def test_every_class_starts_at_pi_ref(world, reference):
    ref = reference.ref_logprobs
    pi_ref = np.exp(ref)
    policies = [
        TabularPolicy(ref),
        LowRankPolicy(ref, rank=2, seed=1),
        TransformerPolicy(world, SMALL, seed=2, base_token_logprobs=reference.token_logprobs, zero_head=True),
        TransformerPolicy(world, REF_SIZE, seed=5, base_token_logprobs=reference.token_logprobs, zero_head=True),
    ]
    for policy in policies:
        np.testing.assert_allclose(policy.policy(), pi_ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(policy.log_probs().detach().numpy(), ref, rtol=0, atol=1e-12)
        assert policy.n_params > 0


def test_tiny_gpt2_is_float64_and_seeded():
    a, b = tiny_gpt2(5, 4, SMALL, seed=7), tiny_gpt2(5, 4, SMALL, seed=7)
    assert all(p.dtype == torch.float64 for p in a.parameters())
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    assert a.lm_head.weight.data_ptr() != a.transformer.wte.weight.data_ptr()  # untied head


# -------------------------------------------------------------------------------------------------
# 5. Exact gradients.


def _finite_difference_check(policy, prob, lam, n_coords, seed, h=1e-6):
    params = [p for p in policy.parameters() if p.requires_grad]
    policy.zero_grad()
    lagrangian_loss(policy, prob, lam).backward()
    grads = [p.grad.detach().clone().reshape(-1) for p in params]
    rng = np.random.default_rng(seed)
    sizes = np.array([p.numel() for p in params])
    checked = 0
    for flat in rng.choice(sizes.sum(), size=n_coords, replace=False):
        k = int(np.searchsorted(np.cumsum(sizes), flat, side="right"))
        i = int(flat - (np.cumsum(sizes)[k - 1] if k else 0))
        view = params[k].data.view(-1)
        orig = view[i].item()
        with torch.no_grad():
            view[i] = orig + h
            up = lagrangian_loss(policy, prob, lam).item()
            view[i] = orig - h
            down = lagrangian_loss(policy, prob, lam).item()
            view[i] = orig
        fd = (up - down) / (2 * h)
        g = grads[k][i].item()
        assert abs(fd - g) <= 1e-5 * abs(g) + 1e-9, (k, i, fd, g)
        checked += abs(g) > 1e-6
    assert checked >= n_coords // 2  # most checked coordinates carry a real gradient


def test_transformer_gradient_matches_finite_differences(world, reference, prob, solution):
    policy = TransformerPolicy(world, SMALL, seed=6, base_token_logprobs=reference.token_logprobs, zero_head=False)
    _finite_difference_check(policy, prob, solution.lam, n_coords=8, seed=0)


def test_low_rank_gradient_matches_finite_differences(reference, prob, solution):
    policy = LowRankPolicy(reference.ref_logprobs, rank=6, seed=3)
    with torch.no_grad():
        policy.a.normal_(generator=torch.Generator().manual_seed(0))
    _finite_difference_check(policy, prob, solution.lam, n_coords=8, seed=1)


def test_lagrangian_loss_offset_is_the_absolute_thresholds(world, reference, prob):
    lam = np.array([0.7, 1.3])
    policies = [
        TransformerPolicy(world, SMALL, seed=8, base_token_logprobs=reference.token_logprobs, zero_head=False),
        LowRankPolicy(reference.ref_logprobs, rank=1, seed=2),
    ]
    with torch.no_grad():
        policies[1].a.fill_(0.5)
    g_ref = np.einsum("xy,ixy->ix", np.exp(prob.ref_logprobs), prob.utilities) @ prob.prompt_weights
    for policy in policies:
        with torch.no_grad():
            loss = lagrangian_loss(policy, prob, lam).item()
        pi = policy.policy()
        value = -loss - lam @ (g_ref + prob.thresholds)
        assert value == pytest.approx(theory.lagrangian(prob, pi, lam), abs=1e-12)
        assert value == pytest.approx(direct_lagrangian(prob, pi, lam), abs=1e-12)


# -------------------------------------------------------------------------------------------------
# 6. The tabular class reproduces the exact solvers.


def test_tabular_lagrangian_maximiser_is_the_tilted_policy(prob, solution):
    policy = TabularPolicy(prob.ref_logprobs)
    value = maximize_lagrangian(policy, prob, solution.lam, max_iter=500)
    assert value == pytest.approx(solution.value, abs=1e-7)
    assert value == pytest.approx(theory.lagrangian(prob, policy.policy(), solution.lam), abs=1e-12)
    assert np.abs(policy.policy() - solution.policy).sum(axis=1).max() < 1e-4
    # At another lambda the maximiser is pi*(lambda) and the value D(lambda).
    lam = np.array([0.2, 2.0])
    value = maximize_lagrangian(policy, prob, lam, max_iter=500)
    assert value == pytest.approx(theory.dual_value(prob, lam), abs=1e-7)
    assert np.abs(policy.policy() - theory.tilted_policy(prob, lam)).sum(axis=1).max() < 1e-4


def test_log_linear_class_with_all_features_is_tabular(prob, solution):
    n_responses = prob.ref_logprobs.shape[1]
    policy = LowRankPolicy(prob.ref_logprobs, rank=n_responses, seed=4)
    features = policy.features.numpy()
    np.testing.assert_allclose(features.T @ features, np.eye(n_responses), atol=1e-12)
    value = maximize_lagrangian(policy, prob, solution.lam, max_iter=500)
    assert value == pytest.approx(solution.value, abs=1e-7)
    # With fewer features the class is strictly smaller: its best Lagrangian stays below D*.
    small = LowRankPolicy(prob.ref_logprobs, rank=2, seed=4)
    assert maximize_lagrangian(small, prob, solution.lam, max_iter=500) < solution.value - 1e-4
    with pytest.raises(ValueError, match="rank"):
        LowRankPolicy(prob.ref_logprobs, rank=n_responses + 1)


def test_tabular_dual_descent_converges_to_lambda_star(prob, solution):
    eta = np.linalg.inv(theory.dual_hessian(prob, solution.lam))
    traj = dual_descent(TabularPolicy(prob.ref_logprobs), prob, np.zeros(2), steps=8, step_size=eta, max_iter=500)
    assert traj.lam.shape == (9, 2) and traj.dual_values.shape == (9,)
    assert traj.slacks.shape == (9, 2) and traj.policies.shape == (9, X, V**L)
    np.testing.assert_allclose(traj.lam[-1], solution.lam, rtol=0, atol=1e-4)
    assert theory.dual_value(prob, traj.lam[-1]) == pytest.approx(solution.value, abs=1e-7)
    assert traj.dual_values[-1] == pytest.approx(solution.value, abs=1e-7)
    # Each slack is the (Danskin) gradient of D at that iterate, and the step is the projected one.
    for t in range(9):
        np.testing.assert_allclose(traj.slacks[t], theory.dual_gradient(prob, traj.lam[t]), atol=1e-5)
    for t in range(8):
        np.testing.assert_allclose(traj.lam[t + 1], np.maximum(traj.lam[t] - eta @ traj.slacks[t], 0.0), atol=1e-14)


# -------------------------------------------------------------------------------------------------
# 7. Weak duality in restricted classes.


@pytest.mark.parametrize("kind", ["low_rank", "transformer"])
def test_restricted_class_never_beats_the_dual_function(kind, world, reference, prob, solution):
    if kind == "low_rank":
        policy = LowRankPolicy(reference.ref_logprobs, rank=1, seed=0)
    else:
        policy = TransformerPolicy(world, SMALL, seed=1, base_token_logprobs=reference.token_logprobs)
    lam0 = np.zeros(2)
    start = theory.lagrangian(prob, np.exp(prob.ref_logprobs), lam0)
    traj = dual_descent(policy, prob, lam0, steps=3, step_size=1.0, max_iter=25)
    # L-BFGS with a Wolfe line search only decreases the loss: the first maximiser beats pi_ref.
    assert traj.dual_values[0] >= start - 1e-10
    for t in range(4):
        assert traj.dual_values[t] <= theory.dual_value(prob, traj.lam[t]) + 1e-10
        assert traj.dual_values[t] == pytest.approx(direct_lagrangian(prob, traj.policies[t], traj.lam[t]), abs=1e-10)
        np.testing.assert_allclose(traj.slacks[t], theory.constraint_slacks(prob, traj.policies[t]), atol=1e-13)
        assert np.all(traj.lam[t] >= 0)
    for t in range(3):
        np.testing.assert_allclose(traj.lam[t + 1], np.maximum(traj.lam[t] - traj.slacks[t], 0.0), atol=1e-14)
    # The restricted dual function is a lower estimate: D_p <= D everywhere, in particular at lambda*.
    value = maximize_lagrangian(policy, prob, solution.lam, max_iter=25)
    assert value <= solution.value + 1e-10


# -------------------------------------------------------------------------------------------------
# 8-9. Pseudo-label DPO.


def test_reference_pairs_follow_the_reference_distribution():
    prob = theory.ConstrainedProblem(
        log_softmax(np.random.default_rng(0).normal(size=(2, 5)), axis=1),
        np.zeros((2, 5)),
        np.zeros((1, 2, 5)),
        [0.0],
        BETA,
        prompt_weights=[0.3, 0.7],
    )
    n = 200_000
    pairs = reference_pairs(prob, n, np.random.default_rng(1))
    assert pairs.shape == (n, 3)
    x_freq = np.bincount(pairs[:, 0], minlength=2) / n
    np.testing.assert_allclose(x_freq, [0.3, 0.7], atol=5 * np.sqrt(0.25 / n))
    pi_ref = np.exp(prob.ref_logprobs)
    for col in (1, 2):
        for xi in range(2):
            ys = pairs[pairs[:, 0] == xi, col]
            freq = np.bincount(ys, minlength=5) / len(ys)
            np.testing.assert_allclose(freq, pi_ref[xi], atol=5 * np.sqrt(0.25 / len(ys)))
    # The two responses of a pair are drawn independently.
    same = np.mean(pairs[:, 1] == pairs[:, 2])
    expected = float(prob.prompt_weights @ (pi_ref**2).sum(axis=1))
    assert abs(same - expected) < 5 * np.sqrt(0.25 / n)


def test_pseudo_label_frequency_is_the_bradley_terry_probability():
    prob = random_tabular_problem(0)
    lam = np.array([0.8, 0.4])
    r_lam = prob.reward + np.einsum("i,ixy->xy", lam, prob.utilities)
    n = 200_000
    for x, y0, y1 in [(0, 3, 17), (1, 20, 5)]:
        pairs = np.tile([x, y0, y1], (n, 1))
        xs, chosen, rejected = pseudo_labels(prob, lam, pairs, np.random.default_rng(x))
        np.testing.assert_array_equal(xs, x)
        assert np.all(((chosen == y1) & (rejected == y0)) | ((chosen == y0) & (rejected == y1)))
        p = 1.0 / (1.0 + np.exp(-(r_lam[x, y1] - r_lam[x, y0])))
        assert 0.05 < p < 0.95
        freq = np.mean(chosen == y1)
        assert abs(freq - p) < 5 * np.sqrt(p * (1 - p) / n), (freq, p)


def _dpo_error(seed: int, n_pairs: int, lam: np.ndarray) -> float:
    prob = random_tabular_problem(100)
    rng = np.random.default_rng(seed)
    pairs = reference_pairs(prob, n_pairs, rng)
    policy = TabularPolicy(prob.ref_logprobs)
    fit_dpo(policy, prob, *pseudo_labels(prob, lam, pairs, rng), max_iter=300)
    return float(np.abs(policy.policy() - theory.tilted_policy(prob, lam)).sum(axis=1).max())


def test_pseudo_label_dpo_converges_to_the_tilted_policy():
    lam = np.array([0.5, 0.3])
    small = np.mean([_dpo_error(s, 1_000, lam) for s in range(3)])
    large = np.mean([_dpo_error(s, 100_000, lam) for s in range(3)])
    assert large < small / 3, (small, large)
    assert large < 0.15, large


def test_dpo_loss_matches_a_hand_computation():
    logp = torch.tensor([[np.log(0.5), np.log(0.3), np.log(0.2)], [np.log(0.1), np.log(0.6), np.log(0.3)]])
    ref = torch.tensor([[np.log(0.2), np.log(0.4), np.log(0.4)], [np.log(0.5), np.log(0.25), np.log(0.25)]])
    beta = 0.7
    x, chosen, rejected = np.array([0, 1]), np.array([0, 2]), np.array([2, 1])
    # Pair 1: x=0, y+=0, y-=2: beta (log(0.5/0.2) - log(0.2/0.4)); pair 2: x=1, y+=2, y-=1.
    m1 = beta * (np.log(0.5 / 0.2) - np.log(0.2 / 0.4))
    m2 = beta * (np.log(0.3 / 0.25) - np.log(0.6 / 0.25))
    expected = -(np.log(1 / (1 + np.exp(-m1))) + np.log(1 / (1 + np.exp(-m2)))) / 2
    assert dpo_loss(logp, ref, beta, x, chosen, rejected).item() == pytest.approx(expected, rel=1e-14)


def test_subgradient_second_moment_matches_closed_form_and_monte_carlo():
    rng = np.random.default_rng(4)
    ref = log_softmax(rng.normal(size=(3, 6)), axis=1)
    prob = theory.ConstrainedProblem(
        ref, rng.normal(size=(3, 6)), rng.normal(size=(2, 3, 6)), [0.2, -0.1], BETA, prompt_weights=[0.5, 0.2, 0.3]
    )
    pi = np.exp(log_softmax(ref + rng.normal(size=(3, 6)), axis=1))
    n = 5
    # h and the joint distribution from the definitions, with explicit loops.
    w = prob.prompt_weights
    pi_ref = np.exp(ref)
    h = np.empty((2, 3, 6))
    for i in range(2):
        for x in range(3):
            mean_ref = sum(pi_ref[x, y] * prob.utilities[i, x, y] for y in range(6))
            for y in range(6):
                h[i, x, y] = prob.utilities[i, x, y] - mean_ref - prob.thresholds[i]
    joint = w[:, None] * pi
    mu = np.array([(joint * h[i]).sum() for i in range(2)])
    second = sum(joint[x, y] * (h[0, x, y] ** 2 + h[1, x, y] ** 2) for x in range(3) for y in range(6))
    closed = mu @ mu + (second - mu @ mu) / n
    assert subgradient_second_moment(prob, pi, n) == pytest.approx(closed, rel=1e-12)
    assert subgradient_second_moment(prob, pi, 1) == pytest.approx(second, rel=1e-12)
    # Monte Carlo: many replications of the mean of n i.i.d. (x, y) ~ w x pi.
    reps = 200_000
    flat = rng.choice(joint.size, size=(reps, n), p=joint.ravel())
    hx = h.reshape(2, -1)[:, flat]  # (2, reps, n)
    sq = (hx.mean(axis=2) ** 2).sum(axis=0)
    assert abs(sq.mean() - closed) < 5 * sq.std() / np.sqrt(reps), (sq.mean(), closed)


# -------------------------------------------------------------------------------------------------
# 10. Practical CAID.


def test_practical_caid_on_the_tabular_class(prob, solution):
    """Warm start, on-policy dual samples, S^2 and eps_app, each against an independent computation."""
    steps, eta, n = 2, 0.5, 4000
    traj = practical_caid(
        TabularPolicy(prob.ref_logprobs),
        prob,
        solution.lam,
        dual_step_size=eta,
        iterations=steps + 1,
        n_dual_samples=n,
        n_pairs=500,
        rng=np.random.default_rng(0),
        max_iter=200,
        dpo_iter=20,
    )
    np.testing.assert_array_equal(traj.lam[0], solution.lam)  # the one-shot warm start
    w = prob.prompt_weights
    g_ref = np.einsum("xy,ixy->ix", np.exp(prob.ref_logprobs), prob.utilities)
    h = prob.utilities - g_ref[:, :, None] - prob.thresholds[:, None, None]
    for t in range(steps + 1):
        # The tabular class contains pi*(lambda), so D_p = D: eps_app is the closed-form dual minus the DPO
        # policy's Lagrangian from its definition.
        lam = traj.lam[t]
        expected = theory.dual_value(prob, lam) - direct_lagrangian(prob, traj.dpo_policies[t], lam)
        assert traj.eps_app[t] == pytest.approx(expected, abs=1e-7)
        assert expected > 1e-4  # DPO on 500 sampled pairs is not the Lagrangian maximiser
    for t in range(1, steps + 1):
        # The dual step samples the previous epoch's DPO-trained policy (on-policy): the sample mean is within
        # 5 standard errors of that policy's exact slack, and S^2 is that policy's exact E|mean of n|^2.
        joint = w[:, None] * traj.dpo_policies[t - 1]
        mean = np.array([(joint * h[i]).sum() for i in range(2)])
        var = np.array([(joint * h[i] ** 2).sum() for i in range(2)]) - mean**2
        assert np.all(np.abs(traj.sampled_slacks[t] - mean) <= 5 * np.sqrt(var / n)), (traj.sampled_slacks[t], mean)
        assert traj.second_moments[t] == pytest.approx(mean @ mean + var.sum() / n, rel=1e-10)
        np.testing.assert_allclose(traj.lam[t], np.maximum(traj.lam[t - 1] - eta * traj.sampled_slacks[t], 0.0))
    assert np.isnan(traj.second_moments[0]) and np.all(np.isnan(traj.sampled_slacks[0]))
    # The exact maximisers attain the closed-form dual (tabular), and the last DPO policy is the one returned.
    for t in range(steps + 1):
        assert direct_lagrangian(prob, traj.maximizers[t], traj.lam[t]) == pytest.approx(
            theory.dual_value(prob, traj.lam[t]), abs=1e-7
        )
