"""REPORT.md's verdicts on results designed to give a known verdict, and `python -m paper_figures all`.

The sweeps here are written with tests.llm_run_fixture.write_run, whose per-prompt paired improvement of a
scorer is its designed gain plus noise of standard deviation 1/sqrt(2) (two samples of N(0, 1) noise per
prompt), so over 12 prompts its standard error is about 0.2 and the 95% t half-width about 0.45. Every
designed margin below is 1.5 or more, at least 7 standard errors: the verdicts follow from the design,
whatever the noise draws.
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import paper_figures.__main__ as figures_main
from llm.config_files import load_config
from paper_figures import producers, report
from tests.llm_run_fixture import write_fixture, write_run

THRESHOLDS = (1.0, 4.0)


def _write_single(results, caid_gain, one_shot_gain, caid_reward, one_shot_reward, seed=0):
    """A single-constraint sweep whose safety gain at b is ``*_gain(b)`` and whose reward gain is constant."""
    rng = np.random.default_rng(seed)
    single = results / "llm_sweep" / "single"
    for b in THRESHOLDS:
        write_run(single / f"caid_b{b:g}", "caid", ("h", "s"), [b], [caid_reward, caid_gain(b)], rng)
        write_run(single / f"one_shot_b{b:g}", "one_shot", ("h", "s"), [b], [one_shot_reward, one_shot_gain(b)], rng)


def _write_two(results, caid_margin, seed=1):
    rng = np.random.default_rng(seed)
    for b1, b2 in ((0.5, 1.0), (2.0, 0.5)):
        run = results / "llm_sweep" / "two_constraints" / f"caid_b{b1:g}_{b2:g}"
        write_run(run, "caid", ("h", "u1", "u2"), [b1, b2], [1.0, b1 + caid_margin, b2 + caid_margin], rng)


def _verdicts(results_dir):
    return {c.key: c for c in report.claims(results_dir)}


@pytest.fixture(scope="module")
def papers_way(tmp_path_factory):
    # CAID 1.5 above b at every b (met, 1.5 from b); one-shot 3 short at b = 1 and 3 over at b = 4;
    # CAID's reward gain 3, one-shot's 0.
    results = tmp_path_factory.mktemp("papers_way")
    _write_single(results, lambda b: b + 1.5, lambda b: b - 3.0 if b < 2 else b + 3.0, 3.0, 0.0)
    _write_two(results, caid_margin=1.5)
    return results


def test_verdicts_on_results_that_go_the_papers_way(papers_way):
    claims = _verdicts(papers_way)
    # Mean |actual - b|: CAID 1.5, one-shot 3; the difference 1.5 exceeds CAID's CI half-width (~0.45).
    assert claims["tracking"].verdict == "replicated"
    # One-shot at the smallest b: 3 below b, its one-sided 95% upper bound below b.
    assert claims["one_shot_short"].verdict == "replicated"
    assert "b = 1:" in claims["one_shot_short"].evidence and "violated" in claims["one_shot_short"].evidence
    # One-shot at the largest b: 3 above b, its one-sided 95% lower bound above b.
    assert claims["one_shot_over"].verdict == "replicated"
    assert "b = 4:" in claims["one_shot_over"].evidence
    assert claims["caid_satisfies"].verdict == "replicated"
    assert claims["caid_satisfies"].evidence.startswith("2/2 runs with mean ≥ b; 95% verdicts: 2 satisfied, 0 violated")
    # Points (utility, reward): CAID (2.5, 3), (5.5, 3); one-shot (-2, 0), (7, 0). CAID's b = 1 point dominates
    # one-shot's b = 1 point, nothing dominates a CAID point; a curve comparison has no interval here.
    assert claims["tradeoff"].verdict == "not testable"
    assert "dominated by a CAID point: 1/2" in claims["tradeoff"].evidence
    assert "CAID points dominated by a one-shot point: 0/2" in claims["tradeoff"].evidence
    assert claims["two_constraints"].verdict == "replicated"
    assert claims["two_constraints"].evidence.startswith("4/4 (run, constraint) cells with mean ≥ b")
    # Absent from this results folder: not testable, the evidence says missing.
    for key in ("exact_solver", "gap_bounds", "dual_convergence"):
        assert claims[key].verdict == "not testable" and claims[key].evidence.startswith("missing: ")


def test_verdicts_on_results_that_go_the_other_way(tmp_path):
    # CAID 3 below b; one-shot 1.5 over b at b = 1 and 1.5 short at b = 4 (the paper's pattern reversed);
    # one-shot's reward higher.
    _write_single(tmp_path, lambda b: b - 3.0, lambda b: b + 1.5 if b < 2 else b - 1.5, 0.0, 3.0)
    _write_two(tmp_path, caid_margin=-1.5)
    claims = _verdicts(tmp_path)
    assert claims["tracking"].verdict == "refuted"  # CAID's mean distance 3 > one-shot's 1.5 by > the half-width
    assert claims["one_shot_short"].verdict == "refuted"  # 1.5 above b at b = 1, significantly
    assert claims["one_shot_over"].verdict == "refuted"  # 1.5 below b at b = 4, significantly
    assert claims["caid_satisfies"].verdict == "refuted"
    assert "0/2 runs with mean ≥ b; 95% verdicts: 0 satisfied, 2 violated" in claims["caid_satisfies"].evidence
    # CAID (-2, 0), (1, 0); one-shot (2.5, 3), (2.5, 3): every CAID point is dominated, no one-shot point is.
    assert claims["tradeoff"].verdict == "not testable" and "CAID points dominated" in claims["tradeoff"].evidence
    assert claims["two_constraints"].verdict == "refuted"


def test_satisfaction_with_a_mean_above_b_but_an_undetermined_verdict_is_undecided():
    rows = pd.DataFrame({
        "run": ["r"], "scorer": ["s"], "threshold": [1.0], "mean": [1.1], "ci_low": [0.6], "ci_high": [1.6],
        "satisfied": [True], "verdict": ["undetermined"],
    })  # fmt: skip
    assert report._satisfaction_claim("k", "what", rows, "runs").verdict == "undecided"
    assert report._check(rows, True, "k", "what").verdict == "undecided"
    assert report._check(rows.assign(verdict="satisfied"), True, "k", "what").verdict == "replicated"
    assert report._check(rows, False, "k", "what").verdict == "undecided"
    assert report._check(rows.assign(verdict="satisfied"), False, "k", "what").verdict == "refuted"


def _dual_summary(sd):
    """A Fig. 3 summary whose lambda_1_sd at (n, k) is ``sd(n, k)``."""
    cells = [(n, k) for n in (10, 20, 40) for k in (2, 8)]
    return pd.DataFrame({"n_prompts": [n for n, _ in cells], "k": [k for _, k in cells],
                         "lambda_1_sd": [sd(n, k) for n, k in cells]})  # fmt: skip


def test_dual_convergence_claim():
    # n = 10 vs n = 40, k = 2 vs k = 8; a prompt count whose spread is zero (the whole pool) is left out.
    assert report.dual_convergence_claim(_dual_summary(lambda n, k: 1 / (n * k))).verdict == "replicated"
    assert report.dual_convergence_claim(_dual_summary(lambda n, k: k / n)).verdict == "refuted"
    assert report.dual_convergence_claim(_dual_summary(lambda n, k: n / k)).verdict == "refuted"
    assert report.dual_convergence_claim(_dual_summary(lambda n, k: 1.0).head(2)).verdict == "not testable"
    whole_pool = _dual_summary(lambda n, k: 0.0 if n == 40 else 1 / (n * k))  # n = 40 is every subsample
    claim = report.dual_convergence_claim(whole_pool)
    assert claim.verdict == "replicated" and "(n = 20)" in claim.evidence and "n = 40" not in claim.evidence


def test_lagrangian_gap_claim():
    gaps = pd.DataFrame({"gap": [1.0, 0.2, 2.0], "gap_ci_low": [0.5, -0.1, 1.0], "gap_ci_high": [1.5, 0.5, 3.0],
                         "gap_relative": [0.1, 0.02, -0.2]})  # fmt: skip
    claim = report.lagrangian_gap_claim(gaps)
    assert claim.verdict == "replicated"
    assert "3 runs: gap CIs above 0 in 2, containing 0 in 1, below 0 in 0" in claim.evidence
    below = gaps.assign(gap_ci_high=[1.5, -0.05, 3.0])
    assert report.lagrangian_gap_claim(below).verdict == "refuted"


def _write_benchmark(results, lam_rel_diff):
    path = results / "benchmarks" / "solver_benchmark.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{n},0.01,{r},{q}" for n, r, q in zip((1e3, 1e4, 1e6), lam_rel_diff, ("30", "1000", ""), strict=True)]
    path.write_text("n,dual_s,lam_rel_diff,primal_over_dual\n" + "\n".join(rows) + "\n")


def test_solver_claim(tmp_path):
    # The N = 1e6 row has no cvxpy comparison: it is not counted, whatever its lambda difference says.
    _write_benchmark(tmp_path, (1e-5, 2e-4, ""))
    claim = _verdicts(tmp_path)["exact_solver"]
    assert claim.verdict == "replicated"
    assert claim.evidence == "max relative λ difference vs cvxpy 2.0e-04 over 2 sizes; speed-up 30×–1000×"
    _write_benchmark(tmp_path, (1e-5, 5e-3, ""))
    assert _verdicts(tmp_path)["exact_solver"].verdict == "refuted"


def _write_laboratory(results, duality_bound, distance_measured):
    path = results / "parametrization_gap" / "summary.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({
        "policy_class": ["tabular", "loglinear_k8", "transformer_4x1"], "nu": [1e-6, 0.05, 0.4],
        "duality_gap_measured": [1e-7, 1e-3, 0.01], "duality_gap_bound": duality_bound,
        "dual_distance_measured": distance_measured, "dual_distance_bound": [0.1, 1.0, 2.0],
    }).to_csv(path, index=False)  # fmt: skip


def test_gap_bounds_claim_counts_only_the_bounds_that_are_numbers(tmp_path):
    # The transformer's Theorem 1 bound is NaN (its hypotheses fail): not checked, never a pass.
    _write_laboratory(tmp_path, [1e-5, 0.1, np.nan], [1e-4, 0.3, 0.5])
    claim = _verdicts(tmp_path)["gap_bounds"]
    assert claim.verdict == "replicated"
    assert claim.evidence.startswith("5 of 6 (class, bound) pairs checked, 0 violated; 1 not checked")
    _write_laboratory(tmp_path, [np.nan] * 3, [1e-4, 0.3, 0.5])
    assert "never checked: duality_gap" in _verdicts(tmp_path)["gap_bounds"].evidence
    _write_laboratory(tmp_path, [1e-5, 0.1, np.nan], [1e-4, 1.5, 0.5])  # 1.5 > its bound 1.0
    claim = _verdicts(tmp_path)["gap_bounds"]
    assert claim.verdict == "refuted" and ", 1 violated;" in claim.evidence


def test_all_without_producers_draws_what_it_can_and_writes_the_report(tmp_path, monkeypatch, capsys):
    results = write_fixture(tmp_path / "results")
    monkeypatch.setattr(figures_main, "ensure_results", None)  # a producer run would fail loudly
    figures = tmp_path / "figures"
    code = figures_main.main(["all", "--results", str(results), "--figures", str(figures), "--no-produce"])
    assert code == 1  # the theory results are absent from the fixture: reported, not fatal
    printed = capsys.readouterr().out.split()
    assert str(results / report.REPORT_FILE) in printed
    text = (results / report.REPORT_FILE).read_text()
    assert "## Claims" in text
    # The solver benchmark, the laboratory and the powered study are absent from the fixture: their rows, and only
    # theirs, say so. The safety sweeps' results exist, so at quick scale their figures are drawn too.
    assert "| exact_solver | solver benchmark | not testable | missing: " in text
    assert "| gap_bounds | parametrization-gap laboratory | not testable | missing: " in text
    assert "| multi_token | multi-token study | not testable | missing: " in text
    assert text.count("| not testable | missing: ") == 3
    for name in ("fig1a_expected_vs_actual", "fig2_two_constraints", "fig3_dual_convergence", "real_lagrangian_gap"):
        assert (figures / f"{name}.png").is_file()
        link = os.path.relpath(figures / f"{name}.png", results.resolve())
        assert f"![{name}]({link})" in text


@pytest.mark.parametrize("scale", sorted(producers.SCALES))
def test_producer_overrides_are_valid_configurations(scale):
    s = producers.SCALES[scale]
    for config, overrides in ((producers.SINGLE_CONFIG, s.overrides), (producers.TWO_CONFIG, s.overrides),
                              (s.dual_config, s.dual_overrides)):  # fmt: skip
        load_config(config, list(overrides))
    two = load_config(producers.TWO_CONFIG, list(s.overrides))
    assert all(len(pair.split(",")) == len(two.scorers.utilities) for pair in s.pairs)
    args = producers.single_sweep_args(Path("R"), scale)
    assert args[:3] == ["-m", "llm", "sweep"] and str(Path("R") / producers.SINGLE_SWEEP_FILE.parent) in args


def test_quick_scale_produces_the_powered_study_and_not_the_safety_sweeps(tmp_path, monkeypatch):
    """At quick scale the safety sweeps' producers never run (their folders are absent); the report says so."""
    ran = []

    def record(producer, results_dir, scale):
        ran.append(producer.results_file.as_posix())
        return False, True

    monkeypatch.setattr(figures_main, "ensure_results", record)
    results = tmp_path / "results"
    results.mkdir()
    figures_main.main(["all", "--results", str(results), "--figures", str(tmp_path / "figures"), "--scale", "quick"])
    assert "multi_token/verdicts.csv" in ran and "dual_convergence/dual_convergence_summary.csv" in ran
    assert not [f for f in ran if f.startswith("llm_sweep/")]
    text = (results / report.REPORT_FILE).read_text()
    row = "| safety_sweeps | paper-analogue safety sweeps (Fig. 1-2, safety = -toxicity) | not testable | not run: "
    assert row in text
    assert "## Single-constraint safety sweep" not in text and "## Two-constraint safety sweep" not in text
