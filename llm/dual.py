"""The dual step of CAID: the projected subgradient step on the multipliers (Algorithm 1, eq. (6); eq. (27))."""

from __future__ import annotations

import numpy as np

__all__ = ["dual_step"]


def dual_step(lam: np.ndarray, slack: np.ndarray, step_size: float) -> np.ndarray:
    """The projected dual subgradient step ``lambda <- [lambda - eta u]_+`` (Algorithm 1; eq. (27)).

    ``u`` is the measured constraint slack ``E[h]`` of the current policy: a satisfied constraint
    (``u > 0``) lowers its multiplier, a violated one raises it.
    """
    lam, slack = np.asarray(lam, float), np.asarray(slack, float)
    if lam.shape != slack.shape:
        raise ValueError(f"slack: expected shape {lam.shape} to match lambda, got {slack.shape}")
    if not step_size > 0:
        raise ValueError(f"step_size: must be > 0, got {step_size}")
    return np.maximum(lam - step_size * slack, 0.0)
