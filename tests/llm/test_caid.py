"""The CAID core (llm.caid): the dual steps by hand, exact dual ascent on exact tilts against theory's lambda*, the
sampler against its law, and one loop for the trainer and both laboratories."""

import dataclasses

import numpy as np
import pytest
from scipy.special import log_softmax

import llm.caid as caid
from llm.caid import Multipliers, composite_reward, inverse_cdf, run_caid
from theory import ConstrainedProblem, solve_dual
from theory.dual import tilted_policy
from theory.lagrangian import constraint_slacks


def test_projected_step_sign_and_projection():
    multipliers = Multipliers(np.array([1.0, 0.2, 0.0]), 0.4)
    slack = np.array([-0.5, 1.0, 0.3])  # violated, satisfied, satisfied at zero
    np.testing.assert_allclose(multipliers.step(slack), [1.2, 0.0, 0.0])
    np.testing.assert_allclose(multipliers.trajectory, [[1.0, 0.2, 0.0], [1.2, 0.0, 0.0]])
    with pytest.raises(ValueError, match="slack"):
        multipliers.step(slack[:2])
    with pytest.raises(ValueError, match="dual_step_size"):
        Multipliers(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="lambda"):
        Multipliers(np.array([-1.0]), 0.1)


def test_optimistic_step_extrapolates_with_the_last_slack():
    """lambda_1 = [lambda_0 - eta u_1]_+ (no earlier slack), then [lambda - eta (2 u_t - u_{t-1})]_+, by hand."""
    multipliers = Multipliers(np.array([1.0]), 0.5, "optimistic")
    multipliers.step(np.array([-1.0]))  # 1 + 0.5
    multipliers.step(np.array([-0.4]))  # 1.5 - 0.5 (2 * -0.4 + 1) = 1.4
    multipliers.step(np.array([3.0]))  # 1.4 - 0.5 (6 + 0.4) < 0 -> 0
    np.testing.assert_allclose(np.ravel(multipliers.trajectory), [1.0, 1.5, 1.4, 0.0])


def test_preconditioned_step():
    eta = np.array([[2.0, 0.5], [0.5, 1.0]])
    multipliers = Multipliers(np.array([3.0, 3.0]), eta)
    np.testing.assert_allclose(multipliers.step(np.array([1.0, -1.0])), [3.0 - 1.5, 3.0 + 0.5])


def test_state_dict_round_trip_and_damage_named():
    multipliers = Multipliers(np.array([0.3, 0.0]), 0.7, "optimistic")
    multipliers.step(np.array([-0.1, 0.2]))
    copy = Multipliers.from_state_dict(multipliers.state_dict())
    for field in ("value", "dual_step_size"):
        np.testing.assert_array_equal(getattr(copy, field), getattr(multipliers, field))
    assert copy.update == "optimistic" and len(copy.slacks) == 1
    np.testing.assert_array_equal(copy.step(np.array([0.5, 0.5])), multipliers.step(np.array([0.5, 0.5])))
    state = multipliers.state_dict()
    with pytest.raises(ValueError, match="missing field 'slacks'"):
        Multipliers.from_state_dict({k: v for k, v in state.items() if k != "slacks"})
    with pytest.raises(ValueError, match="trajectory"):
        Multipliers.from_state_dict({**state, "trajectory": state["trajectory"][:1]})
    with pytest.raises(ValueError, match="update"):
        Multipliers.from_state_dict({**state, "update": "adam"})


def test_composite_reward_is_the_weighted_sum():
    rng = np.random.default_rng(0)
    scores, lam = rng.normal(size=(3, 4, 5)), np.array([0.5, 2.0])
    np.testing.assert_allclose(composite_reward(scores, lam), scores[0] + 0.5 * scores[1] + 2.0 * scores[2])
    np.testing.assert_allclose(composite_reward(scores, lam, 0.0), 0.5 * scores[1] + 2.0 * scores[2])
    with pytest.raises(ValueError, match="scores"):
        composite_reward(scores, np.ones(3))


