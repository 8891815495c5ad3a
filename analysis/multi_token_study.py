"""The multi-token study: the paper's Fig. 1 / Fig. 2 claims on SmolLM2, each with its verdict, size and power.

SmolLM2-135M-Instruct in completion mode continues review openings (``configs/reviews_study.toml``): reward
r = positivity (VADER), constrained utility g_1 = simplicity, and for the two-constraint runs (full scale) g_2 =
relevance. Every score is in sigma units (``scorers.standardize``) and every threshold is a fraction of the plug-in
maximum M (``scorers.threshold_units = 'plugin_fraction'``). Each seed has its own split and reference pool
(``data.seed`` = the seed), so b, M and the plug-in lambda vary with the seed as training does, and the
per-prompt arrays are ``(seeds, prompts of the review grid)`` with NaN where a prompt is not held out at a seed.
Prompts share an opener (16 openers x 24 subjects, :mod:`llm.prompts.reviews`): the opener is the cluster of
:mod:`analysis.crossed_anova`.

Per held-out prompt x (one policy sample, the seed's reference pool mean), in sigma units: e_i(x) = g_i(policy) -
mean_ref g_i(x) - b_i, and the reward improvement r(policy) - mean_ref r(x). The claims, their margins and tests
are :mod:`analysis.claims` (shared with the next-token laboratory); every row gets its size, power and coverage
simulated at the components the run measured, and Holm's correction over the table (:mod:`analysis.decisions`).
The negative controls pi_ref (``reference``) and DPO_h (``dpo_h``, reward only) go through the same pipeline and
the same tracking rows. The trade-off row's stated effect is the exact tilt's reward cost of the constraint,
estimated on the held-out reference pools (:func:`analysis.claims.tilt_reward_cost`).

Each run's attenuation (:mod:`analysis.tilt_attenuation`): its achieved improvement of g_i over pi_ref divided by
the improvement the exact tilt pi*(lambda) at the run's own lambda would achieve, the latter estimated on the seed's
held-out reference pool by self-normalised importance sampling (:func:`run_attenuation`).

``python -m analysis.multi_token_study --out RESULTS/multi_token [--scale quick|full]`` runs what is missing
(each run resumes; a finished one is reused), then writes ``points.csv`` (one row per run, with its attenuation
and the weights' effective sample sizes), ``violations.csv``
(per method and constraint: the share of held-out prompts that miss b, 10% / 90% quantiles) and, last,
``verdicts.csv`` (one row per claim). The design and what it traded for time: docs/reproduction.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.claims import (
    BOTH_MET,
    ArmData,
    ClaimRow,
    claims_table,
    single_constraint_rows,
    tilt_reward_cost,
    two_constraint_rows,
    violation_rows,
)
from analysis.decisions import NotTestable
from analysis.lagrangian_gap import run_beta
from analysis.tilt_attenuation import attenuation, tilt_improvement
from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.config import ConfigError, RunConfig
from llm.config_files import load_config
from llm.methods import METHODS
from llm.methods import method as method_spec
from llm.prompts import PromptSet, prompt_set, split
from llm.prompts.reviews import REVIEW_SUBJECTS, review_grid
from llm.run_files import write_atomic
from llm.run_schema import RunSummary, load_eval_scores
from llm.sweep import SweepRun, run_sweep, sweep_runs
from llm.threads import add_threads_argument, set_threads

__all__ = ["SCALES", "RunAttenuation", "StudyDesign", "arm_dirs", "load_arms", "load_run", "points", "run_attenuation",
           "run_study", "tilt_multipliers", "verdicts", "write_results"]  # fmt: skip

CONFIG = "configs/reviews_study.toml"
POINTS_FILE = "points.csv"
VIOLATIONS_FILE = "violations.csv"
VERDICTS_FILE = "verdicts.csv"
CAID, ONE_SHOT = "caid", "one_shot"
RELEVANCE_OUT_OF_REACH = (
    "relevance is out of the top-2-layer policy's reach: CAID missed it by far more than the margin in the pilot and "
    "in the 320-prompt run (docs/reproduction.md); the next-token laboratory tests Fig. 2"
)


@dataclasses.dataclass(frozen=True)
class StudyDesign:
    """What the study runs.

    Attributes:
        config: The run configuration (single constraint, g_1 = simplicity).
        seeds: Training seeds; each seed has its own split and reference pool and runs CAID and one-shot at every
            fraction and every control once.
        fractions: Thresholds b_1 as fractions of g_1's plug-in maximum, ascending.
        controls: Negative controls (threshold-free methods, judged against every fraction's b).
        second_utility: g_2 of the two-constraint runs.
        pairs: ``(b_1, b_2)`` fractions of the two-constraint CAID runs (every seed); none at quick scale.
        testable_second: Whether g_2 is within the policy class's reach (else its row is "not testable").
        baselines: Further DPO baselines (context for the figure, no claim).
        overrides: ``table.key=value`` overrides of ``config`` (sizes).
    """

    config: str = CONFIG
    seeds: tuple[int, ...] = (0, 1, 2)
    fractions: tuple[float, ...] = (0.25, 0.75)
    controls: tuple[str, ...] = ("reference", "dpo_h")
    second_utility: str = "relevance"
    pairs: tuple[tuple[float, float], ...] = ()
    testable_second: bool = False
    baselines: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()

    def run_config(self, seed: int, two_constraints: bool = False) -> RunConfig:
        """The configuration of ``seed``'s runs: the seed's own split and reference pool (``data.seed = seed``)."""
        extra = [f"seed={seed}", f"data.seed={seed}"]
        if two_constraints:
            base = load_config(self.config, self.overrides)
            utilities = [*base.scorers.utilities, self.second_utility]
            extra += [f"scorers.utilities={utilities!r}".replace("'", '"'), f"scorers.thresholds={list(self.pairs[0])}"]
        return load_config(self.config, [*self.overrides, *extra])

    def single_runs(self) -> list[SweepRun]:
        """CAID and one-shot at every fraction, then every control and baseline once (at the first fraction)."""
        once = [SweepRun(m, (self.fractions[0],)) for m in (*self.controls, *self.baselines)]
        return [*sweep_runs((CAID, ONE_SHOT), [[f] for f in self.fractions]), *once]

    def two_runs(self) -> list[SweepRun]:
        """Two-constraint CAID at every pair."""
        return sweep_runs((CAID,), [list(p) for p in self.pairs])


SCALES = {
    # Quick: 3 seeds x 192 held-out prompts (64 train, 256 of the 384 prompts drawn per seed), b = 0.25 M and
    # 0.75 M, pi_ref and DPO_h as controls, no two-constraint run; full: 5 seeds, three thresholds (the slope test),
    # the two-constraint run. What this traded, and the simulated size and power per row: docs/reproduction.md.
    "quick": StudyDesign(),
    "full": StudyDesign(
        seeds=(0, 1, 2, 3, 4), fractions=(0.25, 0.5, 0.75), pairs=((0.25, 0.5),), baselines=("dpo_g",),
        overrides=("data.limit=384", "data.test_fraction=0.5", "caid.dual_prompts=96"),
    ),
}


def _single_dir(out: Path, seed: int) -> Path:
    return out / "single" / f"seed{seed}"


def _two_dir(out: Path, seed: int) -> Path:
    return out / "two_constraints" / f"seed{seed}"


def run_study(design: StudyDesign, out: Path, progress: bool = True) -> None:
    """Run (or resume) every run of ``design`` under ``out``: ``single/seed<s>/`` and ``two_constraints/seed<s>/``."""
    for seed in design.seeds:
        run_sweep(design.run_config(seed), design.single_runs(), _single_dir(out, seed), progress)
        if design.pairs:
            run_sweep(design.run_config(seed, two_constraints=True), design.two_runs(), _two_dir(out, seed), progress)


# ----------------------------------------------------------------------------------------------------------------
# reading the runs back
# ----------------------------------------------------------------------------------------------------------------


def held_out_prompts(config: RunConfig) -> tuple[str, ...]:
    """The held-out prompts of a run of ``config``, in its ``prompt_index`` order (as :mod:`llm.pipeline` splits)."""
    limit = config.data.limit or None
    sets = [prompt_set(spec, limit, config.data_seed) for spec in config.data.prompts]
    merged = PromptSet("+".join(s.name for s in sets), tuple(p for s in sets for p in s.prompts))
    return split(merged, config.data.test_fraction, config.data_seed)[1].prompts


def prompt_units(design: StudyDesign) -> tuple[tuple[str, ...], np.ndarray]:
    """``(unit texts, cluster labels)``: every prompt held out at some seed, labelled by its review opener.

    A prompt outside the review grid (another prompt source) is its own cluster.
    """
    grid = {text: i // len(REVIEW_SUBJECTS) for i, text in enumerate(review_grid())}
    texts = sorted({p for s in design.seeds for p in held_out_prompts(design.run_config(s))})
    labels = np.array([grid.get(t, len(grid) + i) for i, t in enumerate(texts)])
    return tuple(texts), labels


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run's per-prompt gains (sigma units) placed on the study's units (NaN: not held out)."""

    thresholds: np.ndarray
    gains: np.ndarray
    reference_pool: np.ndarray


def _standardised_summary(run: Path) -> RunSummary:
    """``run/summary.json``, refused unless its scores are in sigma units (beta, b and lambda are then too)."""
    summary = RunSummary.read(run)
    if not summary.score_scales:
        raise ValueError(f"{run}: scores are not standardised (summary.json has no score_scales); rerun the study")
    return summary


def load_run(run: Path, config: RunConfig, units: dict[str, int]) -> Run:
    """A finished run's thresholds, ``(scorers, units)`` gains (policy mean - reference mean) and reference pool.

    Raises:
        ValueError: If the run is unfinished or malformed, not in sigma units, or its held-out prompts are not
            the configuration's (the message names the run directory).
    """
    summary = _standardised_summary(run)
    scores = load_eval_scores(run)
    prompts = held_out_prompts(config)
    if len(scores.prompt_index) and scores.prompt_index.max() >= len(prompts):
        raise ValueError(f"{run}: held-out prompt indices beyond the configuration's {len(prompts)} prompts; rerun it")
    gains = np.full((scores.policy.shape[0], len(units)), np.nan)
    columns = [units[prompts[i]] for i in scores.prompt_index]
    gains[:, columns] = scores.policy.mean(axis=2) - scores.reference.mean(axis=2)
    return Run(np.asarray(summary.thresholds), gains, scores.reference)


def tilt_multipliers(run: Path) -> tuple[float, np.ndarray]:
    """``(w, lambda)`` of the composite ``w r + lambda^T g`` the run's evaluated policy was trained on.

    lambda is ``summary.json``'s ``lambda_last``: each iteration takes its dual step before its primal step
    (:func:`llm.caid.caid_iteration`) and the summary records the multipliers after the last step, so they are those
    the last iterate, the one evaluated (only its weights are kept), was trained at: for CAID the last row of
    ``dual_trajectory.csv``, for one-shot its plug-in lambda, 0 for DPO_h and pi_ref, e_1 for DPO_g. w is the
    method's reward weight (:mod:`llm.methods`: 1, or 0 for DPO_g and pi_ref).

    Raises:
        ValueError: An unstandardised run, a PeCAID run (its lambda weighs implicit rewards, not the pool's
            scores), or a ``lambda_last`` that is not one finite multiplier per threshold (the message names the
            run directory and the field).
    """
    return _multipliers(run, _standardised_summary(run))


def _multipliers(run: Path, summary: RunSummary) -> tuple[float, np.ndarray]:
    if summary.constraint_units != "scores":
        raise ValueError(f"{run}: summary.json field 'constraint_units' is {summary.constraint_units!r}: its lambda "
                         "weighs implicit rewards, not the reference pool's scores, so the pool's tilt does not apply")
    lam = np.asarray(summary.lambda_last, dtype=np.float64)
    if lam.shape != (len(summary.thresholds),) or not np.all(np.isfinite(lam)):
        raise ValueError(f"{run}: summary.json field 'lambda_last' must hold one finite multiplier per threshold "
                         f"({len(summary.thresholds)}), got {list(summary.lambda_last)}; rerun the run")
    return method_spec(summary.method).reward_weight, lam


@dataclasses.dataclass(frozen=True)
class RunAttenuation:
    """One run's improvement over pi_ref against the exact tilt's at its own multipliers (sigma units).

    Attributes:
        reward_weight: w of the composite ``w r + lambda^T g`` (:func:`tilt_multipliers`).
        lam: ``(m,)`` the multipliers of the composite.
        achieved: ``(m,)`` the run's held-out improvement of each g_i over pi_ref (``summary.json``).
        tilt: ``(m,)`` the SNIS estimate of pi*(lambda)'s improvement on the seed's held-out reference pool.
        attenuation: ``(m,)`` achieved / tilt (NaN where tilt is 0).
        ess: ``(X,)`` the Kish effective sample size of the importance weights per held-out prompt (1 to K).
    """

    reward_weight: float
    lam: np.ndarray
    achieved: np.ndarray
    tilt: np.ndarray
    attenuation: np.ndarray
    ess: np.ndarray


def run_attenuation(run: Path) -> RunAttenuation:
    """The run's attenuation ``a_i = achieved_i / (E_x E_{pi*(lambda)} g_i - E_x E_{pi_ref} g_i)`` per utility.

    pi*(lambda) ~ pi_ref exp((w r + lambda^T g) / beta) is the exact maximiser of the composite the run was
    trained on (:func:`tilt_multipliers`); its improvement is estimated on the K responses of pi_ref per held-out
    prompt in the run's ``eval_scores.csv`` (the seed's held-out reference pool, the one ``achieved`` is measured
    against) with the self-normalised weights ``w_k ~ exp((w r + lambda^T g)(x, y_k) / beta)``:
    ``sum_k w_k g_i(x, y_k) / sum_k w_k - mean_k g_i(x, y_k)``, averaged over the prompts
    (:func:`analysis.tilt_attenuation.tilt_improvement`). Scores, lambda and beta are all in sigma units, as in
    :func:`analysis.claims.tilt_reward_cost`.

    Args:
        run: A finished, standardised run directory (beta is its own, ``config.json``'s ``caid.beta``).

    Raises:
        ValueError: As :func:`tilt_multipliers`, or the scorers of ``eval_scores.csv`` are not ``summary.json``'s.
        llm.run_files.RunFileError: ``config.json`` is missing or has no positive ``config.caid.beta``.
    """
    summary, scores = _standardised_summary(run), load_eval_scores(run)
    weight, lam = _multipliers(run, summary)
    if scores.scorers != tuple(summary.improvements) or len(scores.scorers) != 1 + len(lam):
        raise ValueError(f"{run}: eval_scores.csv's scorers {list(scores.scorers)} are not summary.json's "
                         f"'improvements' {list(summary.improvements)} (reward, then one per threshold); rerun it")
    pool = scores.reference
    estimate = tilt_improvement(weight * pool[0], pool[1:], lam, run_beta(run))
    # A composite that is identically 0 (pi_ref, which is not trained) makes pi*(lambda) pi_ref itself: its
    # improvement is exactly 0 and the ratio undefined, not the SNIS sum's rounding residue divided into noise.
    tilt = estimate.improvement if weight != 0 or lam.any() else np.zeros_like(estimate.improvement)
    achieved = np.array([summary.improvements[name]["mean"] for name in scores.scorers[1:]])
    return RunAttenuation(weight, lam, achieved, tilt, attenuation(achieved, tilt), estimate.ess)


def arm_dirs(out: Path, design: StudyDesign, name: str, two: bool = False) -> list[Path]:
    """One arm's run directories, in seed order (``two``: the two-constraint runs)."""
    folder = _two_dir if two else _single_dir
    return [folder(out, s) / name for s in design.seeds]


def load_arms(out: Path, design: StudyDesign) -> tuple[dict[tuple[str, float], ArmData], np.ndarray, np.ndarray]:
    """``((method, fraction) -> ArmData, cluster labels, reference pools)`` of the single-constraint runs.

    A control's arm at a fraction is its one run judged against that fraction's b of the same seed. The pools are
    ``(2, prompts, samples)`` reward and g_1 scores of every seed's held-out reference pool, stacked.
    """
    texts, labels = prompt_units(design)
    units = {t: i for i, t in enumerate(texts)}
    runs: dict[tuple[str, float], list[Run]] = {}
    for seed in design.seeds:
        config = design.run_config(seed)
        for item in design.single_runs():
            runs.setdefault((item.method, item.thresholds[0]), []).append(
                load_run(_single_dir(out, seed) / item.name, config, units))
    arms = {}
    for (method, f), seeds in runs.items():
        gains = np.stack([r.gains for r in seeds], axis=1)  # (scorers, R, U)
        arms[method, f] = ArmData(np.stack([r.thresholds for r in seeds]), gains[1:], gains[0])
    first = design.fractions[0]
    for method in (*design.controls, *design.baselines):
        for f in design.fractions:
            arms[method, f] = arms[method, first].at(arms[CAID, f].thresholds)
    pools = np.concatenate([r.reference_pool[:2] for r in runs[CAID, first]], axis=1)
    return arms, labels, pools


def points(out: Path, design: StudyDesign) -> pd.DataFrame:
    """One row per finished run: method, fractions, seed, b_i, mean improvements, KL, lambda (sigma units).

    Each row also has the run's attenuation (:func:`run_attenuation`): ``tilt_improvement_i`` (the SNIS estimate of
    pi*(lambda)'s improvement of g_i at the run's ``lambda_last``), ``attenuation_i = g_i_improvement /
    tilt_improvement_i`` (NaN for pi_ref, whose tilt is itself), and ``ess_min``, ``ess_median``: the smallest and
    the median over held-out prompts of the weights' Kish effective sample size (1 to the pool's K).
    """
    rows = []
    for two in (False, True):
        if two and not design.pairs:
            continue
        for seed in design.seeds:
            for item in design.two_runs() if two else design.single_runs():
                run = (_two_dir if two else _single_dir)(out, seed) / item.name
                summary = RunSummary.read(run)
                improvements = [v["mean"] for v in summary.improvements.values()]
                measured = run_attenuation(run)
                rows.append({
                    "method": item.method, "constraints": 2 if two else 1, "seed": seed,
                    "fractions": "/".join(f"{f:g}" for f in item.thresholds),
                    **{f"b_{i + 1}": b for i, b in enumerate(summary.thresholds)},
                    "reward_improvement": improvements[0],
                    **{f"g_{i + 1}_improvement": v for i, v in enumerate(improvements[1:])},
                    "kl_estimate": summary.kl_estimate,
                    **{f"lambda_one_shot_{i + 1}": v for i, v in enumerate(summary.lambda_one_shot)},
                    **{f"lambda_last_{i + 1}": v for i, v in enumerate(summary.lambda_last)},
                    **{f"tilt_improvement_{i + 1}": v for i, v in enumerate(measured.tilt)},
                    **{f"attenuation_{i + 1}": v for i, v in enumerate(measured.attenuation)},
                    "ess_min": float(measured.ess.min()), "ess_median": float(np.median(measured.ess)),
                })  # fmt: skip
    return pd.DataFrame(rows)


def _setting(f: float, arm: ArmData) -> str:
    return f"b = {f:g} M = {arm.b[0]:.3f} sigma"


def _rows(out: Path, design: StudyDesign) -> tuple[list[ClaimRow], dict[tuple[str, str], ArmData]]:
    """The claim rows and the arms (for the violation table), from the finished runs."""
    arms, labels, pools = load_arms(out, design)
    names = {f: _setting(f, arms[CAID, f]) for f in design.fractions}
    b_mid = float(np.mean([arms[CAID, f].b[0] for f in design.fractions]))
    beta = design.run_config(design.seeds[0]).caid.beta
    cost = tilt_reward_cost(pools[0], pools[1], b_mid, beta)
    rows = single_constraint_rows(arms, design.fractions, labels, caid=(CAID,), one_shot=(ONE_SHOT,),
                                  controls=design.controls, tilt_cost=cost, setting=names)  # fmt: skip
    by_setting = {(m, names[f]): a for (m, f), a in arms.items() if m not in design.baselines}
    for pair in design.pairs:
        texts, two_labels = prompt_units(design)
        units = {t: i for i, t in enumerate(texts)}
        item = SweepRun(CAID, pair)
        runs = [load_run(path, design.run_config(s, True), units)
                for s, path in zip(design.seeds, arm_dirs(out, design, item.name, two=True), strict=True)]
        gains = np.stack([r.gains for r in runs], axis=1)
        arm = ArmData(np.stack([r.thresholds for r in runs]), gains[1:], gains[0])
        setting = "b = (" + ", ".join(f"{f:g} M = {b:.3f}" for f, b in zip(pair, arm.b, strict=True)) + ")"
        two = two_constraint_rows(arm, setting, CAID, two_labels)
        if not design.testable_second:
            two[1] = ClaimRow(two[1].claim, setting, CAID, NotTestable("non-inferiority", RELEVANCE_OUT_OF_REACH,
                                                                      estimate=float(np.nanmean(arm.errors(1)))))
        rows += two
        by_setting[CAID, setting] = arm
    if not design.pairs:
        rows.append(ClaimRow(BOTH_MET.format(i=2), "not run at this scale", CAID, NotTestable(
            "non-inferiority", RELEVANCE_OUT_OF_REACH + "; not run at quick scale")))
    return rows, by_setting


def verdicts(out: Path, design: StudyDesign) -> pd.DataFrame:
    """Every claim of :mod:`analysis.claims` as a table, one row per claim, with size, power and coverage."""
    rows, _ = _rows(out, design)
    return claims_table(rows)


def write_results(out: Path, design: StudyDesign) -> pd.DataFrame:
    """Write ``points.csv``, ``violations.csv``, then ``verdicts.csv`` (last: its presence means the study ended)."""
    write_atomic(out / POINTS_FILE, points(out, design).to_csv(index=False))
    rows, arms = _rows(out, design)
    write_atomic(out / VIOLATIONS_FILE, violation_rows(arms).to_csv(index=False))
    frame = claims_table(rows)
    write_atomic(out / VERDICTS_FILE, frame.to_csv(index=False))
    return frame


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: run what is missing, then write the points, the violations and the verdicts."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.multi_token_study",
        description="The multi-token study (Fig. 1 / Fig. 2 claims on SmolLM2), each claim with its size and power.",
    )
    parser.add_argument("--out", type=Path, required=True, help="study folder (resumed if it exists)")
    parser.add_argument("--scale", choices=tuple(SCALES), default="quick", help="sizes (default: quick)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)  # before torch loads
    design = SCALES[args.scale]
    check_out_dir(args.out)
    unknown = sorted({item.method for item in design.single_runs()} - set(METHODS))
    if unknown:
        print(f"error: the design's methods {unknown} are not in the methods registry (llm.methods: "
              f"{', '.join(METHODS)})", file=sys.stderr)
        return 2
    try:
        for seed in design.seeds:  # every configuration is checked before anything runs
            design.run_config(seed)
            if design.pairs:
                design.run_config(seed, two_constraints=True)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    run_study(design, args.out, progress=not args.no_progress)
    frame = write_results(args.out, design)
    print(frame[["claim", "setting", "method", "estimate", "low", "high", "verdict", "size", "power"]].to_string(
        index=False), file=sys.stderr)
    print(f"study: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(args.out / VERDICTS_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
