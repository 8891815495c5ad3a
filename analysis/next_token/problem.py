"""The exact constrained problem of the one-token world, its instance file, and the plug-in thresholds.

Over held-out prompts x the full vocabulary, (U-CA) of Sec. 2 is a finite problem: ``theory.solve_dual``
gives lambda*, D* = P* (Lemma 2) and pi* = pi*(lambda*) (eq. (3)) exactly; ``theory.certify`` checks it.
The instance is saved as ``instance.npz`` with :class:`theory.ConstrainedProblem`'s field names, so anyone
can rebuild and re-solve it: ``ConstrainedProblem(**load_instance_arrays(path))``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.next_token.world import World, atomic_savez, normalised
from llm.run_files import RunFileError, read_npz
from theory import ConstrainedProblem

__all__ = [
    "INSTANCE_FIELDS",
    "InstanceError",
    "exact_problem",
    "load_instance",
    "plug_in_problem",
    "sample_tokens",
    "save_instance",
]

INSTANCE_FIELDS = ("ref_logprobs", "reward", "utilities", "thresholds", "beta", "prompt_weights")
MAX_INSTANCE_BYTES = 100 * 2**20
# The arrays an instance file may declare, uncompressed (its float64 copies in memory take twice this): the
# broadcast scores compress far below MAX_INSTANCE_BYTES, so the declared size is bounded separately.
MAX_INSTANCE_ARRAY_BYTES = 2**30


class InstanceError(ValueError):
    """An instance file is unreadable or malformed; the message names the file and the fix."""


def exact_problem(world: World, utilities: tuple[int, ...], thresholds: np.ndarray, beta: float, *,
                  train: bool = False) -> ConstrainedProblem:
    """(U-CA) over the held-out (or train) prompts x the vocabulary.

    Args:
        world: The world.
        utilities: Which utilities constrain the problem (1 = g_1 valence, 2 = g_2 brevity).
        thresholds: ``(m,)`` required improvements b_i, in sigma units.
        beta: KL strength, in sigma units of r.
        train: Use the train prompts (the exact lambda* available to a method) instead of the held-out ones.
    """
    ref = normalised(world.ref_train if train else world.ref_eval)
    reward = np.broadcast_to(world.scores[0], ref.shape)
    g = np.stack([np.broadcast_to(world.scores[i], ref.shape) for i in utilities])
    return ConstrainedProblem(ref, reward, g, np.asarray(thresholds, float), beta)


def sample_tokens(world: World, k: int, seed: int) -> np.ndarray:
    """``(X_train, k)`` tokens drawn i.i.d. from pi_ref(.|x) for every train prompt (the DPO data)."""
    rng = np.random.default_rng([seed, 7])
    p = np.exp(normalised(world.ref_train))
    cdf = np.cumsum(p, axis=1)
    u = rng.random((p.shape[0], k)) * cdf[:, -1:]
    return np.stack([np.searchsorted(cdf[i], u[i], side="right") for i in range(p.shape[0])]).clip(0, p.shape[1] - 1)


def plug_in_problem(world: World, tokens: np.ndarray, utilities: tuple[int, ...], thresholds: np.ndarray,
                    beta: float) -> ConstrainedProblem:
    """The K-sample plug-in problem of Sec. 2.2 on the train prompts (uniform reference over each K)."""
    rows = (0, *utilities)
    return ConstrainedProblem.plug_in(world.scores[list(rows)][:, tokens], np.asarray(thresholds, float), beta)


def save_instance(prob: ConstrainedProblem, path: Path) -> int:
    """Save ``prob`` compressed in float32 under its field names; returns the file size in bytes.

    Raises:
        InstanceError: The file would exceed 100 MB (use fewer held-out prompts).
    """
    arrays = {
        "ref_logprobs": prob.ref_logprobs.astype(np.float32), "reward": prob.reward.astype(np.float32),
        "utilities": prob.utilities.astype(np.float32), "thresholds": prob.thresholds,
        "beta": np.float64(prob.beta), "prompt_weights": prob.prompt_weights,
    }  # fmt: skip
    atomic_savez(path, **arrays)
    size = path.stat().st_size
    if size > MAX_INSTANCE_BYTES:
        raise InstanceError(f"{path}: {size / 2**20:.0f} MB exceeds 100 MB; lower n_eval in the configuration")
    return size


def load_instance(path: Path) -> ConstrainedProblem:
    """Read an ``instance.npz`` (no pickle), renormalise its float32 rows and validate it as a problem.

    The file's size, each array's dtype (floats only) and the arrays' declared sizes
    (``MAX_INSTANCE_ARRAY_BYTES`` in all) are checked before any array is read.

    Raises:
        InstanceError: The file is missing, unreadable, truncated, too large, lacks a field, holds a
            non-float array or fails validation.
    """
    fix = "re-create it with `python -m analysis.next_token --out DIR`"
    try:
        size = Path(path).stat().st_size
    except OSError as exc:
        raise InstanceError(f"{path}: cannot read it ({exc.strerror}); {fix}") from None
    if size > MAX_INSTANCE_BYTES:
        raise InstanceError(f"{path}: {size / 2**20:.3g} MB exceeds the {MAX_INSTANCE_BYTES / 2**20:.3g} MB an "
                            f"instance may have; {fix}")
    try:  # dtypes and declared sizes are checked before any array is allocated
        arrays = read_npz(Path(path), INSTANCE_FIELDS, max_bytes=MAX_INSTANCE_ARRAY_BYTES, fix=fix, kinds="f")
    except RunFileError as exc:
        raise InstanceError(str(exc)) from None
    if arrays["beta"].shape != ():
        raise InstanceError(f"{path}: beta has shape {arrays['beta'].shape}, expected one number; {fix}")
    try:
        return ConstrainedProblem(
            normalised(arrays["ref_logprobs"]), arrays["reward"], arrays["utilities"], arrays["thresholds"],
            float(arrays["beta"]), arrays["prompt_weights"],
        )  # fmt: skip
    except ValueError as exc:
        raise InstanceError(f"{path}: {exc}; {fix}") from exc
