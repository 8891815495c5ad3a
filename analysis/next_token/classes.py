"""Policy classes of growing capacity on the cached trunk, and their best member at lambda (exact Lagrangian).

In the one-token world r and g are token tables, so the tilt pi*(lambda) of eq. (3) adds the same logit
vector ``s(lambda) = (r + lambda^T g) / beta`` to every prompt's reference logits. The classes differ in
which logit shifts they can make:

* ``logit_bias`` (V parameters): ``log pi_ref(.|x) + b``; represents every tilt (``b = s(lambda)``).
* ``top_bias`` (n parameters): the same bias restricted to the n tokens of largest mean reference mass
  on the train prompts; every other token keeps its reference logit.
* ``last_mlp``: the last decoder block's MLP with its norms
  (:class:`analysis.next_token.policy.LastBlockPolicy`, the class DPO trains in the laboratory).

:func:`fit_lagrangian` returns the class's best member at lambda: it maximises the exact Lagrangian of the
train prompts, eq. (1) up to a constant in theta,

    L(theta, lambda) = E_x [ sum_v pi_theta(v|x) (r + lambda^T g)(v) - beta KL(pi_theta(.|x) || pi_ref(.|x)) ],

over the full vocabulary (no sampling), with L-BFGS run until the gradient norm is below a tolerance.
Since ``L(pi, lambda) = D(lambda) - beta E_x KL(pi || pi*(lambda))``, this is the member closest to the
tilt in reverse KL; its distance to pi*(lambda) on held-out prompts is the class's own nu (Assumption 3).
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np
import torch

from analysis.next_token.policy import Distribution, LastBlockPolicy, Trunk

__all__ = [
    "BiasLagrangian",
    "ClassTrunk",
    "Fit",
    "LogitBiasPolicy",
    "PolicyClass",
    "class_trunk",
    "fit_lagrangian",
    "logit_gradient",
    "make_policy",
    "top_tokens",
]


class PolicyClass(str, enum.Enum):
    """The policy classes of the nu dial (module docstring)."""

    LOGIT_BIAS = "logit_bias"
    TOP_BIAS = "top_bias"
    LAST_MLP = "last_mlp"


@dataclasses.dataclass(frozen=True, eq=False)
class ClassTrunk(Trunk):
    """A :class:`Trunk` that also holds each prompt's reference log-probabilities ``(X, V)`` (float64).

    The bias classes shift these; the MLP class reads ``hidden`` only.
    """

    ref_logp: torch.Tensor = dataclasses.field(default_factory=lambda: torch.empty(0))

    def rows(self, index: np.ndarray | torch.Tensor) -> ClassTrunk:
        """The trunk of a subset of prompts."""
        index = torch.as_tensor(index, dtype=torch.long)
        return ClassTrunk(self.hidden[index], self.ref_logp[index])


def class_trunk(trunk: Trunk, ref_logp: np.ndarray) -> ClassTrunk:
    """Attach the ``(X, V)`` reference log-probabilities of the same prompts to ``trunk``."""
    if ref_logp.shape[0] != len(trunk):
        raise ValueError(f"ref_logp: expected {len(trunk)} rows (one per trunk prompt), got {ref_logp.shape[0]}")
    return ClassTrunk(trunk.hidden, torch.as_tensor(ref_logp, dtype=torch.float64))


class LogitBiasPolicy(Distribution, torch.nn.Module):
    """pi_theta(.|x) = softmax(log pi_ref(.|x) + b), b non-zero on ``tokens`` only (all V: every tilt)."""

    def __init__(self, vocab_size: int, tokens: np.ndarray | None = None) -> None:
        """A zero bias (so pi_theta = pi_ref) on ``tokens`` (default: the whole vocabulary)."""
        super().__init__()
        index = np.arange(vocab_size) if tokens is None else np.unique(np.asarray(tokens, dtype=np.int64))
        if index.size == 0 or index[0] < 0 or index[-1] >= vocab_size:
            raise ValueError(f"tokens: expected ids in [0, {vocab_size}), got {index.size} ids")
        self.vocab_size = vocab_size
        self.register_buffer("index", torch.as_tensor(index))
        self.bias = torch.nn.Parameter(torch.zeros(index.size, dtype=torch.float64))
        self.fitted_composite: np.ndarray | None = None  # r_lambda of the last exact-Lagrangian fit (warm starts)

    def trainable(self) -> list[torch.nn.Parameter]:
        """The trained parameters."""
        return [self.bias]

    def shift(self) -> torch.Tensor:
        """``(V,)`` the logit shift b."""
        return torch.zeros(self.vocab_size, dtype=torch.float64).index_add(0, self.index, self.bias)

    def logits(self, trunk: Trunk) -> torch.Tensor:
        """``(X, V)`` log pi_ref + b."""
        return _ref_logp(trunk) + self.shift()

    @torch.no_grad()
    def expectations(self, p_ref: np.ndarray, tables: np.ndarray, ref_means: np.ndarray) -> np.ndarray:
        """``(X, k)`` E_{pi_b(.|x)} of each row of a ``(k, V)`` table, in O(X n k) (only the n biased tokens).

        Args:
            p_ref: ``(X, V)`` pi_ref.
            tables: ``(k, V)`` the tables.
            ref_means: ``(X, k)`` their expectations under pi_ref.
        """
        index, b = self.index.numpy(), self.bias.detach().numpy()
        top = max(float(b.max()), 0.0)  # scale by e^-top against overflow; cancels in the ratio
        ref_in, on = p_ref[:, index], tables[:, index]
        weighted = ref_in * np.exp(b - top)
        outside = np.exp(-top) * (ref_means - ref_in @ on.T)
        mass = np.exp(-top) * np.maximum(1.0 - ref_in.sum(axis=1), 0.0) + weighted.sum(axis=1)
        return (outside + weighted @ on.T) / mass[:, None]


def _ref_logp(trunk: Trunk) -> torch.Tensor:
    if not isinstance(trunk, ClassTrunk):
        raise TypeError("trunk: the bias classes need a ClassTrunk (class_trunk(trunk, ref_logp))")
    return trunk.ref_logp


def top_tokens(ref_logp: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` tokens of largest mean reference probability over the given prompts."""
    if not 1 <= n <= ref_logp.shape[1]:
        raise ValueError(f"n: expected 1 <= n <= {ref_logp.shape[1]}, got {n}")
    mass = np.exp(ref_logp).mean(axis=0)
    return np.sort(np.argsort(-mass, kind="stable")[:n])


