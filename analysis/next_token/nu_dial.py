"""The nu dial: every method on rungs of policy accuracy, from the exact tilt (nu = 0) to DPO in today's class.

The paper's claims concern policies close to the tilt pi*(lambda) (its theorems bound the gaps by O(nu) and
O(sqrt(nu)), Sec. 4). In the one-token world the tilt is known exactly, so the laboratory can move nu over
decades on the real model (:mod:`analysis.next_token.rungs`) and record, for every run:

* nu_1 = |pi - pi*(lambda)|_1 and nu_KL = |KL(pi*(lambda)) - KL(pi)| per held-out prompt, at the run's own
  lambda (mean and max over prompts);
* the error decomposition ``e_i = achieved_i - b_i = (tilt_i(lambda) - b_i) + (achieved_i - tilt_i(lambda))``:
  ``lam_error`` (the exact tilt at the method's lambda misses b by this much) and ``policy_error`` (the
  policy falls short of that tilt by this much), with tilt_i(lambda) the exact improvement of pi*(lambda);
* the attenuation ``achieved_i / tilt_i(lambda)`` (:func:`analysis.tilt_attenuation.attenuation`);
* Theorem 6 (CAID runs) and Theorem 4 (``one_shot_oracle``, the one-shot policy at lambda*) with
  ``theory.bounds``, evaluated per rung and setting at ``nu_bar``, the largest nu = max(nu_1, nu_KL) over
  that rung's method runs in that setting (Assumption 3 then holds with nu_bar for every run it covers),
  and only where Assumption 4 (the M nu_bar-tightened problem is feasible) and Assumption 5 (mu*_D > 0)
  hold, for CAID with the scalar dual step of Algorithm 1 (a preconditioned step, :class:`StepSize`, is not
  covered). A bound is non-vacuous when it is below the same quantity measured for pi_ref.

Outputs in the laboratory's folder: ``nu_dial/<rung>/runs/<run>.json|.npz`` (one finished run, written
atomically, so a killed dial resumes), ``nu_dial/<rung>/runs.csv`` (the laboratory's run-table format, so
:func:`analysis.next_token.verdicts.verdicts` decides each rung's claims), ``nu_dial_runs.csv`` (one row per
run) and ``nu_dial_verdicts.csv`` (:mod:`analysis.next_token.dial_verdicts`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.next_token.arms import Arm
from analysis.next_token.classes import PolicyClass
from analysis.next_token.dial_verdicts import DIAL_DIR, RUNS_FILE, rung_verdicts
from analysis.next_token.evaluation import Measurement, measure, tilt_quantities
from analysis.next_token.laboratory import Lab, Setting, _load_done
from analysis.next_token.rungs import CAID, ORACLE, REFERENCE, DialConfig, Fitting, Outcome, Rung, RungLab
from analysis.next_token.world import atomic_savez
from analysis.tilt_attenuation import attenuation
from llm.run_files import write_atomic
from theory import bounds, solve_dual
from theory.problem import InfeasibleProblemError

__all__ = ["FULL_DIAL", "QUICK_DIAL", "RUNS_FILE", "DialConfig", "run_dial", "theorem_columns"]

_TOP = PolicyClass.TOP_BIAS
_RUNGS = (
    Rung("exact_tilt", Fitting.EXACT),
    Rung("exact_tilt_T16", Fitting.EXACT, iterations=16),
    *(Rung(f"top_bias_{n}", Fitting.LAGRANGIAN, _TOP, top_n=n) for n in (10240, 7936, 4096, 2048, 1024)),
    Rung("top_bias_10240_T16", Fitting.LAGRANGIAN, _TOP, top_n=10240, iterations=16),
    Rung("dpo_logit_bias_k32_t8", Fitting.DPO, PolicyClass.LOGIT_BIAS, k=32, epochs=8, lr=0.1),
    Rung("dpo_logit_bias_k32_t4", Fitting.DPO, PolicyClass.LOGIT_BIAS, k=32, epochs=4, lr=0.1),
    Rung("dpo_logit_bias_k8_t4", Fitting.DPO, PolicyClass.LOGIT_BIAS, k=8, epochs=4, lr=0.1),
    Rung("dpo_last_mlp_k8_t4", Fitting.DPO, PolicyClass.LAST_MLP, k=8, epochs=4, lr=6e-4, from_laboratory=True),
)
QUICK_DIAL = DialConfig(_RUNGS)
"""The dial of ``--quick`` (the laboratory's quick scale sets the prompts and seeds)."""
FULL_DIAL = DialConfig(_RUNGS)
"""The dial at full scale (the same rungs on the full laboratory's prompts and seeds)."""


def _nu(ms: Measurement) -> dict[str, float]:
    """nu_1 and nu_KL of a measured policy: mean and max over the held-out prompts."""
    return {"nu_1_mean": float(np.mean(ms.l1)), "nu_1_max": float(np.max(ms.l1)),
            "nu_kl_mean": float(np.mean(ms.kl_gap)), "nu_kl_max": float(np.max(ms.kl_gap))}


def _row(lab: Lab, rung: Rung, setting: Setting, method: str, seed: int, outcome: Outcome, ms: Measurement,
         seconds: float, nu: dict[str, float] | None = None) -> dict[str, object]:
    """One run's row: the laboratory's run-table columns plus the dial's (module docstring)."""
    opt, lam_train = lab.optima[setting.name]
    b = np.array(setting.thresholds)
    achieved = ms.improvements @ opt.prob.prompt_weights
    nu = _nu(ms) if nu is None else nu
    row: dict[str, object] = {
        "run_id": f"{method}-{setting.name}-seed{seed}", "rung": rung.name, "policy_class": rung.class_name,
        "fit": rung.fit.value, "budget": rung.budget, "method": method, "setting": setting.name, "seed": seed,
        "iterations": rung.caid_iterations if method in CAID else 0,
        **nu, "nu": max(nu["nu_1_max"], nu["nu_kl_max"]),
    }  # fmt: skip
    lam = ms.lam
    attenuations = attenuation(achieved, ms.tilt_improvements)
    for i in range(len(b)):
        suffix = "" if i == 0 else f"_{i + 1}"
        row.update({
            f"b_{i + 1}": b[i], f"achieved_{i + 1}": achieved[i], f"improvement_{i + 1}": achieved[i],
            f"tilt_improvement_{i + 1}": ms.tilt_improvements[i],
            f"lam_error{suffix}": ms.tilt_improvements[i] - b[i],
            f"policy_error{suffix}": achieved[i] - ms.tilt_improvements[i], f"attenuation{suffix}": attenuations[i],
            f"lam_{i + 1}": np.nan if lam is None else lam[i], f"lam_star_{i + 1}": opt.solution.lam[i],
            f"lam_star_train_{i + 1}": lam_train[i], f"lam_final_{i + 1}": outcome.trajectory[-1, i],
        })  # fmt: skip
    row.update({
        "reward": float(ms.reward @ opt.prob.prompt_weights), "kl": float(ms.kl @ opt.prob.prompt_weights),
        "objective": ms.objective, "u_opt": ms.u_opt, "r_opt": ms.r_opt, "l1_to_pi_star": ms.l1_to_pi_star,
        "dual_value": ms.dual_value, "lagrangian": ms.lagrangian,
        "dual_minus_lagrangian": ms.dual_value - ms.lagrangian,
        "eps_app": max(ms.dual_value - ms.lagrangian, 0.0) if lam is not None else np.nan,
        "tilt_u_opt": float(np.linalg.norm(ms.tilt_slacks - opt.solution.slacks)) if lam is not None else np.nan,
        "second_moment": outcome.second_moment, "fit_iterations": outcome.fit_iterations,
        "converged": outcome.converged, "seconds": seconds,
    })  # fmt: skip
    row["reward_improvement"] = row["reward"]
    return row


def _save(folder: Path, row: dict[str, object], ms: Measurement, trajectory: np.ndarray) -> None:
    atomic_savez(folder / f"{row['run_id']}.npz", improvements=ms.improvements, reward=ms.reward, kl=ms.kl,
                 trajectory=trajectory)
    write_atomic(folder / f"{row['run_id']}.json", json.dumps(row, default=float))


def _rung_runs(rlab: RungLab, rung: Rung, folder: Path, progress: bool) -> list[dict]:
    """Obtain, measure and save every run of ``rung`` not finished yet; a seed-free policy is obtained once."""
    from tqdm.auto import tqdm

    lab = rlab.lab
    jobs = [(s, method, seed) for s in lab.settings for method in rung.methods(s) for seed in lab.config.seeds]
    rows, shared = [], {}
    for s, method, seed in tqdm(jobs, desc=f"nu dial: {rung.name}", disable=not progress, leave=False):
        run_id = f"{method}-{s.name}-seed{seed}"
        done = _load_done(folder, run_id)
        if done is not None:
            rows.append(done)
            continue
        t0 = time.perf_counter()
        key = (s.name, method) if rung.seed_free(method) else None
        if key in shared:
            outcome, ms = shared[key]
        else:
            outcome = rlab.obtain(rung, s, method, seed)
            ms = measure(rlab.held_out(s), outcome.held_out, outcome.lam)
            if key is not None:
                shared[key] = outcome, ms
        row = _row(lab, rung, s, method, seed, outcome, ms, time.perf_counter() - t0)
        eta = np.atleast_2d(rlab.eta(rung, s)) if method in CAID else np.zeros((1, 1))
        row["eta"], row["preconditioned"] = float(np.linalg.eigvalsh(eta)[-1]), len(eta) > 1
        _save(folder, row, ms, outcome.trajectory)
        rows.append(row)
    return rows


def _laboratory_runs(rlab: RungLab, rung: Rung, folder: Path) -> list[dict]:
    """The laboratory's own runs (DPO in its class at its budget), re-measured for the dial's columns.

    The laboratory keeps no trained policy, so its per-prompt arrays and rows are read back (the arrays are
    copied); the tilt at each run's lambda is computed here. Its controls: pi_ref in every setting, and its
    DPO_h run (trained once, at the first setting) in every single-constraint setting.
    """
    lab = rlab.lab
    rows = []
    first = lab.settings[0].name
    dpo_h = {seed: _load_done(lab.out / "runs", f"dpo_h-{first}-seed{seed}") for seed in lab.config.seeds}
    for s in lab.settings:
        reference = measure(rlab.held_out(s), np.exp(lab.ref_eval), None)
        for seed in lab.config.seeds:
            rows.append(_row(lab, rung, s, REFERENCE, seed, Outcome(np.exp(lab.ref_eval), None,
                                                                    np.zeros((1, len(s.utilities))), 0.0),
                             reference, 0.0))
            rows[-1]["eta"], rows[-1]["preconditioned"] = 0.0, False
            _save(folder, rows[-1], reference, np.zeros((1, len(s.utilities))))
        methods = [m for m in rung.methods(s) if m != REFERENCE]
        for method in methods:
            for seed in lab.config.seeds:
                source = f"{method}-{s.name}-seed{seed}"
                done = _load_done(lab.out / "runs", source)
                if method == Arm.DPO_H.value and len(s.utilities) == 1 and dpo_h[seed] is not None:
                    source, done = dpo_h[seed]["run_id"], dpo_h[seed]
                if done is None:
                    continue
                rows.append(_laboratory_row(rlab, rung, s, method, seed, done, lab.out / "runs" / f"{source}.npz"))
                shutil.copyfile(lab.out / "runs" / f"{source}.npz", folder / f"{rows[-1]['run_id']}.npz")
    return rows


def _laboratory_row(rlab: RungLab, rung: Rung, s: Setting, method: str, seed: int, done: dict, arrays: Path) -> dict:
    """A laboratory run's dial row from its saved row and arrays, with the tilt at its lambda computed here."""
    lab = rlab.lab
    m = len(s.utilities)
    lam = np.array([done[f"lam_{i + 1}"] for i in range(m)], float)
    with np.load(arrays, allow_pickle=False) as data:
        improvements, reward, kl, trajectory = data["improvements"], data["reward"], data["kl"], data["trajectory"]
    tilt = tilt_quantities(rlab.held_out(s), lam)
    nan_x = np.full(len(kl), np.nan)
    ms = Measurement(
        improvements=improvements, reward=reward, kl=kl, objective=float(done["objective"]),
        slacks=np.full(m, np.nan), u_opt=float(done["u_opt"]), r_opt=float(done["r_opt"]),
        l1_to_pi_star=float(done["l1_to_pi_star"]), lam=lam, tilt_improvements=tilt.improvements,
        tilt_slacks=tilt.slacks, tilt_objective=tilt.objective, l1=nan_x, kl_gap=nan_x,
        dual_value=float(done["dual_value"]), lagrangian=float(done["lagrangian"]),
    )  # fmt: skip
    nu = {"nu_1_mean": float(done["l1_to_pi_lam"]), "nu_1_max": float(done["nu_1"]), "nu_kl_mean": np.nan,
          "nu_kl_max": float(done["nu_kl"])}
    outcome = Outcome(np.empty(0), lam, trajectory, _second_moment(lab, method, trajectory))
    row = _row(lab, rung, s, method, seed, outcome, ms, float(done["seconds"]), nu)
    row["eta"] = lab.config.training.dual_step_size if method in CAID else 0.0
    row["preconditioned"] = False
    return row


def _second_moment(lab: Lab, method: str, trajectory: np.ndarray) -> float:
    """S^2 of a laboratory CAID run, from its lambda trajectory: mean |(lambda(t) - lambda(t+1)) / eta|^2.

    Exact where no multiplier was clipped at 0 by the projection (a clipped step underestimates |u|).
    """
    if method not in CAID or len(trajectory) < 2:
        return 0.0
    steps = np.diff(trajectory, axis=0) / lab.config.training.dual_step_size
    return float(np.mean((steps**2).sum(axis=1)))


def _tightened_dual(opt: bounds.ExactOptimum, nu: float) -> np.ndarray | None:
    """lambda*_nu of :func:`theory.bounds.tightened_dual` (thresholds b + M nu), or None if infeasible (A4 fails).

    The same solve warm-started at lambda*, after the necessary check b_i + M nu < max improvement_i.
    """
    tightened = opt.prob.thresholds + opt.M * nu
    if np.any(tightened >= opt.prob.max_improvements):
        return None
    try:
        return solve_dual(opt.prob.with_thresholds(tightened), opt.solution.lam, return_policy=False).lam
    except InfeasibleProblemError:
        return None


def theorem_columns(lab: Lab, table: pd.DataFrame) -> pd.DataFrame:
    """Theorem 6 (CAID) and Theorem 4 (one-shot at lambda*) per run of one rung (module docstring).

    Adds ``nu_bar``, ``theorem``, ``u_opt_bound``, ``r_opt_bound``, ``u_nonvacuous``, ``r_nonvacuous`` and
    ``hypotheses`` (which assumption failed, or what stands in for one).
    """
    out = table.copy()
    for column in ("u_opt_bound", "r_opt_bound", "nu_bar"):
        out[column] = np.nan
    out["theorem"], out["hypotheses"] = "", ""
    out["u_nonvacuous"], out["r_nonvacuous"] = False, False
    for s in lab.settings:
        rows = out["setting"] == s.name
        methods = out["method"].isin([*CAID, Arm.ONE_SHOT_PLUGIN.value, Arm.ONE_SHOT_EXACT.value, ORACLE])
        covered = rows & methods
        if not covered.any():
            continue
        opt = lab.optima[s.name][0]
        nu_bar = float(out.loc[covered, "nu"].max())
        reference = out[rows & (out["method"] == REFERENCE)]
        ref_u = float(reference["u_opt"].iloc[0]) if len(reference) else np.inf
        ref_r = float(reference["r_opt"].iloc[0]) if len(reference) else np.inf
        notes = [f"A3: nu_bar = {nu_bar:.3g}, the largest nu of this rung's runs in {s.name}"]
        lam_nu = _tightened_dual(opt, nu_bar)
        if lam_nu is None:
            notes.append(f"A4 fails: the M nu_bar-tightened problem is infeasible (M = {opt.M:.3g})")
        if not opt.mu_D > 0:
            notes.append("A5 fails: mu_D = 0")
        out.loc[covered, "nu_bar"] = nu_bar
        out.loc[covered, "hypotheses"] = "; ".join(notes)
        if lam_nu is None or not opt.mu_D > 0:
            continue
        beta = lab.config.training.beta
        for index in out.index[rows & out["method"].isin([*CAID, ORACLE])]:
            run = out.loc[index]
            if bool(run["preconditioned"]):
                out.loc[index, "hypotheses"] += "; the dual step is preconditioned (not Algorithm 1's scalar eta)"
                continue
            lam = np.array([run[f"lam_{i + 1}"] for i in range(len(s.utilities))], float)
            if run["method"] == ORACLE:
                u, r = bounds.theorem4_one_shot(opt.M, beta, nu_bar, lam, opt.L_D)
                theorem = "Theorem 4"
            else:
                u, r = bounds.theorem6_practical(opt.M, beta, nu_bar, lam, lam_nu, opt.L_D, opt.mu_D, float(run["eta"]),
                                                 float(run["second_moment"]), float(run["eps_app"]))
                theorem = "Theorem 6"
            out.loc[index, ["u_opt_bound", "r_opt_bound", "theorem"]] = [u, r, theorem]
            out.loc[index, ["u_nonvacuous", "r_nonvacuous"]] = [bool(u < ref_u), bool(r < ref_r)]
    return out


def _share(source: Path, target: Path, rung: Rung) -> None:
    """Copy the finished non-CAID runs of a rung that differs from ``rung`` in CAID's T only."""
    for path in sorted(source.glob("*.json")):
        done = _load_done(source, path.stem)
        if done is None or done["method"] in CAID or _load_done(target, path.stem) is not None:
            continue
        shutil.copyfile(source / f"{path.stem}.npz", target / f"{path.stem}.npz")
        write_atomic(target / path.name, json.dumps({**done, "rung": rung.name}, default=float))


def _run_rung(rlab: RungLab, rung: Rung, base: Path | None, progress: bool) -> pd.DataFrame:
    """Run (or resume) one rung into ``nu_dial/<rung>/`` and return its table with the theorem columns."""
    lab = rlab.lab
    folder = lab.out / DIAL_DIR / rung.name
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    if (lab.out / "world.json").is_file():  # the claims read their clusters from it, as the laboratory's do
        shutil.copyfile(lab.out / "world.json", folder / "world.json")
    if base is not None:
        _share(base, folder / "runs", rung)
    if rung.from_laboratory:
        rows = _laboratory_runs(rlab, rung, folder / "runs")
    else:
        rows = _rung_runs(rlab, rung, folder / "runs", progress)
    table = theorem_columns(lab, pd.DataFrame(rows))
    write_atomic(folder / "runs.csv", table.to_csv(index=False))
    rung_verdicts(folder, rung, table)
    return table


_WORKER: dict[str, object] = {}


def _worker(task: tuple[int, str | None]) -> pd.DataFrame:
    """A forked worker: one rung of the dial the parent left in ``_WORKER``."""
    import torch
    from threadpoolctl import threadpool_limits

    # One process per core: torch's pool and numpy's BLAS pool (sized for the whole machine in the parent) would
    # put two spinning threads on each core; measured 2-3x slower fits on 2 cores.
    torch.set_num_threads(1)
    threadpool_limits(1)
    index, base = task
    rlab, dial = _WORKER["rlab"], _WORKER["dial"]
    return _run_rung(rlab, dial.rungs[index], None if base is None else Path(base), False)


def run_dial(lab: Lab, dial: DialConfig = QUICK_DIAL, *, progress: bool = True, workers: int = 2) -> pd.DataFrame:
    """Run (or resume) every rung of ``dial`` in ``lab.out`` and write ``nu_dial_runs.csv``; returns that table.

    Rungs run in ``workers`` forked processes (the dial's work is single-threaded numpy; 1 runs in-process), the
    rungs that share another's non-CAID runs (:attr:`Rung.base`) after it. The ``from_laboratory`` rung reads the
    laboratory's runs, so :func:`analysis.next_token.laboratory.train_runs` must have finished first.
    """
    import multiprocessing

    from tqdm.auto import tqdm

    rlab = RungLab(lab, dial.fit_tol)
    rlab.warm()
    variants = {i: dial.variant_of(rung) for i, rung in enumerate(dial.rungs)}
    phases = [[(i, None) for i, variant in variants.items() if variant is None],
              [(i, str(lab.out / DIAL_DIR / variant / "runs")) for i, variant in variants.items() if variant]]
    tables: dict[int, pd.DataFrame] = {}
    bar = tqdm(total=len(dial.rungs), desc="nu dial", disable=not progress)
    for phase in phases:
        if workers > 1 and len(phase) > 1:
            _WORKER.update(rlab=rlab, dial=dial)
            with multiprocessing.get_context("fork").Pool(min(workers, len(phase))) as pool:
                for (i, _), table in zip(phase, pool.imap(_worker, phase), strict=True):
                    tables[i] = table
                    bar.update()
            _WORKER.clear()
        else:
            for i, base in phase:
                tables[i] = _run_rung(rlab, dial.rungs[i], None if base is None else Path(base), progress)
                bar.update()
    bar.close()
    out = pd.concat([tables[i] for i in range(len(dial.rungs))], ignore_index=True)
    write_atomic(lab.out / RUNS_FILE, out.to_csv(index=False))
    return out
