"""One run of a method at one threshold vector: reference phase, one-shot dual, training, evaluation.

Methods (:mod:`llm.methods`; Algorithm 2 with the schedule of Sec. 4.1.1 and App. C.2):

* ``caid`` (MoCAID, the paper's multi-shot): lambda starts at the one-shot solution; iteration t > 1 first
  takes an on-policy dual step ``lambda <- [lambda - eta u]_+`` from n prompts x k fresh samples of the
  current policy; every iteration is one DPO epoch on the reference pairs relabelled by
  ``Bernoulli(sigma(Delta(r + lambda^T g)))``;
* ``one_shot`` (MoCAN): lambda fixed at the one-shot solution, T epochs;
* ``dpo_h`` / ``dpo_g``: pseudo-labels from the reward alone / the first utility alone;
* ``pecaid`` (Algorithm 3): as ``caid``, with the scores replaced by the implicit rewards of
  models DPO-trained from pi_ref on preferences: a labelled file or dataset (``pecaid.preferences``), or else
  the scorers' simulated Bradley-Terry labels of pi_ref's pairs (:mod:`llm.implicit_rewards`,
  :mod:`llm.pecaid`), saved as ``pre_aligned_<i>.safetensors``;
* ``reference``: pi_ref itself, evaluated as a negative control (no iteration).

:class:`llm.trainer.CAIDTrainer` holds the run's state and steps; :func:`run` is the driver: resume, iterate
(checkpointing each iteration), evaluate, write. The DPO reference is pi_ref throughout. The run directory
holds ``config.json`` (resolved configuration, versions), ``metrics.jsonl``, ``dual_trajectory.csv``,
``eval_scores.csv`` (every held-out sample's scores and log pi/pi_ref), ``summary.json``, and
``checkpoint_<t>.safetensors`` and ``training_state_<t>.safetensors`` (each with a ``.sha256`` beside it)
named by ``state.json``; ``.lock`` while a process writes; every file is written atomically, and ``--resume``
continues after the last finished iteration with the saved optimiser and random states, so a killed run ends
as the uninterrupted one would.

Under ``torchrun --nproc_per_node N`` the same command shares sampling, scoring and log-probabilities out
across the ranks and trains with DDP or FSDP (:mod:`llm.distributed`); only rank 0 writes files, and the
samples, labels and batches are those of a single-process run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from llm.checkpoints import STATE_FILE, load_state
from llm.config import RunConfig
from llm.config_files import to_dict
from llm.distributed import Ranks, init_ranks
from llm.learner import TrunkCaches
from llm.models import (
    base_model,
    chat_prompt,
    default_cache_root,
    folder_fingerprint,
    model_fingerprint,
    module_fingerprint,
)
from llm.preference_pairs import load_preference_pairs
from llm.prompts import PromptSet, content_key, prompt_set, split
from llm.python_scorers import PythonScorer, ScoreFunction
from llm.reference_phase import EVAL_SAMPLES, ReferenceData, RunSetup, build_reference, reference_key
from llm.run_files import RunExistsError, RunFileError, check_existing_run, read_json, run_lock, write_run_record
from llm.run_inputs import RunInputs, reference_from
from llm.run_schema import SUMMARY_FILE, RunSummary
from llm.scorers import (
    Standardization,
    build_scorer,
    plugin_fraction_thresholds,
    scorer_name,
    standardize,
)
from llm.trainer import CAIDTrainer

__all__ = ["STATE_FILE", "RunExistsError", "RunSetup", "execute", "resolved_thresholds", "run", "run_setup"]

VERSIONS = ("caid-toolkit", "torch", "transformers", "numpy", "vaderSentiment", "alt-profanity-check")


def _prompts(config: RunConfig, given: PromptSet | None) -> tuple[PromptSet, PromptSet]:
    """The train and test prompts: ``given`` (``llm.run(prompts=...)``) or ``data.prompts``' sets, mixed, split."""
    if given is not None:
        merged = given
    else:
        limit = config.data.limit or None
        sets = [prompt_set(spec, limit, config.data_seed, offline=config.model.offline) for spec in config.data.prompts]
        merged = PromptSet("+".join(s.name for s in sets), tuple(p for s in sets for p in s.prompts))
    return split(merged, config.data.test_fraction, config.data_seed)


