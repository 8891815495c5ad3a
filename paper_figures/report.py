"""``RESULTS/REPORT.md``: the reproduction's numbers with CIs, and a verdict per claim of the paper.

Written by ``python -m paper_figures all`` after the figures, from the saved results only. Each claim gets
a verdict of the one vocabulary :class:`analysis.decisions.Verdict`, computed here from the tables or read from a
study's claims table (never typed in):

* **replicated**: the 95% evidence goes the paper's way (an exact check holds);
* **refuted**: the 95% evidence goes the other way (an exact check fails); the evidence says what was excluded;
* **undecided**: neither (the evidence says which way the estimates point);
* **not testable**: the test cannot be made, with the reason first in the evidence: ``missing:`` (the results
  it needs are absent), ``skipped: <file>: <why>; <fix>`` (a results file exists but is unusable,
  :mod:`paper_figures.results_files`), ``not run:`` (not produced at this scale), or the test's own reason;
* **descriptive**: a study's estimate without a test.

The safety sweeps' trade-off compares two curves, for which no interval is computed here: not testable.
"Tracks more closely" counts as replicated when CAID's mean distance to b is smaller than one-shot's by more than
the mean CI half-width (refuted when larger by as much).

Improvements are paired over held-out prompts (Student-t CIs, bootstrap CIs beside them), as in
:mod:`analysis.statistics`.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.decisions import Verdict
from analysis.parametrization_gap.scaling import scaling_table
from analysis.statistics import satisfaction_rows
from llm.run_files import machine_description, write_atomic
from llm.sweep import SWEEP_FILE
from paper_figures import (
    fig3_dual_convergence,
    multi_token,
    next_token,
    next_token_dial,
    parametrization_gap,
    real_lagrangian_gap,
    theory_solver_benchmark,
)
from paper_figures.fig1a_expected_vs_actual import RESULTS_SUBDIR as SINGLE_SUBDIR
from paper_figures.fig1a_expected_vs_actual import load_sweep
from paper_figures.fig1b_tradeoff import tradeoff_points
from paper_figures.fig2_two_constraints import RESULTS_SUBDIR as TWO_SUBDIR
from paper_figures.results_files import ResultsFileError, read_json_object, read_results_csv

__all__ = ["DIAL_TITLES", "REPORT_FILE", "Claim", "claims", "dial_tables", "write_report"]

REPORT_FILE = "REPORT.md"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One qualitative finding of the paper, checked on this reproduction (``key`` names it in code)."""

    key: str
    claim: str
    verdict: str
    evidence: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict).value)  # one vocabulary: a typo is an error


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


def _verdict(papers_way: bool, significant: bool, reversed_significant: bool = False) -> str:
    """``replicated`` (significant the paper's way) / ``refuted`` (significant the other way) / ``undecided``."""
    if papers_way and significant:
        return Verdict.REPLICATED.value
    return Verdict.REFUTED.value if reversed_significant else Verdict.UNDECIDED.value


def _satisfaction_claim(key: str, what: str, rows: pd.DataFrame, unit: str) -> Claim:
    """Every row's improvement at least its threshold b, with the one-sided verdicts' counts."""
    satisfied, sure = int(rows["satisfied"].sum()), int((rows["verdict"] == "satisfied").sum())
    violated = int((rows["verdict"] == "violated").sum())
    worst = rows.loc[(rows["mean"] - rows["threshold"]).idxmin()]
    return Claim(
        key, what, _verdict(satisfied == len(rows), sure == len(rows), violated > 0),
        f"{satisfied}/{len(rows)} {unit} with mean ≥ b; 95% verdicts: {sure} satisfied, {violated} violated, "
        f"{len(rows) - sure - violated} undetermined; worst: {worst['scorer']} in {worst['run']}, "
        f"{worst['mean'] - worst['threshold']:+.3f} from b",
    )  # fmt: skip


