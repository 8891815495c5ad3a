"""Size, power and coverage of the multi-token study's claims table for a design, before anything runs.

Usage::

    python -m benchmarks.study_precision [--seeds 3 4] [--prompts 192 96] [--seed-variance 0.006 0.0125 0.03]
    python -m benchmarks.study_precision --study RESULTS/multi_token       # the components a finished study measured

Each simulated study draws every arm's per-prompt values from :class:`StudyModel` (variance components per
(seed, prompt), shared between arms with correlation ``rho``), builds the claims table with the study's own row
builder (:func:`analysis.claims.single_constraint_rows`) and applies Holm's correction over it, as
:func:`analysis.decisions.decide` does. Three truths are simulated:

* **alternative**: CAID on b, one-shot short by m(b) at the smallest b and over by m(b) at the largest (the
  paper's pattern), CAID's curve higher by the tilt's reward cost; the controls as they are (pi_ref: e = -b;
  DPO_h: a small loss of g): each row's **power** (replicated under Holm) and the controls' false replications;
* **boundary**: CAID at -m(b) (its tracking margin), one-shot exactly on b, equal curves: the **size** of the
  tracking, short/over, slope and trade-off rows;
* **equidistant**: CAID and one-shot both short by m(b): the size of "closer".

The **coverage** of each tracking and short/over row's 90% interval is counted in every truth. (The crossed
bootstrap with normal quantiles that the previous study used is :func:`bootstrap_variance`, kept for the tests that
show its undercoverage with three seeds.)
The time of a design comes from :data:`PHASE_SECONDS`, measured on this 2-core machine (docs/reproduction.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.claims import CONTROLS, OVER, SHORT, TRACKS, ArmData, margin, single_constraint_rows
from analysis.crossed_anova import estimate
from analysis.decisions import ALPHA, Descriptive, NotTestable, holm
from llm.cli_errors import exit_2_on_user_error

__all__ = ["PHASE_SECONDS", "Design", "StudyModel", "bootstrap_variance", "evaluate", "main", "simulate_arms", "truths"]

OPENERS, SUBJECTS = 16, 24
PHASE_SECONDS = {
    # From the 320-prompt clean-clone run (docs/reproduction.md): reference phase 3 min 59 s of which 2 min 41 s for
    # 1,280 held-out pool samples; CAID 1 min 47 s - 2 min 17 s and one-shot 55 s - 1 min 3 s without evaluation;
    # evaluations 42-56 s for 320 samples.
    "reference_fixed": 78.0, "pool_sample": 0.126, "eval_fixed": 8.0, "eval_sample": 0.126,
    "caid_train": 120.0, "one_shot_train": 60.0, "dpo_train": 60.0,
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class StudyModel:
    """Per-(seed, prompt) variance components of every arm's values, sigma^2, and their sharing between arms.

    Attributes:
        seed: Seed variance of an arm's mean (training randomness and, with a pool per seed, b and lambda).
        opener: Variance of the prompt-template effect on the achieved improvement.
        subject: Variance of the subject effect (shared across openers).
        prompt: Variance of the remaining prompt effect.
        residual: One policy sample's noise.
        pool: The reference pool mean's noise (1 / reference samples), shared by all arms of a seed.
        rho: Correlation of the seed, prompt and residual effects between two arms of one seed (the previous
            study's paired differences had about half the variance of independent arms).
        plugin_max: M in sigma (b = fraction x M, M drawn per seed with ``plugin_max_sd``).
        plugin_max_sd: Seed-to-seed SD of M (a 64-prompt pool per seed).
        tradeoff_slope: Reward change per sigma of g along the tilt's curve (the within-prompt correlation).
    """

    seed: float = 0.0125
    opener: float = 0.01
    subject: float = 0.005
    prompt: float = 0.015
    residual: float = 1.0
    pool: float = 0.25
    rho: float = 0.5
    plugin_max: float = 1.15
    plugin_max_sd: float = 0.03
    tradeoff_slope: float = -0.17


@dataclasses.dataclass(frozen=True)
class Design:
    """What one run of the study does."""

    seeds: int
    held_out: int
    fractions: tuple[float, ...] = (0.25, 0.75)
    controls: tuple[str, ...] = CONTROLS
    two_constraints: bool = False

    def seconds(self) -> float:
        """Expected seconds of the study on this machine (:data:`PHASE_SECONDS`)."""
        p, c = PHASE_SECONDS, self.held_out
        evals = 2 * len(self.fractions) + len(self.controls) + self.two_constraints
        train = len(self.fractions) * (p["caid_train"] + p["one_shot_train"]) + p["caid_train"] * self.two_constraints
        train += p["dpo_train"] * ("dpo_h" in self.controls)
        per_seed = p["reference_fixed"] + 4 * c * p["pool_sample"] + evals * (p["eval_fixed"] + c * p["eval_sample"])
        return self.seeds * (per_seed + train)


def _shared(rng: np.random.Generator, variance: float, rho: float, common: np.ndarray, shape: tuple[int, ...]):
    return np.sqrt(variance) * (np.sqrt(rho) * common + np.sqrt(1 - rho) * rng.standard_normal(shape))


def simulate_arms(model: StudyModel, design: Design, truth: dict[str, dict[float, float]], rewards: dict[str, dict],
                  rng: np.random.Generator) -> tuple[dict[tuple[str, float], ArmData], np.ndarray]:
    """One simulated study: ``((method, fraction) -> ArmData, opener labels)``.

    Args:
        model: The components.
        design: The design.
        truth: ``method -> fraction -> true mean error`` (controls: their own mean improvement under key 0.0).
        rewards: ``method -> fraction -> true mean reward improvement``.
        rng: Random generator.
    """
    r, units = design.seeds, OPENERS * SUBJECTS
    labels = np.repeat(np.arange(OPENERS), SUBJECTS)
    m_s = model.plugin_max * (1 + model.plugin_max_sd / model.plugin_max * rng.standard_normal(r))
    held = np.argsort(np.argsort(rng.random((r, units)), axis=1), axis=1) < design.held_out
    common = {  # shared parts of each effect (one draw per study), per quantity g / r
        q: (rng.standard_normal((r, 1)), rng.standard_normal(OPENERS), rng.standard_normal(SUBJECTS),
            rng.standard_normal(units), rng.standard_normal((r, units)))
        for q in ("g", "r")
    }  # fmt: skip
    pool = {q: np.sqrt(model.pool) * rng.standard_normal((r, units)) for q in ("g", "r")}

    def values(q: str, mean: float, trained: bool = True) -> np.ndarray:
        s, o, u, p, e = common[q]
        seed_var = model.seed if trained else 0.0  # pi_ref has no training randomness
        v = (mean + _shared(rng, seed_var, model.rho, s, (r, 1))
             + np.repeat(_shared(rng, model.opener, model.rho, o, (OPENERS,)), SUBJECTS)[None]
             + np.tile(_shared(rng, model.subject, model.rho, u, (SUBJECTS,)), OPENERS)[None]
             + _shared(rng, model.prompt, model.rho, p, (units,))[None]
             + _shared(rng, model.residual, model.rho, e, (r, units)) - pool[q])  # fmt: skip
        return np.where(held, v, np.nan)

    arms = {}
    for method, by_fraction in truth.items():
        for f in design.fractions:
            b = f * m_s
            if method in design.controls:
                imp = values("g", by_fraction[0.0], trained=method != "reference")
            else:
                imp = values("g", by_fraction[f]) + b[:, None]
            arms[method, f] = ArmData(b[:, None], imp[None], values("r", rewards[method][f], method != "reference"))
        if method in design.controls:  # one policy for every fraction
            first = arms[method, design.fractions[0]]
            for f in design.fractions:
                arms[method, f] = first.at((f * m_s)[:, None])
    return arms, labels


def truths(model: StudyModel, design: Design, kind: str, effect: float) -> tuple[dict, dict]:
    """``(errors, rewards)`` of the simulated truth ``kind`` ("alternative", "boundary", "equidistant")."""
    fr = design.fractions
    b = {f: f * model.plugin_max for f in fr}
    low, high = fr[0], fr[-1]
    if kind == "alternative":
        caid = dict.fromkeys(fr, 0.0)
        span = b[high] - b[low]
        one = {f: -margin(b[low]) + (b[f] - b[low]) / span * (margin(b[low]) + margin(b[high])) for f in fr}
        gap = effect
    elif kind == "boundary":
        caid = {f: -margin(b[f]) for f in fr}
        one = dict.fromkeys(fr, 0.0)
        gap = 0.0
    else:
        caid = one = {f: -margin(b[f]) for f in fr}
        gap = 0.0
    errors = {"caid": caid, "one_shot": one, "reference": {0.0: 0.0}, "dpo_h": {0.0: -0.1}}
    k = model.tradeoff_slope

    def reward(err: dict, shift: float) -> dict:
        return {f: 1.0 + k * (b[f] + err[f]) + shift for f in fr}

    rewards = {"caid": reward(caid, gap), "one_shot": reward(one, 0.0), "reference": dict.fromkeys(fr, 0.0),
               "dpo_h": dict.fromkeys(fr, 1.0)}  # fmt: skip
    return {m: errors[m] for m in ("caid", "one_shot", *design.controls)}, rewards


def bootstrap_variance(values: np.ndarray) -> float:
    """The crossed (seed x prompt) bootstrap's variance of the mean of complete ``(R, C)`` values, in closed form.

    ``var0(seed means) / R + var0(prompt means) / C + mean(residual^2) / (R C)`` (var0: divisor n), the previous
    study's interval (percentile bootstrap, i.e. normal quantiles at this variance; tests/benchmarks).
    """
    r, c = values.shape
    grand, rows, cols = values.mean(), values.mean(axis=1), values.mean(axis=0)
    resid = values - rows[:, None] - cols[None, :] + grand
    return float(((rows - grand) ** 2).mean() / r + ((cols - grand) ** 2).mean() / c + (resid**2).mean() / (r * c))


def evaluate(model: StudyModel, design: Design, studies: int, seed: int = 0, effect: float = 0.1,
             family: bool = True) -> dict[str, dict[str, float]]:
    """Per row: power, size, P(control replicated), coverage of the new and of the old interval.

    Args:
        model: Components.
        design: Design.
        studies: Simulated studies per truth.
        seed: Random seed.
        effect: The trade-off's stated effect (the tilt's reward cost).
        family: Holm over the table (False: each row at ALPHA).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {}
    for kind in ("alternative", "boundary", "equidistant"):
        errors, rewards = truths(model, design, kind, effect)
        for _ in range(studies):
            arms, labels = simulate_arms(model, design, errors, rewards, rng)
            rows = single_constraint_rows(arms, design.fractions, labels, caid=("caid",), one_shot=("one_shot",),
                                          controls=design.controls, tilt_cost=effect, undefined_draws=0,
                                          setting={f: f"{f:g} M" for f in design.fractions})  # fmt: skip
            tested = [r for r in rows if not isinstance(r.row, Descriptive | NotTestable)]
            ps = np.array([r.row.p_values() for r in tested])
            adjusted = holm(ps.ravel()).reshape(-1, 2) if family else ps
            for r, (a_rep, a_ref) in zip(tested, adjusted, strict=True):
                key = f"{r.claim} | {r.setting} | {r.method}"
                cell = out.setdefault(key, {})
                cell.setdefault(f"{kind}_replicated", []).append(a_rep <= ALPHA)
                cell.setdefault(f"{kind}_refuted", []).append(a_ref <= ALPHA)
                _coverage(r, design, errors, cell)
    return {k: {name: float(np.mean(v)) for name, v in cell.items()} for k, cell in out.items()}


