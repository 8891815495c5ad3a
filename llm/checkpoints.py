"""A run's checkpoint files: ``state.json`` naming the safetensors of one finished iteration, never pickle.

``checkpoint_<t>.safetensors`` holds the trained weights and ``training_state_<t>.safetensors`` the optimiser's
tensors and the torch generator, each with its SHA-256 beside it; everything else (the multipliers' state,
metrics, scheduler, numpy generator) is JSON in ``state.json``, written last. A kill at any point leaves
``state.json`` naming complete files of one iteration; :func:`load_state` checks every part before a resume.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from llm.caid import Multipliers
from llm.run_files import DIGEST_SUFFIX, RunFileError, read_json, read_with_digest, write_atomic, write_with_digest

__all__ = ["STATE_FILE", "SavedState", "check_optimizer", "check_weights", "load_state", "read_weights", "restart_hint",
           "save_checkpoint", "write_jsonl", "write_weights"]

STATE_FILE = "state.json"
# Written by earlier versions with pickle; never loaded (a crafted one could run code on --resume).
_LEGACY_STATE = "state.pt"
# 2: the multipliers' state (lambda, eta, update rule, trajectory, slacks) replaced format 1's bare lambda.
_STATE_FORMAT = 2
_OPTIMIZER = "optimizer/"  # prefix of the optimiser's tensors in training_state_<t>.safetensors


def restart_hint(out: Path) -> str:
    """What to do about a state file that cannot be resumed."""
    return (
        f"delete {out / STATE_FILE} and the checkpoint_*/training_state_* files to restart this run from "
        f"iteration 1, or use a fresh --out"
    )


def write_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """Safetensors (no pickle) with its SHA-256 beside it, verified by :func:`read_weights`."""
    write_with_digest(path, safetensors.torch.save(weights))


def read_weights(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` after its digest is checked.

    Raises:
        RunFileError: For a missing, altered or non-safetensors file (``fix`` says what to do).
    """
    data = read_with_digest(path, fix)
    try:
        return safetensors.torch.load(data)
    except Exception as err:  # a digest-valid file that is no safetensors: written by something else
        raise RunFileError(f"{path}: not a safetensors file ({err}); {fix}") from None


def check_weights(weights: dict[str, torch.Tensor], expected: dict[str, torch.Size], path: Path, fix: str) -> None:
    """Refuse saved weights whose names or shapes are not exactly the trained parameters' (a strict load).

    Args:
        weights: The tensors read from ``path``.
        expected: Each trained parameter's name and shape.
        path: The file (named in the error).
        fix: What to do about it.

    Raises:
        RunFileError: Naming the missing, unexpected or misshapen tensors.
    """
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    shapes = sorted(n for n in set(expected) & set(weights) if tuple(weights[n].shape) != tuple(expected[n]))
    problems = [f"{label} {names[:3]}{' ...' if len(names) > 3 else ''}" for label, names in
                (("missing", missing), ("unexpected", unexpected), ("other shapes for", shapes)) if names]
    if problems:
        raise RunFileError(f"{path}: not this run's trained parameters ({'; '.join(problems)}); {fix}")


def check_optimizer(state: dict[str, Any], expected: dict[str, torch.Size], path: Path, fix: str) -> None:
    """Refuse an optimiser state for other parameters: each entry's moment tensors have its parameter's shape.

    Raises:
        RunFileError: Naming the first entry that does not fit.
    """
    for name, entries in state["state"].items():
        if name not in expected:
            raise RunFileError(f"{path}: optimiser state for {name!r}, not a trained parameter of this run; {fix}")
        for key, value in entries.items():
            if isinstance(value, torch.Tensor) and key != "step" and tuple(value.shape) != tuple(expected[name]):
                raise RunFileError(f"{path}: optimiser {key} of {name!r} has shape {tuple(value.shape)}, the "
                                   f"parameter {tuple(expected[name])}; {fix}")


