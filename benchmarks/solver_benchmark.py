"""Speed and agreement of :func:`theory.solve_dual` against :func:`theory.solve_primal`.

Usage::

    python -m benchmarks.solver_benchmark --out DIR [--quick] [--seed S]

Each instance is a random (U-CA) problem with X prompts, Y responses (N = X * Y) and m = 2
utilities: log pi_ref is the log-softmax of 2 * N(0, 1) logits, 5% of which are lowered by 60 nats
(reference probabilities around 1e-27, which stress the conic primal solver); reward and utilities
are N(0, 1); beta = 0.1; each threshold is half the largest achievable improvement
(``prob.max_improvements``), so both constraints are active. The data depend only on (seed, X, Y).

The full run covers N = 1e3, 1e4, 1e5 with both solvers and N = 1e6, 1e7 with the dual only;
``--quick`` stops at N = 1e6 and runs cvxpy up to N = 1e4 (at 1e5 it alone takes about a minute).
Times are wall-clock seconds; solve_dual is timed as the minimum over a few repeats and solve_primal
once (it is slow). The machine may be noisy, so compare ratios from the same run rather than absolute
times across runs.

Writes ``DIR/solver_benchmark.csv`` (one row per instance) and ``DIR/solver_benchmark.md`` (a
markdown table of the same and a line of headline ratios, also printed to stdout). CSV columns
(empty where not measured):

- ``machine``: OS, architecture, ``os.cpu_count()``, Python and numpy versions.
- ``theory_sha``: first 12 hex digits of the SHA-256 of ``theory/*.py`` (the code measured).
- ``mode``: ``quick`` or ``full``; ``seed``: the ``--seed`` value.
- ``n_prompts``, ``n_responses``, ``n``, ``n_constraints``: X, Y, N = X * Y, m.
- ``beta``, ``threshold_frac``: beta and thresholds / max_improvements.
- ``input_bytes``: total bytes of ref_logprobs, reward and utilities.
- ``dual_repeats``: how many times each solve_dual variant was timed.
- ``dual_first_s``: the first (cold) ``solve_dual(prob)`` call.
- ``dual_s``: min time of ``solve_dual(prob)`` (computes the policy).
- ``dual_solve_s``: min time of ``solve_dual(prob, return_policy=False)``.
- ``dual_iterations``, ``dual_evaluations``: Newton iterations and passes over the data.
- ``dual_value``, ``dual_lam``: D* and lambda* (space-separated) from solve_dual.
- ``n_active``: number of constraints with lambda*_i > 0 (should be m).
- ``kkt_residual``: ``DualSolution.kkt_residual``.
- ``cert_gap``: ``theory.certify(prob, sol.policy, sol.lam).duality_gap`` for the dual's solution.
- ``cert_max_violation``: that certificate's ``max_violation`` (constraint violation of pi*).
- ``primal_s``: time of one ``solve_primal(prob)`` call (cvxpy compilation included).
- ``primal_solver``, ``primal_solver_s``: the conic solver that was accepted and its own solve time.
- ``primal_value``, ``primal_lam``: P* and lambda from solve_primal.
- ``value_rel_diff``: ``|D* - P*| / (1 + |P*|)``.
- ``lam_rel_diff``: ``max_i |lam_d - lam_p| / max(|lam_d|, 1e-12)``.
- ``policy_l1_max``: ``max_x sum_y |pi_d(y|x) - pi_p(y|x)|``.
- ``primal_over_dual``: ``primal_s / dual_s``.
- ``logsumexp_s``: min over 3 of ``scipy.special.logsumexp(ref_logprobs, axis=1)``.
- ``dual_over_logsumexp``, ``dual_policy_over_logsumexp``: ``dual_solve_s`` and ``dual_s`` over it.
- ``mem_peak_x``, ``mem_peak_solve_x``: peak extra memory traced by ``tracemalloc`` during one warm
  ``solve_dual(prob)`` (resp. ``return_policy=False``) call, as a multiple of ``input_bytes``
  (measured for N >= 1e6 only; at small N the fixed block buffers dominate).
- ``dual_error``, ``primal_error``: ``Type: message`` of a solver exception, empty on success.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import hashlib
import io
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from scipy.special import log_softmax, logsumexp
from tqdm import tqdm

import theory
from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.run_files import machine_description, write_atomic

T = TypeVar("T")

CSV_NAME = "solver_benchmark.csv"
MD_NAME = "solver_benchmark.md"

# solve_primal builds one exponential cone per (x, y); past this size it takes minutes.
PRIMAL_MAX_N = 100_000
# Below this the dual's fixed block buffers (~1 MB) dominate any memory ratio: not measured.
MEMORY_MIN_N = 1_000_000
LOGSUMEXP_REPEATS = 3
# Thresholds as a fraction of max_improvements: large enough that both constraints bind.
THRESHOLD_FRAC = 0.5

COLUMNS = (
    "machine", "theory_sha", "mode", "seed", "n_prompts", "n_responses", "n", "n_constraints",
    "beta", "threshold_frac", "input_bytes", "dual_repeats", "dual_first_s", "dual_s",
    "dual_solve_s", "dual_iterations", "dual_evaluations", "dual_value", "dual_lam", "n_active",
    "kkt_residual", "cert_gap", "cert_max_violation", "primal_s", "primal_solver",
    "primal_solver_s", "primal_value", "primal_lam", "value_rel_diff", "lam_rel_diff",
    "policy_l1_max", "primal_over_dual", "logsumexp_s", "dual_over_logsumexp",
    "dual_policy_over_logsumexp", "mem_peak_x", "mem_peak_solve_x", "dual_error",
    "primal_error",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Instance:
    """One benchmark size.

    Attributes:
        n_prompts: X.
        n_responses: Y.
        primal: Also run solve_primal (only sensible for N <= PRIMAL_MAX_N).
    """

    n_prompts: int
    n_responses: int
    primal: bool

    @property
    def n(self) -> int:
        """N = X * Y."""
        return self.n_prompts * self.n_responses


_SMALL = (Instance(10, 100, True), Instance(50, 200, True), Instance(100, 1000, True))
QUICK_INSTANCES = (*_SMALL[:2], Instance(100, 1000, False), Instance(1000, 1000, False))
FULL_INSTANCES = (*_SMALL, Instance(1000, 1000, False), Instance(1000, 10_000, False))


def make_problem(
    n_prompts: int,
    n_responses: int,
    seed: int,
    *,
    n_constraints: int = 2,
    beta: float = 0.1,
    threshold_frac: float = THRESHOLD_FRAC,
) -> theory.ConstrainedProblem:
    """A random problem with active constraints (see the module docstring).

    Args:
        n_prompts: X.
        n_responses: Y.
        seed: Base seed; the data depend only on (seed, X, Y), so each size is reproducible alone.
        n_constraints: m.
        beta: KL strength.
        threshold_frac: Each threshold as a fraction of its largest achievable improvement.

    Returns:
        The :class:`theory.ConstrainedProblem`.
    """
    rng = np.random.default_rng([seed, n_prompts, n_responses])
    shape = (n_prompts, n_responses)
    logits = 2.0 * rng.standard_normal(shape)
    # Reference probabilities near 1e-27: the regime that breaks naive conic formulations.
    logits[rng.random(shape) < 0.05] -= 60.0
    ref_logprobs = log_softmax(logits, axis=1)
    del logits
    reward = rng.standard_normal(shape)
    utilities = rng.standard_normal((n_constraints, *shape))
    base = theory.ConstrainedProblem(ref_logprobs, reward, utilities, np.zeros(n_constraints), beta)
    return base.with_thresholds(threshold_frac * base.max_improvements)


def _timed(fn: Callable[[], T], repeats: int) -> tuple[float, float, T]:
    """Run ``fn`` ``repeats`` times; return (first time, min time, last result)."""
    times, result = [], None
    for _ in range(repeats):
        result = None  # free the previous result before the next run
        gc.collect()
        gc.disable()  # as timeit does: keep collector pauses out of the measurement
        try:
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        finally:
            gc.enable()
    return times[0], min(times), result


def _peak_extra_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated during ``fn()`` beyond those live before it.

    numpy reports its data allocations to tracemalloc, so the arrays are counted.
    """
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
        del result
    finally:
        tracemalloc.stop()
    return peak - base


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ")


