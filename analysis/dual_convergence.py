"""How the plug-in dual solution depends on the number of prompts and of responses per prompt (Fig. 3).

The one-shot multiplier lambda* of CAID is the minimiser of the plug-in dual (eq. (4))

    D_hat(lambda) = beta / n sum_j log( 1/k sum_s exp((r(x_j, y_js) + lambda^T h(x_j, y_js)) / beta) )

over n prompts with k reference samples each. From one cached reference phase (N prompts x K samples) we
redraw B subsamples for each (n, k) of a grid, prompts without replacement and, within each prompt,
responses without replacement, and solve each plug-in problem exactly with :func:`theory.solve_dual`. No
model is trained or sampled. The paper reports that 600 prompts x 64 responses make lambda* stable
(App. C.2, Fig. 3); the one-shot paper found the number of responses matters more (Huang et al. 2024, arXiv 2405.19544).

The bands are percentiles over the B subsamples of the finite pool: they measure how stable lambda* is at
size (n, k), not the uncertainty of the population lambda*. At n = N, k = K every subsample is the whole pool and
the spread is zero by construction, so the command's default prompt grid stops at N / 2 (halvings of N / 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.config_files import add_config_arguments, config_from_args
from llm.run_files import write_atomic
from llm.threads import add_threads_argument, set_threads
from theory.dual_solver import DualSolverError, solve_dual
from theory.problem import ConstrainedProblem, InfeasibleProblemError

if TYPE_CHECKING:
    from llm.reference_phase import ReferenceData

__all__ = [
    "DualConvergence", "default_grid", "dual_convergence", "dual_convergence_from_cache", "subsample_problem",
    "write_study",
]  # fmt: skip

# With progress=None, a progress bar is shown from this many dual solves on.
LARGE_GRID = 500


@dataclasses.dataclass(frozen=True, eq=False)
class DualConvergence:
    """The plug-in dual solution on subsamples of the reference samples (Fig. 3).

    Attributes:
        samples: One row per grid cell and replicate: ``n_prompts, k, replicate, feasible`` (False when the
            subsample's thresholds are unreachable, :class:`theory.InfeasibleProblemError`), ``converged``
            (False when :class:`theory.DualSolverError` was raised), ``lambda_1..m`` and ``dual_value`` (D*;
            NaN unless feasible and converged).
        summary: One row per (n_prompts, k): ``n_replicates, n_infeasible, n_failed`` and, over the solved
            replicates, ``<q>_mean, <q>_sd, <q>_low, <q>_high`` for q in ``lambda_1..m, dual_value``
            (low/high: the ``(1 -/+ level) / 2`` percentiles, 2.5% and 97.5% by default).
        lambda_full: ``(m,)`` lambda* of all N x K samples (NaN if infeasible or not converged).
        value_full: Its D* (NaN likewise).
        level: The central coverage of the percentile bands.
    """

    samples: pd.DataFrame
    summary: pd.DataFrame
    lambda_full: np.ndarray
    value_full: float
    level: float


def _train_scores(scores: np.ndarray | ReferenceData) -> np.ndarray:
    """``(1 + m, N, K)`` reward then utilities, from a :class:`llm.reference_phase.ReferenceData` or an array."""
    array = np.asarray(getattr(scores, "train_scores", scores), dtype=np.float64)
    if array.ndim != 3 or array.shape[0] < 2 or 0 in array.shape:
        raise ValueError(
            f"scores: expected train_scores of shape (1 + m, N, K) with m >= 1 (reward, then utilities), "
            f"got {array.shape}"
        )
    return array


def subsample_problem(
    scores: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    beta: float,
    prompts: np.ndarray,
    responses: np.ndarray,
) -> ConstrainedProblem:
    """The plug-in problem on some prompts and, for each, some of its responses (uniform reference).

    :meth:`theory.ConstrainedProblem.plug_in`, as :meth:`llm.reference_phase.ReferenceData.problem` builds it, so all
    prompts and all responses in their original order give the same problem.

    Args:
        scores: ``(1 + m, N, K)`` reward then utilities.
        thresholds: ``(m,)`` required improvements b_i.
        beta: KL strength.
        prompts: ``(n,)`` prompt indices.
        responses: ``(n, k)`` response indices within each chosen prompt.
    """
    # C order as the cached arrays are: the solver's blocked sums then round exactly as on the full data.
    return ConstrainedProblem.plug_in(np.ascontiguousarray(scores[:, prompts[:, None], responses]), thresholds, beta)


def _check_grid(values: Sequence[int], upper: int, field: str, what: str) -> list[int]:
    raw = np.atleast_1d(np.asarray(values))
    if raw.ndim != 1 or raw.size == 0 or not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"{field}: expected a non-empty list of integers, got {values!r}")
    grid = [int(v) for v in raw]
    bad = [v for v in grid if not 1 <= v <= upper]
    if bad:
        raise ValueError(f"{field}: {bad} outside 1..{upper}, the number of {what} in the reference samples")
    return sorted(set(grid))


def _solve(prob: ConstrainedProblem) -> tuple[bool, bool, np.ndarray, float]:
    """``(feasible, converged, lambda*, D*)``; NaNs where the solve failed."""
    nan = np.full(prob.n_constraints, np.nan)
    try:
        sol = solve_dual(prob, return_policy=False)
    except InfeasibleProblemError:
        return False, True, nan, float("nan")
    except DualSolverError:
        return True, False, nan, float("nan")
    return True, True, sol.lam, float(sol.value)


def _band_columns(values: np.ndarray, name: str, level: float) -> dict[str, float]:
    if len(values) == 0:
        return {f"{name}_{s}": np.nan for s in ("mean", "sd", "low", "high")}
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    sd = float(values.std(ddof=1)) if len(values) > 1 else np.nan
    return {f"{name}_mean": float(values.mean()), f"{name}_sd": sd, f"{name}_low": low, f"{name}_high": high}


def dual_convergence(
    scores: np.ndarray | ReferenceData,
    thresholds: Sequence[float] | np.ndarray,
    beta: float,
    n_prompts: Sequence[int],
    k_responses: Sequence[int],
    *,
    n_replicates: int = 20,
    seed: int = 0,
    level: float = 0.95,
    progress: bool | None = None,
) -> DualConvergence:
    """Solve the plug-in dual on B random subsamples for each (n_prompts, k) of a grid (Fig. 3).

    Each cell and replicate has its own generator, ``np.random.default_rng([seed, n, k, replicate])``, so
    a cell's draws do not depend on the rest of the grid. Chosen prompt and response indices are kept in
    ascending order, so n = N with k = K reproduces :func:`theory.solve_dual` on the full problem exactly.

    Args:
        scores: ``(1 + m, N, K)`` reference train scores, reward then utilities, or a
            :class:`llm.reference_phase.ReferenceData` (its ``train_scores``).
        thresholds: ``(m,)`` required improvements b_i over pi_ref.
        beta: KL strength.
        n_prompts: Grid of prompt counts, each in 1..N.
        k_responses: Grid of responses per prompt, each in 1..K (k = 1 makes every threshold b >= 0
            unreachable: one sample has no better alternative).
        n_replicates: B, subsamples per grid cell.
        seed: Non-negative integer seed.
        level: Central coverage of the percentile bands (0.95: 2.5% and 97.5%).
        progress: Show a tqdm bar (default: when the grid needs at least ``LARGE_GRID`` solves).

    Returns:
        The :class:`DualConvergence`.

    Raises:
        ValueError: naming the field, for malformed scores, grid values outside 1..N or 1..K, a threshold
            count other than m, ``beta <= 0``, ``n_replicates < 1``, a negative seed or a bad level.
    """
    data = _train_scores(scores)
    n_total, k_total = data.shape[1:]
    n_grid = _check_grid(n_prompts, n_total, "n_prompts", "prompts")
    k_grid = _check_grid(k_responses, k_total, "k_responses", "responses per prompt")
    if int(n_replicates) != n_replicates or n_replicates < 1:
        raise ValueError(f"n_replicates: must be a positive integer, got {n_replicates!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must lie strictly between 0 and 1 (e.g. 0.95), got {level!r}")

    # The full problem validates scores, thresholds and beta once, and is the n = N, k = K reference point.
    full = subsample_problem(
        data, thresholds, beta, np.arange(n_total), np.broadcast_to(np.arange(k_total), (n_total, k_total))
    )
    m = full.n_constraints
    _, _, lambda_full, value_full = _solve(full)

    cells = [(n, k, b) for n in n_grid for k in k_grid for b in range(int(n_replicates))]
    show = len(cells) >= LARGE_GRID if progress is None else progress
    rows = []
    for n, k, b in tqdm(cells, desc="plug-in duals", unit="solve", disable=not show):
        rng = np.random.default_rng([int(seed), n, k, b])
        prompts = np.sort(rng.choice(n_total, size=n, replace=False))
        responses = np.sort(np.argsort(rng.random((n, k_total)), axis=1)[:, :k], axis=1)
        feasible, converged, lam, value = _solve(
            subsample_problem(data, full.thresholds, full.beta, prompts, responses)
        )
        rows.append({
            "n_prompts": n, "k": k, "replicate": b, "feasible": feasible, "converged": converged,
            **{f"lambda_{i + 1}": lam[i] for i in range(m)}, "dual_value": value,
        })  # fmt: skip
    samples = pd.DataFrame(rows)

    names = [*(f"lambda_{i + 1}" for i in range(m)), "dual_value"]
    summary = []
    for (n, k), cell in samples.groupby(["n_prompts", "k"], sort=True):
        solved = cell[cell["feasible"] & cell["converged"]]
        row = {
            "n_prompts": n, "k": k, "n_replicates": len(cell), "n_infeasible": int((~cell["feasible"]).sum()),
            "n_failed": int((~cell["converged"]).sum()),
        }  # fmt: skip
        for name in names:
            row.update(_band_columns(solved[name].to_numpy(), name, level))
        summary.append(row)
    return DualConvergence(samples, pd.DataFrame(summary), lambda_full, value_full, float(level))


def dual_convergence_from_cache(
    path: str | os.PathLike[str],
    thresholds: Sequence[float] | np.ndarray,
    beta: float,
    n_prompts: Sequence[int],
    k_responses: Sequence[int],
    **options: object,
) -> DualConvergence:
    """:func:`dual_convergence` of a reference-phase cache file (``<cache>/reference/<key>.npz``).

    Args:
        path: The ``.npz`` written by the reference phase; its stem is its content key.
        thresholds: ``(m,)`` required improvements b_i.
        beta: KL strength.
        n_prompts: Grid of prompt counts.
        k_responses: Grid of responses per prompt.
        **options: ``n_replicates``, ``seed``, ``level``, ``progress`` of :func:`dual_convergence`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it is not a consistent reference cache entry for its key.
    """
    # Imported here: llm pulls in torch and transformers, which the rest of this module does not need.
    from llm.reference_phase import ReferenceData

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: {path} does not exist")
    ref = ReferenceData.from_file(path, path.stem)
    if ref is None:
        raise ValueError(
            f"path: {path} is not a readable reference cache entry for key {path.stem!r} (unreadable, renamed, "
            "or inconsistent shapes); point it at <CAID_CACHE>/reference/<key>.npz"
        )
    return dual_convergence(ref, thresholds, beta, n_prompts, k_responses, **options)


def default_grid(upper: int, smallest: int = 2) -> list[int]:
    """Halvings of ``upper`` down to ``smallest``, ascending: 60 -> [3, 7, 15, 30, 60]; 4 -> [2, 4]."""
    grid = [upper]
    while grid[-1] // 2 >= smallest:
        grid.append(grid[-1] // 2)
    return sorted(set(grid))


def write_study(study: DualConvergence, out: Path, record: dict[str, object]) -> list[Path]:
    """Write the study's three files atomically and return their paths.

    ``dual_convergence.csv`` (samples), ``dual_convergence.json`` (``record`` plus the full-pool lambda*
    and D*) and, last, ``dual_convergence_summary.csv``: its presence marks a finished study.
    """
    out.mkdir(parents=True, exist_ok=True)
    full = {
        "lambda_full": [float(v) for v in study.lambda_full], "value_full": float(study.value_full),
        "level": study.level,
    }  # fmt: skip
    files = [
        (out / "dual_convergence.csv", study.samples.to_csv(index=False)),
        (out / "dual_convergence.json", json.dumps({**record, **full}, indent=2) + "\n"),
        (out / "dual_convergence_summary.csv", study.summary.to_csv(index=False)),
    ]
    for path, text in files:
        write_atomic(path, text)
    return [path for path, _ in files]


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: the reference phase of a run configuration, then the study (no training)."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.dual_convergence",
        description="Fig. 3: the plug-in dual solution lambda*, D* on subsamples of pi_ref's samples of a run "
        "configuration (its reference phase is built, or read from the cache, first; nothing is trained).",
    )
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder for the three files")
    parser.add_argument("--n-prompts", type=int, nargs="+",
                        help="prompt counts (default: halvings of N / 2: below the pool, where subsamples differ)")
    parser.add_argument("--k", type=int, nargs="+", help="responses per prompt (default: halvings of K, >= 2)")
    parser.add_argument("--replicates", type=int, default=20, help="subsamples per (n, k) (default: 20)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)  # before torch loads
    check_out_dir(args.out)

    config = config_from_args(args)
    if config is None:
        return 2
    from llm.pipeline import run_setup  # torch and transformers only once the configuration is valid
    setup = run_setup(config)  # scores in sigma units and thresholds resolved, as a run would use them
    ref = setup.ref
    n_total, k_total = ref.train_scores.shape[1:]
    n_grid, k_grid = args.n_prompts or default_grid(max(n_total // 2, 2)), args.k or default_grid(k_total)
    study = dual_convergence(
        ref, setup.thresholds, config.caid.beta, n_grid, k_grid, n_replicates=args.replicates,
        seed=config.seed, progress=True,
    )  # fmt: skip
    record = {
        "config": str(args.config), "overrides": args.overrides, "reference_key": ref.key, "n_total": n_total,
        "k_total": k_total, "thresholds": list(setup.thresholds), "beta": config.caid.beta,
    }  # fmt: skip
    for path in write_study(study, args.out, record):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
