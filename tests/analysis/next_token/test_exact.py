"""Exactness of the one-token laboratory against independent computations (Monte Carlo, cvxpy, full forward)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.next_token.evaluation import evaluate
from analysis.next_token.policy import LastBlockPolicy, encode_trunk
from analysis.next_token.problem import InstanceError, exact_problem, load_instance, save_instance
from analysis.next_token.world import load_or_build_world, make_split, reference_logprobs
from tests.markers import needs_smollm2
from theory import ConstrainedProblem, bounds, solve_dual, solve_primal, tilted_policy


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    model, tok = tiny
    train, held_out = make_split(10, 8, seed=1)
    return load_or_build_world(model, tok, train, held_out, tmp_path_factory.mktemp("cache"), "tiny")


def test_trunk_cache_matches_full_forward(tiny):
    model, _ = tiny
    ids = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    full = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1] for p in ids]).double()
    logits = LastBlockPolicy(model).logits(encode_trunk(model, ids, batch_size=2)).double()
    assert torch.allclose(logits, full, atol=1e-5)
    assert np.allclose(reference_logprobs(model, ids)[0], torch.log_softmax(full, -1).detach().numpy(), atol=1e-5)


def test_exact_expectations_match_monte_carlo(world):
    prob = exact_problem(world, (1,), np.array([0.1]), 1.0)
    policy = tilted_policy(prob, np.array([0.7]))  # any full-support policy
    ev = evaluate(bounds.ExactOptimum.of(prob), policy, np.array([0.7]))
    rng = np.random.default_rng(0)
    n = 20000
    for x in range(prob.n_prompts):
        draws = rng.choice(prob.n_responses, size=n, p=policy[x])
        ref_draws = rng.choice(prob.n_responses, size=n, p=np.exp(prob.ref_logprobs[x]))
        mc = world.scores[1][draws].mean() - world.scores[1][ref_draws].mean()
        se = np.sqrt(world.scores[1][draws].var() / n + world.scores[1][ref_draws].var() / n)
        assert abs(ev.improvements[0, x] - mc) < 5 * se
        kl_mc = np.mean(np.log(policy[x, draws]) - prob.ref_logprobs[x, draws])
        assert abs(ev.kl[x] - kl_mc) < 5 * np.std(np.log(policy[x, draws]) - prob.ref_logprobs[x, draws]) / np.sqrt(n)


def test_tilted_policy_at_lambda_star_reaches_p_star(world):
    prob = exact_problem(world, (1, 2), np.array([0.2, 0.1]), 1.0)
    opt = bounds.ExactOptimum.of(prob)
    row = evaluate(opt, tilted_policy(prob, opt.solution.lam), opt.solution.lam).row
    p = tilted_policy(prob, opt.solution.lam)
    brute = np.mean([(p[x] * prob.reward[x]).sum() - np.sum(p[x] * (np.log(p[x]) - prob.ref_logprobs[x]))
                     for x in range(prob.n_prompts)])  # fmt: skip
    assert row["objective"] == pytest.approx(opt.P_star, abs=1e-9)
    assert brute == pytest.approx(opt.P_star, abs=1e-9)
    assert row["u_opt"] < 1e-8 and row["r_opt"] < 1e-8 and abs(row["dual_minus_lagrangian"]) < 1e-8


def test_saved_instance_resolved_by_cvxpy(world, tmp_path):
    prob = exact_problem(world, (1, 2), np.array([0.2, 0.1]), 1.0)
    save_instance(prob, tmp_path / "instance.npz")
    loaded = load_instance(tmp_path / "instance.npz")
    rows = [0, 3, 5]
    sub = ConstrainedProblem(loaded.ref_logprobs[rows], loaded.reward[rows], loaded.utilities[:, rows],
                             loaded.thresholds, loaded.beta)
    primal, dual = solve_primal(sub), solve_dual(sub)
    assert primal.value == pytest.approx(dual.value, abs=1e-5)
    assert np.allclose(primal.lam, dual.lam, atol=1e-3)
    original = ConstrainedProblem(prob.ref_logprobs[rows], prob.reward[rows], prob.utilities[:, rows],
                                  prob.thresholds, prob.beta)
    assert solve_dual(original).value == pytest.approx(dual.value, abs=1e-5)  # float32 storage moves P* < 1e-5


def test_broken_instance_names_file(tmp_path):
    path = tmp_path / "instance.npz"
    np.savez(path, reward=np.zeros(3))
    with pytest.raises(InstanceError, match=r"instance\.npz: missing fields"):
        load_instance(path)


def test_world_cache_is_reused_and_validated(tiny, tmp_path):
    model, tok = tiny
    train, held_out = make_split(6, 4, seed=2)
    first = load_or_build_world(model, tok, train, held_out, tmp_path, "tiny")
    files = list(tmp_path.glob("world-*.npz"))
    assert len(files) == 1
    files[0].write_bytes(b"corrupt")  # a damaged cache file is rebuilt, never trusted
    again = load_or_build_world(model, tok, train, held_out, tmp_path, "tiny")
    assert np.array_equal(first.ref_eval, again.ref_eval)
    sd = np.sqrt((np.exp(first.ref_train.astype(float)) * first.scores[1] ** 2).sum(1)
                 - ((np.exp(first.ref_train.astype(float)) * first.scores[1]).sum(1)) ** 2)
    assert np.sqrt((sd**2).mean()) == pytest.approx(1.0, rel=1e-4)  # standardised to sigma units


@needs_smollm2
def test_smollm2_smoke():
    from llm.models import load_model

    model, tok = load_model()
    ids = [tok(p, add_special_tokens=False).input_ids for p in make_split(2, 1, seed=0)[0]]
    ref, _ = reference_logprobs(model, ids)
    assert ref.shape == (2, 49152) and np.allclose(np.exp(ref).sum(1), 1)
    full = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1] for p in ids]).double()
    assert np.allclose(torch.log_softmax(full, -1).detach().numpy(), ref, atol=1e-4)