def _lam_str(lam: np.ndarray) -> str:
    return " ".join(f"{v:.12g}" for v in lam)


def theory_fingerprint() -> str:
    """First 12 hex digits of the SHA-256 of the :mod:`theory` sources, to tie results to code."""
    digest = hashlib.sha256()
    for path in sorted(Path(theory.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def run_instance(inst: Instance, seed: int, mode: str, machine: str) -> dict[str, Any]:
    """Benchmark one instance.

    Solver exceptions are recorded in the ``dual_error`` / ``primal_error`` columns rather than
    raised, so that one failure does not discard a whole run.

    Args:
        inst: The size and which solvers to run.
        seed: Base seed.
        mode: ``quick`` or ``full`` (recorded only).
        machine: Machine description (recorded only).

    Returns:
        One CSV row, keyed by :data:`COLUMNS` (missing keys mean "not measured").
    """
    prob = make_problem(inst.n_prompts, inst.n_responses, seed)
    input_bytes = prob.ref_logprobs.nbytes + prob.reward.nbytes + prob.utilities.nbytes
    repeats = 5 if inst.n <= PRIMAL_MAX_N else 3
    row: dict[str, Any] = {
        "machine": machine, "theory_sha": theory_fingerprint(), "mode": mode, "seed": seed,
        "n_prompts": inst.n_prompts, "n_responses": inst.n_responses, "n": inst.n,
        "n_constraints": prob.n_constraints, "beta": prob.beta, "threshold_frac": THRESHOLD_FRAC,
        "input_bytes": input_bytes, "dual_repeats": repeats,
    }  # fmt: skip

    dual = None
    try:
        first, row["dual_s"], dual = _timed(lambda: theory.solve_dual(prob), repeats)
        row["dual_first_s"] = first
        solve_only = _timed(lambda: theory.solve_dual(prob, return_policy=False), repeats)
        row["dual_solve_s"] = solve_only[1]
    except Exception as err:  # a failure is a result to report, not a crash
        row["dual_error"] = _error(err)
    if dual is not None:
        cert = theory.certify(prob, dual.policy, dual.lam)
        row.update(
            dual_iterations=dual.iterations, dual_evaluations=dual.evaluations,
            dual_value=dual.value, dual_lam=_lam_str(dual.lam), n_active=int(np.sum(dual.lam > 0)),
            kkt_residual=dual.kkt_residual, cert_gap=cert.duality_gap,
            cert_max_violation=cert.max_violation,
        )  # fmt: skip

    if inst.primal and inst.n <= PRIMAL_MAX_N:
        try:
            start = time.perf_counter()
            primal = theory.solve_primal(prob)
            row["primal_s"] = time.perf_counter() - start
        except Exception as err:  # as above
            primal = None
            row["primal_error"] = _error(err)
        if primal is not None:
            row.update(
                primal_solver=primal.solver, primal_solver_s=primal.solve_time,
                primal_value=primal.value, primal_lam=_lam_str(primal.lam),
            )  # fmt: skip
        if primal is not None and dual is not None:
            row["value_rel_diff"] = abs(dual.value - primal.value) / (1.0 + abs(primal.value))
            lam_scale = np.maximum(np.abs(dual.lam), 1e-12)
            row["lam_rel_diff"] = float(np.max(np.abs(dual.lam - primal.lam) / lam_scale))
            row["policy_l1_max"] = float(np.abs(dual.policy - primal.policy).sum(axis=1).max())
            row["primal_over_dual"] = row["primal_s"] / row["dual_s"]
        del primal

    lse = _timed(lambda: logsumexp(prob.ref_logprobs, axis=1), LOGSUMEXP_REPEATS)[1]
    row["logsumexp_s"] = lse
    if dual is not None:
        row["dual_over_logsumexp"] = row["dual_solve_s"] / lse
        row["dual_policy_over_logsumexp"] = row["dual_s"] / lse
        if inst.n >= MEMORY_MIN_N:
            del dual  # its policy must not count as live input
            peak = _peak_extra_bytes(lambda: theory.solve_dual(prob))
            row["mem_peak_x"] = peak / input_bytes
            peak = _peak_extra_bytes(lambda: theory.solve_dual(prob, return_policy=False))
            row["mem_peak_solve_x"] = peak / input_bytes
    return row


def run_benchmark(instances: Sequence[Instance], seed: int, mode: str) -> list[dict[str, Any]]:
    """Benchmark every instance in order, with a progress bar on stderr.

    Args:
        instances: The sizes to run.
        seed: Base seed.
        mode: ``quick`` or ``full`` (recorded only).

    Returns:
        One row per instance.
    """
    machine = machine_description()
    rows = []
    bar = tqdm(instances, desc="solver benchmark", unit="instance", file=sys.stderr)
    for inst in bar:
        bar.set_postfix_str(f"N={_fmt_n(inst.n)} (X={inst.n_prompts}, Y={inst.n_responses})")
        rows.append(run_instance(inst, seed, mode, machine))
        gc.collect()  # drop the previous instance's arrays before building the next one
    return rows


def _fmt_n(n: float) -> str:
    return f"{n:.0e}".replace("e+0", "e").replace("e+", "e")


def _fmt(value: Any, spec: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if spec == "ratio":  # 5,412 reads better than 5.41e+03
        return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"
    return format(value, spec)


# (header, column, format spec) of the markdown table.
_MD_COLUMNS = (
    ("N", "n", "n"), ("X×Y", None, ""), ("dual s", "dual_s", ".3g"),
    ("dual s (no policy)", "dual_solve_s", ".3g"), ("primal s", "primal_s", ".3g"),
    ("primal solver", "primal_solver", ""), ("primal/dual", "primal_over_dual", "ratio"),
    ("logsumexp s", "logsumexp_s", ".3g"), ("dual/lse", "dual_over_logsumexp", ".3g"),
    ("dual+policy/lse", "dual_policy_over_logsumexp", ".3g"),
    ("\\|D*−P*\\|/(1+\\|P*\\|)", "value_rel_diff", ".1e"), ("λ rel diff", "lam_rel_diff", ".1e"),
    ("max L1(π)", "policy_l1_max", ".1e"), ("cert gap", "cert_gap", ".1e"),
    ("KKT resid", "kkt_residual", ".1e"), ("active", "n_active", "d"),
    ("peak mem ×input", "mem_peak_x", ".3g"), ("… no policy", "mem_peak_solve_x", ".3g"),
)  # fmt: skip


def headline(rows: Sequence[dict[str, Any]]) -> str:
    """One line with the headline ratios of a run (all measured in that run)."""
    parts = []
    with_primal = [r for r in rows if r.get("primal_over_dual") is not None]
    if with_primal:
        r = max(with_primal, key=lambda r: r["n"])
        parts.append(
            f"solve_primal takes {_fmt(r['primal_over_dual'], 'ratio')}× as long as solve_dual "
            f"at N={_fmt_n(r['n'])}"
        )
    with_lse = [r for r in rows if r.get("dual_over_logsumexp") is not None]
    if with_lse:
        r = max(with_lse, key=lambda r: r["n"])
        text = (
            f"at N={_fmt_n(r['n'])} solve_dual takes {r['dual_over_logsumexp']:.3g}× one "
            f"logsumexp pass ({r['dual_policy_over_logsumexp']:.3g}× with the policy)"
        )
        if r.get("mem_peak_x") is not None:
            text += (
                f" and peaks at {r['mem_peak_x']:.3g}× the input bytes of extra memory "
                f"({r['mem_peak_solve_x']:.3g}× without the policy)"
            )
        parts.append(text)
    failures = [r for r in rows if r.get("dual_error") or r.get("primal_error")]
    if failures:
        parts.append(f"{len(failures)} instance(s) had a solver failure (see the error columns)")
    return "**Headline** (ratios from this run): " + ("; ".join(parts) or "nothing measured") + "."


def to_markdown(rows: Sequence[dict[str, Any]], wall_s: float) -> str:
    """The markdown report: machine line, table, error lines and headline."""
    lines = [
        "# Solver benchmark: solve_dual vs solve_primal",
        "",
        f"Machine: {rows[0]['machine'] if rows else machine_description()}; "
        f"theory sources {rows[0]['theory_sha'] if rows else theory_fingerprint()}. "
        f"Mode: {rows[0]['mode'] if rows else '?'}, seed {rows[0]['seed'] if rows else '?'}, "
        f"wall time {wall_s:.1f} s. Times in seconds (dual: min over repeats; primal: one run).",
        "",
        "| " + " | ".join(h for h, _, _ in _MD_COLUMNS) + " |",
        "|" + "---:|" * len(_MD_COLUMNS),
    ]
    for r in rows:
        cells = []
        for _, key, spec in _MD_COLUMNS:
            if key is None:
                cells.append(f"{r['n_prompts']}×{r['n_responses']}")
            elif spec == "n":
                cells.append(_fmt_n(r["n"]))
            else:
                cells.append(_fmt(r.get(key), spec))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        for key in ("dual_error", "primal_error"):
            if r.get(key):
                lines.append(f"- N={_fmt_n(r['n'])} {key}: {r[key]}")
    lines += ["", headline(rows), ""]
    return "\n".join(lines)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV text with the columns of :data:`COLUMNS`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in COLUMNS})
    return buffer.getvalue()


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns 1 if any solver failed (the results are still written)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.solver_benchmark",
        description="Time theory.solve_dual against theory.solve_primal and check that they agree.",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for the CSV and markdown report"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="stop at N = 1e6 and run cvxpy up to N = 1e4 (about 10 s) instead of N = 1e7 and 1e5",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed of the random instances")
    args = parser.parse_args(argv)
    check_out_dir(args.out)  # before any timing: a file there would fail only at the end

    mode = "quick" if args.quick else "full"
    start = time.perf_counter()
    rows = run_benchmark(QUICK_INSTANCES if args.quick else FULL_INSTANCES, args.seed, mode)
    wall_s = time.perf_counter() - start
    markdown = to_markdown(rows, wall_s)
    write_atomic(args.out / CSV_NAME, to_csv(rows))
    write_atomic(args.out / MD_NAME, markdown)
    print(markdown)
    print(f"Wrote {args.out / CSV_NAME} and {args.out / MD_NAME}", file=sys.stderr)
    return 1 if any(r.get("dual_error") or r.get("primal_error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
