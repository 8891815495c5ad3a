"""``RESULTS/REPORT.md``: the reproduction's numbers with CIs, and a verdict per claim of the paper.

Written by ``python -m paper_figures all`` after the figures, from the saved results only. Each claim gets
a verdict computed here from the tables (never typed in):

* **replicated**: the point estimates go the paper's way and the 95% evidence says so;
* **direction only**: the point estimates go the paper's way, but the CIs do not exclude the opposite;
* **not replicated**: the point estimates go the other way (the evidence column says by how much);
* **missing**: the results it needs are absent (e.g. every threshold was infeasible);
* **skipped**: a results file it needs exists but is unusable (empty, truncated, header only, a column
  missing or without numbers); the evidence reads ``skipped: <file>: <why>; <fix>``
  (:mod:`paper_figures.results_files`).

The trade-off claim compares two curves, for which no interval is computed here: it is at most
"direction only". "Tracks more closely" counts as replicated when CAID's mean distance to b is smaller than
one-shot's by more than the mean CI half-width.

Improvements are paired over held-out prompts (Student-t CIs, bootstrap CIs beside them), as in
:mod:`analysis.statistics`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.decisions import MARGIN_TESTS
from analysis.parametrization_gap.scaling import scaling_table
from analysis.statistics import satisfaction_rows
from llm.run_files import machine_description, write_atomic
from llm.sweep import SWEEP_FILE
from paper_figures import (
    fig3_dual_convergence,
    multi_token,
    next_token,
    parametrization_gap,
    real_lagrangian_gap,
    theory_solver_benchmark,
)
from paper_figures.fig1a_expected_vs_actual import RESULTS_SUBDIR as SINGLE_SUBDIR
from paper_figures.fig1a_expected_vs_actual import load_sweep
from paper_figures.fig1b_tradeoff import tradeoff_points
from paper_figures.fig2_two_constraints import RESULTS_SUBDIR as TWO_SUBDIR
from paper_figures.results_files import ResultsFileError, read_json_object, read_results_csv

__all__ = ["REPORT_FILE", "Claim", "claims", "write_report"]

REPORT_FILE = "REPORT.md"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One qualitative finding of the paper, checked on this reproduction (``key`` names it in code)."""

    key: str
    claim: str
    verdict: str
    evidence: str


