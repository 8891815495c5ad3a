"""Precision of the powered study at other sizes, from a finished study's variance components.

Usage::

    python -m benchmarks.study_precision --study RESULTS/multi_token [--prompts 192 320] [--draws 300]

For every mean-based row of the study (CAID and one-shot at each threshold, each utility of the two-constraint
CAID), the ``(seeds, prompts)`` errors e = g(policy) - mean_ref g - b are split by the two-way random-effects
ANOVA (method of moments) into a seed variance (training randomness, 2 degrees of freedom with 3 seeds), a prompt
variance and a residual (one policy sample's noise), in sigma^2. The prompt variance holds the reference pool
mean's noise, taken as 1/n_ref (scores are in units of the pooled within-prompt SD).

For a design of C held-out prompts, n_p policy and n_ref reference samples per prompt, the residual becomes
residual / n_p and the pool part 1/n_ref, and the crossed bootstrap of :mod:`analysis.decisions` (seeds and
prompts resampled independently) has, exactly, the variance

    V = var0(seed means) / R + var0(prompt means) / C + mean(residual^2) / (R C)

(var0: variance with divisor n), whose expectation counts the residual three times. Each row's expected 1.96
sqrt(V) / spacing is printed, and a Monte Carlo of the design (normal effects with these components, each seed
variance at least ``--seed-floor``, rows independent, which understates the chance that all pass together) gives
the probability that every row is <= 0.3. The paired rows (CAID vs one-shot) are far below 0.3 and not modelled.

It also simulates, at each row's measured components, how often mean +- 1.96 SE covers the truth with the
bootstrap's SE and with the unbiased ANOVA one, (MS_seeds + MS_prompts - MS_residual) / (R C): with 3 seeds the
seed term has 2 degrees of freedom, which the ANOVA interval ignores and the bootstrap's surplus residual hides.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.multi_token_study import SCALES, SweepRun, arm_dirs, load_arm
from llm.cli_errors import exit_2_on_user_error

TARGET = 0.3


def _effects(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seed effects, prompt effects and residuals of ``(seeds, prompts)`` values (each sums to zero)."""
    grand, rows, cols = values.mean(), values.mean(axis=1), values.mean(axis=0)
    return rows - grand, cols - grand, values - rows[:, None] - cols[None, :] + grand


def mean_squares(values: np.ndarray) -> tuple[float, float, float]:
    """The two-way ANOVA's mean squares: seeds, prompts, residual."""
    (r, c), (a, b, e) = values.shape, _effects(values)
    return c * (a**2).sum() / (r - 1), r * (b**2).sum() / (c - 1), (e**2).sum() / ((r - 1) * (c - 1))


def components(errors: np.ndarray) -> tuple[float, float, float]:
    """Method-of-moments (seed, prompt, residual) variances of ``(seeds, prompts)`` values, each clipped at 0."""
    (r, c), (ms_seeds, ms_prompts, ms_res) = errors.shape, mean_squares(errors)
    return max((ms_seeds - ms_res) / c, 0.0), max((ms_prompts - ms_res) / r, 0.0), ms_res


def bootstrap_variance(values: np.ndarray) -> float:
    """The crossed bootstrap's variance of the mean of ``(seeds, prompts)`` values, in closed form."""
    (r, c), (a, b, e) = values.shape, _effects(values)
    return float((a**2).mean() / r + (b**2).mean() / c + (e**2).mean() / (r * c))


def anova_variance(values: np.ndarray) -> float:
    """The unbiased two-way random-effects variance of the mean: (MS_seeds + MS_prompts - MS_residual) / (R C), at
    least MS_residual / (R C)."""
    (r, c), (ms_seeds, ms_prompts, ms_res) = values.shape, mean_squares(values)
    return float(max(ms_seeds + ms_prompts - ms_res, ms_res) / (r * c))


def coverage(parts: tuple[float, float, float], seeds: int, prompts: int, draws: int,
             rng: np.random.Generator) -> tuple[float, float]:
    """How often mean +- 1.96 sqrt(V) covers the true mean: V the crossed bootstrap's, then the ANOVA's."""
    hits = np.zeros(2)
    for _ in range(draws):
        values = _simulate(parts, seeds, prompts, rng)
        hits += [abs(values.mean()) < 1.959964 * np.sqrt(v) for v in (bootstrap_variance(values),
                                                                      anova_variance(values))]
    return float(hits[0] / draws), float(hits[1] / draws)


def _simulate(parts: tuple[float, float, float], seeds: int, prompts: int, rng: np.random.Generator) -> np.ndarray:
    seed, prompt, res = parts
    return (rng.normal(0, np.sqrt(seed), (seeds, 1)) + rng.normal(0, np.sqrt(prompt), (1, prompts))
            + rng.normal(0, np.sqrt(res), (seeds, prompts)))  # fmt: skip


