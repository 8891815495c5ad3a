"""The next-token figure and the report's verdict table, drawn from a tiny laboratory run."""

from __future__ import annotations

import pytest

from analysis.decisions import Verdict
from analysis.next_token import laboratory
from analysis.next_token.laboratory import LabConfig
from analysis.next_token.methods import TrainingSettings
from analysis.next_token.verdicts import write_verdicts
from paper_figures import next_token
from paper_figures.results_files import ResultsFileError
from tests.analysis.next_token.conftest import WORDS, FakeTokenizer
from tests.tiny_llama import tiny_llama


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    config = LabConfig(n_train=6, n_eval=5, k=3, fractions=(0.3, 0.6), pairs=((0.3, 0.3),), seeds=(0,),
                       training=TrainingSettings(iterations=2, batch_prompts=3, dual_prompts=3, dual_samples=2))
    laboratory.run(config, root / next_token.RESULTS_SUBDIR, model=tiny_llama(vocab_size=len(WORDS), seed=3),
                   tokenizer=FakeTokenizer(), cache_dir=root / "cache", progress=False)
    write_verdicts(root / next_token.RESULTS_SUBDIR)
    return root


def test_figure_and_verdicts(results, tmp_path):
    paths = next_token.make_figure(results, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"} and all(p.stat().st_size > 0 for p in paths)
    table = next_token.load_verdicts(results)
    assert set(table["verdict"]) <= {v.value for v in Verdict}
    assert {"size", "power", "coverage", "reason"} <= set(table.columns)


def test_truncated_verdicts_name_the_file(results, tmp_path):
    (tmp_path / "next_token").mkdir()
    (tmp_path / next_token.RESULTS_FILE).write_text("claim,verdict\n")
    with pytest.raises(ResultsFileError, match=r"verdicts\.csv"):
        next_token.load_verdicts(tmp_path)


def test_missing_runs_name_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m analysis\.next_token"):
        next_token.make_figure(tmp_path, tmp_path)
