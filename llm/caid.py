"""The CAID core: multipliers, the composite reward and the loop of Algorithm 2, shared by every CAID in the toolkit.

The pipeline's :class:`llm.trainer.CAIDTrainer`, the next-token laboratory (:mod:`analysis.next_token.methods`)
and the parametrization-gap laboratory (:mod:`analysis.parametrization_gap`) all run CAID through
:func:`caid_iteration`: they differ only in how they measure the on-policy slack and how they take the primal
step, which they supply as a :class:`PrimalDual`.

* :class:`Multipliers`: lambda >= 0, its dual step with size eta (``dual_step_size``), its trajectory and its
  state (JSON-able, for checkpoints). The paper's step is projected subgradient descent on the dual
  (Algorithm 1, eq. (6); eq. (27) with a sampled slack): ``lambda <- [lambda - eta u]_+``. The optional
  optimistic step extrapolates with the previous slack, ``lambda <- [lambda - eta (2 u_t - u_{t-1})]_+``
  (optimistic gradient descent; the dual half of the optimistic primal-dual method of arXiv 2602.22146, whose
  primal half is not implemented here).
* :func:`composite_reward`: ``r_lambda = w r + lambda^T g`` (eq. (3); ``w = 0`` for the utility-only baseline).
* :func:`inverse_cdf`: draws from rows of probabilities, the one sampler of the exact laboratories.
* :func:`caid_iteration` / :func:`run_caid`: iteration t of Algorithm 2 (Sec. 4.1.1's schedule): for ``t > 1`` and
  a method that takes dual steps, measure the slack u of the current policy and step lambda; then one primal
  step (a DPO epoch on pseudo-labels from ``r_lambda``, or an exact Lagrangian maximisation) at lambda.
  One-shot is the same loop with no dual steps.

The names: T is ``iterations`` (one primal step each), eta is ``dual_step_size``. Torch-free (numpy only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import numpy as np

__all__ = [
    "DualUpdate",
    "Iteration",
    "Multipliers",
    "PrimalDual",
    "caid_iteration",
    "composite_reward",
    "inverse_cdf",
    "run_caid",
]

DualUpdate = Literal["projected", "optimistic"]
"""The dual step: the paper's projected subgradient step, or its optimistic (extrapolated) variant."""