def make_policy(kind: PolicyClass, model: torch.nn.Module, ref_logp_train: np.ndarray,
                top_n: int | None = None) -> torch.nn.Module:
    """A fresh member of class ``kind`` at pi_ref.

    Args:
        kind: The class.
        model: The reference LM (head, last block).
        ref_logp_train: ``(X_train, V)`` reference log-probabilities (``top_bias`` picks its tokens on them).
        top_n: Tokens of ``top_bias``.
    """
    vocab = model.get_output_embeddings().weight.shape[0]
    if kind is PolicyClass.LOGIT_BIAS:
        return LogitBiasPolicy(vocab)
    if kind is PolicyClass.TOP_BIAS:
        if top_n is None:
            raise ValueError("top_n: the top_bias class needs its number of tokens")
        return LogitBiasPolicy(vocab, top_tokens(ref_logp_train, top_n))
    return LastBlockPolicy(model)


def logit_gradient(logits: torch.Tensor, composite: torch.Tensor, ref_logp: torch.Tensor,
                   beta: float) -> tuple[float, torch.Tensor]:
    """``(L, dL/dlogits)`` of the module docstring's Lagrangian at ``(X, V)`` logits, in closed form.

    With ``a = r_lambda - beta (log pi - log pi_ref)`` and ``abar_x = E_pi a``, ``L = E_x abar_x`` and
    ``dL/dlogit(x, v) = pi(v|x) (a(x, v) - abar_x) / X`` (the softmax Jacobian; the -beta of d log pi cancels).
    """
    z = logits.detach().double()
    logp = z - torch.logsumexp(z, dim=1, keepdim=True)
    p = logp.exp()
    a = composite - beta * (logp - ref_logp)
    abar = (p * a).sum(dim=1, keepdim=True)
    return float(abar.mean()), p * (a - abar) / len(z)


@dataclasses.dataclass(frozen=True)
class Fit:
    """The outcome of :func:`fit_lagrangian`.

    Attributes:
        lagrangian: L(theta, lambda) at the end (train prompts, module docstring's constant dropped).
        grad_norm: Largest absolute gradient coordinate (in the optimiser's scaled coordinates) at the end.
        iterations: L-BFGS iterations taken.
        evaluations: Lagrangian evaluations (each one forward and one backward pass).
        converged: ``grad_norm <= tol``.
    """

    lagrangian: float
    grad_norm: float
    iterations: int
    evaluations: int
    converged: bool


