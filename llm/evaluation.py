"""A finished run's summary: held-out improvements, constraint verdicts, the best iterate and the dual trajectory.

:func:`summarize` turns the trained policy's held-out scores and the run's metrics into the
:class:`llm.run_schema.RunSummary` of ``summary.json``; :func:`dual_trajectory_csv` writes lambda(t) and the
measured slacks per iteration (``dual_trajectory.csv``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from llm.config import RunConfig
from llm.paired_statistics import improvement
from llm.reference_phase import ReferenceData, RunSetup
from llm.run_schema import RunSummary

__all__ = ["DUAL_TRAJECTORY_FILE", "dual_trajectory_csv", "summarize"]

DUAL_TRAJECTORY_FILE = "dual_trajectory.csv"


def dual_trajectory_csv(metrics: Sequence[dict[str, Any]], m: int) -> str:
    """``iteration, lambda_1..m, slack_1..m`` per finished iteration (slack NaN where no dual step preceded it)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["iteration", *(f"lambda_{i + 1}" for i in range(m)), *(f"slack_{i + 1}" for i in range(m))])
    for row in metrics:
        writer.writerow([row["iteration"], *row["lam"], *(row.get("slack") or [float("nan")] * m)])
    return buffer.getvalue()


def summarize(
    config: RunConfig,
    setup: RunSetup,
    ref: ReferenceData,
    metrics: Sequence[dict[str, Any]],
    scores: np.ndarray,
    log_ratio: np.ndarray,
    one_shot: np.ndarray,
    lam: np.ndarray,
    implicit: tuple[np.ndarray, np.ndarray] | None = None,
    held_out_pairs: dict[str, dict[str, float]] | None = None,
) -> RunSummary:
    """The run's summary from the trained policy's held-out samples.

    Each iterate's policy is measured on-policy by the next dual step (CAID) or, for the last, by the held-out
    evaluation; the best iterate is the least violating one (latest on ties; Lemma 8's best iterate). Only the
    last one's weights are kept. A method that does not train (``reference``) has one iterate, number 0.

    Args:
        config: The run's configuration.
        setup: The reference phase (thresholds, prompts, standardisation).
        ref: The reference data the scores compare with.
        metrics: One row per finished iteration (``iteration``, ``lam``, ``slack`` where measured).
        scores: ``(1 + m, P, n)`` the policy's held-out scores, reward first.
        log_ratio: ``(P, n)`` log pi / pi_ref of those samples (NaN where not measured).
        one_shot: The one-shot plug-in dual solution.
        lam: The multipliers of the last iteration.
        implicit: PeCAID: ``(policy, reference)`` implicit-reward utilities of the held-out samples, ``(m, P, n)``
            and ``(m, P, n_ref)``: the constraints, the last iterate's slack and the best iterate are then in
            implicit-reward units, as the thresholds and the dual steps' slacks are.
        held_out_pairs: PeCAID without scorers: per objective, the held-out labelled pairs' implicit reward
            margin and accuracy under the policy.
    """
    names = list(config.objectives)
    thresholds = setup.thresholds
    # The reward has no b; each utility's share of prompts missing its b, in the units b is in (PeCAID's are the
    # implicit rewards', not the scorers').
    bounds = (None, *thresholds) if implicit is None else (None,) * len(config.scorers.specs)
    improvements = {
        spec: improvement(scores[r], ref.test_scores[r], bounds[r]) for r, spec in enumerate(config.scorers.specs)
    }
    implicit_improvements = {}
    if implicit is not None:
        implicit_improvements = {
            name: improvement(policy, reference, b)
            for name, policy, reference, b in zip(names[1:], *implicit, thresholds, strict=True)
        }
    constrained = implicit_improvements if implicit is not None else {name: improvements[name] for name in names[1:]}
    # How much reward and each utility conflict where the pairs compare them: within a prompt.
    centred = ref.train_scores - ref.train_scores.mean(axis=2, keepdims=True)
    flat = centred.reshape(len(names), -1)
    correlation = np.corrcoef(flat)[0, 1:] if flat.std(axis=1).min() > 0 else np.full(len(names) - 1, np.nan)
    iterations = [row["iteration"] for row in metrics] or [0]
    last_slack = [constrained[n]["mean"] - b for n, b in zip(names[1:], thresholds, strict=True)]
    slacks = [row.get("slack") for row in metrics[1:]] + [last_slack]
    violation = [sum(max(0.0, -u) for u in s) if s is not None else np.inf for s in slacks]
    best = max(range(len(violation)), key=lambda i: (-violation[i], i))
    return RunSummary(
        method=config.method,
        thresholds=tuple(float(b) for b in thresholds),
        lambda_one_shot=tuple(float(v) for v in one_shot),
        lambda_last=tuple(float(v) for v in lam),
        improvements=improvements,
        constraints_satisfied=tuple(
            bool(constrained[n]["mean"] >= b) for n, b in zip(names[1:], thresholds, strict=True)
        ),
        kl_estimate=float(np.nanmean(log_ratio)),  # over the prompts measured (evaluation.log_ratio_prompts)
        last_iteration=iterations[-1],
        best_iteration=iterations[best],
        measured_slack_by_iteration={
            str(t): None if s is None else tuple(s) for t, s in zip(iterations, slacks, strict=True)
        },
        reference_reward_utility_correlation=dict(zip(names[1:], map(float, correlation), strict=True)),
        n_train_prompts=len(ref.train) // config.generation.samples_per_prompt,
        n_test_prompts=len(setup.test),
        reference_key=ref.key,
        score_scales=setup.standardization.scales if setup.standardization else (),
        constraint_units="scores" if implicit is None else "implicit_reward",
        implicit_improvements=implicit_improvements,
        held_out_pairs=held_out_pairs or {},
    )
