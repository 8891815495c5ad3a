"""One run of a method at one threshold vector: reference phase, one-shot dual, training, evaluation.

Methods (:mod:`llm.methods`; Algorithm 2 with the schedule of Sec. 4.1.1 and App. C.2):

* ``caid`` (MoCAID, the paper's multi-shot): lambda starts at the one-shot solution; iteration t > 1 first
  takes an on-policy dual step ``lambda <- [lambda - eta u]_+`` from n prompts x k fresh samples of the
  current policy; every iteration is one DPO epoch on the reference pairs relabelled by
  ``Bernoulli(sigma(Delta(r + lambda^T g)))``;
* ``one_shot`` (MoCAN): lambda fixed at the one-shot solution, T epochs;
* ``dpo_reward`` / ``dpo_utility``: pseudo-labels from the reward alone / the first utility alone;
* ``pecaid`` (Algorithm 3): as ``caid``, with the scores replaced by the implicit rewards of
  models DPO-trained from pi_ref on the scorers' simulated Bradley-Terry preferences
  (:mod:`llm.implicit_rewards`), saved as ``pre_aligned_<i>.safetensors``.

The DPO reference is pi_ref throughout. The run directory holds ``config.json`` (resolved configuration,
versions), ``metrics.jsonl``, ``dual_trajectory.csv``, ``eval_scores.csv`` (every held-out sample's scores
and log pi/pi_ref), ``summary.json``, and ``checkpoint_<t>.safetensors`` and ``training_state_<t>.safetensors``
(each with a ``.sha256`` beside it) named by ``state.json``; ``.lock`` while a process writes; every file is
written atomically, and ``--resume`` continues after the last finished iteration with the saved optimiser
and random states, so a killed run ends as the uninterrupted one would.

Under ``torchrun --nproc_per_node N`` the same command shares sampling, scoring and log-probabilities out
across the ranks and trains with DDP or FSDP (:mod:`llm.distributed`); only rank 0 writes files, and the
samples, labels and batches are those of a single-process run.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from tqdm import tqdm
from transformers import get_scheduler

from llm.config import RunConfig, to_dict
from llm.data import PromptSet, content_key, prompt_set, split
from llm.distributed import (
    Ranks,
    full_parameters,
    init_ranks,
    load_training_state,
    load_weights,
    training_state,
    wrap_for_training,
)
from llm.dpo import dpo_loss, pseudo_labels, sequence_logprobs
from llm.dual import dual_step
from llm.implicit_rewards import ImplicitReward
from llm.methods import method
from llm.models import (
    DEFAULT_MODEL,
    DTYPES,
    apply_lora,
    chat_prompt,
    default_cache_root,
    folder_fingerprint,
    load_model,
    load_tokenizer,
    model_fingerprint,
    tiny_model,
    trainable_parameters,
)
from llm.paired_statistics import improvement
from llm.reference_phase import (
    CHUNK_PROMPTS,
    EVAL_SAMPLES,
    ReferenceData,
    build_reference,
    reference_key,
    response_logprobs,
    score_samples,
)
from llm.run_files import (
    DIGEST_SUFFIX,
    RunExistsError,
    RunFileError,
    check_existing_run,
    read_json,
    read_with_digest,
    run_lock,
    write_atomic,
    write_run_record,
    write_with_digest,
)
from llm.run_schema import EVAL_SCORES_FILE, SUMMARY_FILE, RunSummary, eval_scores_csv
from llm.sampling import sample_responses
from llm.scorers import build_scorer
from theory.dual import dual_value
from theory.dual_solver import solve_dual

__all__ = ["RunExistsError", "RunSetup", "reference_phase", "run"]

VERSIONS = ("caid-toolkit", "torch", "transformers", "numpy", "vaderSentiment", "alt-profanity-check")


def _prompts(config: RunConfig) -> tuple[PromptSet, PromptSet]:
    limit = config.data.limit or None
    sets = [prompt_set(spec, limit, config.seed) for spec in config.data.prompts]
    merged = PromptSet("+".join(s.name for s in sets), tuple(p for s in sets for p in s.prompts))
    return split(merged, config.data.test_fraction, config.seed)


def _models(config: RunConfig, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """(frozen reference, tokenizer), on ``device`` in the configured dtype."""
    cache = config.model.cache_dir or None
    dtype = DTYPES[config.model.dtype]
    if config.model.name == "tiny":
        tokenizer = load_tokenizer(DEFAULT_MODEL, cache_dir=cache)
        model = tiny_model(tokenizer, seed=config.seed).to(dtype)
    else:
        model, tokenizer = load_model(config.model.name, cache_dir=cache, dtype=dtype)
    return model.to(device).eval().requires_grad_(False), tokenizer


@dataclasses.dataclass(frozen=True, eq=False)
class _Learner:
    """A model DPO trains: ``model`` itself, ``trainer`` the (DDP/FSDP) module steps run through."""

    model: torch.nn.Module
    trainer: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    names: set[str]  # the trained parameters, a tied weight under one name


def _learner(config: RunConfig, ranks: Ranks, reference: torch.nn.Module, total_steps: int) -> _Learner:
    """A trainable copy of pi_ref (trained weights as configured), wrapped for the job, with its optimiser."""
    model = copy.deepcopy(reference)
    if config.training.gradient_checkpointing:
        # Non-reentrant checkpointing needs no gradient on the inputs, so frozen embeddings (LoRA, top layers) work.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.model.train == "lora":
        model = apply_lora(model, config.model.lora_rank, config.model.lora_alpha, seed=config.seed)
    else:
        trainable_parameters(model, config.model.train, config.model.top_k_layers)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    # The optimiser is built after wrapping: FSDP replaces the parameters it shards.
    trainer = wrap_for_training(model, ranks, config.training.distributed)
    trained = [p for p in trainer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.training.learning_rate)
    return _Learner(model, trainer, optimizer, _scheduler(config, optimizer, total_steps), names)


def _scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The Hugging Face Trainer's schedules (Table 1): warm-up, then constant or cosine to 0 over all steps."""
    return get_scheduler(
        {"cosine": "cosine", "constant": "constant_with_warmup"}[config.training.lr_scheduler],
        optimizer,
        num_warmup_steps=config.training.warmup_steps,
        num_training_steps=total_steps,
    )


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