def fit_lagrangian(policy: torch.nn.Module, trunk: Trunk, composite: np.ndarray, ref_logp: np.ndarray, beta: float,
                   *, tol: float = 1e-7, max_iter: int = 1000, p_ref: np.ndarray | None = None) -> Fit:
    """Maximise the exact Lagrangian over the class, in place, from the policy's current parameters.

    L-BFGS (``scipy.optimize``, float64) to a gradient tolerance. The bias classes start from their projection
    of the tilt (the tilt's logit shift on their tokens: the optimum itself for ``logit_bias``), are
    preconditioned by ``1 / sqrt(mean_x pi(v|x))`` there (the inverse square root of their Hessian's
    diagonal) and use :class:`BiasLagrangian`, which costs O(X n) per evaluation; a refit at a new lambda starts
    from the last fit moved by the change of the tilt's shift. The other classes back-propagate
    :func:`logit_gradient` through the class from their current parameters.

    Args:
        policy: A member of a class (warm start: its current parameters).
        trunk: Trunk of the train prompts (a :class:`ClassTrunk` for the bias classes).
        composite: ``(V,)`` r + lambda^T g.
        ref_logp: ``(X, V)`` log pi_ref of the train prompts (rows normalised).
        beta: KL strength.
        tol: Tolerance on the largest absolute (scaled) gradient coordinate.
        max_iter: Most L-BFGS iterations.
        p_ref: ``exp(ref_logp)`` when the caller has it (saves a pass).
    """
    from scipy.optimize import minimize

    if isinstance(policy, LogitBiasPolicy):
        objective = BiasLagrangian(policy.index.numpy(), composite, ref_logp, beta, p_ref)
        theta0, scale = objective.start()
        if policy.fitted_composite is not None:  # warm start: the last fit, moved by the change of the tilt's shift
            shift = (np.asarray(composite) - policy.fitted_composite)[policy.index.numpy()] / beta
            theta0 = policy.bias.detach().numpy() + shift
        policy.fitted_composite = np.asarray(composite, float)
        fun = objective.value_and_grad
    else:
        fun, theta0, scale = _autograd_objective(policy, trunk, composite, ref_logp, beta), None, None
    calls = [0]

    def scaled(theta: np.ndarray) -> tuple[float, np.ndarray]:
        calls[0] += 1
        value, grad = fun(theta if scale is None else theta * scale)
        return -value, -(grad if scale is None else grad * scale)

    if theta0 is None:
        theta0 = torch.nn.utils.parameters_to_vector(policy.trainable()).detach().double().numpy()
    x0 = theta0 if scale is None else theta0 / scale
    result = minimize(scaled, x0, jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "gtol": tol, "ftol": 0.0, "maxcor": 20})
    value, grad = scaled(result.x)
    theta = result.x if scale is None else result.x * scale
    params = policy.trainable()
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(torch.as_tensor(theta).to(params[0].dtype), params)
    grad_norm = float(np.abs(grad).max())
    return Fit(-value, grad_norm, int(result.nit), calls[0], grad_norm <= tol)


def _autograd_objective(policy: torch.nn.Module, trunk: Trunk, composite: np.ndarray, ref_logp: np.ndarray,
                        beta: float):
    params = policy.trainable()
    comp = torch.as_tensor(composite, dtype=torch.float64)
    ref = torch.as_tensor(ref_logp, dtype=torch.float64)

    def value_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        torch.nn.utils.vector_to_parameters(torch.as_tensor(theta).to(params[0].dtype), params)
        for p in params:
            p.grad = None
        logits = policy.logits(trunk)
        value, grad = logit_gradient(logits, comp, ref, beta)
        logits.backward(grad.to(logits.dtype))
        return value, torch.cat([p.grad.reshape(-1).double() for p in params]).numpy()

    return value_and_grad


class BiasLagrangian:
    """L(b, lambda) of a logit bias b on the token set S, in O(X |S|) per evaluation.

    With pi_b(v|x) = pi_ref(v|x) e^{b_v} / Z_x (b = 0 off S), ``d = r_lambda - beta b``: ``L_x = E_{pi_b} d +
    beta log Z_x`` and ``dL/db_v = E_x pi_b(v|x) (d_v - E_{pi_b} d)`` for v in S. The tokens off S enter
    only through their reference mass and their mass-weighted r_lambda per prompt, computed once.
    """

    def __init__(self, tokens: np.ndarray, composite: np.ndarray, ref_logp: np.ndarray, beta: float,
                 p_ref: np.ndarray | None = None) -> None:
        """Precompute pi_ref on S and the off-S sums (one pass over the ``(X, V)`` reference ``p_ref``)."""
        self.beta = beta
        self.tokens = np.asarray(tokens)
        composite = np.asarray(composite, float)
        self.c = composite[self.tokens]
        p_ref = np.exp(ref_logp) if p_ref is None else p_ref
        self.ref_in = p_ref[:, self.tokens]
        self.out_mass = np.maximum(1.0 - self.ref_in.sum(axis=1), 0.0)
        self.out_c = np.einsum("xv,v->x", p_ref, composite) - self.ref_in @ self.c

    def start(self) -> tuple[np.ndarray, np.ndarray]:
        """``(b0, scale)``: the tilt's shift on S, and 1 / sqrt(mean_x pi_b0(v|x)) there."""
        b0 = self.c / self.beta
        e = self.ref_in * np.exp(b0 - b0.max())
        mass = (e / (self.out_mass[:, None] * np.exp(-b0.max()) + e.sum(axis=1, keepdims=True))).mean(axis=0)
        return b0, 1.0 / np.sqrt(np.maximum(mass, 1e-10))

    def value_and_grad(self, b: np.ndarray) -> tuple[float, np.ndarray]:
        """``(L, dL/db)`` at the bias ``b`` on S."""
        shift = max(float(b.max()), 0.0)  # scale by e^-shift against overflow; cancels in every ratio
        e = self.ref_in * np.exp(b - shift)
        z = self.out_mass * np.exp(-shift) + e.sum(axis=1)
        d = self.c - self.beta * b
        mean_d = (self.out_c * np.exp(-shift) + e @ d) / z
        value = float(np.mean(mean_d + self.beta * (np.log(z) + shift)))
        grad = ((e / z[:, None]) * (d[None, :] - mean_d[:, None])).mean(axis=0)
        return value, grad
