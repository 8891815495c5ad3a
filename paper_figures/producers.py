"""The commands that produce the LLM results of the paper figures, at ``quick`` and ``full`` scale.

The powered multi-token study (:mod:`analysis.multi_token_study`, producer in :mod:`paper_figures.multi_token`)
decides the Fig. 1 / Fig. 2 claims at both scales. The paper-analogue safety sweeps here run at ``full`` only
(at 2-core sizes their intervals are wider than the thresholds' spacing; ``python -m paper_figures`` draws
their figures at ``quick`` only when their results exist):

* the single-constraint threshold sweep (Fig. 1(a)-(c), the real-model Lagrangian gap):
  ``python -m llm sweep --config configs/smollm2_safety.toml`` with CAID (multi-shot), one-shot, DPO_h and
  DPO_g into ``RESULTS/llm_sweep/single``;
* the two-constraint sweep (Fig. 2): ``configs/smollm2_two_constraints.toml`` into
  ``RESULTS/llm_sweep/two_constraints``.

The dual-convergence study (Fig. 3), ``python -m analysis.dual_convergence``, subsamples a reference pool:
at ``quick`` the powered study's (read from the cache), at ``full`` a 100 x 8 pool of the safety configuration.
``full`` sweeps use 100 training and 100 held-out prompts (an estimated 10-15 minutes per run on 2 cores, about
4 hours in all), 5 thresholds and 4 pairs; the ``quick`` sweep sizes remain for a user who runs them by hand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llm.methods import COMPARED, SWEEP_DEFAULT_METHODS
from llm.sweep import SWEEP_FILE
from paper_figures.fig1a_expected_vs_actual import RESULTS_SUBDIR as SINGLE_SUBDIR
from paper_figures.fig2_two_constraints import RESULTS_SUBDIR as TWO_SUBDIR
from paper_figures.fig3_dual_convergence import RESULTS_FILE as DUAL_CONVERGENCE_FILE

__all__ = ["SCALES", "LLMScale", "dual_convergence_args", "single_sweep_args", "two_constraint_sweep_args"]

SINGLE_CONFIG = "configs/smollm2_safety.toml"
TWO_CONFIG = "configs/smollm2_two_constraints.toml"
STUDY_CONFIG = "configs/reviews_study.toml"
# What each producer writes last, when all its work has ended: the figures' "results file".
SINGLE_SWEEP_FILE = SINGLE_SUBDIR / SWEEP_FILE
TWO_SWEEP_FILE = TWO_SUBDIR / SWEEP_FILE


@dataclasses.dataclass(frozen=True)
class LLMScale:
    """The sizes of the LLM producers at one scale.

    Attributes:
        overrides: ``--set`` overrides of both sweep configurations (prompt counts, dual-step sizes).
        thresholds: Safety thresholds b of the single-constraint sweep.
        pairs: ``b_1,b_2`` threshold vectors (safety, sentiment) of the two-constraint sweep.
        two_methods: Methods of the two-constraint sweep.
        dual_config: The configuration whose reference pool the dual-convergence study subsamples.
        dual_overrides: ``--set`` overrides of that configuration.
        replicates: Subsamples per (n, k) cell of Fig. 3.
    """

    overrides: tuple[str, ...]
    thresholds: tuple[str, ...]
    pairs: tuple[str, ...]
    two_methods: tuple[str, ...]
    dual_config: str
    dual_overrides: tuple[str, ...]
    replicates: int


# 64 prompts, 16 to train on and 48 held out: evaluation is cheap next to training, and the held-out
# count sets the width of every interval (16 held out gave +-0.86 on the x10 safety scale).
_QUICK_OVERRIDES = ("data.limit=32", "data.test_fraction=0.75", "caid.dual_prompts=8")
SCALES = {
    "quick": LLMScale(
        overrides=_QUICK_OVERRIDES,
        thresholds=("0.1", "0.3", "0.5", "0.8"),
        pairs=("0.1,0.2", "0.3,0.5"),
        two_methods=COMPARED,
        # The powered study's reference pool (data.seed 0, as every seed of the study): read from the cache.
        dual_config=STUDY_CONFIG,
        dual_overrides=("data.seed=0",),
        replicates=50,
    ),
    "full": LLMScale(
        overrides=("data.limit=100", "data.test_fraction=0.5"),
        thresholds=("0.1", "0.2", "0.3", "0.5", "0.8"),
        pairs=("0.1,0.2", "0.2,0.3", "0.3,0.5", "0.4,0.2"),
        two_methods=("caid", "one_shot", "dpo_h"),
        dual_config=SINGLE_CONFIG,
        dual_overrides=("data.limit=100", "data.test_fraction=0.5", "generation.samples_per_prompt=8"),
        replicates=50,
    ),
}


def _sets(overrides: tuple[str, ...]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def single_sweep_args(results_dir: Path, scale: str) -> list[str]:
    """``-m llm sweep`` of CAID, one-shot, DPO_h and DPO_g over the safety thresholds."""
    s = SCALES[scale]
    return [
        "-m", "llm", "sweep", "--config", SINGLE_CONFIG, "--out", str(results_dir / SINGLE_SUBDIR),
        "--thresholds", *s.thresholds, "--methods", *SWEEP_DEFAULT_METHODS,
        *_sets(s.overrides),
    ]  # fmt: skip


def two_constraint_sweep_args(results_dir: Path, scale: str) -> list[str]:
    """``-m llm sweep`` of the two-constraint configuration over the threshold pairs."""
    s = SCALES[scale]
    return [
        "-m", "llm", "sweep", "--config", TWO_CONFIG, "--out", str(results_dir / TWO_SUBDIR),
        "--thresholds", *s.pairs, "--methods", *s.two_methods, *_sets(s.overrides),
    ]  # fmt: skip


def dual_convergence_args(results_dir: Path, scale: str) -> list[str]:
    """``-m analysis.dual_convergence`` on the reference pool of this scale's ``dual_config``."""
    s = SCALES[scale]
    return [
        "-m", "analysis.dual_convergence", "--config", s.dual_config, "--out",
        str(results_dir / DUAL_CONVERGENCE_FILE.parent), "--replicates", str(s.replicates), *_sets(s.dual_overrides),
    ]  # fmt: skip
