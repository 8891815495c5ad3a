"""The solver benchmark figure: what it plots is the benchmark's table (timings, |certificate gap| floored)."""

import csv

import numpy as np
import pytest

from benchmarks.solver_benchmark import Instance, run_benchmark, to_csv
from paper_figures.theory_solver_benchmark import LOG_FLOOR, draw, make_figure


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    # Written largest first: the figure must sort by N.
    rows = run_benchmark([Instance(8, 50, False), Instance(4, 25, True)], seed=0, mode="test")
    (results / "benchmarks").mkdir()
    (results / "benchmarks" / "solver_benchmark.csv").write_text(to_csv(rows))
    return results


def _column(results, name):
    with open(results / "benchmarks" / "solver_benchmark.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: float(r["n"]))
    return np.array([float(r["n"]) for r in rows]), np.array([float(r[name]) if r[name] else np.nan for r in rows])


def test_solver_benchmark_plots_the_table(results, tmp_path):
    fig = draw(results)
    time_ax, agree_ax = fig.axes[:2]
    lines = {line.get_label(): line for ax in (time_ax, agree_ax) for line in ax.get_lines()}
    for column, label in (("dual_s", "solve_dual (with policy)"), ("logsumexp_s", "one logsumexp pass"),
                          ("primal_s", "solve_primal (cvxpy)")):  # fmt: skip
        n, values = _column(results, column)
        x, y = lines[label].get_data()
        np.testing.assert_array_equal(x, n[~np.isnan(values)])
        np.testing.assert_allclose(y, values[~np.isnan(values)], rtol=1e-12)
    # Certificates are drawn as magnitudes, exact zeros at the log floor.
    n, gap = _column(results, "cert_gap")
    x, y = lines["|dual certificate gap|"].get_data()
    np.testing.assert_array_equal(x, n)
    np.testing.assert_allclose(y, np.maximum(np.abs(gap), LOG_FLOOR), rtol=1e-12)
    assert time_ax.get_xscale() == "log" and agree_ax.get_yscale() == "log"
    paths = make_figure(results, tmp_path / "figs")
    assert [p.suffix for p in paths] == [".png", ".pdf"]


def test_missing_results_say_which_command_produces_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="solver_benchmark"):
        make_figure(tmp_path, tmp_path / "figs")