STATE_FILE = "state.json"
# Written by earlier versions with pickle; never loaded (a crafted one could run code on --resume).
_LEGACY_STATE = "state.pt"
_STATE_FORMAT = 1
_OPTIMIZER = "optimizer/"  # prefix of the optimiser's tensors in training_state_<t>.safetensors


def _restart_hint(out: Path) -> str:
    return (
        f"delete {out / STATE_FILE} and the checkpoint_*/training_state_* files to restart this run from "
        f"iteration 1, or use a fresh --out"
    )


def _save_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """Safetensors (no pickle) with its SHA-256 beside it, verified by :func:`_load_weights`."""
    write_with_digest(path, safetensors.torch.save(weights))


def _load_weights(path: Path, fix: str) -> dict[str, torch.Tensor]:
    data = read_with_digest(path, fix)
    try:
        return safetensors.torch.load(data)
    except Exception as err:  # a digest-valid file that is no safetensors: written by something else
        raise RunFileError(f"{path}: not a safetensors file ({err}); {fix}") from None


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


def _save_checkpoint(
    out: Path, iteration: int, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any], state: dict[str, Any]
) -> None:
    """Write iteration ``t``'s checkpoint and training state, then ``state.json`` naming them, then drop older ones.

    ``checkpoint_<t>.safetensors`` holds the trained weights, ``training_state_<t>.safetensors`` the
    optimiser's tensors and the torch generator, each with its SHA-256 beside it; everything else (lambda,
    metrics, scheduler, numpy generator) is JSON. No pickle anywhere. A kill at any point leaves
    ``state.json`` naming complete files of one iteration.
    """
    names = {
        "checkpoint": f"checkpoint_{iteration}.safetensors",
        "training_state": f"training_state_{iteration}.safetensors",
    }
    tensors, plain = _split_optimizer(optimizer_state)
    _save_weights(out / names["checkpoint"], weights)
    _save_weights(out / names["training_state"], {**tensors, "torch_rng": torch.get_rng_state()})
    record = {"format": _STATE_FORMAT, **state, "optimizer": plain, **names}
    write_atomic(out / STATE_FILE, json.dumps(record) + "\n")
    keep = {*names.values(), *(n + DIGEST_SUFFIX for n in names.values())}
    for old in [*out.glob("checkpoint_*.safetensors*"), *out.glob("training_state_*.safetensors*")]:
        if old.name not in keep:
            old.unlink()


