"""The constrained alignment problem (U-CA) on an enumerable response set.

Problem (U-CA) of the paper (Sec. 2)::

    max_pi  E_x [ E_{y~pi(.|x)} r(x, y) - beta KL(pi(.|x) || pi_ref(.|x)) ]
    s.t.    E_x E_{y~pi(.|x)} h_i(x, y) >= 0,   i = 1..m,

with the relative constraint functions ``h_i = g_i - E_{pi_ref(.|x)} g_i - b_i`` (Sec. 2): the thresholds
``b_i`` are improvements over the reference model's mean utility.

The problem keeps its own read-only copies of every input array (validated, then copied into immutable
buffers), so a caller that reuses or later mutates its buffers can neither change a problem nor bypass
its validation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import cached_property

import numpy as np
from scipy.special import logsumexp

__all__ = ["ROW_SUM_TOL", "ConstrainedProblem", "InfeasibleProblemError"]

# Probability rows (pi_ref, and policies passed in) must sum to one to this accuracy (float64 inputs
# normalised by logsumexp are exact to ~1e-15; float32 inputs to ~1e-7).
ROW_SUM_TOL = 1e-6


class InfeasibleProblemError(ValueError):
    """No policy absolutely continuous w.r.t. ``pi_ref`` strictly satisfies the constraints."""


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only copy of ``array`` backed by immutable bytes, so not even ``flags.writeable`` can unlock it."""
    array = np.ascontiguousarray(array)
    return np.frombuffer(array.tobytes(), dtype=array.dtype).reshape(array.shape)


def _as_float_array(value: object, field: str, copy: bool = True) -> np.ndarray:
    """``value`` as float64 (a fresh copy unless ``copy=False``).

    Raises:
        ValueError: naming ``field``, unless ``value`` holds real integers or floats: complex values, text,
            booleans, dates and objects would otherwise convert silently, and a masked array would lose its mask.
    """
    if isinstance(value, np.ma.MaskedArray):
        raise ValueError(f"{field}: got a masked array, whose mask would be ignored; pass plain numbers "
                         "(e.g. value.filled(0.0) with the masked entries given a meaning)")
    if np.iscomplexobj(value):
        raise ValueError(f"{field}: expected real numbers, got complex values; pass the real scores (e.g. x.real)")
    try:
        kind = np.asarray(value).dtype.kind
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise ValueError(f"{field}: expected a numeric array ({err})") from None
    if kind not in "iuf":
        what = {"b": "booleans", "U": "text", "S": "bytes", "M": "dates", "m": "time spans", "O": "Python objects",
                "V": "raw records"}.get(kind, f"dtype kind {kind!r}")
        raise ValueError(f"{field}: expected real numbers, got {what}; convert them to floats first")
    return np.array(value, dtype=np.float64, copy=True) if copy else np.asarray(value, dtype=np.float64)


def _require_finite(array: np.ndarray, field: str, fix: str) -> None:
    if not np.all(np.isfinite(array)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"{field}: contains {array[bad]} at index {bad}; {fix}")


def _as_beta(value: object) -> float:
    """The KL strength as a float > 0; ``ValueError`` naming ``beta`` for arrays, complex, bool, NaN, inf, <= 0."""
    if isinstance(value, bool | np.bool_) or np.ndim(value) != 0:
        shape = "a bool" if isinstance(value, bool | np.bool_) else f"an array of shape {np.shape(value)}"
        raise ValueError(f"beta: expected one number > 0, got {shape}; pass a single float such as beta=0.1")
    beta = float(_as_float_array(value, "beta"))
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta: must be a finite number > 0, got {value!r}")
    return beta


