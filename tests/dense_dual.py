"""Random instances and independent reference computations for the theory tests.

Nothing here calls the code under test: the dual function, its gradient and its minimiser are
recomputed densely with scipy (logsumexp + L-BFGS-B), and the beta -> 0 limit of (U-CA) is solved as a
linear program (scipy linprog), so agreement is evidence, not tautology.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog, minimize
from scipy.special import log_softmax, logsumexp

import theory


def random_problem(
    seed: int,
    n_prompts: int = 12,
    n_responses: int = 20,
    m: int = 2,
    beta: float = 0.1,
    reward_scale: float = 1.0,
    ref_temperature: float = 2.0,
    zero_fraction: float = 0.0,
    tiny_fraction: float = 0.0,
    fraction: np.ndarray | float = 0.5,
) -> theory.ConstrainedProblem:
    """A random instance with thresholds at ``fraction`` of each constraint's largest improvement.

    ``zero_fraction`` of the reference entries are set to probability zero (-inf log-prob) and
    ``tiny_fraction`` to probability ~1e-30 (before renormalisation).
    """
    rng = np.random.default_rng(seed)
    logits = ref_temperature * rng.normal(size=(n_prompts, n_responses))
    if tiny_fraction:
        logits[rng.random(logits.shape) < tiny_fraction] = -69.0  # exp(-69) ~ 1e-30
    if zero_fraction:
        logits[rng.random(logits.shape) < zero_fraction] = -np.inf
        logits[:, 0] = np.where(np.isfinite(logits[:, 0]), logits[:, 0], 0.0)  # keep each row non-empty
    ref = log_softmax(logits, axis=1)
    reward = reward_scale * rng.normal(size=(n_prompts, n_responses))
    utilities = rng.normal(size=(m, n_prompts, n_responses))
    prob = theory.ConstrainedProblem(ref, reward, utilities, np.zeros(m), beta)
    return prob.with_thresholds(np.asarray(fraction) * prob.max_improvements)


def dense_constraint_functions(prob: theory.ConstrainedProblem) -> np.ndarray:
    """``(m, X, Y)`` h_i = g_i - E_{pi_ref(.|x)} g_i - b_i, straight from the definition."""
    mean_ref = np.einsum("xy,ixy->ix", np.exp(prob.ref_logprobs), prob.utilities)
    return prob.utilities - mean_ref[:, :, None] - prob.thresholds[:, None, None]


def dense_dual(prob: theory.ConstrainedProblem, lam: np.ndarray) -> tuple[float, np.ndarray]:
    """D(lambda) and its gradient from the textbook formulas, on dense arrays."""
    w = prob.prompt_weights
    ref = prob.ref_logprobs
    h = dense_constraint_functions(prob)
    logits = ref + (prob.reward + np.tensordot(lam, h, axes=1)) / prob.beta
    log_z = logsumexp(logits, axis=1)
    policy = np.exp(logits - log_z[:, None])
    grad = np.einsum("xy,ixy->ix", policy, h) @ w
    return float(prob.beta * (w @ log_z)), grad


def reference_lam(prob: theory.ConstrainedProblem, extra_linear: np.ndarray | None = None) -> np.ndarray:
    """argmin_{lambda >= 0} D(lambda) + extra_linear^T lambda by L-BFGS-B on :func:`dense_dual`."""
    extra = np.zeros(prob.n_constraints) if extra_linear is None else extra_linear

    def fun(lam: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = dense_dual(prob, lam)
        return value + extra @ lam, grad + extra

    x0 = np.full(prob.n_constraints, 0.1)
    res = minimize(
        fun, x0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * prob.n_constraints,
        options={"ftol": 1e-16, "gtol": 1e-13, "maxiter": 10_000, "maxcor": 20},
    )
    return res.x


def _support_lp_arrays(prob: theory.ConstrainedProblem) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix, np.ndarray]:
    """Supported (x, y) entries, their prompt weights, the per-prompt row-sum matrix and E_ref g per prompt."""
    rows, cols = np.nonzero(np.isfinite(prob.ref_logprobs))
    row_sum = sp.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(prob.n_prompts, len(rows)))
    mean_ref = np.einsum("xy,ixy->ix", np.exp(prob.ref_logprobs), prob.utilities)
    return rows, cols, row_sum, mean_ref


def lp_max_improvement(prob: theory.ConstrainedProblem, direction: np.ndarray) -> float:
    """max t such that some policy improves every E g_i over pi_ref by t * direction_i (scipy linprog, HiGHS)."""
    rows, cols, row_sum, mean_ref = _support_lp_arrays(prob)
    w = prob.prompt_weights[rows]
    gain = (prob.utilities[:, rows, cols] - mean_ref[:, rows]) * w  # (m, n): E_x E_pi g_i - E_x E_ref g_i = gain @ pi
    a_ub = np.hstack([-gain, direction[:, None]])  # t * d_i - gain_i @ pi <= 0
    a_eq = sp.hstack([row_sum, sp.csr_matrix((prob.n_prompts, 1))])
    cost = np.zeros(len(rows) + 1)
    cost[-1] = -1.0
    res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(prob.n_constraints), A_eq=a_eq, b_eq=np.ones(prob.n_prompts),
                  bounds=[(0, None)] * len(rows) + [(None, None)], method="highs")
    assert res.status == 0, res.message
    return float(-res.fun)


def lp_optimum(prob: theory.ConstrainedProblem) -> float:
    """P*_LP = max_pi E_x E_pi r s.t. the constraints: the beta -> 0 limit of (U-CA), by scipy linprog (HiGHS).

    For every beta, P*_LP - beta E_x max_{y in supp} (-log pi_ref(y|x)) <= P*(beta) <= P*_LP (KL >= 0, and
    KL(pi || pi_ref) <= max_y -log pi_ref(y|x)).
    """
    rows, cols, row_sum, mean_ref = _support_lp_arrays(prob)
    w = prob.prompt_weights[rows]
    gain = (prob.utilities[:, rows, cols] - mean_ref[:, rows]) * w
    res = linprog(-prob.reward[rows, cols] * w, A_ub=-gain, b_ub=-prob.thresholds, A_eq=row_sum,
                  b_eq=np.ones(prob.n_prompts), bounds=[(0, None)] * len(rows), method="highs")
    assert res.status == 0, res.message
    return float(-res.fun)
