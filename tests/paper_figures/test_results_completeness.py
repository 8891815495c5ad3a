"""Results read for a report are complete (issue 26): a vanished run, a cut table or a renamed column is refused.

Before, ``paper_figures`` left out a run whose ``summary.json`` was deleted (or whose folder was a dangling
link), changing a verdict, and drew and judged a CSV cut at a line boundary or with a renamed column.
"""

from __future__ import annotations

import json
import shutil

import pytest

from llm.run_files import TABLE_RECORD_SUFFIX, write_atomic
from llm.sweep import SWEEP_FILE
from paper_figures import fig1a_expected_vs_actual, fig3_dual_convergence, report
from paper_figures.results_files import ResultsFileError, check_table_record
from tests.llm_run_fixture import write_fixture

SINGLE = fig1a_expected_vs_actual.RESULTS_SUBDIR


@pytest.fixture
def results(tmp_path):
    return write_fixture(tmp_path / "results")


def _claims(results):
    return {c.key: c for c in report.claims(results)}


def test_a_deleted_summary_is_named_and_no_verdict_changes(results):
    intact = _claims(results)["one_shot_short"]
    assert intact.verdict in ("replicated", "direction only", "not replicated")
    path = results / SINGLE / "one_shot_b1" / "summary.json"
    path.unlink()  # before: the run was left out and one-shot's smallest threshold became b = 2
    with pytest.raises(ResultsFileError, match=r"one_shot_b1/summary\.json: missing"):
        fig1a_expected_vs_actual.draw(results)
    claim = _claims(results)["single_sweep"]
    assert claim.verdict == "not testable" and claim.evidence.startswith(f"skipped: {path}: missing")
    assert "one_shot_short" not in _claims(results)


def test_a_run_folder_that_is_a_dangling_link_is_named(results):
    run = results / SINGLE / "caid_b3"
    shutil.rmtree(run)
    run.symlink_to(results / "elsewhere" / "caid_b3")
    with pytest.raises(ResultsFileError, match=r"caid_b3: the run's folder is a dangling link"):
        fig1a_expected_vs_actual.load_sweep(results, SINGLE)
    claim = _claims(results)["single_sweep"]
    assert claim.verdict == "not testable" and claim.evidence.startswith(f"skipped: {run}: ")


def test_the_runs_read_are_those_sweep_json_lists(results):
    folder = results / SINGLE
    runs = sorted(p.name for p in folder.iterdir())
    records = [{"name": name, "status": "finished"} for name in runs if name != "dpo_utility"]
    write_atomic(folder / SWEEP_FILE, json.dumps({"runs": [*records, {"name": "caid_b9", "status": "infeasible"}]}))
    table = fig1a_expected_vs_actual.load_sweep(results, SINGLE)
    assert sorted(set(table["run"])) == [name for name in runs if name != "dpo_utility"]  # an extra folder: not read
    shutil.rmtree(folder / "caid_b2")  # a run the sweep finished, gone
    with pytest.raises(ResultsFileError, match=r"caid_b2: missing, although sweep\.json lists it as finished"):
        fig1a_expected_vs_actual.load_sweep(results, SINGLE)


def test_a_renamed_score_column_is_refused(results):
    path = results / SINGLE / "caid_b2" / "eval_scores.csv"
    text = path.read_text()
    path.write_text(text.replace("safety", "harmlessness", 1))  # before: reported under the new name
    with pytest.raises(ResultsFileError, match=r"score columns \['helpfulness', 'harmlessness'\] are not the scorers"):
        fig1a_expected_vs_actual.draw(results)


def test_eval_scores_cut_at_a_prompt_boundary_is_refused(results):
    path = results / SINGLE / "caid_b2" / "eval_scores.csv"
    lines = path.read_text().splitlines(keepends=True)
    # policy rows come first, two samples per prompt: drop the reference rows of the last two prompts
    path.write_text("".join(lines[:-4]))
    with pytest.raises(ResultsFileError, match=r"holds reference rows for 10 prompts.*computed over \[12\]"):
        fig1a_expected_vs_actual.draw(results)


def test_a_table_cut_at_a_line_boundary_is_refused_by_its_record(results):
    path = results / fig3_dual_convergence.RESULTS_FILE
    write_atomic(path, path.read_text())  # as analysis.dual_convergence writes it: with its record
    assert path.with_name(path.name + TABLE_RECORD_SUFFIX).is_file()
    fig3_dual_convergence.draw(results)
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 13
    path.write_text("".join(lines[:10]))  # 9 of 12 rows: before, drawn and judged
    with pytest.raises(ResultsFileError, match=r"holds 9 of the 12 rows written \(cut at a line boundary\)"):
        fig3_dual_convergence.draw(results)
    claim = _claims(results)["dual_convergence"]
    assert claim.verdict == "not testable" and claim.evidence.startswith(f"skipped: {path}: holds 9 of the 12")


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda t: t.replace("n,value", "n,score"), r"columns \['value'\] missing, \['score'\] not written"),
        (lambda t: t + "3,0.125\n", "holds 3 of the 2 rows written"),
        (lambda t: t.replace("0.5", "0.6"), "its content changed since it was written"),
    ],
    ids=["renamed", "row-added", "edited"],
)
def test_a_table_that_differs_from_its_record_says_how(tmp_path, edit, why):
    path = tmp_path / "table.csv"
    write_atomic(path, "n,value\n1,0.5\n2,0.25\n")
    check_table_record(path, path.read_bytes(), "rerun it")
    path.write_text(edit(path.read_text()))
    with pytest.raises(ResultsFileError, match=why) as err:
        check_table_record(path, path.read_bytes(), "rerun it")
    assert "delete table.csv.rows.json" in str(err.value)


def test_records_count_quoted_multiline_fields_once(tmp_path):
    path = tmp_path / "scores.csv"
    write_atomic(path, 'model,response\npolicy,"two\nlines"\nreference,one\n')
    record = json.loads(path.with_name(path.name + TABLE_RECORD_SUFFIX).read_text())
    assert record["rows"] == 2 and record["header"] == ["model", "response"]