def _check(rows: pd.DataFrame, want_above: bool, key: str, what: str) -> Claim:
    """Whether one run's improvement lies above (or below) its threshold, with its one-sided verdict."""
    row = rows.iloc[0]
    above = row["mean"] >= row["threshold"]
    significant = row["verdict"] == ("satisfied" if want_above else "violated")
    reverse = row["verdict"] == ("violated" if want_above else "satisfied")
    verdict = _verdict(above == want_above, significant, reverse)
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
        return [Claim("single_sweep", "single-constraint sweep", Verdict.NOT_TESTABLE.value,
                      "missing: no threshold has both a CAID and a one-shot run")]  # fmt: skip
    caid, one = (t[t["threshold"].isin(common)].sort_values("threshold") for t in (caid, one))
    dev_caid = float(np.mean(np.abs(caid["mean"] - caid["threshold"])))
    dev_one = float(np.mean(np.abs(one["mean"] - one["threshold"])))
    # Evidence that tracking is better: CAID's deviation beats one-shot's by more than their CI half-widths.
    half = float(np.mean((caid["ci_high"] - caid["ci_low"]) / 2))
    better = dev_caid < dev_one
    tracking = Claim(
        "tracking",
        "Multi-shot (CAID) tracks the thresholds more closely than one-shot (Fig. 1(a))",
        _verdict(better, dev_one - dev_caid > half, dev_caid - dev_one > half),
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
        Verdict.NOT_TESTABLE.value,  # no interval for a curve comparison here
        f"no interval for a curve comparison in this sweep; one-shot points dominated by a CAID point: "
        f"{one_dominated}/{len(one_pts)}; CAID points dominated by a "
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
        return Claim("two_constraints", "two constraints", Verdict.NOT_TESTABLE.value,
                     "missing: no CAID run in the two-constraint sweep")
    return _satisfaction_claim(
        "two_constraints", "With two constraints, multi-shot satisfies both at every threshold pair (Fig. 2)", caid,
        "(run, constraint) cells",
    )  # fmt: skip


def dual_convergence_claim(summary: pd.DataFrame) -> Claim:
    """Fig. 3: lambda* stabilises as prompts and responses per prompt grow (its spread over subsamples).

    The spread is compared below the whole pool: a prompt count whose spread is exactly zero at every k (n = N:
    each subsample is the pool) is left out.
    """
    sd = summary.pivot_table(index="n_prompts", columns="k", values="lambda_1_sd")
    sd = sd[(sd > 0).any(axis=1)]
    if len(sd.index) < 2 or len(sd.columns) < 2:
        return Claim("dual_convergence", "Fig. 3", Verdict.NOT_TESTABLE.value,
                     f"missing: need >= 2 prompt counts below the pool and >= 2 response counts, got {sd.shape}")
    k_min, k_max = sd.columns.min(), sd.columns.max()
    n_small, n_large = sd.index[0], sd.index[-1]
    shrinks_n = sd.loc[n_large, k_max] < sd.loc[n_small, k_max]
    shrinks_k = sd.loc[n_large, k_max] < sd.loc[n_large, k_min]
    return Claim(
        "dual_convergence",
        "The plug-in λ* stabilises with more prompts and more responses per prompt (Fig. 3)",
        "replicated" if shrinks_n and shrinks_k else "refuted",
        f"sd of λ*₁ over subsamples at k = {k_max}: {sd.loc[n_small, k_max]:.3f} (n = {n_small}) → "
        f"{sd.loc[n_large, k_max]:.3f} (n = {n_large}); at n = {n_large}: {sd.loc[n_large, k_min]:.3f} (k = {k_min}) "
        f"→ {sd.loc[n_large, k_max]:.3f} (k = {k_max})",
    )


def lagrangian_gap_claim(gaps: pd.DataFrame) -> Claim:
    """Theory: D(lambda) >= L(pi, lambda) for every policy, so no gap CI should lie below zero."""
    below = int((gaps["gap_ci_high"] < 0).sum())
    above = int((gaps["gap_ci_low"] > 0).sum())
    return Claim(
        "lagrangian_gap",
        "D(λ) − L(π_θ, λ) ≥ 0: the trained LLM does not beat the Lagrangian maximiser (eq. (3), Lemma 3)",
        "replicated" if below == 0 else "refuted",
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
        "replicated" if (solved["lam_rel_diff"] < 1e-3).all() else "refuted",
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
        "replicated" if violations == 0 else "refuted",
        f"{n_checked} of {total} (class, bound) pairs checked, {violations} violated; {total - n_checked} not checked "
        f"(bound not a number: its hypotheses fail){'; never checked: ' + ', '.join(never) if never else ''}; "
        f"duality gap vs ν log-log slope {slope:.2f}",
    )


# What a section or claim whose results are absent or unusable raises: reported as missing, never fatal.
_MISSING = (FileNotFoundError, ValueError, KeyError)


def _unusable(err: Exception) -> tuple[str, str]:
    """``(verdict, evidence)`` of a claim whose results raised ``err``: not testable, skipped or missing."""
    text = str(err).replace("\n", " ")
    return Verdict.NOT_TESTABLE.value, (f"skipped: {text}" if isinstance(err, ResultsFileError) else f"missing: {text}")


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


def study_claims(verdicts: pd.DataFrame, key: str = "multi_token") -> list[Claim]:
    """One claim per row of a study's claims table (its verdict, never recomputed here)."""
    rows = []
    for row in verdicts.itertuples(index=False):
        reason = row.reason if isinstance(row.reason, str) and row.reason else ""
        if row.verdict == Verdict.NOT_TESTABLE.value:
            evidence = reason
        elif row.verdict == Verdict.DESCRIPTIVE.value:
            evidence = f"{row.test}: {row.estimate:+.3f} σ, {row.level:.0%} interval [{row.low:+.3f}, {row.high:+.3f}]"
        elif row.level == 1.0:  # an exact check: no sampling, no interval
            evidence = f"{row.test}: {row.estimate:.3g} (exact; range [{row.low:.3g}, {row.high:.3g}])"
        else:
            interval = f"[{row.low:+.3f}, {row.high:+.3f}]".replace("inf", "∞")
            evidence = (f"{row.test}: {row.estimate:+.3f} σ, {row.level:.0%} interval {interval} (df {row.df:.1f}); "
                        f"size {row.size:.3f}, power {row.power:.2f} at {row.effect:.3g} σ, "
                        f"coverage {row.coverage:.2f}")
            if reason:
                evidence = f"{reason}; {evidence}"
        rows.append(Claim(key, f"{row.claim} ({row.setting}; {row.method})", row.verdict, evidence))
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
        ("multi_token", "multi-token study", lambda: study_claims(multi_token.load_verdicts(results_dir))),
        *([] if scale == "quick" and sweeps_absent else sweeps),
        ("dual_convergence", "dual convergence",
         lambda: [dual_convergence_claim(fig3_dual_convergence.load_summary(results_dir))]),
    ]  # fmt: skip
    out = [claim for key, what, build in builders for claim in _guard(build, key, what)]
    if scale == "quick" and sweeps_absent:
        out.append(Claim("safety_sweeps", "paper-analogue safety sweeps (Fig. 1-2, safety = -toxicity)",
                         Verdict.NOT_TESTABLE.value, "not run: produced by `make reproduce SCALE=full` only; the "
                         "multi-token study above tests the claims"))  # fmt: skip
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


