import pytest

from benchmarks.solver_benchmark import Instance, run_benchmark, to_csv
from paper_figures.theory_solver_benchmark import make_figure


def test_solver_benchmark_rows_and_figure(tmp_path):
    rows = run_benchmark([Instance(4, 25, True), Instance(8, 50, False)], seed=0, mode="test")
    assert len(rows) == 2
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "solver_benchmark.csv").write_text(to_csv(rows))
    paths = make_figure(tmp_path, tmp_path / "figs")
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_missing_results_say_which_command_produces_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="solver_benchmark"):
        make_figure(tmp_path, tmp_path / "figs")
