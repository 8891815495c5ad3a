"""Unusable results files are refused by name: no empty figure, no verdict computed over nothing."""

import subprocess
import sys

import pytest

import paper_figures.__main__ as figures_main
from paper_figures import fig1a_expected_vs_actual, fig3_dual_convergence, report, theory_solver_benchmark
from paper_figures.results_files import ResultsFileError, read_results_csv
from tests.llm_run_fixture import write_fixture

GOOD = "n,value\n1,0.5\n2,0.25\n"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "the file is empty"),
        ("n,value\n1,0.5\n2,0.2", "ends mid-line"),
        ("n,value\n", "a header but no data rows"),
        ("n,other\n1,0.5\n", "missing column(s) ['value']"),
        ("n,value\n1,\n2,\n", "column 'value' has no values (all NaN)"),
        ("n,value\n1,0.5\n2,abc\n", "column 'value' holds text where numbers belong"),
        ("n,value\n1,0.5\n,0.2\n", "column 'n' is missing in 1 row(s)"),
    ],
    ids=["empty", "truncated", "header-only", "missing-column", "nan-only", "text", "incomplete"],
)
def test_bad_csv_is_refused_naming_the_file_why_and_the_fix(tmp_path, text, why):
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(ResultsFileError) as err:
        read_results_csv(path, fix="rerun the producer", columns=("value",), numeric=("value",), complete=("n",))
    assert str(err.value).startswith(f"{path}: ") and why in str(err.value)
    assert str(err.value).endswith("; rerun the producer")


def test_good_csv_is_read(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text(GOOD)
    frame = read_results_csv(path, fix="-", numeric=("value",), complete=("n",))
    assert frame["n"].tolist() == [1, 2] and frame["value"].tolist() == [0.5, 0.25]
    with pytest.raises(FileNotFoundError, match="rerun"):
        read_results_csv(tmp_path / "absent.csv", fix="rerun")


@pytest.fixture
def results(tmp_path):
    return write_fixture(tmp_path / "results")


def test_header_only_benchmark_refuses_the_figure_and_skips_the_claim(tmp_path):
    path = tmp_path / theory_solver_benchmark.RESULTS_FILE
    path.parent.mkdir(parents=True)
    path.write_text("n,dual_s,primal_s,lam_rel_diff,primal_over_dual\n")
    with pytest.raises(ResultsFileError, match="a header but no data rows"):
        theory_solver_benchmark.make_figure(tmp_path, tmp_path / "figs")
    assert not (tmp_path / "figs").exists()
    claim = {c.key: c for c in report.claims(tmp_path)}["exact_solver"]
    assert claim.verdict == "not testable"
    assert claim.evidence.startswith(f"skipped: {path}: a header but no data rows")


def test_benchmark_without_any_cvxpy_comparison_is_no_verdict_over_zero_sizes(tmp_path):
    path = tmp_path / theory_solver_benchmark.RESULTS_FILE
    path.parent.mkdir(parents=True)
    path.write_text("n,dual_s,lam_rel_diff,primal_over_dual\n1000,0.01,,\n10000,0.02,,\n")
    theory_solver_benchmark.draw(tmp_path)  # the dual timings alone still make a figure
    claim = {c.key: c for c in report.claims(tmp_path)}["exact_solver"]
    assert claim.verdict == "not testable" and "has no values (all NaN)" in claim.evidence
    assert "over 0 sizes" not in claim.evidence


def test_truncated_dual_convergence_summary_is_refused(results):
    path = results / fig3_dual_convergence.RESULTS_FILE
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ResultsFileError, match="ends mid-line"):
        fig3_dual_convergence.draw(results)
    claim = {c.key: c for c in report.claims(results)}["dual_convergence"]
    assert claim.verdict == "not testable" and claim.evidence.startswith(f"skipped: {path}")


def test_nan_only_lambda_column_of_dual_convergence_is_refused(results):
    path = results / fig3_dual_convergence.RESULTS_FILE
    lines = path.read_text().splitlines()
    column = lines[0].split(",").index("lambda_1_mean")
    rows = [",".join("" if i == column else v for i, v in enumerate(line.split(","))) for line in lines[1:]]
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    with pytest.raises(ResultsFileError, match="'lambda_1_mean' has no values"):
        fig3_dual_convergence.draw(results)


def test_a_run_with_a_header_only_eval_scores_is_named_by_figure_and_report(results, tmp_path):
    run = results / "llm_sweep" / "single" / "caid_b2"
    path = run / "eval_scores.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(ResultsFileError) as err:
        fig1a_expected_vs_actual.draw(results)
    assert str(err.value).startswith(f"{path}: a header but no data rows; delete the run directory caid_b2")
    claims = report.claims(results)
    single = [c for c in claims if c.key == "single_sweep"]
    assert len(single) == 1 and single[0].verdict == "not testable" and str(path) in single[0].evidence
    # The report still gets written, and its sweep section names the file instead of a table.
    text = report.write_report(results, [], "quick", {}).read_text()
    assert f"skipped: {path}: a header but no data rows" in text


def test_a_corrupt_summary_json_is_named(results):
    path = results / "llm_sweep" / "two_constraints" / "caid_b0.5_0.3" / "summary.json"
    path.write_text('{"method": "caid", "thresh')
    claim = {c.key: c for c in report.claims(results)}["two_constraints"]
    assert claim.verdict == "not testable" and f"skipped: {path}: not valid JSON" in claim.evidence


def test_laboratory_summary_without_measurements_is_skipped(results):
    path = results / "parametrization_gap" / "summary.csv"
    path.parent.mkdir()
    path.write_text("policy_class,nu,duality_gap_bound\ntabular,1e-6,0.1\n")
    claim = {c.key: c for c in report.claims(results)}["gap_bounds"]
    assert claim.verdict == "not testable" and claim.evidence.startswith(f"skipped: {path}: no *_measured column")


def test_corrupt_timings_stop_the_command_with_a_message(results, tmp_path, capsys):
    (results / "timings.json").write_text("[1, 2")
    code = figures_main.main(["all", "--results", str(results), "--figures", str(tmp_path), "--no-produce"])
    assert code == 2
    assert f"error: {results / 'timings.json'}: not valid JSON" in capsys.readouterr().err


def test_report_imports_without_torch_or_transformers():
    # The report reads saved CSV/JSON only: writing it must not pull in the training stack.
    code = (
        "import sys, paper_figures.report, paper_figures.results_files\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_report_import_check_can_fail():
    # The same check sees torch when something imports it (so an empty answer above means something).
    code = "import sys, torch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