@dataclasses.dataclass(frozen=True, eq=False)
class _SavedState:
    """What ``state.json`` and the files it names hold, validated."""

    iteration: int
    lam: np.ndarray
    metrics: list[dict[str, Any]]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_rng: torch.Tensor


def _load_state(out: Path, m: int, iterations: int) -> _SavedState | None:
    """The saved state of ``out`` (None if there is none), every part checked; never unpickles.

    Raises:
        RunFileError: For a legacy ``state.pt``, or a missing, truncated or inconsistent state or checkpoint.
    """
    path, fix = out / STATE_FILE, _restart_hint(out)
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
            raise ValueError(f"format {record.get('format')!r}, expected {_STATE_FORMAT}")
        iteration, lam, metrics = record["iteration"], np.asarray(record["lam"], dtype=float), record["metrics"]
        if not (isinstance(iteration, int) and 1 <= iteration <= iterations):
            raise ValueError(f"iteration {iteration!r} outside 1..{iterations}")
        if lam.shape != (m,) or not np.all(np.isfinite(lam)) or np.any(lam < 0):
            raise ValueError(f"lam {record['lam']!r} is not {m} finite non-negative numbers")
        if not (isinstance(metrics, list) and [r.get("iteration") for r in metrics] == list(range(1, iteration + 1))):
            raise ValueError("metrics do not list iterations 1..iteration")
        files = [record["checkpoint"], record["training_state"]]
        if not all(isinstance(f, str) and "/" not in f and "\\" not in f for f in files):
            raise ValueError(f"file names {files!r} are not plain names in the run directory")
        plain, scheduler, numpy_rng = record["optimizer"], record["scheduler"], record["numpy_rng"]
        if not all(isinstance(v, dict) for v in (plain, scheduler, numpy_rng)):
            raise ValueError("optimizer, scheduler and numpy_rng must be tables")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RunFileError(f"{path}: invalid ({type(err).__name__}: {err}); {fix}") from None
    weights = _load_weights(out / files[0], fix)
    tensors = _load_weights(out / files[1], fix)
    if "torch_rng" not in tensors:
        raise RunFileError(f"{out / files[1]}: no torch_rng tensor; {fix}")
    return _SavedState(
        iteration, lam, metrics, weights, _join_optimizer(tensors, plain), scheduler, numpy_rng, tensors["torch_rng"]
    )


@dataclasses.dataclass(frozen=True, eq=False)
class RunSetup:
    """What every method of a configuration shares: scorers, prompts, pi_ref and its reference phase.

    Attributes:
        scorers: The reward scorer, then one per utility.
        train: Training prompts; ``test``: held-out prompts.
        reference: The frozen pi_ref; ``tokenizer`` its tokenizer.
        train_inputs: The model inputs of the training prompts (chat template applied); ``test_inputs`` likewise.
        ref: The (cached) reference phase: pi_ref's samples, scores and log-probabilities.
        plugin: With ``caid.plugin_samples > 0``, the (cached) pool of the one-shot plug-in problem:
            ``plugin_prompts`` training prompts x ``plugin_samples`` pi_ref responses; None: the pairs' samples.
    """

    scorers: list
    train: PromptSet
    test: PromptSet
    reference: torch.nn.Module
    tokenizer: Any
    train_inputs: list[str]
    test_inputs: list[str]
    ref: ReferenceData
    plugin: ReferenceData | None = None


_PLUGIN_SEED = 104729  # offsets the plug-in pool's sampling seed from the pairs' (an arbitrary prime)