def expected_variance(parts: tuple[float, float, float], seeds: int, prompts: int) -> float:
    """E of :func:`bootstrap_variance` for data with these (seed, prompt, residual) variances."""
    seed, prompt, res = parts
    r, c = seeds, prompts
    return ((r - 1) / r * (seed + res / c) / r + (c - 1) / c * (prompt + res / r) / c
            + (r - 1) * (c - 1) / (r * c) * res / (r * c))  # fmt: skip


def rescaled(parts: tuple[float, float, float], n_ref: tuple[int, int], n_policy: tuple[int, int],
             seed_floor: float) -> tuple[float, float, float]:
    """The components at ``n_ref[1]`` reference and ``n_policy[1]`` policy samples, measured at ``[0]``."""
    seed, prompt, res = parts
    pool = 1.0 / n_ref[0]
    return max(seed, seed_floor), max(prompt - pool, 0.0) + 1.0 / n_ref[1], res * n_policy[0] / n_policy[1]


def chance_all_pass(rows: list[tuple[float, float, float]], seeds: int, prompts: int, spacing: float, draws: int,
                    rng: np.random.Generator) -> float:
    """Monte Carlo probability that every row's 1.96 SE / spacing is <= ``TARGET`` (rows independent)."""
    passed = 0
    for _ in range(draws):
        worst = 0.0
        for parts in rows:
            values = _simulate(parts, seeds, prompts, rng)
            worst = max(worst, 1.959964 * np.sqrt(bootstrap_variance(values)) / spacing)
        passed += worst <= TARGET
    return passed / draws


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: the components per row, then a line per design."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study_precision", description=__doc__.split("\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="a finished study folder (verdicts.csv in it)")
    parser.add_argument("--scale", choices=tuple(SCALES), default="quick", help="the study's design (default quick)")
    parser.add_argument("--prompts", type=int, nargs="+", default=[192, 320], help="held-out prompt counts")
    parser.add_argument("--policy-samples", type=int, nargs="+", default=[1, 2], help="policy samples per prompt")
    parser.add_argument("--reference-samples", type=int, nargs="+", default=[4, 8], help="pool samples per prompt")
    parser.add_argument("--measured", type=int, nargs=2, default=[1, 4], metavar=("N_POLICY", "N_REF"),
                        help="the study's own policy and reference samples per prompt (default 1 4)")
    parser.add_argument("--seed-floor", type=float, default=0.002,
                        help="least seed variance per row (sigma^2; the 192-prompt run's rows averaged 0.002)")
    parser.add_argument("--draws", type=int, default=300, help="Monte Carlo draws per design")
    args = parser.parse_args(argv)
    design = SCALES[args.scale]
    if not (args.study / "verdicts.csv").is_file():
        print(f"error: --study: {args.study} holds no verdicts.csv (run the study first)", file=sys.stderr)
        return 2
    arms = {(m, f): load_arm(arm_dirs(args.study, design, SweepRun(m, (f,)).name))
            for f in design.fractions for m in ("caid", "one_shot")}  # fmt: skip
    low, high = min(design.fractions), max(design.fractions)
    spacing = arms["caid", high].thresholds[0] - arms["caid", low].thresholds[0]
    rows = {f"{m} b = {f:g} M": arms[m, f].errors[0] for m, f in arms}
    for pair in design.pairs:
        two = load_arm(arm_dirs(args.study, design, SweepRun("caid", pair).name, two=True))
        rows |= {f"two-constraint g_{i} at {pair}": e for i, e in enumerate(two.errors, 1)}
    seeds, measured_prompts = next(iter(rows.values())).shape
    parts = {name: components(e) for name, e in rows.items()}
    print(f"{args.study}: {seeds} seeds x {measured_prompts} prompts, spacing {spacing:.3f} sigma")
    rng = np.random.default_rng(0)
    print("row | seed | prompt | residual (sigma^2) | 1.96 SE / spacing: bootstrap, ANOVA | coverage of +-1.96 SE "
          "at these components: bootstrap, ANOVA")
    for name, (s, p, r) in parts.items():
        ratios = [1.959964 * np.sqrt(f(rows[name])) / spacing for f in (bootstrap_variance, anova_variance)]
        covered = coverage((max(s, args.seed_floor), p, r), seeds, measured_prompts, args.draws, rng)
        print(f"{name} | {s:.4f} | {p:.3f} | {r:.3f} | {ratios[0]:.3f}, {ratios[1]:.3f} | "
              f"{covered[0]:.3f}, {covered[1]:.3f}")
    print("prompts | policy samples | reference samples | expected 1.96 SE / spacing per row | P(all <= 0.3)")
    for c in args.prompts:
        for n_p in args.policy_samples:
            for n_ref in args.reference_samples:
                design_parts = [rescaled(v, (args.measured[1], n_ref), (args.measured[0], n_p), args.seed_floor)
                                for v in parts.values()]  # fmt: skip
                expected = [1.959964 * np.sqrt(expected_variance(v, seeds, c)) / spacing for v in design_parts]
                chance = chance_all_pass(design_parts, seeds, c, spacing, args.draws, rng)
                print(f"{c} | {n_p} | {n_ref} | {' '.join(f'{x:.3f}' for x in expected)} | {chance:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
