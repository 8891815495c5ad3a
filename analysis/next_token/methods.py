"""The methods on the real model: DPO on pseudo-labels, one-shot, CAID, DPO_h and DPO_g (Sec. 3, Sec. 5).

Every method trains a :class:`~analysis.next_token.policy.LastBlockPolicy` with ``llm.dpo.dpo_loss`` on all
K(K-1)/2 pairs of K reference tokens per train prompt, relabelled each epoch with ``llm.dpo.pseudo_labels``
from ``r_lambda = w r + lambda^T g`` (``llm.caid.composite_reward``; Sec. 3.2, eq. (13)). Each run is the CAID
loop of the whole toolkit, :func:`llm.caid.run_caid`, with this laboratory's primal step (one DPO epoch) and
slack measurement (:class:`NextTokenLearner`). The arms (:class:`Arm`) are methods of the registry
:mod:`llm.methods` with the laboratory's variants:

* ``one_shot_plugin`` / ``one_shot_exact``: ``one_shot``, lambda fixed at the K-sample plug-in dual (the
  paper's recipe, Sec. 3.1) or at the exact lambda* of the train prompts (separates the plug-in bias from the
  DPO error); T epochs.
* ``caid_exact`` / ``caid_sampled``: ``caid``, T iterations (one epoch each) warm-started at the plug-in lambda,
  the on-policy slack measured exactly on the train prompts, or from n prompts x k tokens sampled from the
  policy (:func:`llm.caid.inverse_cdf`). After the last epoch the slack of the final policy is measured once
  more and lambda stepped: that step's S^2 and lambda_{T+1} enter Theorem 6's evaluation.
* ``dpo_h``: the reward alone (lambda = 0). ``dpo_g``: the first utility alone (w = 0, lambda = e_1).

Label uniforms come from a stream keyed by (seed, epoch) only, so methods at the same seed see the same
coins and differ only where their lambda changes the labels (common random numbers).
"""

from __future__ import annotations

import dataclasses
from itertools import combinations

import numpy as np
import torch

from analysis.next_token.arms import Arm
from analysis.next_token.policy import LastBlockPolicy, Trunk
from llm.caid import Multipliers, composite_reward, inverse_cdf, run_caid
from llm.dpo import dpo_loss, pseudo_labels

__all__ = ["Arm", "MethodResult", "NextTokenLearner", "TrainingData", "TrainingSettings", "train_method"]


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """DPO and dual-step settings.

    Attributes:
        beta: DPO temperature = the KL strength of the problem (sigma units).
        iterations: T, DPO epochs per run (CAID: one per iteration, a dual step before each but the first).
        passes: Optimiser passes over the pairs per epoch (with the same labels).
        batch_prompts: Prompts per optimiser step (all their pairs together).
        lr: Adam learning rate of the top layers.
        dual_step_size: eta (sigma units: eta ~ beta / Var_w(g) = beta).
        dual_prompts: Prompts per sampled dual step.
        dual_samples: Tokens per prompt per sampled dual step.
    """

    beta: float = 1.0
    iterations: int = 4
    passes: int = 1
    batch_prompts: int = 32
    lr: float = 6e-4
    dual_step_size: float = 1.0
    dual_prompts: int = 16
    dual_samples: int = 4


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingData:
    """What training sees: the train trunk, K tokens per prompt, their scores and reference log-probs.

    Attributes:
        trunk: Cached trunk of the train prompts.
        tokens: ``(N, K)`` sampled reference tokens.
        scores: ``(1 + m, N, K)`` standardised r and the constrained utilities of those tokens.
        ref_logp: ``(N, K)`` log pi_ref of those tokens.
        utility_tables: ``(m, V)`` the constrained utilities over the vocabulary (exact dual steps).
        ref_means: ``(m, N)`` E_ref g_i on each train prompt.
    """

    trunk: Trunk
    tokens: np.ndarray
    scores: np.ndarray
    ref_logp: np.ndarray
    utility_tables: np.ndarray
    ref_means: np.ndarray


@dataclasses.dataclass(frozen=True)
class MethodResult:
    """A trained policy's multipliers.

    Attributes:
        lam: The lambda of its last epoch (``None`` for DPO_g).
        trajectory: ``(T + 1, m)`` lambda_0 .. lambda_T (CAID), or the constant lambda repeated.
        second_moment: Mean squared dual subgradient S^2 over the dual steps (0 without dual steps).
    """

    lam: np.ndarray | None
    trajectory: np.ndarray
    second_moment: float