def _scorer_fingerprint(scorer: Any) -> dict[str, object] | None:
    """The content fingerprint of an ``hf:`` scorer's model folder (None for a built-in scorer)."""
    inner = getattr(scorer, "scorer", scorer)  # a Signed wrapper scales or negates the scorer inside
    folder = getattr(inner, "folder", None)
    return folder_fingerprint(folder) if folder is not None else None


def reference_phase(config: RunConfig, ranks: Ranks | None = None) -> RunSetup:
    """Load the scorers, prompts and pi_ref, and load or build the cached reference phase (no training).

    Every method and threshold of ``config`` shares it (the cache key ignores both), so a sweep computes it
    once; :mod:`analysis.dual_convergence` studies it alone.

    Raises:
        ValueError: For bad prompt sets, scorers or models (each names what to fix).
    """
    ranks = ranks or init_ranks(config.model.device)
    scorers = [
        build_scorer(spec, device=str(ranks.device), dtype=config.model.dtype)
        for spec in (config.scorers.reward, *config.scorers.utilities)
    ]
    train, test = _prompts(config)
    reference, tokenizer = _models(config, ranks.device)
    use_template = config.model.use_chat_template

    # The model's inputs, formatted once: sampling, on-policy dual steps and evaluation reuse them.
    train_inputs = [chat_prompt(tokenizer, p, use_template) for p in train.prompts]
    test_inputs = [chat_prompt(tokenizer, p, use_template) for p in test.prompts]

    parts = {
        # The weights by content and resolved path, not the name typed: replaced weights give a new key.
        "model": model_fingerprint(config.model.name, config.model.cache_dir or None),
        "model_seed": config.seed if config.model.name == "tiny" else None,
        "dtype": config.model.dtype, "chat": use_template, "train": content_key(train), "test": content_key(test),
        "scorers": [config.scorers.reward, *config.scorers.utilities],
        "scorer_weights": [_scorer_fingerprint(s) for s in scorers],
        "generation": dataclasses.asdict(config.generation), "seed": config.seed,
    }  # fmt: skip
    key = reference_key(parts)
    cache_root = Path(config.model.cache_dir) if config.model.cache_dir else default_cache_root()
    ref = build_reference(
        reference, tokenizer, train.prompts, train_inputs, test.prompts, test_inputs, scorers,
        config.generation, config.seed, key, cache_root / "reference" / f"{key}.npz", ranks,
    )  # fmt: skip
    plugin = None
    if config.caid.plugin_samples:
        # Its own sample of pi_ref, sized as the paper's one-shot problem, apart from the DPO pairs' K.
        n = config.caid.plugin_prompts or len(train)
        generation = dataclasses.replace(config.generation, samples_per_prompt=config.caid.plugin_samples)
        plugin_key = reference_key({**parts, "plugin": [n, config.caid.plugin_samples]})
        plugin = build_reference(
            reference, tokenizer, train.prompts, train_inputs[:n], [], [], scorers, generation,
            config.seed + _PLUGIN_SEED, plugin_key, cache_root / "reference" / f"{plugin_key}.npz", ranks,
        )  # fmt: skip
    return RunSetup(scorers, train, test, reference, tokenizer, train_inputs, test_inputs, ref, plugin)


