"""A run's trained policy as a Hugging Face folder: ``llm.export(run_dir, target_dir)``, ``python -m llm export``.

The run directory keeps only the trained weights (``checkpoint_<t>.safetensors``: every weight of a full run,
the top decoder layers, or the LoRA adapters). :func:`export` rebuilds the policy as the run trained it (its base
model, as the run's configuration names it or as the caller passes it, with those weights) and writes:

* full or top-layer training: a ``save_pretrained`` folder with the tokenizer, which
  ``AutoModelForCausalLM.from_pretrained(target_dir)`` reloads;
* LoRA (``model.train = "lora"``): a PEFT adapter folder with the tokenizer, which
  ``PeftModel.from_pretrained(base_model, target_dir)`` reloads on the run's base model;
* ``caid.json`` in either: lambda at that iteration, the one-shot lambda, beta, the thresholds b, the scorers,
  and the provenance (run directory, configuration, fingerprints of the objects the run was given, checkpoint
  digest, package versions).

The folder is built beside ``target_dir`` and renamed into place, so an interrupted export leaves nothing at
``target_dir``; an existing ``target_dir`` is refused.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from llm.config import ConfigError, RunConfig
from llm.config_files import from_dict
from llm.run_files import RunFileError, read_json, read_with_digest

__all__ = ["EXPORT_FILE", "export"]

EXPORT_FILE = "caid.json"
"""What :func:`export` writes beside the weights: lambda, beta, thresholds and provenance."""

_STATE_FILE = "state.json"
_SUMMARY_FILE = "summary.json"
_INPUTS = "inputs"  # the run record's fingerprints of the objects llm.run was given


def export(
    run_dir: Path | str,
    target_dir: Path | str,
    *,
    iteration: int | None = None,
    best: bool = False,
    model: Any = None,
    tokenizer: Any = None,
    offline: bool = False,
) -> Path:
    """Write the policy of ``run_dir`` (last iteration, ``iteration``, or the best) into ``target_dir``.

    Args:
        run_dir: A run directory of :func:`llm.run` / ``python -m llm run`` with at least one finished iteration.
        target_dir: The folder to create.
        iteration: Export this iteration's policy (its checkpoint must still be in the run directory).
        best: Export ``summary.json``'s ``best_iteration`` (a finished run).
        model: The model object the run was given (``llm.run(..., model=...)``), required for such a run; it must
            be unchanged (its fingerprint is checked against the run record).
        tokenizer: Its tokenizer, with ``model``.
        offline: Read the base model from local files and the local Hugging Face cache only (also when the run
            had ``model.offline``).

    Returns:
        ``target_dir``.

    Raises:
        ValueError: A run directory without a finished iteration, an iteration whose weights were not kept, a
            missing or changed model object, weights that do not fit the base model, or an existing target.
        RunFileError: A corrupt run file (a ``ValueError``).
    """
    import torch

    from llm.models import base_model
    from llm.trainable import apply_lora

    run_dir, target = Path(run_dir), Path(target_dir)
    if target.exists():
        raise ValueError(f"target_dir: {target} exists; export into a new folder")
    record, config, inputs = _run_record(run_dir)
    state = read_json(run_dir / _STATE_FILE, f"{run_dir} has no finished iteration to export; run it first")
    last = state.get("iteration") if isinstance(state, dict) else None
    if not isinstance(last, int) or not isinstance(state.get("metrics"), list) or len(state["metrics"]) != last:
        raise RunFileError(f"{run_dir / _STATE_FILE}: no iteration and metrics; export a run written by llm.run")
    chosen = _iteration(run_dir, last, iteration, best)
    weights_file = run_dir / (state["checkpoint"] if chosen == last else f"checkpoint_{chosen}.safetensors")
    if not weights_file.is_file():
        raise ValueError(
            f"{run_dir}: iteration {chosen}'s weights were not kept (only the last iteration's, {last}, are unless "
            "training.keep_checkpoints = true); export the last one, or rerun with keep_checkpoints"
        )
    data = read_with_digest(weights_file, "the checkpoint is corrupt: rerun the run (--resume keeps the rest)")
    import safetensors.torch

    weights = safetensors.torch.load(data)

    if inputs.get("model") is not None:
        base, tokenizer = _given_model(model, tokenizer, inputs, config)
    elif model is not None:
        raise ValueError(f"{run_dir} was run from model.name = {config.model.name!r}; export it without model=")
    else:
        model_config = config.model if not offline else _with_offline(config)
        base, tokenizer = base_model(model_config, config.data_seed)
    lora = config.model.train == "lora"
    policy = base
    if lora and not hasattr(base, "peft_config"):  # a PeftModel the run was given brings its own adapters
        model_config = config.model
        policy = apply_lora(
            base, model_config.lora_rank, model_config.lora_alpha, seed=config.seed,
            dropout=model_config.lora_dropout, target_modules=model_config.lora_target_modules,
        )  # fmt: skip
    missing, unexpected = policy.load_state_dict(weights, strict=False)
    trained = {name for name, p in policy.named_parameters() if p.requires_grad} if lora else set(weights)
    if unexpected or trained & set(missing) or (lora and trained != set(weights)):
        raise ValueError(
            f"{weights_file}: its weights do not fit the base model (unexpected: {sorted(unexpected)[:3]}, "
            f"not in the checkpoint: {sorted(trained - set(weights))[:3]}); export with the run's own model"
        )
    policy.eval()

    metrics = state["metrics"][chosen - 1]
    summary = _summary(run_dir)
    description = {
        "format": "peft_adapter" if lora else "save_pretrained",
        "reload": (
            "PeftModel.from_pretrained(base_model, target_dir), base_model as the run's model.name (or object)"
            if lora
            else "AutoModelForCausalLM.from_pretrained(target_dir)"
        ),
        "method": config.method,
        "iteration": chosen,
        "last_iteration": last,
        "lambda": metrics.get("lam"),
        "lambda_one_shot": summary.get("lambda_one_shot"),
        "beta": config.caid.beta,
        "thresholds": summary.get("thresholds"),
        "configured_thresholds": list(config.scorers.thresholds),
        "threshold_units": config.scorers.threshold_units,
        "objectives": list(config.objectives),
        "provenance": {
            "run_dir": str(run_dir.resolve()),
            "base_model": "object (llm.run(model=...))" if inputs.get("model") is not None else config.model.name,
            "config": record["config"],
            "checkpoint": {"file": weights_file.name, "sha256": hashlib.sha256(data).hexdigest()},
            "versions": record.get("versions"),
            "started": record.get("started"),
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with torch.no_grad():
            policy.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / EXPORT_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp creates 0700
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _run_record(run_dir: Path) -> tuple[dict[str, Any], RunConfig, dict[str, Any]]:
    """``config.json``, the configuration it holds, and the fingerprints of the objects the run was given."""
    fix = f"{run_dir} is not a run directory of llm.run (no valid config.json)"
    record = read_json(run_dir / "config.json", fix)
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise RunFileError(f"{run_dir / 'config.json'}: no 'config' table; {fix}")
    fields = dict(record["config"])
    inputs = fields.pop(_INPUTS, None) or {}
    try:
        config = from_dict(RunConfig, fields)
    except ConfigError as err:
        raise RunFileError(f"{run_dir / 'config.json'}: {err}; {fix}") from None
    return record, config, inputs


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / _SUMMARY_FILE
    if not path.is_file():
        return {}
    summary = read_json(path, "rerun the run with --resume to rewrite it")
    return summary if isinstance(summary, dict) else {}


def _iteration(run_dir: Path, last: int, iteration: int | None, best: bool) -> int:
    if best:
        chosen = _summary(run_dir).get("best_iteration")
        if not isinstance(chosen, int):
            raise ValueError(f"--best: {run_dir} has no finished summary.json naming best_iteration; finish the run")
        return chosen
    if iteration is None:
        return last
    if not 1 <= iteration <= last:
        raise ValueError(f"--iteration: {run_dir} has iterations 1..{last}, got {iteration}")
    return iteration


def _with_offline(config: RunConfig) -> Any:
    return dataclasses.replace(config.model, offline=True)


def _given_model(model: Any, tokenizer: Any, inputs: dict[str, Any], config: RunConfig) -> tuple[Any, Any]:
    """A copy of the caller's model (checked against the run record) in the run's dtype, and its tokenizer."""
    from llm.models import prepare_tokenizer
    from llm.run_inputs import object_fingerprint, reference_from

    if model is None or tokenizer is None:
        raise ValueError(
            "this run started from a model object (llm.run(..., model=...)): pass the same model and tokenizer, "
            "llm.export(run_dir, target_dir, model=model, tokenizer=tokenizer)"
        )
    if object_fingerprint(model) != inputs["model"]:
        raise ValueError("model=: not the model the run started from (its weights or configuration differ)")
    return reference_from(model, config.model), prepare_tokenizer(copy.deepcopy(tokenizer), type(model).__name__)
