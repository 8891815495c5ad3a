"""The LLM paper figures (Figs. 1(a)-(c), 2, 3, the real-model gap) on a small synthetic results directory.

Each figure's plotted data (line and error-bar coordinates, histogram counts, bands) is compared with
values recomputed here from the fixture's raw files (tests/paper_figures/figure_data.py), not from
``analysis``.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm.methods import REGISTRY
from paper_figures import (
    fig1a_expected_vs_actual,
    fig1b_tradeoff,
    fig1c_histograms,
    fig2_two_constraints,
    fig3_dual_convergence,
    real_lagrangian_gap,
)
from tests.llm_run_fixture import PAIR_THRESHOLDS, SINGLE_THRESHOLDS
from tests.paper_figures.figure_data import errorbars, eval_columns, lagrangian_gap, paired_t

# (module, what its missing-results error must name)
MODULES = [
    (fig1a_expected_vs_actual, "llm_sweep/single"),
    (fig1b_tradeoff, "llm_sweep/single"),
    (fig1c_histograms, "llm_sweep/single"),
    (fig2_two_constraints, "llm_sweep/two_constraints"),
    (fig3_dual_convergence, "python -m analysis.dual_convergence"),
    (real_lagrangian_gap, "llm_sweep/single"),
]
LABELS = {k: m.label for k, m in REGISTRY.items()}


def _single(results: Path, run: str) -> Path:
    return results / "llm_sweep" / "single" / run


@pytest.mark.parametrize("module", [m for m, _ in MODULES], ids=lambda m: m.NAME)
def test_figure_writes_png_and_pdf(module, results_fixture, tmp_path):
    paths = module.make_figure(results_fixture, tmp_path)
    assert [p.name for p in paths] == [f"{module.NAME}.png", f"{module.NAME}.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize(("module", "producer"), MODULES, ids=lambda m: getattr(m, "NAME", ""))
def test_missing_results_name_their_producer(module, producer, tmp_path):
    with pytest.raises(FileNotFoundError, match=producer) as err:
        module.make_figure(tmp_path, tmp_path / "figs")
    if producer.startswith("llm_sweep"):
        assert "python -m llm sweep" in str(err.value)


def test_fig1a_plots_each_runs_paired_improvement_and_its_t_interval(results_fixture):
    (ax,) = fig1a_expected_vs_actual.draw(results_fixture).axes
    drawn = errorbars(ax)
    assert set(drawn) == {LABELS["caid"], LABELS["one_shot"]}  # the DPO baselines are not threshold sweeps
    for method in ("caid", "one_shot"):
        (series,) = drawn[LABELS[method]]
        runs = [_single(results_fixture, f"{method}_b{b:g}") for b in SINGLE_THRESHOLDS]
        expected = np.array([paired_t(run, "safety") for run in runs])
        np.testing.assert_allclose(series["y"], expected[:, 0], atol=1e-5)
        np.testing.assert_allclose(series["y_low"], expected[:, 1], atol=1e-5)
        np.testing.assert_allclose(series["y_high"], expected[:, 2], atol=1e-5)
        # x is b, shifted sideways by a constant small offset per method so the bars do not overlap.
        shift = series["x"] - np.array(SINGLE_THRESHOLDS)
        assert np.ptp(shift) < 1e-12 and abs(shift[0]) < 0.05
    # The y = x reference line spans the thresholds.
    identity = [line for line in ax.get_lines() if line.get_label().startswith("y = x")]
    x, y = identity[0].get_data()
    np.testing.assert_array_equal(x, y)
    assert x[0] < min(SINGLE_THRESHOLDS) and x[-1] > max(SINGLE_THRESHOLDS)


def test_fig1b_plots_utility_against_reward_improvement_for_every_method(results_fixture):
    fig = fig1b_tradeoff.draw(results_fixture)
    drawn = errorbars(fig.axes[0])
    runs = {
        "caid": [f"caid_b{b:g}" for b in SINGLE_THRESHOLDS],
        "one_shot": [f"one_shot_b{b:g}" for b in SINGLE_THRESHOLDS],
        "dpo_h": ["dpo_h"],
        "dpo_g": ["dpo_g"],
    }
    assert set(drawn) == {LABELS[m] for m in runs}
    for method, names in runs.items():
        (series,) = drawn[LABELS[method]]
        utility = np.array([paired_t(_single(results_fixture, n), "safety") for n in names])
        reward = np.array([paired_t(_single(results_fixture, n), "helpfulness") for n in names])
        np.testing.assert_allclose(series["x"], utility[:, 0], atol=1e-5)
        np.testing.assert_allclose(series["y"], reward[:, 0], atol=1e-5)
        np.testing.assert_allclose(np.c_[series["x_low"], series["x_high"]], utility[:, 1:], atol=1e-5)
        np.testing.assert_allclose(np.c_[series["y_low"], series["y_high"]], reward[:, 1:], atol=1e-5)
    # Each sweep's Pareto front: the points no other point of that method beats in both coordinates.
    for method in ("caid", "one_shot"):
        (series,) = drawn[LABELS[method]]
        points = np.c_[series["x"], series["y"]]
        front = [p for p in points if not any((q >= p).all() and (q > p).any() for q in points)]
        (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == f"{LABELS[method]} Pareto front"]
        drawn_front = np.c_[line.get_data()]
        assert sorted(map(tuple, drawn_front)) == sorted(map(tuple, front))


def test_fig1c_histograms_count_the_held_out_scores(results_fixture):
    fig = fig1c_histograms.draw(results_fixture)
    b = 2.0  # thresholds 1..4 for both methods: the lower middle one
    axes = np.array(fig.axes[:4]).reshape(2, 2)
    for row, method in zip(axes, ("caid", "one_shot"), strict=True):
        data = eval_columns(_single(results_fixture, f"{method}_b{b:g}"))
        for ax, scorer in zip(row, ("helpfulness", "safety"), strict=True):
            assert ax.get_title().startswith(f"{scorer}: Δ = ")
            labelled = {p.get_label(): p for p in ax.patches if not p.get_label().startswith("_")}
            for label, model in (("before ($\\pi_{\\rm ref}$)", "reference"), ("after (aligned)", "policy")):
                counts, edges, _ = labelled[label].get_data()
                scores = data[model][scorer].ravel()
                np.testing.assert_array_equal(counts, np.histogram(scores, bins=edges)[0])
                assert counts.sum() == scores.size  # every sample falls in the common bins


def test_fig2_plots_both_constraints_and_the_reward_per_pair(results_fixture):
    fig = fig2_two_constraints.draw(results_fixture)
    two = results_fixture / "llm_sweep" / "two_constraints"
    panels = zip(fig.axes[:3], ("harmless", "humor", "helpful"), strict=True)
    for ax, scorer in panels:
        points = [s for series in errorbars(ax).values() for s in series]
        drawn = sorted((float(s["y"][0]), float(s["y_low"][0]), float(s["y_high"][0])) for s in points)
        expected = sorted(
            paired_t(two / f"{m}_b{b1:g}_{b2:g}", scorer) for m in ("caid", "one_shot") for b1, b2 in PAIR_THRESHOLDS
        )
        np.testing.assert_allclose(drawn, expected, atol=1e-5)
        if scorer != "helpful":  # x is that constraint's threshold (plus a small per-method offset)
            b_index = 0 if scorer == "harmless" else 1
            xs = sorted(float(s["x"][0]) for s in points)
            bs = sorted(pair[b_index] for pair in PAIR_THRESHOLDS for _ in range(2))
            np.testing.assert_allclose(xs, bs, atol=0.05)


def test_fig3_plots_the_mean_over_replicates_per_cell(results_fixture):
    fig = fig3_dual_convergence.draw(results_fixture)
    samples = pd.read_csv(results_fixture / "dual_convergence" / "dual_convergence.csv")
    solved = samples[samples["feasible"] & samples["converged"]]
    for ax, quantity in zip(fig.axes[:2], ("lambda_1", "dual_value"), strict=True):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {f"k = {k}" for k in (4, 8, 16)}
        for k in (4, 8, 16):
            cell = solved[solved["k"] == k].groupby("n_prompts")[quantity]
            x, y = lines[f"k = {k}"].get_data()
            np.testing.assert_array_equal(x, [5, 10, 20, 40])
            np.testing.assert_allclose(y, cell.mean().loc[list(x)].to_numpy(), rtol=1e-9)
        # The band runs from the 2.5% to the 97.5% quantile of the replicates.
        band = ax.collections[0].get_paths()[0].vertices
        k4 = solved[solved["k"] == 4].groupby("n_prompts")[quantity]
        assert band[:, 1].min() == pytest.approx(k4.quantile(0.025).min(), rel=1e-9)
        assert band[:, 1].max() == pytest.approx(k4.quantile(0.975).max(), rel=1e-9)


def test_real_lagrangian_gap_plots_dual_minus_lagrangian(results_fixture):
    fig = real_lagrangian_gap.draw(results_fixture)
    values, gap_ax = fig.axes[:2]
    for method in ("caid", "one_shot"):
        expected = np.array([lagrangian_gap(_single(results_fixture, f"{method}_b{b:g}")) for b in SINGLE_THRESHOLDS])
        drawn = errorbars(values)
        (dual,) = [s for label, (s,) in drawn.items() if label.startswith(r"$\hat D") and LABELS[method] in label]
        (lagr,) = [s for label, (s,) in drawn.items() if label.startswith(r"$\hat L") and LABELS[method] in label]
        (gap,) = errorbars(gap_ax)[LABELS[method]]
        np.testing.assert_allclose(dual["y"], expected[:, 0], atol=1e-4)
        np.testing.assert_allclose(lagr["y"], expected[:, 1], atol=1e-4)
        np.testing.assert_allclose(gap["y"], expected[:, 2], atol=1e-4)


def test_histograms_default_to_the_median_common_threshold(results_fixture):
    table = fig1c_histograms.load_sweep(results_fixture)
    # Thresholds 1..4 for both methods: the lower middle one.
    assert fig1c_histograms.default_threshold(table) == 2.0
    with pytest.raises(ValueError, match="no caid run at threshold b = 7"):
        fig1c_histograms.make_figure(results_fixture, results_fixture / "figs", threshold=7.0)


def test_tradeoff_points_pair_reward_and_utility(results_fixture):
    points = fig1b_tradeoff.tradeoff_points(fig1b_tradeoff.load_sweep(results_fixture))
    assert set(points["method"]) == {"caid", "one_shot", "dpo_h", "dpo_g"}
    caid = points[points["method"] == "caid"].reset_index(drop=True)
    assert caid["threshold"].tolist() == list(SINGLE_THRESHOLDS)
    for i, b in enumerate(SINGLE_THRESHOLDS):
        run = _single(results_fixture, f"caid_b{b:g}")
        assert caid.loc[i, ["reward_mean", "reward_ci_low", "reward_ci_high"]].tolist() == pytest.approx(
            paired_t(run, "helpfulness"), abs=1e-5
        )
        assert caid.loc[i, ["utility_mean", "utility_ci_low", "utility_ci_high"]].tolist() == pytest.approx(
            paired_t(run, "safety"), abs=1e-5
        )


def test_one_style_per_method_in_every_figure():
    """The registry is the one source of styles: no two methods share a colour, the next-token laboratory's arms
    take their method's colour (DPO_h has one colour in every figure), and Fig. 1's sweeps are caid and one-shot."""
    from analysis.next_token.arms import Arm
    from llm.methods import DPO_BASELINES

    assert fig1a_expected_vs_actual.SWEEP_METHODS == ("caid", "one_shot")
    assert fig1b_tradeoff.BASELINES == DPO_BASELINES
    colors = [m.color for m in REGISTRY.values()]
    assert len(set(colors)) == len(colors)
    for arm in Arm:
        assert arm.style[0] == REGISTRY[arm.method.key].color


def test_command_line(results_fixture, tmp_path):
    module = "paper_figures.fig1a_expected_vs_actual"
    command = ["-m", module, "--results", str(results_fixture), "--out", str(tmp_path)]
    out = subprocess.run([sys.executable, *command], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(tmp_path / f"fig1a_expected_vs_actual.{ext}") for ext in ("png", "pdf")]