def _models(config: RunConfig, device: torch.device, inputs: RunInputs | None = None) -> tuple[torch.nn.Module, Any]:
    """(frozen reference, tokenizer) on ``device`` in the configured dtype: ``model.name``'s, or the caller's copied."""
    if inputs is None or inputs.model is None:
        model, tokenizer = base_model(config.model, config.data_seed)
    else:
        model, tokenizer = reference_from(inputs.model, config.model), inputs.tokenizer
    return model.to(device).eval().requires_grad_(False), tokenizer



_PLUGIN_SEED = 104729  # offsets the plug-in pool's sampling seed from the pairs' (an arbitrary prime)


def _scorer_fingerprint(scorer: Any, cache_dir: str | None) -> dict[str, object] | None:
    """The content fingerprint of an ``hf:`` scorer's model folder or a caller's scorer (None for a built-in)."""
    inner = getattr(scorer, "scorer", scorer)  # a Signed wrapper scales or negates the scorer inside
    if isinstance(inner, PythonScorer):
        return {"python": inner.fingerprint}
    folder = getattr(inner, "folder", None)
    return folder_fingerprint(folder, cache_dir) if folder is not None else None


def run_setup(config: RunConfig, ranks: Ranks | None = None, inputs: RunInputs | None = None) -> RunSetup:
    """Load the prompts, scorers and pi_ref, and load or build the cached reference phase (no training).

    Every method and threshold of ``config`` shares it (the cache key ignores both), so a sweep computes it
    once; :mod:`analysis.dual_convergence` studies it alone. The data (prompts, a preference file) is read and
    checked before any scorer or model loads.

    Args:
        config: The run's configuration.
        ranks: The processes sharing the run (None: from ``model.device``).
        inputs: Objects in place of configuration names (:class:`llm.run_inputs.RunInputs`); their fingerprints
            join the cache key.

    Raises:
        ValueError: For bad prompt sets, scorers or models (each names what to fix).
    """
    inputs = inputs or RunInputs()
    ranks = ranks or init_ranks(config.model.device)
    train, test = _prompts(config, inputs.prompts)
    if config.method == "pecaid" and config.pecaid.preferences and inputs.preferences is None:
        # Checked here, before any weights load (the PeCAID pre-alignment reads it again).
        load_preference_pairs(config.pecaid.preferences, config.pecaid.objectives or None, offline=config.model.offline)
    scorers = [
        build_scorer(
            spec, device=str(ranks.device), dtype=config.model.dtype, offline=config.model.offline,
            custom=inputs.scorers,
        )
        for spec in config.scorers.specs
    ]  # fmt: skip
    reference, tokenizer = _models(config, ranks.device, inputs)
    use_template = config.model.use_chat_template

    # The model's inputs, formatted once: sampling, on-policy dual steps and evaluation reuse them.
    train_inputs = [chat_prompt(tokenizer, p, use_template) for p in train.prompts]
    test_inputs = [chat_prompt(tokenizer, p, use_template) for p in test.prompts]

    given = inputs.fingerprints() if inputs.model is not None else None
    parts = {
        # The weights by content and resolved path, not the name typed: replaced weights give a new key.
        "model": model_fingerprint(config.model.name, config.model.cache_dir or None) if given is None else
        {"object": given["model"], "tokenizer": given["tokenizer"]},
        # A model built in code (no files to hash) by its tensors: a changed tiny_model gives a new key.
        "weights": module_fingerprint(reference) if config.model.name == "tiny" and given is None else None,
        "model_seed": config.data_seed if config.model.name == "tiny" and given is None else None,
        "dtype": config.model.dtype, "chat": use_template, "train": content_key(train), "test": content_key(test),
        "scorers": list(config.scorers.specs),
        "scorer_weights": [_scorer_fingerprint(s, config.model.cache_dir or None) for s in scorers],
        "generation": dataclasses.asdict(config.generation), "seed": config.data_seed,
    }  # fmt: skip
    eval_samples = config.evaluation.reference_samples
    if eval_samples != EVAL_SAMPLES:  # keyed only when set, so the entries cached at the default stay valid
        parts["eval_samples"] = eval_samples
    key = reference_key(parts)
    samples_key = reference_key({k: v for k, v in parts.items() if k not in ("scorers", "scorer_weights")})
    cache_root = Path(config.model.cache_dir) if config.model.cache_dir else default_cache_root()
    ref = build_reference(
        reference, tokenizer, train.prompts, train_inputs, test.prompts, test_inputs, scorers,
        config.generation, config.data_seed, key, cache_root / "reference" / f"{key}.npz", ranks, eval_samples,
        samples_key,
    )  # fmt: skip
    plugin = None
    if config.caid.plugin_samples:
        # Its own sample of pi_ref, sized as the paper's one-shot problem, apart from the DPO pairs' K.
        n = config.caid.plugin_prompts or len(train)
        generation = dataclasses.replace(config.generation, samples_per_prompt=config.caid.plugin_samples)
        plugin_key = reference_key({**parts, "plugin": [n, config.caid.plugin_samples]})
        plugin = build_reference(
            reference, tokenizer, train.prompts, train_inputs[:n], [], [], scorers, generation,
            config.data_seed + _PLUGIN_SEED, plugin_key, cache_root / "reference" / f"{plugin_key}.npz", ranks,
        )  # fmt: skip
    standardization = None
    if config.scorers.standardize:
        # sigma_w measured once on the training reference pool, then every score of the run is in sigma units.
        _, standardization = standardize(ref.train_scores, [scorer_name(s) for s in scorers])
        scorers = [standardization.scorer(s) for s in scorers]
        ref, plugin = (None if data is None else _rescaled(data, standardization) for data in (ref, plugin))
    # Without scorers (PeCAID from labelled pairs) the trainer resolves fractions on the implicit rewards.
    thresholds = tuple(config.scorers.thresholds)
    if not config.scorers.none:
        thresholds = resolved_thresholds(config, (plugin or ref).train_scores[1:])
    return RunSetup(
        scorers, train, test, reference, tokenizer, train_inputs, test_inputs, ref, samples_key, plugin, thresholds,
        standardization,
    )


