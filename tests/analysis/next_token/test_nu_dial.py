"""The nu dial on the tiny world: the exact-tilt rung against theory, the decomposition, the files, resuming."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from analysis.next_token import laboratory
from analysis.next_token.classes import PolicyClass
from analysis.next_token.dial_verdicts import (
    CAID_FILE,
    CLAIMS_FILE,
    COLUMNS,
    RUNGS_FILE,
    claim_table,
    write_dial_verdicts,
)
from analysis.next_token.evaluation import TableProblem, evaluate, measure
from analysis.next_token.laboratory import LabConfig
from analysis.next_token.methods import TrainingSettings
from analysis.next_token.nu_dial import RUNS_FILE, DialConfig, run_dial
from analysis.next_token.problem import exact_problem
from analysis.next_token.rungs import ORACLE, Fitting, Rung, RungLab
from tests.interrupts import count_calls, killed_on_call
from theory import solve_dual, tilted_policy

CONFIG = LabConfig(n_train=8, n_eval=6, k=4, fractions=(0.3, 0.7), pairs=((0.3, 0.3),), seeds=(0, 1),
                   training=TrainingSettings(iterations=2, passes=1, batch_prompts=4, dual_prompts=4, dual_samples=2))
DIAL = DialConfig((
    Rung("exact_tilt", Fitting.EXACT),
    Rung("exact_tilt_T16", Fitting.EXACT, iterations=16),
    Rung("top_bias_10", Fitting.LAGRANGIAN, PolicyClass.TOP_BIAS, top_n=10),
    Rung("dpo_logit_bias", Fitting.DPO, PolicyClass.LOGIT_BIAS, k=4, epochs=2, lr=0.1),
    Rung("dpo_last_mlp", Fitting.DPO, PolicyClass.LAST_MLP, k=4, epochs=2, lr=6e-4, from_laboratory=True),
))  # fmt: skip


@pytest.fixture(scope="module")
def lab(tiny, tmp_path_factory):
    model, tok = tiny
    root = tmp_path_factory.mktemp("dial")
    lab = laboratory.prepare(CONFIG, root / "out", model=model, tokenizer=tok, cache_dir=root / "cache", progress=False)
    laboratory.train_runs(lab, progress=False)
    return lab


@pytest.fixture(scope="module")
def dial_table(lab):
    return run_dial(lab, DIAL, progress=False, workers=1)


def test_exact_rung_tilt_at_held_out_lambda_star_meets_b(lab):
    rlab = RungLab(lab)
    for s in lab.settings:
        outcome = rlab.obtain(DIAL.rungs[0], s, ORACLE, seed=0)
        prob = exact_problem(lab.world, s.utilities, np.array(s.thresholds), 1.0)
        sol = solve_dual(prob)
        improvements = ((outcome.held_out - np.exp(prob.ref_logprobs)) * prob.utilities).sum(axis=2).mean(axis=1)
        active = sol.lam > 1e-8
        assert np.all(np.abs(improvements - np.array(s.thresholds))[active] <= 1e-6)
        assert np.all(improvements[~active] >= np.array(s.thresholds)[~active] - 1e-6)
        assert np.abs(outcome.held_out - sol.policy).sum(axis=1).max() < 1e-8


def test_exact_rung_caid_reaches_the_train_lambda_star(lab):
    rlab = RungLab(lab)
    for s in lab.settings:
        train = exact_problem(lab.world, s.utilities, np.array(s.thresholds), 1.0, train=True)
        lam_star = solve_dual(train).lam  # independent of the laboratory's optima
        outcome = rlab.obtain(DIAL.rungs[1], s, "caid_exact", seed=0)
        assert np.abs(outcome.trajectory[-1] - lam_star).max() <= 1e-3


def test_decomposition_sums_to_the_error(lab, dial_table):
    with_lambda = dial_table[dial_table["lam_1"].notna()]
    assert len(with_lambda) > 50
    for _, row in with_lambda.iterrows():
        s = next(x for x in lab.settings if x.name == row["setting"])
        with np.load(lab.out / "nu_dial" / row["rung"] / "runs" / f"{row['run_id']}.npz") as data:
            achieved = data["improvements"].mean(axis=1)
        lam = np.array([row[f"lam_{i + 1}"] for i in range(len(s.utilities))])
        prob = exact_problem(lab.world, s.utilities, np.array(s.thresholds), 1.0)
        tilt = ((tilted_policy(prob, lam) - np.exp(prob.ref_logprobs)) * prob.utilities).sum(axis=2).mean(axis=1)
        for i, suffix in enumerate(["", "_2"][: len(s.utilities)]):
            e = achieved[i] - s.thresholds[i]
            assert row[f"lam_error{suffix}"] + row[f"policy_error{suffix}"] == pytest.approx(e, abs=1e-12)
            assert row[f"lam_error{suffix}"] == pytest.approx(tilt[i] - s.thresholds[i], abs=1e-9)
    exact = with_lambda[with_lambda["fit"] == "exact"]
    assert np.abs(exact["policy_error"]).max() < 1e-9 and exact["nu_1_max"].max() < 1e-9


def test_dial_files_and_verdicts(lab, dial_table):
    runs = pd.read_csv(lab.out / RUNS_FILE)
    need = ["rung", "policy_class", "fit", "budget", "method", "setting", "seed", "nu_1_mean", "nu_1_max",
            "nu_kl_max", "attenuation", "lam_error", "policy_error", "b_1", "achieved_1", "reward", "kl"]
    assert set(need) <= set(runs.columns) and len(runs) == len(dial_table)
    assert set(runs["rung"]) == {r.name for r in DIAL.rungs}
    frame = write_dial_verdicts(lab.out, DIAL)
    assert list(frame.columns[: len(COLUMNS)]) == COLUMNS
    assert set(frame["verdict"]) <= {"replicated", "refuted", "undecided", "not testable", "descriptive"}
    lam_rows = frame[frame["claim"] == "CAID's lambda reaches the train lambda*"]
    assert list(lam_rows["rung"]) == ["exact_tilt", "exact_tilt_T16"]
    assert lam_rows["verdict"].iloc[1] == "replicated"
    assert list(frame.loc[frame["rung"] == "exact_tilt_T16", "variant_of"].unique()) == ["exact_tilt"]
    rungs = pd.read_csv(lab.out / RUNGS_FILE)
    assert list(rungs["rung"]) == [r.name for r in DIAL.rungs]
    assert rungs.loc[rungs["fit"] == "exact", "nu_1"].max() == 0.0
    assert np.allclose(rungs.loc[rungs["fit"] == "exact", "attenuation"], 1.0, atol=1e-9)
    caid = pd.read_csv(lab.out / CAID_FILE)
    assert len(caid) == len(dial_table[dial_table["method"].str.startswith("caid")].groupby(["rung", "setting",
                                                                                              "method"]))
    assert np.allclose(caid["lam_error"] + caid["policy_error"], caid["e_1"], atol=1e-12)
    long_exact = caid[(caid["rung"] == "exact_tilt_T16") & (caid["method"] == "caid_exact")]
    assert (long_exact["lambda_gap"] <= 1e-3).all() and (long_exact["iterations"] == 16).all()
    assert len(pd.read_csv(lab.out / CLAIMS_FILE)) == len(frame[frame["variant_of"].isna()]
                                                          .groupby(["claim", "setting", "method"]))


def test_claim_table_marks_each_rung_in_order_of_nu_and_names_the_flips():
    rows = [  # rung, nu, verdict; listed out of order, one variant and two rungs that round alike
        ("dpo", 1.5, "refuted"), ("tilt", 0.0, "replicated"), ("bias", 0.01, "replicated"),
        ("bias_T16", 0.01, "undecided"), ("mlp", 1.5004, "undecided"),
    ]  # fmt: skip
    verdicts = pd.DataFrame([{"rung": r, "nu_1_max": nu, "claim": "c", "setting": "s", "method": "m",
                              "verdict": v, "variant_of": "bias" if r == "bias_T16" else None}
                             for r, nu, v in rows])  # fmt: skip
    table = claim_table(verdicts)
    assert list(table.columns) == ["claim", "setting", "method", "0", "0.01", "1.5 (dpo)", "1.5 (mlp)", "flips"]
    assert table.iloc[0, 3:7].tolist() == ["✓", "✓", "✗", "?"]
    assert table["flips"].iloc[0] == ("0.01 -> 1.5 (dpo): replicated -> refuted; "
                                      "1.5 (dpo) -> 1.5 (mlp): refuted -> undecided")
    steady = claim_table(verdicts.assign(verdict="replicated"))
    assert steady["flips"].iloc[0] == "never"


def test_dial_resumes_after_kill(lab, tmp_path, monkeypatch):
    rungs = DialConfig(DIAL.rungs[:1])
    target = dataclasses.replace(lab, out=tmp_path)
    (tmp_path / "runs").mkdir()
    with killed_on_call(RungLab, "obtain", 7):
        run_dial(target, rungs, progress=False, workers=1)
    calls = count_calls(monkeypatch, RungLab, "obtain")
    table = run_dial(target, rungs, progress=False, workers=1)
    first = len(list((tmp_path / "nu_dial" / "exact_tilt" / "runs").glob("*.json")))
    assert first == len(table)
    assert 0 < len(calls) < len(table)  # finished runs (and seed-free policies) are not obtained again
    row = json.loads(next((tmp_path / "nu_dial" / "exact_tilt" / "runs").glob("*.json")).read_text())
    assert row["rung"] == "exact_tilt"


def test_measure_matches_evaluate(lab):
    s = lab.settings[-1]
    opt = lab.optima[s.name][0]
    lam = np.array([0.4, 0.2])
    policy = 0.5 * tilted_policy(opt.prob, lam) + 0.5 * np.exp(opt.prob.ref_logprobs)
    ms = measure(TableProblem.of(opt, lab.world.scores[[0, *s.utilities]]), policy, lam)
    ev = evaluate(opt, policy, lam)
    assert np.allclose(ms.improvements, ev.improvements, atol=1e-12)
    assert np.allclose(ms.kl, ev.kl, atol=1e-12)
    for name, key in (("u_opt", "u_opt"), ("r_opt", "r_opt"), ("lagrangian", "lagrangian"),
                      ("dual_value", "dual_value"), ("l1_to_pi_star", "l1_to_pi_star")):
        assert getattr(ms, name) == pytest.approx(ev.row[key], abs=1e-10)
    assert ms.l1.max() == pytest.approx(ev.row["nu_1"], abs=1e-12)
    assert ms.kl_gap.max() == pytest.approx(ev.row["nu_kl"], abs=1e-12)


def test_dial_figure_draws(lab, dial_table, tmp_path):
    from paper_figures import next_token_dial

    write_dial_verdicts(lab.out, DIAL)
    results = tmp_path / "results"
    (results / "next_token").mkdir(parents=True)
    for name in ("nu_dial_runs.csv", "nu_dial_verdicts.csv", RUNGS_FILE, CLAIMS_FILE, CAID_FILE):
        (results / "next_token" / name).write_text((lab.out / name).read_text())
    (results / "multi_token").mkdir()
    pd.DataFrame({"method": ["caid", "caid", "caid", "one_shot", "caid", "dpo_h"], "constraints": [1, 1, 1, 1, 2, 1],
                  "attenuation_1": [0.5, 0.7, 0.9, 0.4, 5.0, -3.0]}).to_csv(results / "multi_token" / "points.csv")
    paths = next_token_dial.make_figure(results, tmp_path / "figures")
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    verdicts = pd.read_csv(results / "next_token" / "nu_dial_verdicts.csv")
    fig = next_token_dial.draw(results)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    checked = 0
    for claim, part in verdicts[np.isfinite(verdicts["estimate"])].groupby("claim"):
        ax = panels[claim if len(claim) < 40 else claim[:38] + "…"]
        points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
        expected = np.column_stack([np.maximum(part["nu_1_max"], next_token_dial.NU_FLOOR), part["estimate"]])
        assert np.allclose(np.sort(points, axis=0), np.sort(expected, axis=0))  # each row drawn once, where it is
        checked += 1
    assert checked >= 5
    attenuation = panels["attenuation"]  # the study's single-constraint medians of CAID and one-shot
    assert sorted(line.get_ydata()[0] for line in attenuation.get_lines()) == [0.4, 0.7]


def test_report_renders_the_dial_summaries(lab, dial_table, tmp_path, monkeypatch):
    from paper_figures import next_token_dial, report

    write_dial_verdicts(lab.out, DIAL)
    (tmp_path / "next_token").mkdir()
    for name in (RUNGS_FILE, CLAIMS_FILE, CAID_FILE):
        (tmp_path / "next_token" / name).write_text((lab.out / name).read_text())
    monkeypatch.setattr(next_token_dial, "SHORTFALL_SETTINGS", ("g1@0.7",))
    (_, rungs), (_, claims), (_, caid) = report.dial_tables(tmp_path)
    assert [line.split(" | ")[0].lstrip("| ") for line in rungs.splitlines()[2:]] == [r.name for r in DIAL.rungs]
    expected = pd.read_csv(lab.out / CLAIMS_FILE)
    assert len(claims.splitlines()) == 2 + len(expected)
    assert claims.splitlines()[2].count("|") == len(expected.columns) + 1
    caid_rows = [line.split(" | ") for line in caid.splitlines()[2:]]
    assert caid_rows and all(row[1] == "g1@0.7" for row in caid_rows)


def test_theorem_rows_decide_against_the_bound_and_refute_a_violation(dial_table):
    from analysis.next_token.dial_verdicts import _theorem_rows

    exact = dial_table[dial_table["rung"] == "exact_tilt"]
    rows = {r["claim"]: r for r in _theorem_rows(exact)}
    oracle = rows["U-OPT within its Theorem 4 bound"]
    # nu = 0: the bound is 0 and the oracle is pi*: measured within the solver's accuracy
    assert oracle["n_evaluable"] > 0
    assert oracle["verdict"] == "replicated" and oracle["high"] <= 1e-8 and oracle["power"] == 1.0
    broken = exact.copy()  # a negative control: every measured gap 1e-3 above its bound
    broken["u_opt"] = broken["u_opt_bound"] + 1e-3
    refuted = 0
    for row in _theorem_rows(broken):
        if row["claim"].startswith("U-OPT") and row["n_evaluable"]:
            assert row["verdict"] == "refuted" and row["low"] == pytest.approx(1e-3)
            refuted += 1
        if not row["n_evaluable"]:
            assert row["verdict"] == "not testable" and np.isnan(row["power"])
    assert refuted == 2  # Theorem 6 (CAID) and Theorem 4 (the oracle)