def test_inverse_cdf_draws_follow_the_rows():
    """Frequencies of 200,000 draws per row within 5 binomial SEs of the (unnormalised) rows; a zero-mass entry
    is never drawn."""
    rng = np.random.default_rng(1)
    probs = np.array([[0.2, 0.0, 0.5, 0.3], [4.0, 1.0, 0.0, 5.0]])
    n = 200_000
    drawn = inverse_cdf(probs, rng.random((2, n)))
    for row, p in zip(drawn, probs / probs.sum(axis=1, keepdims=True), strict=True):
        freq = np.bincount(row, minlength=4) / n
        assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12)
        assert freq[p == 0].sum() == 0


# -- exact dual ascent on exact tilts (the next-token laboratory's structure: token tables, shared tilt) --------


def _token_table_problem(seed: int, thresholds: list[float]) -> ConstrainedProblem:
    """Prompts x tokens, r and g token tables broadcast over prompts (the tilt adds one logit vector to every
    prompt), as in the next-token laboratory."""
    rng = np.random.default_rng(seed)
    X, V = 6, 40
    ref = log_softmax(rng.normal(size=(X, V)) * 2, axis=1)
    tables = rng.normal(size=(1 + len(thresholds), V))
    tables[1] -= 0.5 * tables[0]  # reward and the first utility conflict
    scores = np.broadcast_to(tables[:, None, :], (len(tables), X, V))
    return ConstrainedProblem(ref, scores[0], scores[1:], np.array(thresholds), beta=1.0)


class _ExactTilt:
    """The nu = 0 learner: the primal step is the exact tilt pi*(lambda), the slack exact."""

    def __init__(self, prob: ConstrainedProblem) -> None:
        self.prob, self.policy = prob, np.exp(prob.ref_logprobs)

    def slack(self, iteration: int) -> np.ndarray:
        return constraint_slacks(self.prob, self.policy)

    def fit(self, lam: np.ndarray, iteration: int) -> None:
        self.policy = tilted_policy(self.prob, lam)


class _LaggingTilt(_ExactTilt):
    """A primal step that moves only a share ``alpha`` of the way to the tilt (in logits), as DPO's attenuation."""

    def __init__(self, prob: ConstrainedProblem, alpha: float) -> None:
        super().__init__(prob)
        self.alpha, self.logits = alpha, prob.ref_logprobs.copy()

    def fit(self, lam: np.ndarray, iteration: int) -> None:
        target = np.log(np.maximum(tilted_policy(self.prob, lam), 1e-300))
        self.logits = self.logits + self.alpha * (target - self.logits)
        self.policy = np.exp(log_softmax(self.logits, axis=1))


@pytest.mark.parametrize(("update", "step"), [("projected", 1.0), ("optimistic", 0.5)])
@pytest.mark.parametrize("thresholds", [[0.4], [0.3, 0.2]])
def test_exact_dual_ascent_on_tilts_reaches_theorys_lambda_star(update, step, thresholds):
    """CAID on exact tilts is exact dual descent on D (its slack is -grad D): from lambda = 0 it reaches the
    lambda* of theory.solve_dual to 1e-6 with eta = step / L (L the largest Hessian eigenvalue at lambda*; the
    optimistic step is stable only below 2 / (3 L) on a quadratic, where its recurrence has a root -1)."""
    prob = _token_table_problem(0, thresholds)
    sol = solve_dual(prob)
    eta = step / float(np.linalg.eigvalsh(sol.hessian)[-1])
    multipliers = Multipliers(np.zeros(len(thresholds)), eta, update)
    run_caid(_ExactTilt(prob), multipliers, 400)
    np.testing.assert_allclose(multipliers.value, sol.lam, atol=1e-6)
    assert np.all(sol.lam > 0)  # active constraints: the test is not passed at the projection


