"""The methods on the real model: DPO on pseudo-labels, one-shot, CAID, DPO_h and DPO_g (Sec. 3, Sec. 5).

Every method trains a :class:`~analysis.next_token.policy.LastBlockPolicy` with ``llm.dpo.dpo_loss`` on all
K(K-1)/2 pairs of K reference tokens per train prompt, relabelled each epoch with ``llm.dpo.pseudo_labels``
from r_lambda = w r + lambda^T g (Sec. 3.2, eq. (13)):

* ``one_shot_plugin`` / ``one_shot_exact``: lambda fixed at the K-sample plug-in dual (the paper's recipe,
  Sec. 3.1) or at the exact lambda* of the train prompts (separates the plug-in bias from the DPO error);
  T epochs.
* ``caid_exact`` / ``caid_sampled``: T iterations (one epoch each) warm-started at the plug-in lambda, each
  followed by the dual step ``llm.dual.dual_step`` (Algorithm 1, eq. (27)) with the on-policy slack measured
  exactly on the train prompts, or from n prompts x k tokens sampled from the policy.
* ``dpo_h``: the reward alone (lambda = 0). ``dpo_g``: the first utility alone (w = 0, lambda = e_1).

Label uniforms come from a stream keyed by (seed, epoch) only, so methods at the same seed see the same
coins and differ only where their lambda changes the labels (common random numbers).
"""

from __future__ import annotations

import dataclasses
import enum
from itertools import combinations

import numpy as np
import torch

from analysis.next_token.policy import LastBlockPolicy, Trunk
from llm.dpo import dpo_loss, pseudo_labels
from llm.dual import dual_step

__all__ = ["Method", "MethodResult", "TrainingData", "TrainingSettings", "train_method"]


class Method(str, enum.Enum):
    """The trained methods."""

    ONE_SHOT_PLUGIN = "one_shot_plugin"
    ONE_SHOT_EXACT = "one_shot_exact"
    CAID_EXACT = "caid_exact"
    CAID_SAMPLED = "caid_sampled"
    DPO_H = "dpo_h"
    DPO_G = "dpo_g"

    @property
    def is_caid(self) -> bool:
        """Whether the method takes dual steps."""
        return self in (Method.CAID_EXACT, Method.CAID_SAMPLED)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """DPO and dual-step settings.

    Attributes:
        beta: DPO temperature = the KL strength of the problem (sigma units).
        epochs: T, epochs per run (one-shot) = dual iterations (CAID, one epoch each).
        passes: Optimiser passes over the pairs per epoch (with the same labels).
        batch_prompts: Prompts per optimiser step (all their pairs together).
        lr: Adam learning rate of the top layers.
        eta: Dual step size (sigma units: eta ~ beta / Var_w(g) = beta).
        dual_prompts: Prompts per sampled dual step.
        dual_samples: Tokens per prompt per sampled dual step.
    """

    beta: float = 1.0
    epochs: int = 4
    passes: int = 1
    batch_prompts: int = 32
    lr: float = 6e-4
    eta: float = 1.0
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


def _epoch(policy: LastBlockPolicy, optimiser: torch.optim.Optimizer, data: TrainingData, weights: np.ndarray,
           settings: TrainingSettings, seed: int, epoch: int) -> None:
    """One DPO epoch on all pairs, labelled by the composite ``weights @ scores``."""
    pairs = np.array(list(combinations(range(data.tokens.shape[1]), 2)))
    composite = np.tensordot(weights, data.scores, axes=1)  # (N, K)
    label_rng = np.random.default_rng([seed, epoch, 11])  # shared by every method: common random numbers
    first_wins = pseudo_labels(composite[:, pairs[:, 1]].ravel(), composite[:, pairs[:, 0]].ravel(), label_rng)
    first_wins = first_wins.reshape(len(composite), len(pairs))
    chosen = np.where(first_wins, pairs[:, 0], pairs[:, 1])
    rejected = np.where(first_wins, pairs[:, 1], pairs[:, 0])
    ref = torch.as_tensor(data.ref_logp, dtype=torch.float32)
    order_rng = np.random.default_rng([seed, epoch, 13])
    n = len(composite)
    for _ in range(settings.passes):
        order = order_rng.permutation(n)
        for start in range(0, n, settings.batch_prompts):
            rows = order[start : start + settings.batch_prompts]
            logp = policy.log_probs(data.trunk.rows(rows)).gather(1, torch.as_tensor(data.tokens[rows]))
            c, r = torch.as_tensor(chosen[rows]), torch.as_tensor(rejected[rows])
            loss, _ = dpo_loss(logp.gather(1, c).ravel(), logp.gather(1, r).ravel(), ref[rows].gather(1, c).ravel(),
                               ref[rows].gather(1, r).ravel(), settings.beta)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()


def _slack(policy: LastBlockPolicy, data: TrainingData, thresholds: np.ndarray, method: Method,
           settings: TrainingSettings, rng: np.random.Generator) -> np.ndarray:
    """On-policy constraint slack E_x E_pi h_i on the train prompts: exact, or from sampled tokens."""
    if method is Method.CAID_EXACT:
        pi = policy.distribution(data.trunk)
        return (pi @ data.utility_tables.T - data.ref_means.T).mean(axis=0) - thresholds
    rows = rng.choice(len(data.tokens), size=min(settings.dual_prompts, len(data.tokens)), replace=False)
    pi = policy.distribution(data.trunk.rows(rows))
    cdf = np.cumsum(pi, axis=1)
    u = rng.random((len(rows), settings.dual_samples)) * cdf[:, -1:]
    tokens = np.stack([np.searchsorted(cdf[i], u[i], side="right") for i in range(len(rows))]).clip(0, pi.shape[1] - 1)
    sampled = data.utility_tables[:, tokens].mean(axis=2)  # (m, n)
    return (sampled - data.ref_means[:, rows]).mean(axis=1) - thresholds


def train_method(policy: LastBlockPolicy, data: TrainingData, method: Method, lam0: np.ndarray,
                 thresholds: np.ndarray, settings: TrainingSettings, seed: int) -> MethodResult:
    """Train ``policy`` in place with ``method``.

    Args:
        policy: A fresh policy (at pi_ref).
        data: The training data.
        method: Which method.
        lam0: Starting (one-shot: fixed) multipliers; ignored by DPO_h and DPO_g.
        thresholds: ``(m,)`` b, for the dual steps.
        settings: The settings.
        seed: Seed of the labels, the batch order and the sampled dual steps.
    """
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(policy.trainable(), lr=settings.lr, foreach=True)
    m = data.scores.shape[0] - 1
    lam = np.zeros(m) if method is Method.DPO_H else np.asarray(lam0, float)
    dual_rng = np.random.default_rng([seed, 17])
    trajectory, squares = [lam], []
    trained = lam
    for epoch in range(settings.epochs):
        trained = lam  # the run's lambda is the one its last epoch was trained at
        weights = np.eye(m + 1)[1] if method is Method.DPO_G else np.concatenate([[1.0], lam])
        _epoch(policy, optimiser, data, weights, settings, seed, epoch)
        if method.is_caid:
            slack = _slack(policy, data, thresholds, method, settings, dual_rng)
            squares.append(float(slack @ slack))
            lam = dual_step(lam, slack, settings.eta)
        trajectory.append(lam)
    return MethodResult(None if method is Method.DPO_G else trained, np.array(trajectory),
                        float(np.mean(squares)) if squares else 0.0)