DIAL_TITLES = (
    "Exact real-model laboratory: the ν dial's rungs",
    "Exact real-model laboratory: each claim on each rung of the ν dial",
    "Exact real-model laboratory: CAID's error on the ν dial",
)
_DIAL_NOTES = (
    "Each rung obtains every method's policy one way: the exact tilt π*(λ) (ν = 0), the best member of a class "
    "fitted on the exact Lagrangian, or DPO in a class at a budget (K pairs per prompt, T epochs). nu_1: the median "
    "over the rung's method runs of max_x \\|π − π*(λ)\\|₁ at the run's own λ; attenuation: the median achieved / "
    "π*(λ)'s improvement of g₁; abs_lam_error, abs_policy_error: mean \\|π*(λ) − b\\| and \\|achieved − π*(λ)\\| of g₁ "
    "(σ); t6 / t4: runs where Theorem 6 (CAID) / Theorem 4 (one-shot at the held-out λ*) has its hypotheses, "
    "those whose U-OPT bound is below π_ref's measured U-OPT, and the largest measured / bound "
    "(`analysis.next_token.nu_dial`, `analysis.next_token.dial_verdicts`).",
    "Each claim of the claims table decided on every rung (columns: the rung's ν₁, smallest first; the T = 16 "
    "variants are compared in the next table): ✓ replicated, ✗ refuted, ? undecided, ○ not testable, "
    "d descriptive, – not decided on that rung; flips: where the verdict changes between neighbouring rungs.",
    "CAID where the laboratory's CAID fell short of b: e_1 = achieved − b of g₁ (σ, mean over seeds) = lam_error "
    "(π*(λ) at CAID's λ minus b) + policy_error (achieved minus π*(λ)); lambda_gap: the largest "
    "max_i \\|λ_i(T) − λ*_i\\| over seeds, λ* of the train prompts (the problem the dual steps see).",
)