def _md(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (numbers to ``digits`` decimals)."""

    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "–" if np.isnan(v) else f"{v:.{digits}f}"
        if isinstance(v, tuple):
            return ", ".join(f"{x:g}" for x in v)
        return str(v)

    def escaped(v: object) -> str:
        return cell(v).replace("|", "\\|")  # e.g. "|actual − b|" must not split the cell

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(escaped(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _ci(mean: float, low: float, high: float) -> str:
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def _verdict(papers_way: bool, significant: bool) -> str:
    """``replicated`` / ``direction only`` / ``not replicated`` (see the module docstring)."""
    if not papers_way:
        return "not replicated"
    return "replicated" if significant else "direction only"


def _satisfaction_claim(key: str, what: str, rows: pd.DataFrame, unit: str) -> Claim:
    """Every row's improvement at least its threshold b, with the one-sided verdicts' counts."""
    satisfied, sure = int(rows["satisfied"].sum()), int((rows["verdict"] == "satisfied").sum())
    violated = int((rows["verdict"] == "violated").sum())
    worst = rows.loc[(rows["mean"] - rows["threshold"]).idxmin()]
    return Claim(
        key, what, _verdict(satisfied == len(rows), sure == len(rows)),
        f"{satisfied}/{len(rows)} {unit} with mean ≥ b; 95% verdicts: {sure} satisfied, {violated} violated, "
        f"{len(rows) - sure - violated} undetermined; worst: {worst['scorer']} in {worst['run']}, "
        f"{worst['mean'] - worst['threshold']:+.3f} from b",
    )  # fmt: skip


def _check(rows: pd.DataFrame, want_above: bool, key: str, what: str) -> Claim:
    """Whether one run's improvement lies above (or below) its threshold, with its one-sided verdict."""
    row = rows.iloc[0]
    above = row["mean"] >= row["threshold"]
    significant = row["verdict"] == ("satisfied" if want_above else "violated")
    verdict = _verdict(above == want_above, significant)
    evidence = (
        f"b = {row['threshold']:g}: actual {_ci(row['mean'], row['ci_low'], row['ci_high'])}, i.e. "
        f"{row['mean'] - row['threshold']:+.3f} from b (one-sided 95% verdict: {row['verdict']})"
    )
    return Claim(key, what, verdict, evidence)


def single_sweep_claims(runs: pd.DataFrame) -> list[Claim]:
    """Fig. 1(a)/(b) claims from the single-constraint sweep's :func:`analysis.statistics.collect_runs` table."""
    satisfaction = satisfaction_rows(runs)
    first = satisfaction[satisfaction["constraint"] == 1]
    caid, one = first[first["method"] == "caid"], first[first["method"] == "one_shot"]
    common = sorted(set(caid["threshold"]) & set(one["threshold"]))
    if not common:
        return [
            Claim(
                "single_sweep", "single-constraint sweep", "missing", "no threshold has both a CAID and a one-shot run"
            )
        ]
    caid, one = (t[t["threshold"].isin(common)].sort_values("threshold") for t in (caid, one))
    dev_caid = float(np.mean(np.abs(caid["mean"] - caid["threshold"])))
    dev_one = float(np.mean(np.abs(one["mean"] - one["threshold"])))
    # Evidence that tracking is better: CAID's deviation beats one-shot's by more than their CI half-widths.
    half = float(np.mean((caid["ci_high"] - caid["ci_low"]) / 2))
    better = dev_caid < dev_one
    tracking = Claim(
        "tracking",
        "Multi-shot (CAID) tracks the thresholds more closely than one-shot (Fig. 1(a))",
        _verdict(better, dev_one - dev_caid > half),
        f"mean |actual − b| over b ∈ {{{', '.join(f'{b:g}' for b in common)}}}: CAID {dev_caid:.3f}, one-shot "
        f"{dev_one:.3f} (mean CI half-width {half:.3f})",
    )
    meets = _satisfaction_claim(
        "caid_satisfies", "Multi-shot meets its constraint (actual ≥ b) across the sweep", caid, "runs"
    )
    points = tradeoff_points(runs)
    caid_pts = points[points["method"] == "caid"][["utility_mean", "reward_mean"]].to_numpy()
    one_pts = points[points["method"] == "one_shot"][["utility_mean", "reward_mean"]].to_numpy()

    def dominated(pts: np.ndarray, by: np.ndarray) -> int:
        return int(sum(((by >= p).all(axis=1) & (by > p).any(axis=1)).any() for p in pts))

    one_dominated, caid_dominated = dominated(one_pts, caid_pts), dominated(caid_pts, one_pts)
    reward_gain = points.pivot_table(index="threshold", columns="method", values="reward_mean")
    diff = (
        (reward_gain["caid"] - reward_gain["one_shot"]).dropna()
        if {"caid", "one_shot"} <= set(reward_gain)
        else pd.Series(dtype=float)
    )
    tradeoff = Claim(
        "tradeoff",
        "Multi-shot gives a higher reward–safety trade-off curve than one-shot (Fig. 1(b))",
        _verdict(one_dominated > caid_dominated, False),  # no interval for a curve comparison
        f"one-shot points dominated by a CAID point: {one_dominated}/{len(one_pts)}; CAID points dominated by a "
        f"one-shot point: {caid_dominated}/{len(caid_pts)}; reward improvement CAID − one-shot at equal b: "
        f"mean {diff.mean():+.3f} over {len(diff)} thresholds (each point carries CIs of about ±{half:.2f})",
    )
    return [
        tracking,
        _check(one.head(1), False, "one_shot_short", "One-shot falls short of small thresholds (Fig. 1(a))"),
        _check(one.tail(1), True, "one_shot_over", "One-shot overshoots large thresholds (Fig. 1(a))"),
        meets,
        tradeoff,
    ]


def two_constraint_claim(satisfaction: pd.DataFrame) -> Claim:
    """Fig. 2: CAID satisfies both constraints at every threshold pair."""
    caid = satisfaction[satisfaction["method"] == "caid"]
    if caid.empty:
        return Claim("two_constraints", "two constraints", "missing", "no CAID run in the two-constraint sweep")
    return _satisfaction_claim(
        "two_constraints", "With two constraints, multi-shot satisfies both at every threshold pair (Fig. 2)", caid,
        "(run, constraint) cells",
    )  # fmt: skip


def dual_convergence_claim(summary: pd.DataFrame) -> Claim:
    """Fig. 3: lambda* stabilises as prompts and responses per prompt grow (its spread over subsamples).

    The spread is compared below the whole pool (n < N): at n = N and k = K every subsample is the pool.
    """
    sd = summary.pivot_table(index="n_prompts", columns="k", values="lambda_1_sd")
    if len(sd.index) < 3 or len(sd.columns) < 2:
        return Claim(
            "dual_convergence", "Fig. 3", "missing", f"need >= 3 prompt counts and >= 2 response counts, got {sd.shape}"
        )
    k_min, k_max = sd.columns.min(), sd.columns.max()
    n_small, n_mid = sd.index[0], sd.index[-2]
    shrinks_n = sd.loc[n_mid, k_max] < sd.loc[n_small, k_max]
    shrinks_k = sd.loc[n_mid, k_max] < sd.loc[n_mid, k_min]
    return Claim(
        "dual_convergence",
        "The plug-in λ* stabilises with more prompts and more responses per prompt (Fig. 3)",
        "replicated" if shrinks_n and shrinks_k else "not replicated",
        f"sd of λ*₁ over subsamples at k = {k_max}: {sd.loc[n_small, k_max]:.3f} (n = {n_small}) → "
        f"{sd.loc[n_mid, k_max]:.3f} (n = {n_mid}); at n = {n_mid}: {sd.loc[n_mid, k_min]:.3f} (k = {k_min}) → "
        f"{sd.loc[n_mid, k_max]:.3f} (k = {k_max})",
    )


def lagrangian_gap_claim(gaps: pd.DataFrame) -> Claim:
    """Theory: D(lambda) >= L(pi, lambda) for every policy, so no gap CI should lie below zero."""
    below = int((gaps["gap_ci_high"] < 0).sum())
    above = int((gaps["gap_ci_low"] > 0).sum())
    return Claim(
        "lagrangian_gap",
        "D(λ) − L(π_θ, λ) ≥ 0: the trained LLM does not beat the Lagrangian maximiser (eq. (3), Lemma 3)",
        "replicated" if below == 0 else "not replicated",
        f"{len(gaps)} runs: gap CIs above 0 in {above}, containing 0 in {len(gaps) - above - below}, below 0 in "
        f"{below}; mean gap {gaps['gap'].mean():.3f} (relative to |D̂| {gaps['gap_relative'].abs().mean():.1%})",
    )


def solver_claim(benchmark: pd.DataFrame) -> Claim:
    """The closed-form dual against cvxpy in the solver benchmark's table (at least one size compared)."""
    solved = benchmark.dropna(subset=["primal_over_dual", "lam_rel_diff"])
    if solved.empty:
        raise ValueError("the solver benchmark compared no size with cvxpy (primal_over_dual/lam_rel_diff empty)")
    return Claim(
        "exact_solver",
        "The closed-form dual solves the distribution-space problem exactly, faster than cvxpy",
        "replicated" if (solved["lam_rel_diff"] < 1e-3).all() else "not replicated",
        f"max relative λ difference vs cvxpy {solved['lam_rel_diff'].max():.1e} over {len(solved)} sizes; "
        f"speed-up {solved['primal_over_dual'].min():.0f}×–{solved['primal_over_dual'].max():.0f}×",
    )


def gap_bounds_claim(summary: pd.DataFrame) -> Claim:
    """Each measured gap of the parametrization-gap laboratory within its bound, where the bound is a number.

    A bound the laboratory reports as NaN (its hypotheses fail for that class, e.g. Assumption 4 when the
    Mν-tightened problem is infeasible) is not a check: it is counted as not checked, never as a pass.
    """
    table = scaling_table(summary)
    violations = int(table["violations"].sum())
    stems = [c.removesuffix("_measured") for c in summary.columns if c.endswith("_measured")]
    checked: dict[str, int] = {}
    for stem in stems:
        bound = summary.get(f"{stem}_bound", pd.Series(np.nan, index=summary.index)).astype(float)
        lower = summary.get(f"{stem}_bound_lower", pd.Series(np.nan, index=summary.index)).astype(float)
        checked[stem] = int((summary[f"{stem}_measured"].astype(float).notna() & (bound.notna() | lower.notna())).sum())
    n_checked, total = sum(checked.values()), len(stems) * len(summary)
    if n_checked == 0:
        raise ValueError("no (class, bound) pair has a finite bound: nothing was checked")
    never = [stem for stem, n in checked.items() if n == 0]
    slope = table.set_index("quantity")["slope_parametrized"].get("duality_gap", np.nan)
    return Claim(
        "gap_bounds",
        "Theorems 1–6: each measured gap lies within its bound where the bound applies (exact laboratory)",
        "replicated" if violations == 0 else "not replicated",
        f"{n_checked} of {total} (class, bound) pairs checked, {violations} violated; {total - n_checked} not checked "
        f"(bound not a number: its hypotheses fail){'; never checked: ' + ', '.join(never) if never else ''}; "
        f"duality gap vs ν log-log slope {slope:.2f}",
    )


# What a section or claim whose results are absent or unusable raises: reported as missing, never fatal.
_MISSING = (FileNotFoundError, ValueError, KeyError)


def _unusable(err: Exception) -> tuple[str, str]:
    """``(verdict, evidence)`` of a claim whose results raised ``err``: skipped (a named bad file) or missing."""
    text = str(err).replace("\n", " ")
    return ("skipped", f"skipped: {text}") if isinstance(err, ResultsFileError) else ("missing", text)


def _guard(build: Callable[[], list[Claim]], key: str, what: str) -> list[Claim]:
    try:
        return build()
    except _MISSING as err:
        return [Claim(key, what, *_unusable(err))]


def _read_benchmark(results_dir: Path) -> pd.DataFrame:
    fix = "rerun `python -m benchmarks.solver_benchmark` (see paper_figures.theory_solver_benchmark); delete it first"
    return read_results_csv(
        results_dir / theory_solver_benchmark.RESULTS_FILE, fix=fix, complete=("n",),
        numeric=("primal_over_dual", "lam_rel_diff"),
    )  # fmt: skip


def _read_laboratory(results_dir: Path) -> pd.DataFrame:
    fix = "rerun `python -m analysis.parametrization_gap --out <dir>` (delete the broken file first)"
    path = results_dir / parametrization_gap.RESULTS_FILE
    header = read_results_csv(path, fix=fix, columns=("policy_class",), complete=("nu",)).columns
    measured = [c for c in header if c.endswith("_measured")]
    if not measured:
        raise ResultsFileError(path, "no *_measured column", fix)
    bounds = [c for c in header if "_bound" in c]
    return read_results_csv(path, fix=fix, columns=("policy_class",), complete=("nu",), numeric=measured,
                            optional=bounds)  # fmt: skip


def study_claims(verdicts: pd.DataFrame) -> list[Claim]:
    """One claim per pre-registered test of the powered multi-token study (its verdict, never recomputed here)."""
    rows = []
    for row in verdicts.itertuples(index=False):
        interval = f"[{row.low:+.3f}, {row.high:+.3f}]".replace("inf", "∞")
        # A margin test's power is at a true error of 0; a directional test's at its stated effect.
        margin = row.test in MARGIN_TESTS
        power = f"power {row.power:.2f} " + (f"(margin {row.effect:.3g} σ)" if margin else f"at {row.effect:+.3g} σ")
        rows.append(Claim(
            "multi_token", f"{row.claim} ({row.setting}; {row.method})", row.verdict,
            f"{row.test}: {row.estimate:+.3f} σ, {row.level:.0%} interval {interval}, {power}, "
            f"half-width/spacing {row.halfwidth_per_spacing:.2f}",
        ))  # fmt: skip
    return rows


def claims(results_dir: Path | str, scale: str = "full") -> list[Claim]:
    """Every claim's verdict from the results in ``results_dir`` (a missing result gives a ``missing`` row).

    At ``scale = "quick"`` the paper-analogue safety sweeps are not produced: their claims are listed only when
    their results exist, else one ``not run`` row says so.
    """
    results_dir = Path(results_dir)
    sweeps = [
        ("single_sweep", "single-constraint safety sweep",
         lambda: single_sweep_claims(load_sweep(results_dir, SINGLE_SUBDIR))),
        ("two_constraints", "two-constraint safety sweep",
         lambda: [two_constraint_claim(satisfaction_rows(load_sweep(results_dir, TWO_SUBDIR)))]),
        ("lagrangian_gap", "real-model gap (safety sweep)",
         lambda: [lagrangian_gap_claim(real_lagrangian_gap.load_gaps(results_dir))]),
    ]  # fmt: skip
    sweeps_absent = _safety_sweeps_absent(results_dir)
    builders = [
        ("exact_solver", "solver benchmark", lambda: [solver_claim(_read_benchmark(results_dir))]),
        ("gap_bounds", "parametrization-gap laboratory", lambda: [gap_bounds_claim(_read_laboratory(results_dir))]),
        ("multi_token", "powered multi-token study", lambda: study_claims(multi_token.load_verdicts(results_dir))),
        *([] if scale == "quick" and sweeps_absent else sweeps),
        ("dual_convergence", "dual convergence",
         lambda: [dual_convergence_claim(fig3_dual_convergence.load_summary(results_dir))]),
    ]  # fmt: skip
    out = [claim for key, what, build in builders for claim in _guard(build, key, what)]
    if scale == "quick" and sweeps_absent:
        out.append(Claim("safety_sweeps", "paper-analogue safety sweeps (Fig. 1-2, safety = -toxicity)", "not run",
                         "produced by `make reproduce SCALE=full` only; the powered study above decides the claims"))
    return out


def _sweep_table(results_dir: Path, subdir: Path) -> str:
    runs = load_sweep(results_dir, subdir)
    path = results_dir / subdir
    runs = runs.assign(
        improvement=[_ci(m, lo, hi) for m, lo, hi in zip(runs["mean"], runs["ci_low"], runs["ci_high"], strict=True)],
        bootstrap=[f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(runs["boot_low"], runs["boot_high"], strict=True)],
    )
    columns = ["run", "method", "scorer", "threshold", "improvement", "bootstrap", "verdict", "kl", "n_prompts"]
    table = _md(runs[columns].fillna({"verdict": "(reward)"}))
    sweep = path / SWEEP_FILE
    fix = "delete it and rerun the sweep, which rewrites it when every run has ended"
    records = read_json_object(sweep, fix=fix).get("runs", []) if sweep.is_file() else []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ResultsFileError(sweep, "'runs' is not a list of objects", fix)
    refused = [r for r in records if r.get("status") == "infeasible"]
    if refused:
        names = ", ".join(f"`{r['name']}`" for r in refused)
        reasons = "; ".join(dict.fromkeys(str(r.get("message", "")) for r in refused))
        table += f"\n\nRefused before training, the threshold being unreachable on π_ref's samples: {names} ({reasons})"
    return table


def _safety_sweeps_absent(results_dir: Path) -> bool:
    return not any((results_dir / d).is_dir() for d in (SINGLE_SUBDIR, TWO_SUBDIR))


def _sections(results_dir: Path, scale: str = "full") -> list[tuple[str, Callable[[], str]]]:
    gap_columns = ["run", "method", "lambda", "dual_value", "lagrangian", "gap", "gap_ci_low", "gap_ci_high", "kl"]
    dual_columns = ["n_prompts", "k", "n_replicates", "n_infeasible", "lambda_1_mean", "lambda_1_sd", "dual_value_mean"]

    def gaps() -> str:
        note = (
            "D̂ is the plug-in dual from π_ref's samples of each held-out prompt (few per prompt: biased "
            "downwards, so the gap is conservative); L̂ is the policy's own samples' E[r + λᵀg] − β·mean "
            "log(π/π_ref), with the λᵀ(E_ref g + b) offset shared (`analysis.lagrangian_gap`).\n\n"
        )
        return note + _md(real_lagrangian_gap.load_gaps(results_dir)[gap_columns])

    def convergence() -> str:
        return _md(fig3_dual_convergence.load_summary(results_dir)[dual_columns])

    def laboratory() -> str:
        return _md(scaling_table(_read_laboratory(results_dir)))

    def one_token() -> str:
        note = (
            "SmolLM2's next token after one-word prompts, solved exactly over the 49,152-token vocabulary; "
            "errors in within-prompt SDs (σ), intervals over seeds × held-out prompts "
            "(`analysis.next_token.verdicts`, `analysis.decisions`).\n\n"
        )
        return note + _md(next_token.load_verdicts(results_dir))

    def study() -> str:
        note = (
            "SmolLM2 continuing review openings (`configs/reviews_study.toml`): r = positivity, g₁ = simplicity, "
            "g₂ = relevance, scores in within-prompt SDs (σ) of the reference pool, b as fractions of the plug-in "
            "maximum M; one policy sample per held-out prompt against the shared reference pool; intervals over "
            "seeds × held-out prompts (`analysis.multi_token_study`, `analysis.decisions`).\n\n"
        )
        return note + _md(multi_token.load_verdicts(results_dir))

    safety = [
        ("Single-constraint safety sweep (Fig. 1): improvement over π_ref, 95% t-CI",
         lambda: _sweep_table(results_dir, SINGLE_SUBDIR)),
        ("Two-constraint safety sweep (Fig. 2)", lambda: _sweep_table(results_dir, TWO_SUBDIR)),
        ("Real-model Lagrangian gap D̂(λ) − L̂(π_θ, λ) on held-out prompts (safety sweep), 95% t-CI", gaps),
    ]  # fmt: skip
    return [
        ("Powered multi-token study (Fig. 1 / Fig. 2 claims): pre-registered verdicts", study),
        *([] if scale == "quick" and _safety_sweeps_absent(results_dir) else safety),
        ("Plug-in dual vs sample size (Fig. 3)", convergence),
        ("Parametrization-gap laboratory: scaling with ν", laboratory),
        ("Exact real-model laboratory: pre-registered verdicts", one_token),
    ]  # fmt: skip


def write_report(results_dir: Path | str, figures: Sequence[Path], scale: str, timings: dict[str, float]) -> Path:
    """Write ``results_dir/REPORT.md`` (atomically) and return its path.

    Args:
        results_dir: The results directory.
        figures: The figure files written by this run (PNG ones are linked).
        scale: The producers' scale, for the header.
        timings: Seconds per producing step (those run now or by an earlier, resumed invocation).
    """
    results_dir = Path(results_dir)
    lines = [
        "# Reproduction report",
        "",
        f"Generated by `python -m paper_figures all --scale {scale}` on {datetime.date.today()}, "
        f"{machine_description()}. Verdicts are computed from the saved results by `paper_figures.report`.",
        "",
        "## Claims",
        "",
        _md(pd.DataFrame([dataclasses.asdict(c) for c in claims(results_dir, scale)])),
        "",
    ]
    for title, build in _sections(results_dir, scale):
        try:
            body = build()
        except _MISSING as err:
            verdict, evidence = _unusable(err)
            body = evidence if verdict == "skipped" else f"missing: {evidence}"
        lines += [f"## {title}", "", body, ""]
    if timings:
        total = sum(timings.values())
        lines += [
            "## Time per step",
            "",
            _md(pd.DataFrame({"step": list(timings), "seconds": list(timings.values())}), 0),
        ]
        lines += ["", f"Total {total / 60:.1f} min (steps reused from an earlier invocation keep their time).", ""]
    lines += ["## Figures", ""]
    base = results_dir.resolve()
    for path in figures:
        if path.suffix == ".png":
            # Relative links keep working when the results and figures folders move together.
            lines.append(f"![{path.stem}]({os.path.relpath(path.resolve(), base)})")
    path = results_dir / REPORT_FILE
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def timings_file(results_dir: Path) -> Path:
    """Where ``python -m paper_figures`` keeps the seconds per producing step."""
    return results_dir / "timings.json"


def read_timings(results_dir: Path) -> dict[str, float]:
    """The recorded seconds per step (empty when none were recorded).

    Raises:
        paper_figures.results_files.ResultsFileError: If the file is not a JSON object of numbers.
    """
    path = timings_file(results_dir)
    if not path.is_file():
        return {}
    fix = "delete it (only the report's 'Time per step' table is lost)"
    timings = read_json_object(path, fix=fix)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in timings.values()):
        raise ResultsFileError(path, "a step's seconds are not a number", fix)
    return {str(k): float(v) for k, v in timings.items()}
