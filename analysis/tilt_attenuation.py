"""The attenuation of a trained policy: its improvement over the exact tilt's at the same lambda (Sec. 2, eq. (3)).

For a run trained at multipliers lambda, the tilt pi*(lambda) (eq. (3)) is what an exact Lagrangian
maximiser would reach; the run's attenuation in utility i is

    a_i = (E_x E_{pi_theta} g_i - E_x E_{pi_ref} g_i) / (E_x E_{pi*(lambda)} g_i - E_x E_{pi_ref} g_i),

1 for a policy that implements the tilt, 0 for pi_ref, between them for a class (or an optimiser) that
moves only part of the way. The next-token laboratory computes the denominator exactly; a study that only
has K responses y_1..y_K ~ pi_ref(.|x) per prompt (a reference pool) estimates it by self-normalised
importance sampling (SNIS) with weights ``w_k = exp((r + lambda^T g)(x, y_k) / beta)`` (the tilt's density
ratio up to Z(x; lambda)):

    E_{pi*(lambda)} g_i(x) ~ sum_k w_k g_i(x, y_k) / sum_k w_k,    E_{pi_ref} g_i(x) ~ mean_k g_i(x, y_k).

The SNIS ratio is consistent in K with an O(1/K) bias; its reliability is the Kish effective sample size
``(sum_k w_k)^2 / sum_k w_k^2`` per prompt, returned alongside (a few effective samples per prompt mean
the estimate rests on the pool's largest-score responses).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["TiltImprovement", "attenuation", "tilt_improvement"]


@dataclasses.dataclass(frozen=True)
class TiltImprovement:
    """The tilt's improvement estimated on a reference pool.

    Attributes:
        improvement: ``(m,)`` mean over prompts of E_{pi*(lambda)} g_i - E_{pi_ref} g_i.
        per_prompt: ``(m, X)`` the same per prompt.
        ess: ``(X,)`` Kish effective sample size of the weights per prompt (between 1 and K).
    """

    improvement: np.ndarray
    per_prompt: np.ndarray
    ess: np.ndarray


def tilt_improvement(reward: np.ndarray, utilities: np.ndarray, lam: np.ndarray, beta: float) -> TiltImprovement:
    """SNIS estimate of the tilt pi*(lambda)'s improvement over pi_ref from a reference pool (module docstring).

    Args:
        reward: ``(X, K)`` r(x, y_k) of K responses drawn from pi_ref(.|x) per prompt.
        utilities: ``(m, X, K)`` g_i(x, y_k) of the same responses (an ``(X, K)`` array means m = 1).
        lam: ``(m,)`` the multipliers (a scalar when m = 1).
        beta: KL strength (> 0), in the scores' units.

    Returns:
        The estimate, per prompt and its effective sample sizes.

    Raises:
        ValueError: Shapes that do not match, non-finite scores, or beta <= 0 (the message names the field).
    """
    reward = np.asarray(reward, dtype=np.float64)
    utilities = np.asarray(utilities, dtype=np.float64)
    if utilities.ndim == 2:
        utilities = utilities[None]
    if reward.ndim != 2 or reward.shape[1] < 1:
        raise ValueError(f"reward: expected an (X, K) array of pool scores, got shape {reward.shape}")
    if utilities.ndim != 3 or utilities.shape[1:] != reward.shape:
        raise ValueError(f"utilities: expected shape (m, {reward.shape[0]}, {reward.shape[1]}), got {utilities.shape}")
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    if lam.shape != (utilities.shape[0],):
        raise ValueError(f"lam: expected {utilities.shape[0]} multiplier(s), one per utility, got shape {lam.shape}")
    for name, value in (("reward", reward), ("utilities", utilities), ("lam", lam)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name}: must be finite")
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta: must be a finite number > 0, got {beta!r}")
    log_w = (reward + np.tensordot(lam, utilities, axes=1)) / beta
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))  # the per-prompt constant cancels in the ratio
    w /= w.sum(axis=1, keepdims=True)
    per_prompt = np.einsum("xk,ixk->ix", w, utilities) - utilities.mean(axis=2)
    return TiltImprovement(per_prompt.mean(axis=1), per_prompt, 1.0 / (w**2).sum(axis=1))


def attenuation(achieved: np.ndarray, tilt: np.ndarray) -> np.ndarray:
    """``(m,)`` achieved improvement / the tilt's improvement at the run's lambda, per utility.

    NaN where the tilt's improvement is 0 (lambda = 0 with a reward that does not move g_i), since the
    ratio is then undefined.

    Args:
        achieved: ``(m,)`` the run's improvements E_x E_pi g_i - E_x E_ref g_i.
        tilt: ``(m,)`` the tilt's improvements at the run's lambda (exact, or :func:`tilt_improvement`).
    """
    achieved, tilt = np.atleast_1d(np.asarray(achieved, float)), np.atleast_1d(np.asarray(tilt, float))
    if achieved.shape != tilt.shape:
        raise ValueError(f"achieved: expected shape {tilt.shape} to match tilt, got {achieved.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tilt != 0, achieved / np.where(tilt != 0, tilt, 1.0), np.nan)