def _check_numbers(plain: dict[str, Any], scheduler: dict[str, Any]) -> None:
    """The optimiser's and schedule's hyper-parameters are finite and in range (a learning rate of -5 is refused)."""
    groups = plain.get("param_groups")
    if not (isinstance(groups, list) and groups):
        raise ValueError("optimizer.param_groups must be a non-empty list")
    for i, group in enumerate(groups):
        lr, eps, decay = group.get("lr"), group.get("eps", 1.0), group.get("weight_decay", 0.0)
        betas = group.get("betas", (0.0, 0.0))
        numbers = [lr, eps, decay, *betas] if isinstance(betas, list | tuple) else [None]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
            raise ValueError(f"optimizer.param_groups[{i}]: lr, eps, weight_decay and betas must be finite numbers")
        if lr < 0 or eps <= 0 or decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"optimizer.param_groups[{i}]: lr {lr}, eps {eps}, weight_decay {decay}, betas {betas} "
                             "out of range (lr >= 0, eps > 0, weight_decay >= 0, 0 <= beta < 1)")
    for key in ("base_lrs", "_last_lr"):
        values = scheduler.get(key, [])
        if not (isinstance(values, list) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                  and math.isfinite(v) and v >= 0 for v in values)):
            raise ValueError(f"scheduler.{key} must list finite non-negative learning rates, got {values!r}")
    if type(scheduler.get("last_epoch", 0)) is not int or scheduler.get("last_epoch", 0) < -1:
        raise ValueError(f"scheduler.last_epoch must be an integer >= -1, got {scheduler.get('last_epoch')!r}")


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimiser state as (tensors for safetensors, the rest as JSON-able data)."""
    tensors, plain = {}, {}
    for name, entries in state["state"].items():
        plain[name] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIMIZER}{name}/{key}"] = value.contiguous()
            else:
                plain[name][key] = value
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def _join_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state = {name: dict(entries) for name, entries in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith(_OPTIMIZER):
            name, entry = key.removeprefix(_OPTIMIZER).rsplit("/", 1)
            state.setdefault(name, {})[entry] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One JSON object per line, written atomically."""
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def save_checkpoint(
    out: Path,
    iteration: int,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    keep_weights: bool = False,
) -> None:
    """Write iteration ``t``'s checkpoint and training state, then ``state.json`` naming them, then drop older ones.

    Args:
        out: The run directory.
        iteration: t, the finished iteration.
        weights: The trained weights.
        optimizer_state: The optimiser's ``state_dict()``.
        state: The JSON-able rest: ``iteration``, ``multipliers``, ``metrics``, ``scheduler``, ``numpy_rng``.
        keep_weights: Keep the earlier iterations' ``checkpoint_<t>.safetensors`` (``training.keep_checkpoints``).
    """
    names = {
        "checkpoint": f"checkpoint_{iteration}.safetensors",
        "training_state": f"training_state_{iteration}.safetensors",
    }
    tensors, plain = _split_optimizer(optimizer_state)
    write_weights(out / names["checkpoint"], weights)
    write_weights(out / names["training_state"], {**tensors, "torch_rng": torch.get_rng_state()})
    record = {"format": _STATE_FORMAT, **state, "optimizer": plain, **names}
    write_atomic(out / STATE_FILE, json.dumps(record) + "\n")
    keep = {*names.values(), *(n + DIGEST_SUFFIX for n in names.values())}
    earlier = [] if keep_weights else [*out.glob("checkpoint_*.safetensors*")]
    for old in [*earlier, *out.glob("training_state_*.safetensors*")]:
        if old.name not in keep:
            old.unlink()


@dataclasses.dataclass(frozen=True, eq=False)
class SavedState:
    """What ``state.json`` and the files it names hold, validated."""

    iteration: int
    multipliers: Multipliers
    metrics: list[dict[str, Any]]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_rng: torch.Tensor
    grad_scaler: dict[str, float] = dataclasses.field(default_factory=dict)  # fp16's loss scale (else empty)


def load_state(out: Path, m: int, iterations: int) -> SavedState | None:
    """The saved state of ``out`` (None if there is none), every part checked; never unpickles.

    Args:
        out: The run directory.
        m: The run's number of constraints.
        iterations: The run's T.

    Raises:
        RunFileError: For a legacy ``state.pt``, or a missing, truncated or inconsistent state or checkpoint.
    """
    path, fix = out / STATE_FILE, restart_hint(out)
    if not path.is_file():
        if (out / _LEGACY_STATE).is_file():
            raise RunFileError(
                f"{out / _LEGACY_STATE}: a state file of an earlier version, stored with pickle, which is never "
                f"loaded (a crafted one could run code); delete it and the checkpoint_* files to restart this run "
                f"from iteration 1, or use a fresh --out"
            )
        return None
    record = read_json(path, fix)
    try:
        if record.get("format") != _STATE_FORMAT:
            raise ValueError(f"format {record.get('format')!r} (an earlier version's), expected {_STATE_FORMAT}")
        iteration, metrics = record["iteration"], record["metrics"]
        if type(iteration) is not int or not 1 <= iteration <= iterations:  # bool is an int subclass: refused
            raise ValueError(f"iteration {iteration!r} is not an integer in 1..{iterations}")
        multipliers = Multipliers.from_state_dict(record["multipliers"])
        if len(multipliers) != m:
            raise ValueError(f"multipliers for {len(multipliers)} constraints, the run has {m}")
        if not (isinstance(metrics, list) and [r.get("iteration") for r in metrics] == list(range(1, iteration + 1))):
            raise ValueError("metrics do not list iterations 1..iteration")
        files = [record["checkpoint"], record["training_state"]]
        if not all(isinstance(f, str) and "/" not in f and "\\" not in f for f in files):
            raise ValueError(f"file names {files!r} are not plain names in the run directory")
        plain, scheduler, numpy_rng = record["optimizer"], record["scheduler"], record["numpy_rng"]
        grad_scaler = record.get("grad_scaler", {})
        if not all(isinstance(v, dict) for v in (plain, scheduler, numpy_rng, grad_scaler)):
            raise ValueError("optimizer, scheduler, numpy_rng and grad_scaler must be tables")
        _check_numbers(plain, scheduler)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in grad_scaler.values()):
            raise ValueError(f"grad_scaler {grad_scaler!r} must hold numbers")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RunFileError(f"{path}: invalid ({type(err).__name__}: {err}); {fix}") from None
    weights = read_weights(out / files[0], fix)
    tensors = read_weights(out / files[1], fix)
    if "torch_rng" not in tensors:
        raise RunFileError(f"{out / files[1]}: no torch_rng tensor; {fix}")
    return SavedState(
        iteration, multipliers, metrics, weights, _join_optimizer(tensors, plain), scheduler, numpy_rng,
        tensors["torch_rng"], grad_scaler,
    )
