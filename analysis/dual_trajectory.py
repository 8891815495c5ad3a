"""Diagnostics of CAID's dual iterates lambda(t): distances, oscillation, best vs last iterate (Lemma 8)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.statistics import read_summary

__all__ = ["TrajectoryDiagnostics", "dual_trajectory_diagnostics", "trajectory_diagnostics"]


@dataclasses.dataclass(frozen=True, eq=False)
class TrajectoryDiagnostics:
    """How the dual iterates lambda(1..T) of a CAID run moved (Algorithm 2, Lemma 8).

    Attributes:
        per_iteration: Columns ``iteration``, ``lambda_1..m``, ``measured_slack_1..m`` and ``violation``
            (when slacks were given: the on-policy slack u(t) of iterate t's policy and
            ``sum_i max(0, -u_i(t))``), ``dist_one_shot = |lambda(t) - lambda_one_shot|_2``,
            ``dist_last = |lambda(t) - lambda_last|_2``, ``is_best``.
        per_coordinate: One row per multiplier i: ``coordinate`` (1-based), ``sign_changes`` (sign flips of
            the steps ``Delta lambda_i(t) = lambda_i(t+1) - lambda_i(t)``, zero steps skipped),
            ``total_variation = sum_t |Delta lambda_i(t)|``, ``net_change = |lambda_i(T) - lambda_i(1)|``.
            ``total_variation / net_change`` well above 1 means lambda_i went back and forth.
        best_iteration: The least violating iterate (from ``summary.json``), or None if not given.
        last_iteration: The last iteration.
        best_to_last: ``|lambda(best) - lambda_last|_2`` (NaN without a best iterate).
    """

    per_iteration: pd.DataFrame
    per_coordinate: pd.DataFrame
    best_iteration: int | None
    last_iteration: int
    best_to_last: float


def _sign_changes(steps: np.ndarray) -> int:
    """Sign flips in a sequence of steps, ignoring zero steps (lambda clipped at 0, or held fixed)."""
    signs = np.sign(steps[steps != 0])
    return int(np.count_nonzero(signs[1:] != signs[:-1]))


def trajectory_diagnostics(
    lam: np.ndarray,
    lambda_one_shot: np.ndarray,
    lambda_last: np.ndarray | None = None,
    *,
    iterations: Sequence[int] | None = None,
    measured_slacks: np.ndarray | None = None,
    best_iteration: int | None = None,
) -> TrajectoryDiagnostics:
    """Distances, oscillation and best-vs-last of a dual trajectory (see :class:`TrajectoryDiagnostics`).

    Args:
        lam: ``(T, m)`` lambda(t), one row per iteration (a 1-D array means m = 1).
        lambda_one_shot: ``(m,)`` the one-shot dual solution of the reference samples.
        lambda_last: ``(m,)`` the final multipliers (default ``lam[-1]``).
        iterations: The T iteration numbers (default 1..T).
        measured_slacks: ``(T, m)`` on-policy slack of each iterate's policy; NaN rows where unmeasured.
        best_iteration: The best iterate's iteration number.

    Raises:
        ValueError: On shape mismatches, non-finite lambda, or a ``best_iteration`` not in ``iterations``.
    """
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim == 1:
        lam = lam[:, None]
    if lam.ndim != 2 or lam.shape[0] == 0:
        raise ValueError(f"lam: expected a non-empty (T, m) array, got shape {lam.shape}")
    if not np.all(np.isfinite(lam)):
        raise ValueError("lam: contains NaN or inf")
    n_iter, m = lam.shape

    def vector(value: np.ndarray, field: str) -> np.ndarray:
        out = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if out.shape != (m,):
            raise ValueError(f"{field}: expected {m} multiplier(s), one per constraint, got shape {out.shape}")
        return out

    one_shot = vector(lambda_one_shot, "lambda_one_shot")
    last = lam[-1] if lambda_last is None else vector(lambda_last, "lambda_last")
    steps = np.arange(1, n_iter + 1) if iterations is None else np.asarray(iterations, dtype=int)
    if steps.shape != (n_iter,):
        raise ValueError(f"iterations: expected {n_iter} iteration numbers, got shape {steps.shape}")

    per_iteration = pd.DataFrame({"iteration": steps})
    for i in range(m):
        per_iteration[f"lambda_{i + 1}"] = lam[:, i]
    if measured_slacks is not None:
        slacks = np.asarray(measured_slacks, dtype=np.float64).reshape(n_iter, -1)
        if slacks.shape != (n_iter, m):
            raise ValueError(f"measured_slacks: expected shape ({n_iter}, {m}), got {np.shape(measured_slacks)}")
        for i in range(m):
            per_iteration[f"measured_slack_{i + 1}"] = slacks[:, i]
        per_iteration["violation"] = np.maximum(-slacks, 0.0).sum(axis=1)  # NaN where unmeasured
    per_iteration["dist_one_shot"] = np.linalg.norm(lam - one_shot, axis=1)
    per_iteration["dist_last"] = np.linalg.norm(lam - last, axis=1)
    per_iteration["is_best"] = steps == best_iteration

    if best_iteration is None:
        best_to_last = float("nan")
    else:
        if best_iteration not in steps:
            raise ValueError(f"best_iteration: {best_iteration} is not one of the iterations {steps.tolist()}")
        best_to_last = float(np.linalg.norm(lam[steps == best_iteration][0] - last))

    delta = np.diff(lam, axis=0)
    per_coordinate = pd.DataFrame(
        {
            "coordinate": np.arange(1, m + 1),
            "sign_changes": [_sign_changes(delta[:, i]) for i in range(m)],
            "total_variation": np.abs(delta).sum(axis=0),
            "net_change": np.abs(lam[-1] - lam[0]),
        }
    )
    return TrajectoryDiagnostics(per_iteration, per_coordinate, best_iteration, int(steps[-1]), best_to_last)


def dual_trajectory_diagnostics(run_dir: str | os.PathLike[str]) -> TrajectoryDiagnostics:
    """:func:`trajectory_diagnostics` of a run, from ``dual_trajectory.csv`` and ``summary.json``.

    lambda(t) comes from ``dual_trajectory.csv``; the one-shot and last multipliers, the best and last
    iterations and each iterate's measured slack (``measured_slack_by_iteration``) from ``summary.json``.

    Raises:
        FileNotFoundError: If either file is missing.
        ValueError: If ``dual_trajectory.csv`` lacks a ``lambda_i`` column for a threshold of the summary.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    path = run_dir / "dual_trajectory.csv"
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: {path} does not exist")
    frame = pd.read_csv(path)
    m = len(summary.lambda_one_shot)
    columns = [f"lambda_{i + 1}" for i in range(m)]
    missing = [c for c in ["iteration", *columns] if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (summary.json has {m} multiplier(s))")
    measured = summary.measured_slack_by_iteration
    slacks = np.array([
        measured.get(str(t)) if measured.get(str(t)) is not None else [np.nan] * m for t in frame["iteration"]
    ], dtype=np.float64)  # fmt: skip
    return trajectory_diagnostics(
        frame[columns].to_numpy(dtype=np.float64),
        summary.lambda_one_shot,
        summary.lambda_last,
        iterations=frame["iteration"].to_numpy(),
        measured_slacks=slacks if measured else None,
        best_iteration=summary.best_iteration,
    )