def dial_tables(results_dir: Path) -> list[tuple[str, str]]:
    """The nu dial's three summaries as ``(note, Markdown table)``, in the order of :data:`DIAL_TITLES`.

    The CAID table keeps :data:`paper_figures.next_token_dial.SHORTFALL_SETTINGS`.

    Raises:
        FileNotFoundError: A summary file is missing.
        paper_figures.results_files.ResultsFileError: A summary file is unusable.
    """
    rungs, claims, caid = next_token_dial.load_summaries(results_dir)
    rungs = rungs.drop(columns=[c for c in ("policy_class", "variant_of") if c in rungs])
    caid = caid[caid["setting"].isin(next_token_dial.SHORTFALL_SETTINGS)].sort_values(["setting", "method"],
                                                                                      kind="stable")
    tables = (_md(rungs, 4), _md(claims), _md(caid, 4))
    return list(zip(_DIAL_NOTES, tables, strict=True))


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
            "errors in within-prompt SDs (σ), intervals over seeds × held-out prompts with their degrees of freedom; "
            "size (the verdict's probability where it is wrong), power and coverage simulated at the measured "
            "components; Holm over the table (`analysis.next_token.verdicts`, `analysis.claims`, "
            "`analysis.decisions`).\n\n"
        )
        return note + _md(next_token.load_verdicts(results_dir))

    def study() -> str:
        note = (
            "SmolLM2 continuing review openings (`configs/reviews_study.toml`): r = positivity, g₁ = simplicity, "
            "scores in within-prompt SDs (σ) of each seed's reference pool, b as fractions of that pool's plug-in "
            "maximum M; one policy sample per held-out prompt; intervals over seeds × review openers with their "
            "degrees of freedom; size (the verdict's probability where it is wrong), power and coverage simulated "
            "at the measured components; Holm over the table (`analysis.multi_token_study`, `analysis.claims`, "
            "`analysis.decisions`).\n\n"
        )
        return note + _md(multi_token.load_verdicts(results_dir))

    dial_summaries = functools.cache(lambda: dial_tables(results_dir))  # three sections, one read of the files

    def dial(index: int) -> str:
        note, table = dial_summaries()[index]
        return f"{note}\n\n{table}"

    def hidden(load: Callable[[Path], pd.DataFrame]) -> Callable[[], str]:
        note = ("Per method and constraint: the share of (seed, held-out prompt) pairs whose own improvement misses "
                "b, and the 10% / 90% quantiles of the per-prompt improvement (σ)")

        def build() -> str:
            return note + ".\n\n" + _md(load(results_dir))

        return build

    safety = [
        ("Single-constraint safety sweep (Fig. 1): improvement over π_ref, 95% t-CI",
         lambda: _sweep_table(results_dir, SINGLE_SUBDIR)),
        ("Two-constraint safety sweep (Fig. 2)", lambda: _sweep_table(results_dir, TWO_SUBDIR)),
        ("Real-model Lagrangian gap D̂(λ) − L̂(π_θ, λ) on held-out prompts (safety sweep), 95% t-CI", gaps),
    ]  # fmt: skip
    return [
        ("Multi-token study (Fig. 1 / Fig. 2 claims): claims table", study),
        ("Multi-token study: what a mean hides", hidden(multi_token.load_violations)),
        *([] if scale == "quick" and _safety_sweeps_absent(results_dir) else safety),
        ("Plug-in dual vs sample size (Fig. 3)", convergence),
        ("Parametrization-gap laboratory: scaling with ν", laboratory),
        ("Exact real-model laboratory: claims table", one_token),
        ("Exact real-model laboratory: what a mean hides", hidden(next_token.load_violations)),
        *((title, functools.partial(dial, i)) for i, title in enumerate(DIAL_TITLES)),
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
            body = _unusable(err)[1]
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
