"""The distribution-space dual function D(lambda), its derivatives, and the tilted policy (Sec. 2, eqs. (3)-(4)).

For lambda in R^m the Lagrangian maximiser is the tilted policy of eq. (3)::

    pi*(y|x; lambda) = pi_ref(y|x) exp((r + lambda^T h)(x, y) / beta) / Z(x; lambda),

and the dual function, its gradient (Danskin) and Hessian (Lemma 1, covariance form) are::

    D(lambda)       = beta E_x log Z(x; lambda)
    grad D(lambda)  = E_x E_{pi*(lambda)} h
    hess D(lambda)  = (1/beta) E_x Cov_{pi*(lambda)}(g).

Every quantity is computed in row blocks small enough to stay in cache, so one evaluation reads each
input array once and allocates no (X, Y) temporaries; this is what makes the Newton solver fast at
N = X * Y = 1e7.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from theory.problem import ConstrainedProblem

__all__ = [
    "DualEvaluation",
    "dual_gradient",
    "dual_hessian",
    "dual_value",
    "evaluate_dual",
    "tilted_policy",
]

# Elements per block buffer (256 KiB of float64): a handful of such buffers fit in L2 cache.
_BLOCK_ELEMS = 1 << 15


@dataclasses.dataclass(frozen=True)
class DualEvaluation:
    """D and its derivatives at one lambda.

    Attributes:
        lam: ``(m,)`` the multipliers.
        value: D(lambda).
        gradient: ``(m,)`` grad D(lambda) = E_x E_{pi*(lambda)} h, i.e. the constraint slacks of the tilted
            policy; ``None`` if not requested.
        hessian: ``(m, m)`` (1/beta) E_x Cov_{pi*(lambda)}(g); ``None`` if not requested.
    """

    lam: np.ndarray
    value: float
    gradient: np.ndarray | None = None
    hessian: np.ndarray | None = None


def row_blocks(prob: ConstrainedProblem) -> list[slice]:
    """Row slices whose (rows, Y) buffers fit in cache; every pass over the data iterates over these."""
    rows = max(1, _BLOCK_ELEMS // prob.n_responses)
    return [slice(s, min(s + rows, prob.n_prompts)) for s in range(0, prob.n_prompts, rows)]


def _tilt_block(prob: ConstrainedProblem, lam: np.ndarray, rows: slice, z: np.ndarray, tmp: np.ndarray) -> None:
    """Write log pi_ref + (r + lambda^T g) / beta for ``rows`` into ``z`` (the per-row shift of h cancels)."""
    np.multiply(prob.reward[rows], 1.0 / prob.beta, out=z)
    for i, lam_i in enumerate(lam):
        if lam_i != 0.0:
            np.multiply(prob.utilities[i, rows], lam_i / prob.beta, out=tmp)
            z += tmp
    z += prob.ref_logprobs[rows]


def evaluate_dual(
    prob: ConstrainedProblem,
    lam: np.ndarray | float,
    order: int = 2,
    policy_out: np.ndarray | None = None,
) -> DualEvaluation:
    """Evaluate D(lambda) and, up to ``order``, its gradient and Hessian in one pass over the data.

    Args:
        prob: The problem.
        lam: ``(m,)`` multipliers (any finite values; the dual problem restricts to lambda >= 0).
        order: 0 for the value only, 1 to add the gradient, 2 to add the Hessian.
        policy_out: Optional ``(X, Y)`` array that receives the tilted policy pi*(lambda).

    Returns:
        The :class:`DualEvaluation`.
    """
    lam = prob.check_multipliers(lam)
    if order not in (0, 1, 2):
        raise ValueError(f"order: expected 0, 1 or 2, got {order!r}")
    m, n_prompts = prob.n_constraints, prob.n_prompts
    blocks = row_blocks(prob)
    shape = (blocks[0].stop - blocks[0].start, prob.n_responses)
    z, tmp = np.empty(shape), np.empty(shape)
    centred = [np.empty(shape) for _ in range(m)] if order == 2 else []
    log_z = np.empty(n_prompts)
    means = np.empty((m, n_prompts)) if order >= 1 else None
    covs = np.empty((n_prompts, m, m)) if order == 2 else None

    for rows in blocks:
        n = rows.stop - rows.start
        zb, tb = z[:n], tmp[:n]
        _tilt_block(prob, lam, rows, zb, tb)
        shift = zb.max(axis=1, keepdims=True)
        zb -= shift
        np.exp(zb, out=zb)
        mass = zb.sum(axis=1)
        log_z[rows] = shift[:, 0] + np.log(mass)
        zb /= mass[:, None]  # zb is now pi*(.|x; lambda) on these rows
        if policy_out is not None:
            policy_out[rows] = zb
        if order == 0:
            continue
        for i in range(m):
            g_i = prob.utilities[i, rows]
            means[i, rows] = np.einsum("xy,xy->x", zb, g_i)
            if order == 2:
                np.subtract(g_i, means[i, rows, None], out=centred[i][:n])
        for i in range(m if order == 2 else 0):
            np.multiply(zb, centred[i][:n], out=tb)
            for j in range(i, m):
                covs[rows, i, j] = covs[rows, j, i] = np.einsum("xy,xy->x", tb, centred[j][:n])

    w = prob.prompt_weights
    # lambda^T h = lambda^T g - lambda^T (E_ref g(x) + b); the offset averages to lambda^T absolute_thresholds.
    value = float(prob.beta * (w @ log_z) - lam @ prob.absolute_thresholds)
    gradient = None if means is None else means @ w - prob.absolute_thresholds
    hessian = None if covs is None else np.einsum("x,xij->ij", w, covs) / prob.beta
    return DualEvaluation(lam=lam, value=value, gradient=gradient, hessian=hessian)


def dual_value(prob: ConstrainedProblem, lam: np.ndarray | float) -> float:
    """D(lambda) = beta E_x log E_{pi_ref}[exp((r + lambda^T h) / beta)] (Sec. 2, below eq. (3))."""
    return evaluate_dual(prob, lam, order=0).value


def dual_gradient(prob: ConstrainedProblem, lam: np.ndarray | float) -> np.ndarray:
    """The gradient E_x E_{pi*(.|x; lambda)} h of D (Danskin's theorem; Sec. 2)."""
    return evaluate_dual(prob, lam, order=1).gradient


def dual_hessian(prob: ConstrainedProblem, lam: np.ndarray | float) -> np.ndarray:
    """The Hessian (1/beta) E_x Cov_{pi*(.|x; lambda)}(g) of D (Lemma 1, covariance form)."""
    return evaluate_dual(prob, lam, order=2).hessian


def tilted_policy(prob: ConstrainedProblem, lam: np.ndarray | float) -> np.ndarray:
    """``(X, Y)`` pi*(y|x; lambda) proportional to pi_ref(y|x) exp((r + lambda^T g)(x, y) / beta) (eq. (3))."""
    out = np.empty((prob.n_prompts, prob.n_responses))
    evaluate_dual(prob, lam, order=0, policy_out=out)
    return out