class NextTokenLearner:
    """The laboratory's side of the CAID loop (:class:`llm.caid.PrimalDual`): DPO epochs and slack measurements.

    Args:
        policy: The policy trained in place.
        data: The training data.
        arm: Which arm (its method's reward weight; exact or sampled slacks).
        thresholds: ``(m,)`` b, for the slacks.
        settings: The settings.
        seed: Seed of the labels, the batch order and the sampled dual steps.
    """

    def __init__(self, policy: LastBlockPolicy, data: TrainingData, arm: Arm, thresholds: np.ndarray,
                 settings: TrainingSettings, seed: int) -> None:
        self.policy, self.data, self.arm, self.settings, self.seed = policy, data, arm, settings, seed
        self.thresholds = np.asarray(thresholds, float)
        self.optimiser = torch.optim.Adam(policy.trainable(), lr=settings.lr, foreach=True)
        self.dual_rng = np.random.default_rng([seed, 17])
        self.pairs = np.array(list(combinations(range(data.tokens.shape[1]), 2)))

    def fit(self, lam: np.ndarray, iteration: int) -> None:
        """One DPO epoch on all pairs, labelled by ``r_lambda`` (epoch ``iteration - 1`` of the label stream)."""
        data, settings, pairs, epoch = self.data, self.settings, self.pairs, iteration - 1
        composite = composite_reward(data.scores, lam, self.arm.method.reward_weight)  # (N, K)
        label_rng = np.random.default_rng([self.seed, epoch, 11])  # shared by every method: common random numbers
        first_wins = pseudo_labels(composite[:, pairs[:, 1]].ravel(), composite[:, pairs[:, 0]].ravel(), label_rng)
        first_wins = first_wins.reshape(len(composite), len(pairs))
        chosen = np.where(first_wins, pairs[:, 0], pairs[:, 1])
        rejected = np.where(first_wins, pairs[:, 1], pairs[:, 0])
        ref = torch.as_tensor(data.ref_logp, dtype=torch.float32)
        order_rng = np.random.default_rng([self.seed, epoch, 13])
        n = len(composite)
        for _ in range(settings.passes):
            order = order_rng.permutation(n)
            for start in range(0, n, settings.batch_prompts):
                rows = order[start : start + settings.batch_prompts]
                logp = self.policy.log_probs(data.trunk.rows(rows)).gather(1, torch.as_tensor(data.tokens[rows]))
                c, r = torch.as_tensor(chosen[rows]), torch.as_tensor(rejected[rows])
                loss, _ = dpo_loss(logp.gather(1, c).ravel(), logp.gather(1, r).ravel(),
                                   ref[rows].gather(1, c).ravel(), ref[rows].gather(1, r).ravel(), settings.beta)
                self.optimiser.zero_grad()
                loss.backward()
                self.optimiser.step()

    def slack(self, iteration: int) -> np.ndarray:
        """On-policy constraint slack E_x E_pi h_i on the train prompts: exact, or from sampled tokens."""
        data, settings = self.data, self.settings
        if self.arm is Arm.CAID_EXACT:
            pi = self.policy.distribution(data.trunk)
            return (pi @ data.utility_tables.T - data.ref_means.T).mean(axis=0) - self.thresholds
        rng = self.dual_rng
        rows = rng.choice(len(data.tokens), size=min(settings.dual_prompts, len(data.tokens)), replace=False)
        pi = self.policy.distribution(data.trunk.rows(rows))
        tokens = inverse_cdf(pi, rng.random((len(rows), settings.dual_samples)))
        sampled = data.utility_tables[:, tokens].mean(axis=2)  # (m, n)
        return (sampled - data.ref_means[:, rows]).mean(axis=1) - self.thresholds


def train_method(policy: LastBlockPolicy, data: TrainingData, arm: Arm, lam0: np.ndarray,
                 thresholds: np.ndarray, settings: TrainingSettings, seed: int) -> MethodResult:
    """Train ``policy`` in place with ``arm``: :func:`llm.caid.run_caid` on a :class:`NextTokenLearner`.

    Args:
        policy: A fresh policy (at pi_ref).
        data: The training data.
        arm: Which arm.
        lam0: Starting (one-shot: fixed) multipliers; ignored by DPO_h and DPO_g.
        thresholds: ``(m,)`` b, for the dual steps.
        settings: The settings.
        seed: Seed of the labels, the batch order and the sampled dual steps.
    """
    torch.manual_seed(seed)
    m = data.scores.shape[0] - 1
    start = {"one_shot": np.asarray(lam0, float), "zero": np.zeros(m), "first_utility": np.eye(m)[0]}
    multipliers = Multipliers(start[arm.method.initial_lambda], settings.dual_step_size)
    learner = NextTokenLearner(policy, data, arm, thresholds, settings, seed)
    done = run_caid(learner, multipliers, settings.iterations, dual_steps=arm.is_caid)
    trained = done[-1].lam  # the run's lambda is the one its last epoch was trained at
    if not arm.is_caid:
        trajectory = np.repeat(trained[None], settings.iterations + 1, axis=0)
        return MethodResult(None if arm is Arm.DPO_G else trained, trajectory, 0.0)
    multipliers.step(learner.slack(settings.iterations + 1))  # the final policy's slack: lambda_{T+1}, S^2
    second_moment = float(np.mean([u @ u for u in multipliers.slacks]))
    return MethodResult(trained, np.array(multipliers.trajectory), second_moment)
