"""The LLM paper figures (Figs. 1(a)-(c), 2, 3) on a small synthetic results directory."""

import subprocess
import sys

import pytest

from paper_figures import (
    fig1a_expected_vs_actual,
    fig1b_tradeoff,
    fig1c_histograms,
    fig2_two_constraints,
    fig3_dual_convergence,
    real_lagrangian_gap,
)
from tests.llm_run_fixture import write_fixture

# (module, what its missing-results error must name)
MODULES = [
    (fig1a_expected_vs_actual, "llm_sweep/single"),
    (fig1b_tradeoff, "llm_sweep/single"),
    (fig1c_histograms, "llm_sweep/single"),
    (fig2_two_constraints, "llm_sweep/two_constraints"),
    (fig3_dual_convergence, "python -m analysis.dual_convergence"),
    (real_lagrangian_gap, "llm_sweep/single"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("results"))


@pytest.mark.parametrize("module", [m for m, _ in MODULES], ids=lambda m: m.NAME)
def test_figure_writes_png_and_pdf(module, results, tmp_path):
    paths = module.make_figure(results, tmp_path)
    assert [p.name for p in paths] == [f"{module.NAME}.png", f"{module.NAME}.pdf"]
    assert paths[0].stat().st_size > 10_000 and paths[1].stat().st_size > 5_000


@pytest.mark.parametrize(("module", "producer"), MODULES, ids=lambda m: getattr(m, "NAME", ""))
def test_missing_results_name_their_producer(module, producer, tmp_path):
    with pytest.raises(FileNotFoundError, match=producer) as err:
        module.make_figure(tmp_path, tmp_path / "figs")
    if producer.startswith("llm_sweep"):
        assert "python -m llm sweep" in str(err.value)


def test_histograms_default_to_the_median_common_threshold(results):
    table = fig1c_histograms.load_sweep(results)
    # Thresholds 1..4 for both methods: the lower middle one.
    assert fig1c_histograms.default_threshold(table) == 2.0
    with pytest.raises(ValueError, match="no caid run at threshold b = 7"):
        fig1c_histograms.make_figure(results, results / "figs", threshold=7.0)


def test_tradeoff_points_pair_reward_and_utility(results):
    points = fig1b_tradeoff.tradeoff_points(fig1b_tradeoff.load_sweep(results))
    assert set(points["method"]) == {"caid", "one_shot", "dpo_reward", "dpo_utility"}
    caid = points[points["method"] == "caid"]
    assert caid["threshold"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert (caid["reward_ci_low"] < caid["reward_mean"]).all() and (
        caid["utility_mean"] < caid["utility_ci_high"]
    ).all()


def test_command_line(results, tmp_path):
    command = ["-m", "paper_figures.fig1a_expected_vs_actual", "--results", str(results), "--out", str(tmp_path)]
    out = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(tmp_path / f"fig1a_expected_vs_actual.{ext}") for ext in ("png", "pdf")]
