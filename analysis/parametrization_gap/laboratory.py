"""The laboratory's configuration and resumable runner (``python -m analysis.parametrization_gap``).

Builds an enumerable sequence world (:mod:`~analysis.parametrization_gap.sequence_world`), pretrains a
reference transformer on it (:mod:`~analysis.parametrization_gap.reference_transformer`), solves the
distribution-space problem exactly (:mod:`theory`), and measures every policy class (tabular, log-linear of
several ranks, transformer adapters of several sizes) against it and against the paper's bounds, each under
its checked hypotheses (:mod:`~analysis.parametrization_gap.measurements`). Writes into DIR:

* ``instance.npz``: the problem (``ref_logprobs``, ``reward``, ``utilities``, ``thresholds``, ``beta``,
  ``prompt_weights``, as in :class:`theory.ConstrainedProblem`), plus ``prompts`` and ``responses``;
* ``summary.csv``: one row per policy class (columns :data:`SUMMARY_COLUMNS`, the per-constraint ``lam_*``
  columns and, per bounded quantity, ``<q>_measured``, ``<q>_bound`` (NaN where a hypothesis fails) and
  ``<q>_hypothesis``);
* ``trajectories.csv``: lambda(t) and D_p(lambda(t)) of exact and practical CAID per class;
* ``scaling.csv``: per measured quantity, the classes checked against the bound, the violations, the
  classes where the bound does not apply and why, the median bound / measured ratio and the log-log slope
  against nu with a bootstrap interval (:func:`scaling_table`);
* ``config.json``: the resolved configuration, package versions and machine;
* ``reference_model.safetensors``: the trained reference transformer's weights (no pickle);
* ``classes/<label>.json``: each finished class, written atomically; a rerun with the same configuration
  resumes, skipping finished classes;
* the figures of :mod:`paper_figures.parametrization_gap` (PNG and PDF) under ``DIR/figures``.

The world's thresholds sit 10% of the way from pi*(0)'s improvement to the largest achievable one
(``threshold_fraction``) and beta = 1.5. Assumption 4 needs M nu below the Slater margin (quick world: M = 1.45,
margin 0.31, so nu below about 0.2); with these choices it holds for 7 of the 10 quick classes, and fails for
the 1x1 and 2x1 adapters and the log-linear class with k = 40 (``<bound>_hypothesis`` says by how much).
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import safetensors.torch
import torch
from tqdm import tqdm

from analysis.parametrization_gap.measurements import DistributionOptimum, MeasurementSettings, measure_policy_class
from analysis.parametrization_gap.policy_classes import (
    LowRankPolicy,
    SequencePolicy,
    TabularPolicy,
    TransformerPolicy,
    TransformerSize,
)
from analysis.parametrization_gap.reference_transformer import ReferenceModel, train_reference
from analysis.parametrization_gap.scaling import scaling_table
from analysis.parametrization_gap.sequence_world import SequenceWorld, active_thresholds, make_sequence_world
from llm.config import help_field
from llm.run_files import write_atomic, write_run_record

__all__ = ["SCALES", "SUMMARY_COLUMNS", "GapLabConfig", "PolicyClassSpec", "run", "scaling_table"]

SUMMARY_COLUMNS = (
    "policy_class", "size", "label", "n_params", "nu_1", "nu_kl", "nu", "P_star", "D_star", "P_p_star", "D_p_star",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class GapLabConfig:
    """Everything that defines a laboratory run (``--quick`` and the full run are two instances)."""

    seed: int = help_field(0, "seed of the world, the reference model, every initialisation and every sample")
    n_prompts: int = help_field(6, "X, distinct prompts")
    vocab_size: int = help_field(3, "V, tokens in the vocabulary")
    prompt_length: int = help_field(2, "P, tokens per prompt")
    response_length: int = help_field(4, "L, tokens per response (V**L responses per prompt)")
    n_constraints: int = help_field(2, "m: 1 (safety) or 2 (safety, variety)")
    beta: float = help_field(1.5, "KL-regularisation strength")
    threshold_fraction: float = help_field(0.1, "b_i = s_i + fraction (max_i - s_i); see active_thresholds")
    reference_size: TransformerSize = help_field(TransformerSize(32, 2, 4), "the reference transformer")
    reference_iter: int = help_field(300, "L-BFGS iterations of reference pretraining")
    transformer_sizes: tuple[TransformerSize, ...] = help_field(
        (TransformerSize(1, 1, 1), TransformerSize(2, 1, 1), TransformerSize(8, 1, 1), TransformerSize(32, 2, 4)),
        "widths and depths of the transformer adapter classes",
    )
    lowrank_ranks: tuple[int, ...] = help_field(
        (40, 56, 66, 76, 79), "feature counts k of the log-linear classes (k = V**L would be tabular)"
    )
    measurement: MeasurementSettings = help_field(MeasurementSettings(), "iteration counts and sample sizes")


SCALES: dict[str, GapLabConfig] = {
    "quick": GapLabConfig(),
    "full": GapLabConfig(
        n_prompts=12,
        vocab_size=4,
        transformer_sizes=(
            TransformerSize(1, 1, 1), TransformerSize(2, 1, 1), TransformerSize(4, 1, 1), TransformerSize(8, 1, 1),
            TransformerSize(16, 1, 2), TransformerSize(32, 1, 4), TransformerSize(32, 2, 4),
        ),
        lowrank_ranks=(8, 24, 48, 96, 160, 224),
        measurement=MeasurementSettings(caid_steps=6, refine_steps=8, max_iter=80),
    ),
}  # fmt: skip
"""The sizes by scale (the one pattern of the toolkit's studies and laboratories)."""


@dataclasses.dataclass(frozen=True)
class PolicyClassSpec:
    """One row of the summary: a policy class at one size.

    Attributes:
        policy_class: ``tabular``, ``lowrank`` or ``transformer``.
        size: The size label (``all`` for tabular, which contains every policy).
        make: Returns a fresh member at pi_ref.
        iter_scale: Multiplies the L-BFGS iteration counts: the tabular and low-rank classes are ~100x
            cheaper per evaluation than the transformers, and their small-probability logits converge slowly.
        cold_scale: Further multiplies the iterations of the one-shot fit from pi_ref: large adapters converge
            slowly, and every later fit is warm-started from it (width x depth / 8 for the adapters).
    """

    policy_class: str
    size: str
    make: Callable[[], SequencePolicy]
    iter_scale: int = 1
    cold_scale: int = 1

    @property
    def label(self) -> str:
        """``class-size`` (``tabular`` alone), the row's file name under ``classes/``."""
        return self.policy_class if self.policy_class == "tabular" else f"{self.policy_class}-{self.size}"


def policy_classes(config: GapLabConfig, world: SequenceWorld, ref: ReferenceModel) -> list[PolicyClassSpec]:
    """The classes to measure: tabular, then low-rank by rank, then transformer adapters by size."""
    specs = [PolicyClassSpec("tabular", "all", lambda: TabularPolicy(ref.ref_logprobs), iter_scale=5)]
    for rank in config.lowrank_ranks:
        make = lambda r=rank: LowRankPolicy(ref.ref_logprobs, r, config.seed)  # noqa: E731
        specs.append(PolicyClassSpec("lowrank", f"r{rank}", make, iter_scale=5))
    for size in config.transformer_sizes:
        specs.append(
            PolicyClassSpec(
                "transformer",
                size.name,
                lambda s=size: TransformerPolicy(world, s, config.seed + 1, ref.token_logprobs),
                cold_scale=max(1, size.width * size.depth // 8),
            )
        )
    return specs


def _prepare(config: GapLabConfig, out: Path) -> tuple[SequenceWorld, ReferenceModel, DistributionOptimum]:
    """Build the world, pretrain (or reload) the reference, write the instance, solve it exactly."""
    world = make_sequence_world(
        config.seed, config.n_prompts, config.vocab_size, config.prompt_length, config.response_length,
        config.n_constraints,
    )  # fmt: skip
    weights_path = out / "reference_model.safetensors"
    if weights_path.is_file():
        try:
            state = safetensors.torch.load(weights_path.read_bytes())
        except Exception as err:  # safetensors raises its own error types for damaged files
            raise ValueError(f"{weights_path}: unreadable ({err}); delete it to retrain the reference") from None
        ref = train_reference(world, config.reference_size, config.seed, state_dict=state)
    else:
        ref = train_reference(world, config.reference_size, config.seed, config.reference_iter)
        # Tied weights share storage, which safetensors refuses: store each tensor as its own copy.
        state = {name: tensor.detach().clone().contiguous() for name, tensor in ref.policy.state_dict().items()}
        write_atomic(weights_path, safetensors.torch.save(state))
    thresholds = active_thresholds(world, ref.ref_logprobs, config.beta, config.threshold_fraction)
    prob = world.problem(ref.ref_logprobs, thresholds, config.beta)
    instance = io.BytesIO()
    np.savez(
        instance,
        ref_logprobs=prob.ref_logprobs, reward=prob.reward, utilities=prob.utilities, thresholds=prob.thresholds,
        beta=prob.beta, prompt_weights=prob.prompt_weights, prompts=world.prompts, responses=world.responses,
    )  # fmt: skip
    write_atomic(out / "instance.npz", instance.getvalue())
    return world, ref, DistributionOptimum.of(prob)


def _trajectory_rows(label: str, kind: str, lam: np.ndarray, dual_values: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"label": label, "kind": kind, "t": t, **{f"lam_{i + 1}": float(v) for i, v in enumerate(lt)}, "dual_value": d}
        for t, (lt, d) in enumerate(zip(lam, dual_values, strict=True))
    ]


def _steps_per_class(config: GapLabConfig) -> int:
    s = config.measurement
    return 1 + (s.caid_steps + 1) + (s.refine_steps + 1) + s.practical_iterations


def run(config: GapLabConfig, out: Path, progress: bool = True) -> pd.DataFrame:
    """Run the laboratory into ``out`` (resuming finished classes) and return the summary table.

    Raises:
        ValueError: If ``out`` holds a run with a different configuration (use a fresh directory).
    """
    write_run_record(out, dataclasses.asdict(config))
    threads = torch.get_num_threads()
    # Tiny float64 models are dominated by thread-pool overhead, worst on a shared machine: one thread.
    torch.set_num_threads(1)
    try:
        return _run(config, out, progress)
    finally:
        torch.set_num_threads(threads)


def _read_class(path: Path, label: str) -> dict[str, Any]:
    """A finished class's saved row and trajectories, validated (files on disk are untrusted)."""
    fix = f"delete {path} to measure the class again"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({err}); {fix}") from err
    if not (
        isinstance(saved, dict)
        and isinstance(saved.get("row"), dict)
        and isinstance(saved.get("trajectories"), list)
        and saved["row"].get("label") == label
        and all(isinstance(r, dict) for r in saved["trajectories"])
    ):
        raise ValueError(f"{path}: not a saved class '{label}' (expected 'row' and 'trajectories'); {fix}")
    return saved


def _run(config: GapLabConfig, out: Path, progress: bool) -> pd.DataFrame:
    torch.manual_seed(config.seed)
    world, ref, opt = _prepare(config, out)
    specs = policy_classes(config, world, ref)
    rows, trajectories = [], []
    todo = [spec for spec in specs if not (out / "classes" / f"{spec.label}.json").is_file()]
    bar = tqdm(total=len(todo) * _steps_per_class(config), desc="gap lab", unit="fit", disable=not progress)
    for index, spec in enumerate(specs):
        path = out / "classes" / f"{spec.label}.json"
        if not path.is_file():
            bar.set_postfix_str(spec.label)
            started = time.perf_counter()
            rng = np.random.default_rng([config.seed, index])
            m = config.measurement
            settings = dataclasses.replace(
                m, max_iter=m.max_iter * spec.iter_scale, cold_iter=m.cold_iter * spec.iter_scale * spec.cold_scale
            )
            result = measure_policy_class(spec.make, opt, settings, rng, on_step=lambda: bar.update())
            row = {"policy_class": spec.policy_class, "size": spec.size, "label": spec.label, **result.row}
            row["seconds"] = time.perf_counter() - started
            traj = _trajectory_rows(spec.label, "exact", result.exact.lam, result.exact.dual_values)
            traj += _trajectory_rows(spec.label, "practical", result.practical.lam, result.practical.dual_values)
            write_atomic(path, json.dumps({"row": row, "trajectories": traj}, indent=1) + "\n")
        saved = _read_class(path, spec.label)
        rows.append(saved["row"])
        trajectories += saved["trajectories"]
    bar.close()
    summary = pd.DataFrame(rows)
    write_atomic(out / "summary.csv", summary.to_csv(index=False))
    write_atomic(out / "trajectories.csv", pd.DataFrame(trajectories).to_csv(index=False))
    write_atomic(out / "scaling.csv", scaling_table(summary).to_csv(index=False))
    return summary