def test_optimistic_step_damps_a_lagging_primal():
    """With a primal that moves 30% of the way to the tilt per iteration, eta = 1 / L: after 40 iterations the
    projected step still oscillates around lambda* (error > 1e-4) and the optimistic one is 100x closer."""
    prob = _token_table_problem(1, [0.4])
    sol = solve_dual(prob)
    eta = 1.0 / float(np.linalg.eigvalsh(sol.hessian)[-1])
    errors = {}
    for update in ("projected", "optimistic"):
        multipliers = Multipliers(np.zeros(1), eta, update)
        run_caid(_LaggingTilt(prob, 0.3), multipliers, 40)
        errors[update] = abs(multipliers.value[0] - sol.lam[0])
    assert errors["projected"] > 1e-4 and errors["optimistic"] < errors["projected"] / 100


def test_one_shot_loop_takes_no_dual_step():
    prob = _token_table_problem(0, [0.4])
    multipliers = Multipliers(np.array([0.25]), 1.0)
    done = run_caid(_ExactTilt(prob), multipliers, 3, dual_steps=False)
    assert [d.slack for d in done] == [None] * 3 and len(multipliers.trajectory) == 1


# -- one loop: the trainer and both laboratories run llm.caid's -------------------------------------------------


@pytest.fixture
def counted(monkeypatch):
    """Counts the iterations the core's caid_iteration builds (every caller of the loop goes through it)."""
    calls = []

    @dataclasses.dataclass(frozen=True)
    class Counted(caid.Iteration):
        def __post_init__(self) -> None:
            calls.append(self.iteration)

    monkeypatch.setattr(caid, "Iteration", Counted)
    return calls


def test_trainer_runs_the_core_loop(counted, tmp_path):
    pytest.importorskip("transformers")
    import llm.pipeline as pipeline
    from tests.llm.test_pipeline import TINY

    config = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, cache_dir=str(tmp_path / "cache")))
    pipeline.run(config, tmp_path / "run", progress=False)
    assert counted == list(range(1, config.caid.iterations + 1))


def test_next_token_laboratory_runs_the_core_loop(counted):
    pytest.importorskip("transformers")
    from analysis.next_token.methods import Arm, TrainingData, TrainingSettings, train_method
    from analysis.next_token.policy import LastBlockPolicy, encode_trunk
    from tests.tiny_llama import tiny_llama

    model = tiny_llama(vocab_size=50, max_positions=64, seed=3)
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    trunk = encode_trunk(model, [[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    tokens = rng.integers(0, vocab, size=(3, 4))
    tables = rng.normal(size=(2, vocab))
    data = TrainingData(trunk, tokens, tables[:, tokens], np.full((3, 4), -np.log(vocab)), tables[1:],
                        np.zeros((1, 3)))  # fmt: skip
    settings = TrainingSettings(iterations=3, batch_prompts=2, dual_prompts=2, dual_samples=2)
    result = train_method(LastBlockPolicy(model), data, Arm.CAID_SAMPLED, np.array([0.5]), np.array([0.1]),
                          settings, seed=0)  # fmt: skip
    assert counted == [1, 2, 3] and result.trajectory.shape == (4, 1)


def test_gap_laboratory_runs_the_core_loop(counted):
    torch = pytest.importorskip("torch")
    from analysis.parametrization_gap.policy_classes import TabularPolicy
    from analysis.parametrization_gap.practical_caid import practical_caid

    torch.manual_seed(0)
    prob = _token_table_problem(0, [0.4])
    traj = practical_caid(TabularPolicy(prob.ref_logprobs), prob, np.array([0.5]), 0.5, 3, n_dual_samples=8,
                          n_pairs=20, rng=np.random.default_rng(0), max_iter=5)  # fmt: skip
    assert counted == [1, 2, 3] and traj.lam.shape == (3, 1)