class Multipliers:
    """The multipliers lambda >= 0 of m constraints, with their dual step and trajectory.

    Attributes:
        value: ``(m,)`` the current lambda.
        dual_step_size: eta, a positive scalar, or an ``(m, m)`` positive definite preconditioner (the step is
            then ``eta @ u``).
        update: ``"projected"`` or ``"optimistic"``.
        trajectory: lambda_0, lambda_1, ... (every value lambda has held, the first one included).
        slacks: The slacks of the steps taken so far, in order.
    """

    def __init__(
        self, value: np.ndarray, dual_step_size: float | np.ndarray, update: DualUpdate = "projected"
    ) -> None:
        value = np.array(value, dtype=np.float64)
        if value.ndim != 1 or not np.all(np.isfinite(value)) or np.any(value < 0):
            raise ValueError(f"lambda: expected (m,) finite non-negative multipliers, got {value!r}")
        eta = np.array(dual_step_size, dtype=np.float64)
        if eta.ndim == 0:
            if not (np.isfinite(eta) and eta > 0):
                raise ValueError(f"dual_step_size: must be a finite number > 0, got {dual_step_size!r}")
        elif eta.shape != (len(value), len(value)) or not np.all(np.isfinite(eta)):
            raise ValueError(f"dual_step_size: expected a number or a finite ({len(value)}, {len(value)}) matrix")
        if update not in ("projected", "optimistic"):
            raise ValueError(f"update: use 'projected' or 'optimistic', got {update!r}")
        self.value, self.dual_step_size, self.update = value, eta, update
        self.trajectory: list[np.ndarray] = [value.copy()]
        self.slacks: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.value)

    def _scaled(self, slack: np.ndarray) -> np.ndarray:
        eta = self.dual_step_size
        return eta @ slack if eta.ndim == 2 else eta * slack

    def step(self, slack: np.ndarray) -> np.ndarray:
        """One dual step from the measured slack ``u = E_pi h`` (a satisfied constraint has ``u > 0``).

        Projected: ``lambda <- [lambda - eta u]_+`` (Algorithm 1, eq. (6)). Optimistic:
        ``lambda <- [lambda - eta (2 u_t - u_{t-1})]_+``, the first step taking ``u_0 = u_1`` (a projected step).

        Returns:
            The new lambda (also :attr:`value`).
        """
        slack = np.asarray(slack, dtype=np.float64)
        if slack.shape != self.value.shape or not np.all(np.isfinite(slack)):
            raise ValueError(f"slack: expected {self.value.shape} finite values to match lambda, got {slack!r}")
        direction = slack
        if self.update == "optimistic" and self.slacks:
            direction = 2.0 * slack - self.slacks[-1]
        self.value = np.maximum(self.value - self._scaled(direction), 0.0)
        self.slacks.append(slack.copy())
        self.trajectory.append(self.value.copy())
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """The state as JSON-able data: lambda, eta, the update rule, the trajectory and the slacks."""
        return {
            "value": self.value.tolist(),
            "dual_step_size": self.dual_step_size.tolist(),
            "update": self.update,
            "trajectory": [v.tolist() for v in self.trajectory],
            "slacks": [s.tolist() for s in self.slacks],
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Multipliers:
        """The multipliers saved by :meth:`state_dict`, every field checked.

        Raises:
            ValueError: Naming the field that is missing or invalid.
        """
        try:
            out = cls(state["value"], state["dual_step_size"], state["update"])
            m = len(out.value)
            trajectory = [np.array(v, dtype=np.float64) for v in state["trajectory"]]
            slacks = [np.array(s, dtype=np.float64) for s in state["slacks"]]
        except KeyError as err:
            raise ValueError(f"multipliers state: missing field {err}") from None
        except (TypeError, ValueError) as err:
            raise ValueError(f"multipliers state: {err}") from None
        rows_ok = all(v.shape == (m,) and np.all(np.isfinite(v)) for v in (*trajectory, *slacks))
        if not rows_ok or len(trajectory) != len(slacks) + 1 or not np.array_equal(trajectory[-1], out.value):
            raise ValueError(
                f"multipliers state: trajectory ({len(trajectory)} rows) and slacks ({len(slacks)} rows) must be "
                f"finite rows of {m} values, one more trajectory row than slacks, the last equal to value"
            )
        out.trajectory, out.slacks = trajectory, slacks
        return out


def composite_reward(scores: np.ndarray, lam: np.ndarray, reward_weight: float = 1.0) -> np.ndarray:
    """``r_lambda = w r + lambda^T g`` of every scored response (eq. (3); the pseudo-labels' score, eq. (13)).

    Args:
        scores: ``(1 + m, ...)`` the reward, then each utility, over any shape of responses.
        lam: ``(m,)`` multipliers.
        reward_weight: w (1; 0 for the utility-only baseline DPO_g).
    """
    scores, lam = np.asarray(scores, dtype=np.float64), np.asarray(lam, dtype=np.float64)
    if lam.ndim != 1 or scores.shape[:1] != (1 + len(lam),):
        raise ValueError(f"scores: expected (1 + {len(lam)}, ...) for {len(lam)} multipliers, got {scores.shape}")
    return reward_weight * scores[0] + np.tensordot(lam, scores[1:], axes=1)


def inverse_cdf(probs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Indices drawn from each row of ``probs`` by inverse-CDF sampling.

    Args:
        probs: ``(n, V)`` non-negative rows (normalised or not: each row is scaled by its own total).
        uniforms: ``(n, k)`` uniforms in [0, 1), k draws per row.

    Returns:
        ``(n, k)`` indices in ``0..V-1``: the first ``j`` with ``cdf_j > u * cdf_V``.
    """
    probs, uniforms = np.asarray(probs, dtype=np.float64), np.asarray(uniforms, dtype=np.float64)
    if probs.ndim != 2 or uniforms.ndim != 2 or len(probs) != len(uniforms):
        raise ValueError(f"probs (n, V) and uniforms (n, k) must share n, got {probs.shape} and {uniforms.shape}")
    cdf = np.cumsum(probs, axis=1)
    u = uniforms * cdf[:, -1:]
    drawn = np.stack([np.searchsorted(cdf[i], u[i], side="right") for i in range(len(probs))])
    return drawn.clip(0, probs.shape[1] - 1)


class PrimalDual(Protocol):
    """What a CAID loop runs on: an on-policy slack measurement and a primal step at given multipliers."""

    def slack(self, iteration: int) -> np.ndarray:
        """The measured slack ``u = E_x E_pi h`` of the current policy, before iteration ``iteration``'s step."""
        ...

    def fit(self, lam: np.ndarray, iteration: int) -> Any:
        """The primal step of iteration ``iteration`` at multipliers ``lam`` (e.g. one DPO epoch); its stats."""
        ...


@dataclasses.dataclass(frozen=True)
class Iteration:
    """One finished iteration of the loop.

    Attributes:
        iteration: t (1-based).
        lam: The multipliers the primal step used.
        slack: The slack measured before the step (None where no dual step was taken).
        stats: What the primal step returned.
    """

    iteration: int
    lam: np.ndarray
    slack: np.ndarray | None
    stats: Any


def caid_iteration(learner: PrimalDual, multipliers: Multipliers, iteration: int, dual_steps: bool = True) -> Iteration:
    """Iteration t of Algorithm 2: a dual step from the current policy's slack (t > 1), then a primal step.

    Args:
        learner: The slack measurement and the primal step.
        multipliers: lambda, stepped in place.
        iteration: t >= 1.
        dual_steps: False for one-shot and the baselines: lambda stays where it is.
    """
    if iteration < 1:
        raise ValueError(f"iteration: must be >= 1, got {iteration}")
    slack = None
    if dual_steps and iteration > 1:
        slack = np.asarray(learner.slack(iteration), dtype=np.float64)
        multipliers.step(slack)
    lam = multipliers.value.copy()
    return Iteration(iteration, lam, slack, learner.fit(lam, iteration))


def run_caid(
    learner: PrimalDual,
    multipliers: Multipliers,
    iterations: int,
    dual_steps: bool = True,
    on_iteration: Callable[[Iteration], None] | None = None,
) -> list[Iteration]:
    """Iterations 1..T of :func:`caid_iteration` (T = ``iterations``).

    Args:
        learner: The slack measurement and the primal step.
        multipliers: lambda, stepped in place.
        iterations: T.
        dual_steps: False for one-shot and the baselines.
        on_iteration: Called after each iteration.
    """
    if iterations < 1:
        raise ValueError(f"iterations: must be >= 1, got {iterations}")
    done = []
    for t in range(1, iterations + 1):
        done.append(caid_iteration(learner, multipliers, t, dual_steps))
        if on_iteration is not None:
            on_iteration(done[-1])
    return done
