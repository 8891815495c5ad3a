"""The run directory's result files, defined once: ``summary.json`` (:class:`RunSummary`) and ``eval_scores.csv``.

:mod:`llm.pipeline` writes them through this module, and :mod:`analysis` and the tests read them through it.
Files read back are validated: a missing, truncated or malformed file is a :class:`llm.run_files.RunFileError`
naming the file, the field and the fix, never a ``KeyError`` or a parser's traceback.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llm.run_files import RunFileError, read_json, write_atomic

__all__ = [
    "EVAL_SCORES_FILE",
    "SUMMARY_FILE",
    "EvalScores",
    "RunSummary",
    "eval_scores_csv",
    "load_eval_scores",
]

SUMMARY_FILE = "summary.json"
EVAL_SCORES_FILE = "eval_scores.csv"
# Columns of eval_scores.csv that are not scorers.
_EVAL_KEYS = ("model", "prompt_index", "sample")
# Per-sample log pi/pi_ref, written by `llm run` since the real-model gap needed it (older runs lack it).
_LOG_RATIO = "log_ratio"
_IMPROVEMENT_KEYS = ("mean", "ci_low", "ci_high")
_RERUN = "rerun it with `python -m llm run ... --resume` (a lost summary is rebuilt from the last checkpoint)"


def _field(path: Path, name: str, problem: str) -> RunFileError:
    return RunFileError(f"{path}: field {name!r} {problem}; {_RERUN}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers(path: Path, name: str, value: Any, allow_none: bool = False) -> tuple[float, ...] | None:
    if value is None and allow_none:
        return None
    if not (isinstance(value, list) and all(_number(v) for v in value)):
        raise _field(path, name, f"must be a list of numbers, got {value!r}")
    return tuple(float(v) for v in value)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """``summary.json`` of a finished run.

    Attributes:
        method: The method (:mod:`llm.methods`).
        thresholds: b_i of each utility.
        lambda_one_shot: The one-shot plug-in dual solution.
        lambda_last: lambda of the last iteration.
        improvements: Per scorer (reward first), the paired improvement over pi_ref on the held-out prompts:
            ``mean, ci_low, ci_high, n_prompts`` (and ``boot_low, boot_high``; in newer runs ``q10, q90``, the
            10% / 90% quantiles of the per-prompt improvement, and for a utility ``share_missing_b``, the share of
            held-out prompts whose own improvement is below b).
        constraints_satisfied: Per utility, ``improvement >= b``.
        kl_estimate: Monte-Carlo KL(pi || pi_ref) on the held-out samples.
        last_iteration: T.
        best_iteration: The least violating iterate (Lemma 8's best iterate, measured on-policy).
        measured_slack_by_iteration: Iteration -> the slack measured on its policy (None when not measured).
        reference_reward_utility_correlation: Per utility, the within-prompt correlation with the reward.
        n_train_prompts: Training prompts.
        n_test_prompts: Held-out prompts.
        reference_key: The reference phase's cache key.
        score_scales: With ``scorers.standardize``, sigma_w of each scorer (reward first) in raw units: every
            score, threshold and improvement above is in these units. Empty: raw units (and older runs).
        constraint_units: The units of ``thresholds``, ``constraints_satisfied``, ``best_iteration`` and the
            measured slacks: ``"scores"`` (the scorers', as ``improvements``) or, for PeCAID, ``"implicit_reward"``
            (beta log pi_g / pi_ref of its pre-aligned models, as ``implicit_improvements``).
        implicit_improvements: PeCAID: per utility, the policy's improvement over pi_ref on the held-out prompts
            in implicit-reward units, what its constraints are checked on. Empty for the other methods.
        held_out_pairs: PeCAID without scorers: per objective, the policy's mean implicit reward ``margin`` on
            held-out labelled pairs, the ``accuracy`` (share of positive margins) and ``n_pairs``. Else empty.
    """

    method: str
    thresholds: tuple[float, ...]
    lambda_one_shot: tuple[float, ...]
    lambda_last: tuple[float, ...]
    improvements: Mapping[str, Mapping[str, float]]
    constraints_satisfied: tuple[bool, ...]
    kl_estimate: float
    last_iteration: int
    best_iteration: int
    measured_slack_by_iteration: Mapping[str, tuple[float, ...] | None]
    reference_reward_utility_correlation: Mapping[str, float]
    n_train_prompts: int
    n_test_prompts: int
    reference_key: str
    score_scales: tuple[float, ...] = ()
    constraint_units: str = "scores"
    implicit_improvements: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    held_out_pairs: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (lists, dicts), the layout of ``summary.json``."""
        data = dataclasses.asdict(self)
        for name in ("thresholds", "lambda_one_shot", "lambda_last", "constraints_satisfied", "score_scales"):
            data[name] = list(data[name])
        data["improvements"] = {k: dict(v) for k, v in self.improvements.items()}
        data["implicit_improvements"] = {k: dict(v) for k, v in self.implicit_improvements.items()}
        data["held_out_pairs"] = {k: dict(v) for k, v in self.held_out_pairs.items()}
        data["measured_slack_by_iteration"] = {
            k: None if v is None else list(v) for k, v in self.measured_slack_by_iteration.items()
        }
        data["reference_reward_utility_correlation"] = dict(self.reference_reward_utility_correlation)
        return data

    def write(self, run_dir: Path) -> None:
        """Write ``run_dir/summary.json`` atomically."""
        write_atomic(run_dir / SUMMARY_FILE, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, data: Any, path: Path) -> RunSummary:
        """Validate ``data`` read from ``path``.

        Raises:
            RunFileError: Naming ``path`` and the first missing or malformed field.
        """
        if not isinstance(data, dict):
            raise RunFileError(f"{path}: not a JSON object; {_RERUN}")
        optional = {"score_scales", "constraint_units", "implicit_improvements", "held_out_pairs"}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.name not in optional]
        if missing:
            raise _field(path, missing[0], "is missing")
        if not isinstance(data["method"], str) or not isinstance(data["reference_key"], str):
            raise _field(path, "method", "and 'reference_key' must be strings")
        thresholds = _numbers(path, "thresholds", data["thresholds"])
        improvements = data["improvements"]
        if not isinstance(improvements, dict):
            raise _field(path, "improvements", "must map each scorer to its statistics")
        implicit = data.get("implicit_improvements", {})
        if not isinstance(implicit, dict):
            raise _field(path, "implicit_improvements", "must map each utility to its statistics")
        for field, rows in (("improvements", improvements), ("implicit_improvements", implicit)):
            for name, row in rows.items():
                if not (isinstance(row, dict) and all(_number(row.get(k)) for k in (*_IMPROVEMENT_KEYS, "n_prompts"))):
                    raise _field(path, f"{field}.{name}", "must hold numbers mean, ci_low, ci_high, n_prompts")
        pairs = data.get("held_out_pairs", {})
        if not (isinstance(pairs, dict) and all(
            isinstance(row, dict) and all(_number(row.get(k)) for k in ("margin", "accuracy", "n_pairs"))
            for row in pairs.values()
        )):  # fmt: skip
            raise _field(path, "held_out_pairs", "must map each objective to numbers margin, accuracy, n_pairs")
        units = data.get("constraint_units", "scores")
        if units not in ("scores", "implicit_reward"):
            raise _field(path, "constraint_units", f"must be 'scores' or 'implicit_reward', got {units!r}")
        satisfied = data["constraints_satisfied"]
        if not (isinstance(satisfied, list) and all(isinstance(v, bool) for v in satisfied)):
            raise _field(path, "constraints_satisfied", "must be a list of booleans, one per threshold")
        integers = {k: data[k] for k in ("last_iteration", "best_iteration", "n_train_prompts", "n_test_prompts")}
        for name, value in integers.items():
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise _field(path, name, f"must be a non-negative integer, got {value!r}")
        if not _number(data["kl_estimate"]):
            raise _field(path, "kl_estimate", f"must be a number, got {data['kl_estimate']!r}")
        slack = data["measured_slack_by_iteration"]
        correlation = data["reference_reward_utility_correlation"]
        if not isinstance(slack, dict) or not isinstance(correlation, dict):
            raise _field(path, "measured_slack_by_iteration", "and the correlations must be JSON objects")
        return cls(
            method=data["method"],
            thresholds=thresholds,
            lambda_one_shot=_numbers(path, "lambda_one_shot", data["lambda_one_shot"]),
            lambda_last=_numbers(path, "lambda_last", data["lambda_last"]),
            improvements={name: dict(row) for name, row in improvements.items()},
            constraints_satisfied=tuple(bool(v) for v in satisfied),
            kl_estimate=float(data["kl_estimate"]),
            measured_slack_by_iteration={
                str(k): _numbers(path, f"measured_slack_by_iteration.{k}", v, allow_none=True) for k, v in slack.items()
            },
            reference_reward_utility_correlation={k: float(v) for k, v in correlation.items()},
            reference_key=data["reference_key"],
            score_scales=_numbers(path, "score_scales", data.get("score_scales", [])),
            constraint_units=units,
            implicit_improvements={name: dict(row) for name, row in implicit.items()},
            held_out_pairs={name: dict(row) for name, row in pairs.items()},
            **integers,
        )

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> RunSummary:
        """``run_dir/summary.json``, validated.

        Raises:
            FileNotFoundError: If the run has not finished (no ``summary.json``).
            RunFileError: If it is corrupt or malformed (the message names the field).
        """
        path = Path(run_dir) / SUMMARY_FILE
        if not path.is_file():
            raise FileNotFoundError(f"run_dir: {path} does not exist; the run has not finished")
        return cls.from_json(read_json(path, _RERUN), path)


# ------------------------------------------------------------------------------------------------------
# eval_scores.csv: every held-out sample's scores and log pi/pi_ref, for the policy and for pi_ref.


def eval_scores_csv(
    scorers: Sequence[str],
    samples: Mapping[str, tuple[np.ndarray, np.ndarray, Sequence[str]]],
) -> str:
    """The text of ``eval_scores.csv``.

    Args:
        scorers: Scorer names (reward first).
        samples: Per model (``"policy"``, ``"reference"``): ``(scores (len(scorers), P, n), log_ratio (P, n),
            response texts (P * n, grouped by prompt))``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*_EVAL_KEYS, *scorers, _LOG_RATIO, "response"])
    for label, (scores, ratio, texts) in samples.items():
        n = ratio.shape[1]
        for index, text in enumerate(texts):
            i, j = divmod(index, n)
            writer.writerow([label, i, j, *(f"{v:.6g}" for v in scores[:, i, j]), f"{ratio[i, j]:.6g}", text])
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True, eq=False)
class EvalScores:
    """The held-out scores of one run (``eval_scores.csv``), as arrays aligned by prompt.

    Attributes:
        scorers: Scorer names in file order: the reward first, then each utility (e.g. ``"-toxicity"``).
        prompt_index: ``(n_prompts,)`` the held-out prompt indices, ascending.
        policy: ``(n_scorers, n_prompts, samples)`` the aligned policy's scores.
        reference: ``(n_scorers, n_prompts, samples')`` pi_ref's scores on the same prompts.
        policy_log_ratio: ``(n_prompts, samples)`` log pi(y|x) - log pi_ref(y|x) of the policy's samples (NaN
            for the prompts beyond ``evaluation.log_ratio_prompts``), or None for a file without the column.
    """

    scorers: tuple[str, ...]
    prompt_index: np.ndarray
    policy: np.ndarray
    reference: np.ndarray
    policy_log_ratio: np.ndarray | None = None

    def scores(self, scorer: str) -> tuple[np.ndarray, np.ndarray]:
        """``(policy, reference)`` ``(n_prompts, samples)`` score arrays of one scorer (after, before)."""
        if scorer not in self.scorers:
            raise KeyError(f"scorer: {scorer!r} is not in this run's scorers {list(self.scorers)}")
        i = self.scorers.index(scorer)
        return self.policy[i], self.reference[i]


def _model_block(
    frame: pd.DataFrame, model: str, scorers: list[str], path: Path, whole_prompts_missing: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(prompt_index, (n_scorers, n_prompts, samples))`` of one model's rows, checked to be rectangular.

    With ``whole_prompts_missing``, a prompt's values may all be NaN (not measured), never some of them.
    """
    rows = frame[frame["model"] == model].sort_values(["prompt_index", "sample"], kind="stable")
    if rows.empty:
        raise RunFileError(f"{path}: no rows with model == {model!r} (truncated, or not an eval_scores.csv); {_RERUN}")
    counts = rows.groupby("prompt_index").size()
    if counts.nunique() != 1:
        raise RunFileError(f"{path}: the {model} rows have different numbers of samples per prompt; {_RERUN}")
    samples = int(counts.iloc[0])
    values = rows[scorers].to_numpy(dtype=np.float64).T.reshape(len(scorers), len(counts), samples)
    if whole_prompts_missing:  # every prompt measured whole or not at all (NaN), and at least one measured
        measured = np.isfinite(values).all(axis=2)
        valid = np.all(measured | np.isnan(values).all(axis=2)) and measured.any()
    else:
        valid = np.all(np.isfinite(values))
    if not valid:
        raise RunFileError(f"{path}: the {model} rows hold missing or non-finite scores (truncated?); {_RERUN}")
    return counts.index.to_numpy(), values


def load_eval_scores(run_dir: str | os.PathLike[str]) -> EvalScores:
    """Read ``eval_scores.csv`` of a run directory into policy and reference arrays (Fig. 1(c) data).

    Raises:
        FileNotFoundError: If there is no ``eval_scores.csv``.
        RunFileError: If the file is empty, truncated or malformed, or the two models were not scored on the
            same prompts (a ``ValueError``).
    """
    path = Path(run_dir) / EVAL_SCORES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: {path} does not exist; is {run_dir} a finished `llm run` directory?")
    try:  # the response texts are not needed; skipping them also avoids parsing free text as numbers
        frame = pd.read_csv(path, usecols=lambda column: column != "response")
    except (ValueError, UnicodeDecodeError) as err:  # empty file, broken quoting, bad bytes
        raise RunFileError(f"{path}: unreadable ({type(err).__name__}: {err}); {_RERUN}") from None
    missing = [key for key in _EVAL_KEYS if key not in frame.columns]
    if missing:
        raise RunFileError(f"{path}: missing column(s) {missing}; {_RERUN}")
    scorers = [column for column in frame.columns if column not in (*_EVAL_KEYS, _LOG_RATIO)]
    if not scorers:
        raise RunFileError(f"{path}: no scorer columns; {_RERUN}")
    try:
        policy_prompts, policy = _model_block(frame, "policy", scorers, path)
        reference_prompts, reference = _model_block(frame, "reference", scorers, path)
        has_ratio = _LOG_RATIO in frame.columns
        log_ratio = _model_block(frame, "policy", [_LOG_RATIO], path, True)[1][0] if has_ratio else None
    except (TypeError, ValueError) as err:
        if isinstance(err, RunFileError):
            raise
        raise RunFileError(f"{path}: malformed values ({err}); {_RERUN}") from None
    if not np.array_equal(policy_prompts, reference_prompts):
        raise RunFileError(f"{path}: the policy and reference rows cover different prompts; the comparison is paired")
    return EvalScores(tuple(scorers), policy_prompts, policy, reference, log_ratio)