def _rescaled(data: ReferenceData, standardization: Standardization) -> ReferenceData:
    return dataclasses.replace(
        data, train_scores=standardization.apply(data.train_scores), test_scores=standardization.apply(data.test_scores)
    )


def resolved_thresholds(config: RunConfig, utility_pool: np.ndarray) -> tuple[float, ...]:
    """The thresholds b_i the run uses: as configured, or fractions of each utility's plug-in maximum.

    Args:
        config: The run configuration (``scorers.thresholds`` and ``scorers.threshold_units``).
        utility_pool: ``(m, N, K)`` utility scores of the one-shot plug-in pool, in the run's units.
    """
    fractions = config.scorers.thresholds
    if config.scorers.threshold_units == "absolute":
        return tuple(float(b) for b in fractions)
    return plugin_fraction_thresholds(fractions, utility_pool)


def run(
    config: RunConfig,
    out: str | Path,
    *,
    model: Any = None,
    tokenizer: Any = None,
    prompts: Any = None,
    preferences: Any = None,
    scorers: Mapping[str, ScoreFunction] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one method into ``out``; return the summary (also written to ``summary.json``).

    Args:
        config: The run's configuration (:func:`llm.config_files.load_config`, or :class:`llm.config.RunConfig`).
        out: The run directory.
        model: A ``transformers`` causal LM or ``peft`` ``PeftModel`` in place of ``model.name``: pi_ref is a
            frozen copy and the policy starts from it (the object itself is left as it was).
        tokenizer: Its tokenizer (required with ``model``).
        prompts: A ``datasets.Dataset``, a pandas DataFrame or a list of strings in place of ``data.prompts``.
        preferences: PeCAID's labelled pairs (a ``datasets.Dataset`` or DataFrame in a layout of
            :mod:`llm.preference_pairs`) in place of ``pecaid.preferences``.
        scorers: Python scorers by name, ``(prompts, responses) -> one number per pair``, which
            ``scorers.reward`` and ``scorers.utilities`` name.
        resume: Continue the run in ``out`` after its last finished iteration.
        progress: Show progress bars.

    Raises:
        RunExistsError: If ``out`` holds a run with another configuration or other objects, or any run and
            ``resume`` is off.
        theory.InfeasibleProblemError: If the thresholds are unreachable on the reference samples (before
            any training).
        ValueError: For bad prompt sets, scorers, models or objects (each names what to fix), before any model
            loads where the input alone shows it.
        TypeError: For an object of the wrong kind.
    """
    inputs = RunInputs.of(
        config, model=model, tokenizer=tokenizer, prompts=prompts, preferences=preferences, scorers=scorers
    )
    return execute(config, Path(out), resume, progress, TrunkCaches(), inputs)


def execute(
    config: RunConfig,
    out: Path,
    resume: bool,
    progress: bool,
    trunks: TrunkCaches,
    inputs: RunInputs | None = None,
) -> dict[str, Any]:
    """:func:`run`, with frozen-trunk caches shared with the caller's other runs (a sweep's, a study's).

    Raises:
        RunExistsError: If ``out`` holds a run with another configuration, or any run and ``resume`` is off.
        theory.InfeasibleProblemError: If the thresholds are unreachable on the reference samples (before
            any training).
        ValueError: For bad prompt sets, scorers or models (each names what to fix).
    """
    inputs = inputs or RunInputs()
    ranks = init_ranks(config.model.device)
    with contextlib.ExitStack() as stack:
        # One writer per run directory: rank 0 holds the lock (the other ranks write nothing).
        ranks.on_main(lambda: stack.enter_context(run_lock(out)))
        return _run_locked(config, out, ranks, resume, progress, trunks, inputs)


def _finished_summary(out: Path) -> dict[str, Any] | None:
    """The summary of a finished run in ``out``; None (with a warning when corrupt: it is rebuilt) otherwise."""
    path = out / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return RunSummary.from_json(read_json(path, "it is rebuilt from the last checkpoint"), path).to_json()
    except RunFileError as err:
        warnings.warn(str(err), RuntimeWarning, stacklevel=3)
        return None


def _run_record(config: RunConfig, inputs: RunInputs) -> dict[str, Any]:
    """What ``config.json`` records as the run's configuration: the configuration, and the objects' fingerprints."""
    return to_dict(config) if inputs.empty else {**to_dict(config), "inputs": inputs.fingerprints()}


def _run_locked(
    config: RunConfig,
    out: Path,
    ranks: Ranks,
    resume: bool,
    progress: bool,
    trunks: TrunkCaches,
    inputs: RunInputs,
) -> dict[str, Any]:
    """Resume (or start), run the remaining iterations, checkpointing each, then evaluate and write the summary."""
    hint = None if resume else "pass --resume to continue it, or use a fresh one"
    recorded = _run_record(config, inputs)
    # Read-only until the inputs are valid, so a failed start leaves nothing that blocks its --out.
    ranks.on_main(lambda: check_existing_run(out, recorded, hint))
    if resume and (summary := _finished_summary(out)) is not None:
        # Written last, and the run record matched this configuration: finished, nothing to load or recompute.
        return summary
    m, iterations = len(config.objectives) - 1, config.caid.iterations
    saved = load_state(out, m, iterations) if resume else None  # a bad state fails before any work

    def record() -> None:
        ranks.on_main(lambda: write_run_record(out, recorded, VERSIONS))

    setup = run_setup(config, ranks, inputs)
    trainer = CAIDTrainer.build(config, setup, ranks, out, record, progress, trunks, inputs.preferences)
    if saved is not None:
        trainer.load(saved, out)
    # pi_ref itself (method 'reference', a negative control) is evaluated as it is: no iteration.
    remaining = range(trainer.iteration + 1, iterations + 1) if trainer.spec.trains else range(0)
    for _ in tqdm(remaining, desc=config.method, unit="iter", disable=not (progress and ranks.is_main)):
        trainer.iterate()
        trainer.save(out)
    summary = trainer.evaluate(out)
    if ranks.is_main:
        summary.write(out)
    return summary.to_json()