def _coverage(r, design: Design, errors: dict, cell: dict) -> None:
    """Coverage of the 90% interval of the single-arm rows (the arms' true mean error is known)."""
    if r.claim not in (SHORT, OVER) and not r.claim.endswith(TRACKS):
        return
    f = next(f for f in design.fractions if r.setting == f"{f:g} M")
    method = r.method
    if method in design.controls:
        return
    truth = errors[method][f]
    _, low, high, _ = r.row.estimate()
    cell.setdefault("coverage", []).append(low < truth < high)


def _measured(study: Path) -> int:
    """Print the components each arm of a finished study measured (cell means: seed x opener)."""
    from analysis import multi_token_study as mts

    design = mts.SCALES["quick"]
    arms, clusters = mts.load_arms(study, design)
    print("arm | seed | opener (cluster) | cell | SE | df")
    for (method, f), arm in arms.items():
        e = estimate(arm.errors(), clusters)
        c = e.components
        print(f"{method} b = {f:g} M | {c.seed:.4f} | {c.cluster:.4f} | {c.cell:.4f} | {e.se:.4f} | {e.df:.1f}")
    return 0


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: a table per design and seed variance."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study_precision", description=__doc__.split("\n")[0])
    parser.add_argument("--study", type=Path, help="print the components a finished study measured, and stop")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3], help="training seeds")
    parser.add_argument("--prompts", type=int, nargs="+", default=[192], help="held-out prompts per seed")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.75], help="b as fractions of M")
    parser.add_argument("--seed-variance", type=float, nargs="+", default=[0.006, 0.0125, 0.03],
                        help="seed variance of an arm's mean (sigma^2)")
    parser.add_argument("--opener-variance", type=float, default=0.01, help="opener component (sigma^2)")
    parser.add_argument("--effect", type=float, default=0.1, help="the trade-off's stated effect (sigma)")
    parser.add_argument("--studies", type=int, default=200, help="simulated studies per truth")
    parser.add_argument("--no-holm", action="store_true", help="each row at ALPHA alone (no Holm correction)")
    args = parser.parse_args(argv)
    if args.study is not None:
        if not (args.study / "verdicts.csv").is_file():
            print(f"error: --study: {args.study} holds no verdicts.csv (run the study first)", file=sys.stderr)
            return 2
        return _measured(args.study)
    for seeds in args.seeds:
        for prompts in args.prompts:
            design = Design(seeds, prompts, tuple(sorted(args.fractions)))
            for seed_var in args.seed_variance:
                model = StudyModel(seed=seed_var, opener=args.opener_variance)
                result = evaluate(model, design, args.studies, effect=args.effect, family=not args.no_holm)
                print(f"\n{seeds} seeds x {prompts} held-out prompts, b = {design.fractions} M, seed variance "
                      f"{seed_var}: {design.seconds() / 60:.1f} min expected")
                print("row | power (alternative) | size (boundary) | size (equidistant) | refuted at the alternative"
                      " | coverage")
                for key, cell in result.items():
                    print(f"{key} | {cell['alternative_replicated']:.3f} | {cell['boundary_replicated']:.3f} | "
                          f"{cell['equidistant_replicated']:.3f} | {cell['alternative_refuted']:.3f} | "
                          f"{cell.get('coverage', np.nan):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