@dataclasses.dataclass(frozen=True, eq=False)
class ConstrainedProblem:
    """An instance of (U-CA) over ``X`` prompts and ``Y`` enumerated responses per prompt.

    Args:
        ref_logprobs: ``(X, Y)`` log pi_ref(y|x). ``-inf`` marks a response outside the reference support
            (ragged response sets); every row must have at least one finite entry and sum to 1 in
            probability.
        reward: ``(X, Y)`` reward r(x, y), finite everywhere (fill off-support entries with 0).
        utilities: ``(m, X, Y)`` utilities g_i(x, y), finite everywhere. An ``(X, Y)`` array means m = 1.
        thresholds: ``(m,)`` required improvements b_i of E_pi g_i over E_{pi_ref} g_i (a scalar means m = 1).
        beta: KL-regularisation strength, > 0.
        prompt_weights: ``(X,)`` non-negative prompt distribution (normalised here); default uniform.

    Raises:
        ValueError: naming the offending field, for non-finite scores, ``beta <= 0``, reference rows that
            do not sum to one, shape mismatches, a threshold count that differs from m, or negative
            prompt weights.
    """

    ref_logprobs: np.ndarray
    reward: np.ndarray
    utilities: np.ndarray
    thresholds: np.ndarray
    beta: float
    prompt_weights: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # the dataclass is frozen; normalise fields once here
        ref = _as_float_array(self.ref_logprobs, "ref_logprobs", copy=False)
        if ref.ndim != 2 or ref.shape[0] == 0 or ref.shape[1] == 0:
            raise ValueError(f"ref_logprobs: expected a non-empty (X, Y) array, got shape {ref.shape}")
        n_prompts, n_responses = ref.shape
        _require_finite(np.where(np.isneginf(ref), 0.0, ref), "ref_logprobs",
                        "log-probabilities must be finite or -inf (-inf marks a response outside the support)")
        row_lse = logsumexp(ref, axis=1)
        if not np.all(np.isfinite(row_lse)):
            bad = int(np.flatnonzero(~np.isfinite(row_lse))[0])
            raise ValueError(f"ref_logprobs: row {bad} has no response in the support (all entries are -inf)")
        worst = int(np.argmax(np.abs(row_lse)))
        if abs(row_lse[worst]) > ROW_SUM_TOL:
            raise ValueError(
                f"ref_logprobs: row {worst} sums to {np.exp(row_lse[worst]):.9g} in probability, not 1; "
                "normalise each row, e.g. ref_logprobs - scipy.special.logsumexp(ref_logprobs, axis=1, keepdims=True)"
            )

        reward = _as_float_array(self.reward, "reward", copy=False)
        if reward.shape != ref.shape:
            raise ValueError(f"reward: expected shape {ref.shape} to match ref_logprobs, got {reward.shape}")
        _require_finite(reward, "reward", "scores must be finite (fill off-support entries with 0)")

        utilities = _as_float_array(self.utilities, "utilities", copy=False)
        if utilities.shape == ref.shape:
            utilities = utilities[None]
        if utilities.ndim != 3 or utilities.shape[1:] != ref.shape or utilities.shape[0] == 0:
            raise ValueError(
                f"utilities: expected shape (m, {n_prompts}, {n_responses}) with m >= 1, got {utilities.shape}"
            )
        for i, utility in enumerate(utilities):
            _require_finite(utility, f"utilities[{i}]", "scores must be finite (fill off-support entries with 0)")
        n_constraints = utilities.shape[0]

        thresholds = np.atleast_1d(_as_float_array(self.thresholds, "thresholds"))
        if thresholds.shape != (n_constraints,):
            raise ValueError(
                f"thresholds: expected {n_constraints} value(s), one per utility, got shape {thresholds.shape}"
            )
        _require_finite(thresholds, "thresholds", "pass one finite improvement b_i per utility")
        beta = _as_beta(self.beta)

        if self.prompt_weights is None:
            weights = np.full(n_prompts, 1.0 / n_prompts)
        else:
            weights = _as_float_array(self.prompt_weights, "prompt_weights")
            if weights.shape != (n_prompts,):
                raise ValueError(f"prompt_weights: expected shape ({n_prompts},), got {weights.shape}")
            _require_finite(weights, "prompt_weights", "pass finite non-negative weights (or None for uniform)")
            if np.any(weights < 0):
                raise ValueError("prompt_weights: must be finite and non-negative")
            largest = weights.max()
            if largest <= 0:
                raise ValueError("prompt_weights: must not be all zero")
            weights = weights / largest  # first to at most one: a sum of weights near 1e308 would overflow
            weights = weights / weights.sum()

        set_field(self, "ref_logprobs", _frozen(ref))
        set_field(self, "reward", _frozen(reward))
        set_field(self, "utilities", _frozen(utilities))
        set_field(self, "thresholds", _frozen(thresholds))
        set_field(self, "beta", beta)
        set_field(self, "prompt_weights", _frozen(weights))

    # ----------------------------------------------------------------------------------------------
    # Shapes and derived quantities (computed once, on first use).

    @property
    def n_prompts(self) -> int:
        """X, the number of prompts."""
        return self.ref_logprobs.shape[0]

    @property
    def n_responses(self) -> int:
        """Y, the number of enumerated responses per prompt."""
        return self.ref_logprobs.shape[1]

    @property
    def n_constraints(self) -> int:
        """m, the number of utility constraints."""
        return self.utilities.shape[0]

    @cached_property
    def support(self) -> np.ndarray | None:
        """``(X, Y)`` boolean mask of pi_ref(y|x) > 0, or ``None`` when every response is in the support."""
        mask = np.isfinite(self.ref_logprobs)
        return None if mask.all() else _frozen(mask)

    @cached_property
    def ref_utility_means(self) -> np.ndarray:
        """``(m, X)`` E_{pi_ref(.|x)} g_i, the per-prompt offsets inside h_i."""
        return _frozen(np.einsum("xy,ixy->ix", np.exp(self.ref_logprobs), self.utilities))

    @cached_property
    def absolute_thresholds(self) -> np.ndarray:
        """``(m,)`` E_x E_{pi_ref} g_i + b_i: the level E_x E_pi g_i must reach."""
        return _frozen(self.ref_utility_means @ self.prompt_weights + self.thresholds)

    def constraint_functions(self) -> np.ndarray:
        """``(m, X, Y)`` h_i(x, y) = g_i(x, y) - E_{pi_ref(.|x)} g_i - b_i (a fresh array; Sec. 2)."""
        return self.utilities - self.ref_utility_means[:, :, None] - self.thresholds[:, None, None]

    def support_extreme(self, values: np.ndarray, reduce: str) -> np.ndarray:
        """``(..., X)`` max (``reduce="max"``) or min over the reference support of each row of ``values``."""
        fill = -np.inf if reduce == "max" else np.inf
        masked = values if self.support is None else np.where(self.support, values, fill)
        return masked.max(axis=-1) if reduce == "max" else masked.min(axis=-1)

    @cached_property
    def max_improvements(self) -> np.ndarray:
        """``(m,)`` the largest improvement E_x max_{y in supp} g_i - E_x E_{pi_ref} g_i any policy reaches.

        Constraint i alone is strictly feasible iff ``thresholds[i] < max_improvements[i]``.
        """
        best = self.support_extreme(self.utilities, "max")  # (m, X)
        return _frozen((best - self.ref_utility_means) @ self.prompt_weights)

    @cached_property
    def bound_M(self) -> float:
        """M = max over i, x, y in the support of max(|h_i(x, y)|, |r(x, y)|) (the constant of Theorems 1-6)."""
        h = self.constraint_functions()
        h_abs = self.support_extreme(np.abs(h), "max").max()
        r_abs = self.support_extreme(np.abs(self.reward), "max").max()
        return float(max(h_abs, r_abs))

    # ----------------------------------------------------------------------------------------------

    def check_multipliers(
        self, lam: np.ndarray | float, *, nonnegative: bool = False, field: str = "lam"
    ) -> np.ndarray:
        """``lam`` as an ``(m,)`` float array; raise ``ValueError`` naming ``field`` if it is malformed.

        Args:
            lam: One multiplier per constraint (a scalar when m = 1).
            nonnegative: Also require lambda >= 0 (the dual domain, where D(lambda) bounds P*).
            field: The argument name used in error messages.
        """
        out = np.atleast_1d(_as_float_array(lam, field))
        if out.shape != (self.n_constraints,):
            raise ValueError(
                f"{field}: expected shape ({self.n_constraints},), one multiplier per constraint, got {out.shape}"
            )
        if not np.all(np.isfinite(out)) or (nonnegative and np.any(out < 0)):
            kind = "finite and non-negative" if nonnegative else "finite"
            raise ValueError(f"{field}: multipliers must be {kind}, got {out.tolist()}")
        return out

    def check_feasible(self) -> None:
        """Raise :class:`InfeasibleProblemError` if some constraint alone cannot be strictly satisfied.

        Joint infeasibility of several individually feasible constraints is detected by the solvers.
        """
        for i, (b, best) in enumerate(zip(self.thresholds, self.max_improvements, strict=True)):
            if not b < best:
                raise InfeasibleProblemError(
                    f"constraint {i}: threshold b_{i} = {b:.6g} is not below the largest achievable "
                    f"improvement {best:.6g} (every policy absolutely continuous w.r.t. pi_ref has "
                    f"E_pi g_{i} - E_ref g_{i} <= {best:.6g}); lower the threshold"
                )

    @classmethod
    def plug_in(cls, scores: np.ndarray, thresholds: np.ndarray | Sequence[float], beta: float) -> ConstrainedProblem:
        """The plug-in problem over sampled responses: each prompt's K samples of pi_ref, uniform reference.

        This is the one-shot estimator of D(lambda) (App. E of arXiv 2405.19544, which CAID warm-starts from).

        Args:
            scores: ``(1 + m, N, K)`` reward, then each utility, of K samples of pi_ref for each of N prompts.
            thresholds: ``(m,)`` required improvements b_i.
            beta: KL strength.
        """
        scores = np.asarray(scores)
        if scores.ndim != 3 or scores.shape[0] < 2:
            raise ValueError(f"scores: expected a (1 + m, N, K) array with m >= 1, got shape {scores.shape}")
        k = scores.shape[2]
        ref = np.full(scores.shape[1:], -np.log(k))
        return cls(ref, scores[0], scores[1:], np.asarray(thresholds), beta)

    def with_thresholds(self, thresholds: np.ndarray | float) -> ConstrainedProblem:
        """The same problem with new thresholds (scores shared; no validation pass over them)."""
        new = np.atleast_1d(_as_float_array(thresholds, "thresholds"))
        if new.shape != self.thresholds.shape or not np.all(np.isfinite(new)):
            raise ValueError(
                f"thresholds: expected {self.n_constraints} finite value(s), got {np.asarray(thresholds)!r}"
            )
        # absolute_thresholds and bound_M depend on the thresholds; the other cached values carry over.
        return self._replace(("absolute_thresholds", "bound_M"), thresholds=_frozen(new))

    def with_beta(self, beta: float) -> ConstrainedProblem:
        """The same problem with a new KL strength beta (scores shared; no validation pass over them)."""
        return self._replace((), beta=_as_beta(beta))

    def _replace(self, stale: tuple[str, ...], **fields: object) -> ConstrainedProblem:
        clone = object.__new__(ConstrainedProblem)
        clone.__dict__.update({k: v for k, v in self.__dict__.items() if k not in stale})
        clone.__dict__.update(fields)
        return clone