def run(config: RunConfig, out: Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run one method into ``out``; return the summary (also written to ``summary.json``).

    Raises:
        RunExistsError: If ``out`` holds a run with another configuration, or any run and ``resume`` is off.
        theory.InfeasibleProblemError: If the thresholds are unreachable on the reference samples (before
            any training).
        ValueError: For bad prompt sets, scorers or models (each names what to fix).
    """
    ranks = init_ranks(config.model.device)
    with contextlib.ExitStack() as stack:
        # One writer per run directory: rank 0 holds the lock (the other ranks write nothing).
        ranks.on_main(lambda: stack.enter_context(run_lock(out)))
        return _run_locked(config, out, ranks, resume, progress)


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


def _run_locked(config: RunConfig, out: Path, ranks: Ranks, resume: bool, progress: bool) -> dict[str, Any]:
    hint = None if resume else "pass --resume to continue it, or use a fresh one"
    # Read-only until the inputs are valid, so a failed start leaves nothing that blocks its --out.
    ranks.on_main(lambda: check_existing_run(out, to_dict(config), hint))
    if resume and (summary := _finished_summary(out)) is not None:
        # Written last, and the run record matched this configuration: finished, nothing to load or recompute.
        return summary
    spec = method(config.method)
    m = len(config.scorers.utilities)
    saved = _load_state(out, m, config.caid.iterations) if resume else None  # a bad state fails before any work

    setup = reference_phase(config, ranks)
    scorers, train, test, ref = setup.scorers, setup.train, setup.test, setup.ref
    reference, tokenizer = setup.reference, setup.tokenizer
    train_inputs, test_inputs = setup.train_inputs, setup.test_inputs
    pad = tokenizer.pad_token_id

    rng = np.random.default_rng(config.seed)
    k = config.generation.samples_per_prompt
    per_prompt = config.training.pairs_per_prompt
    pairs = np.array([(i, *rng.choice(k, 2, replace=False)) for i in range(len(train)) for _ in range(per_prompt)])
    steps_per_epoch = math.ceil(len(pairs) / config.training.batch_size)
    utilities = scorers[1:]

    def record() -> None:
        ranks.on_main(lambda: write_run_record(out, to_dict(config), VERSIONS))

    if spec.pre_aligned:
        record()  # the pre-aligned models are saved into the run directory
        implicit = _pre_align(config, ranks, reference, pad, ref, pairs, out, progress)
        ref = dataclasses.replace(ref, train_scores=_implicit_scores(ranks, implicit, train.prompts, ref, k))
        if setup.plugin is not None:
            k_pool = config.caid.plugin_samples
            scores = _implicit_scores(ranks, implicit, train.prompts, setup.plugin, k_pool)
            setup = dataclasses.replace(setup, plugin=dataclasses.replace(setup.plugin, train_scores=scores))
        utilities = implicit[1:]

    pool = setup.plugin if setup.plugin is not None else ref  # the one-shot plug-in problem's samples
    prob = pool.problem(config.scorers.thresholds, config.caid.beta)
    one_shot = solve_dual(prob, return_policy=False).lam  # raises InfeasibleProblemError before training
    if not spec.pre_aligned:
        record()
    reward_weight, lam = spec.reward_weight, spec.initial_multipliers(one_shot)

    learner = _learner(config, ranks, reference, config.caid.iterations * steps_per_epoch)
    policy = learner.model
    metrics: list[dict[str, Any]] = []
    start = 1
    if saved is not None:
        fix = _restart_hint(out)
        try:
            load_training_state(learner.trainer, learner.optimizer, saved.weights, saved.optimizer)
            learner.scheduler.load_state_dict(saved.scheduler)
            rng.bit_generator.state = saved.numpy_rng
            torch.set_rng_state(saved.torch_rng)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # shapes or names of another model
            message = f"{out / STATE_FILE}: does not fit this run ({type(err).__name__}: {err}); {fix}"
            raise RunFileError(message) from None
        lam, metrics, start = saved.lam, saved.metrics, saved.iteration + 1
        if ranks.is_main:
            _write_jsonl(out / "metrics.jsonl", metrics)  # rebuilt if it was lost

    ref_means = ref.train_scores[1:].mean(axis=2)  # (m, N): E_ref[g_i | x] from the K reference samples
    iterations = range(start, config.caid.iterations + 1)
    for t in tqdm(iterations, desc=config.method, unit="iter", disable=not (progress and ranks.is_main)):
        row: dict[str, Any] = {"iteration": t}
        if spec.dual_steps and t > 1:
            lam, row["slack"], row["kl_estimate"] = _dual_step(
                config, ranks, policy, reference, tokenizer, train, train_inputs, utilities, ref_means, lam, rng,
                progress,
            )  # fmt: skip
        composite = reward_weight * ref.train_scores[0] + np.tensordot(lam, ref.train_scores[1:], axes=1)
        prefer_1 = pseudo_labels(composite[pairs[:, 0], pairs[:, 1]], composite[pairs[:, 0], pairs[:, 2]], rng)
        stats = _dpo_epoch(config, ranks, learner, ref, pairs, prefer_1, rng, pad, progress)
        row.update(
            lam=[float(v) for v in lam],
            plugin_dual_value=None if spec.baseline else float(dual_value(prob, lam)),
            **stats,
        )
        metrics.append(row)
        weights, optimizer_state = training_state(learner.trainer, learner.optimizer, learner.names)
        # Rank 0's torch generator is the one saved; sampling reseeds it from the numpy generator anyway.
        state = {
            "iteration": t, "lam": [float(v) for v in lam], "metrics": metrics,
            "scheduler": learner.scheduler.state_dict(), "numpy_rng": rng.bit_generator.state,
        }  # fmt: skip
        if ranks.is_main:
            _save_checkpoint(out, t, weights, optimizer_state, state)
            _write_jsonl(out / "metrics.jsonl", metrics)

    summary = _evaluate(
        config, ranks, policy, reference, tokenizer, test, test_inputs, ref, scorers, out, one_shot, lam, metrics,
        progress,
    )  # fmt: skip
    if ranks.is_main:
        summary.write(out)
    return summary.to_json()


def _policy_samples(
    ranks: Ranks, policy, reference, tokenizer, prompts: Sequence[str], inputs: Sequence[str], scorers, n: int,
    generation, seed: int, desc: str, progress: bool,
) -> tuple[list, np.ndarray, np.ndarray]:  # fmt: skip
    """``n`` samples per prompt from ``policy``, their scores and their log-ratios ``log pi / pi_ref``.

    The prompts are cut into generation batches, each seeded by its number and shared out across ranks, so
    the result is the same for any number of ranks.

    Returns:
        ``(samples, scores (len(scorers), P, n), log_ratio (P, n))``.
    """
    per_batch = max(1, generation.batch_size // n)
    starts = range(0, len(inputs), per_batch)
    pad = tokenizer.pad_token_id

    def unit(u: int) -> tuple[list, np.ndarray, np.ndarray]:
        first = starts[u]
        batch = sample_responses(
            policy, tokenizer, inputs[first : first + per_batch], n, generation, seed + u, progress=False
        )
        logp = response_logprobs(policy, batch, pad, generation.batch_size, progress=False)
        batch = [dataclasses.replace(s, prompt_index=s.prompt_index + first) for s in batch]
        ref_logp = response_logprobs(reference, batch, pad, generation.batch_size, progress=False)
        return batch, score_samples(scorers, prompts, batch, n, ref_logp), logp - ref_logp

    implicit = [s.model for s in scorers if isinstance(s, ImplicitReward)]
    with full_parameters(policy, *implicit):  # every rank gathers FSDP's shards once, then samples on its own
        parts = ranks.map(len(starts), unit, desc=desc, progress=progress)
    samples = [s for part in parts for s in part[0]]
    return samples, np.concatenate([p[1] for p in parts], axis=1), np.concatenate([p[2] for p in parts]).reshape(-1, n)


def _dual_step(
    config, ranks, policy, reference, tokenizer, train, train_inputs, utilities, ref_means, lam, rng, progress
):
    """On-policy dual step: sample n prompts x k responses, measure u = E[g - E_ref g] - b, project.

    Also returns the Monte-Carlo KL(pi_theta || pi_ref) of the same samples (their mean log-ratio).
    """
    chosen = rng.choice(len(train), size=min(config.caid.dual_prompts, len(train)), replace=False)
    _, g, log_ratio = _policy_samples(
        ranks, policy, reference, tokenizer, [train.prompts[i] for i in chosen], [train_inputs[i] for i in chosen],
        utilities, config.caid.dual_samples, config.generation, int(rng.integers(2**31)), "on-policy samples",
        progress,
    )  # fmt: skip
    slack = (g - ref_means[:, chosen, None]).mean(axis=(1, 2)) - np.asarray(config.scorers.thresholds)
    return dual_step(lam, slack, config.caid.dual_step_size), [float(v) for v in slack], float(log_ratio.mean())


def _pre_align(config, ranks, reference, pad, ref: ReferenceData, pairs, out: Path, progress) -> list[ImplicitReward]:
    """PeCAID's pre-alignment (Algorithm 3, lines 3-4): pi_r and each pi_g_i by DPO from pi_ref on preferences.

    The scorers play the annotators: one Bradley-Terry label per pair and objective, drawn once. Each
    trained model is saved as ``pre_aligned_<i>.safetensors``; a resumed run loads it instead of training.
    """
    names = [config.scorers.reward, *config.scorers.utilities]
    steps = config.pecaid.epochs * math.ceil(len(pairs) / config.training.batch_size)
    rewards = []
    for s, name in enumerate(names):
        learner = _learner(config, ranks, reference, steps)
        path = out / f"pre_aligned_{s}.safetensors"
        if path.is_file():
            load_weights(learner.trainer, _load_weights(path, f"delete {path} to train it again"))
        else:
            rng = np.random.default_rng([config.seed, s])  # its own stream: skipping it on resume changes nothing
            scores = ref.train_scores[s]
            prefer_1 = pseudo_labels(scores[pairs[:, 0], pairs[:, 1]], scores[pairs[:, 0], pairs[:, 2]], rng)
            epochs = range(config.pecaid.epochs)
            for _ in tqdm(epochs, desc=f"pre-align {name}", disable=not (progress and ranks.is_main)):
                _dpo_epoch(config, ranks, learner, ref, pairs, prefer_1, rng, pad, progress)
            weights, _ = training_state(learner.trainer, learner.optimizer, learner.names)
            if ranks.is_main:
                _save_weights(path, weights)
        learner.model.eval().requires_grad_(False)
        beta, batch = config.caid.beta, config.generation.batch_size
        rewards.append(ImplicitReward(f"implicit:{name}", learner.model, beta, pad, batch))
    return rewards


def _implicit_scores(ranks: Ranks, rewards, prompts, ref: ReferenceData, k: int) -> np.ndarray:
    """``(len(rewards), N, K)`` implicit rewards of the reference samples, shared out across ranks."""
    chunk = CHUNK_PROMPTS * k
    starts = range(0, len(ref.train), chunk)
    ref_logprobs = ref.train_logprobs.ravel()  # cached: no second reference pass

    def unit(u: int) -> np.ndarray:
        rows = slice(starts[u], starts[u] + chunk)
        return score_samples(rewards, prompts, ref.train[rows], k, ref_logprobs[rows])

    with full_parameters(*(r.model for r in rewards)):
        parts = ranks.map(len(starts), unit, desc="implicit rewards")
    return np.concatenate(parts, axis=1)


def _dpo_epoch(
    config, ranks: Ranks, learner: _Learner, ref: ReferenceData, pairs: np.ndarray, prefer_1: np.ndarray, rng, pad,
    progress: bool = True,
) -> dict[str, float]:  # fmt: skip
    """One epoch over labelled reference pairs in shuffled batches; returns the mean loss, accuracy and margin.

    ``pairs`` rows are ``(prompt, j_0, j_1)`` indices into the reference samples; ``prefer_1`` says where
    ``j_1`` is the chosen response. Each batch is split across ranks; a rank's loss is weighted by its
    share of the batch, so the gradient DDP averages is the gradient of the whole batch's mean loss. A rank
    with no pair in a (last, small) batch still takes part with a zero-weighted pair, as every rank must
    join every gradient exchange.
    """
    x = pairs[:, 0]
    chosen = np.where(prefer_1, pairs[:, 2], pairs[:, 1])
    rejected = np.where(prefer_1, pairs[:, 1], pairs[:, 2])
    trainer, optimizer, scheduler = learner.trainer, learner.optimizer, learner.scheduler
    k = config.generation.samples_per_prompt
    sample = lambda i, j: ref.train[i * k + j]  # noqa: E731
    order = rng.permutation(len(x))
    totals = np.zeros(4)  # pairs, and the sums of loss, accuracy and margin over them
    trainer.train()
    batches = range(0, len(order), config.training.batch_size)
    for start in tqdm(batches, desc="DPO epoch", unit="step", leave=False, disable=not (progress and ranks.is_main)):
        idx = order[start : start + config.training.batch_size]
        local = idx[ranks.rank :: ranks.world_size]
        weight = len(local) * ranks.world_size / len(idx)
        if len(local) == 0:
            local, weight = idx[:1], 0.0
        both = [sample(x[i], chosen[i]) for i in local] + [sample(x[i], rejected[i]) for i in local]
        logp = sequence_logprobs(trainer, [s.prompt_ids for s in both], [s.response_ids for s in both], pad)
        rows, cols = np.tile(x[local], 2), np.concatenate([chosen[local], rejected[local]])
        ref_logp = torch.tensor(ref.train_logprobs[rows, cols], dtype=logp.dtype, device=logp.device)
        n = len(local)
        loss, stats = dpo_loss(logp[:n], logp[n:], ref_logp[:n], ref_logp[n:], config.caid.beta)
        optimizer.zero_grad()
        (loss * weight).backward()
        optimizer.step()
        scheduler.step()
        if weight:
            totals += n * np.array([1.0, stats.loss, stats.accuracy, stats.margin])
    trainer.eval()
    pairs, loss, accuracy, margin = np.sum(ranks.gather(totals), axis=0)
    return {"dpo_loss": loss / pairs, "dpo_accuracy": accuracy / pairs, "dpo_margin": margin / pairs}


def _evaluate(
    config, ranks, policy, reference, tokenizer, test, test_inputs, ref: ReferenceData, scorers, out, one_shot, lam,
    metrics, progress,
):  # fmt: skip
    """Two responses per held-out prompt from the trained policy, scored next to pi_ref's."""
    samples, scores, log_ratio = _policy_samples(
        ranks, policy, reference, tokenizer, test.prompts, test_inputs, scorers, EVAL_SAMPLES, config.generation,
        config.seed + 2, "eval", progress,
    )  # fmt: skip
    kl = float(log_ratio.mean())
    names = [config.scorers.reward, *config.scorers.utilities]
    # log pi/pi_ref of each sample (exactly 0 for pi_ref's own): the KL and Lagrangian estimates need it.
    eval_csv = eval_scores_csv(names, {
        "policy": (scores, log_ratio, [x.text for x in samples]),
        "reference": (ref.test_scores, np.zeros_like(log_ratio), [x.text for x in ref.test]),
    })  # fmt: skip

    buffer = io.StringIO()
    m = len(config.scorers.utilities)
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["iteration", *(f"lambda_{i + 1}" for i in range(m)), *(f"slack_{i + 1}" for i in range(m))])
    for row in metrics:
        writer.writerow([row["iteration"], *row["lam"], *(row.get("slack") or [float("nan")] * m)])
    if ranks.is_main:
        write_atomic(out / EVAL_SCORES_FILE, eval_csv)
        write_atomic(out / "dual_trajectory.csv", buffer.getvalue())

    improvements = {name: improvement(scores[r], ref.test_scores[r]) for r, name in enumerate(names)}
    # How much reward and each utility conflict where the pairs compare them: within a prompt.
    centred = ref.train_scores - ref.train_scores.mean(axis=2, keepdims=True)
    flat = centred.reshape(len(names), -1)
    correlation = np.corrcoef(flat)[0, 1:] if flat.std(axis=1).min() > 0 else np.full(len(names) - 1, np.nan)
    thresholds = config.scorers.thresholds
    # Each iterate's policy is measured on-policy by the next dual step (caid) or, for the last, by this
    # evaluation; the best iterate is the least violating one (latest on ties). Only the last one's weights
    # are kept.
    last_slack = [improvements[n]["mean"] - b for n, b in zip(names[1:], thresholds, strict=True)]
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
            bool(improvements[n]["mean"] >= b) for n, b in zip(names[1:], thresholds, strict=True)
        ),
        kl_estimate=kl,
        last_iteration=metrics[-1]["iteration"],
        best_iteration=metrics[best]["iteration"],
        measured_slack_by_iteration={
            str(row["iteration"]): None if s is None else tuple(s) for row, s in zip(metrics, slacks, strict=True)
        },
        reference_reward_utility_correlation=dict(zip(names[1:], map(float, correlation), strict=True)),
        n_train_prompts=len(ref.train) // config.generation.samples_per_prompt,
        n_test_prompts=len(test),
        reference_key=ref.key,
    )
