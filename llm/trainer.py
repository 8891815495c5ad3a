"""The CAID trainer: one method's training state and its steps (Algorithm 2; Algorithm 3 for PeCAID).

:class:`CAIDTrainer` owns what a run trains: the policy (a copy of pi_ref, trained weights as configured) and
the module its steps run through (DDP/FSDP under ``torchrun``), the optimiser and learning-rate schedule, the
ranks, the multipliers lambda, the metrics so far and the random streams. Its steps are the paper's:

* :meth:`CAIDTrainer.dual_step`: the on-policy projected dual step ``lambda <- [lambda - eta u]_+`` from n
  prompts x k fresh samples of the current policy (Algorithm 2, line 6; eq. (6));
* :meth:`CAIDTrainer.labels` and :meth:`CAIDTrainer.dpo_epoch`: pseudo-labels
  ``Bernoulli(sigma(Delta(r + lambda^T g)))`` of the reference pairs, then one DPO epoch on them (eq. (13));
* :meth:`CAIDTrainer.evaluate`: held-out samples of the trained policy scored next to pi_ref's (Fig. 1);
* :meth:`CAIDTrainer.save` / :meth:`CAIDTrainer.load`: ``state.json`` (JSON, no pickle) naming
  ``checkpoint_<t>.safetensors`` and ``training_state_<t>.safetensors``, each with its SHA-256 beside it.

:func:`dpo_epoch` is the DPO epoch itself, free of any configuration: a model, its optimiser, the responses,
the labelled pairs, their cached reference log-probabilities and the batches. ``benchmarks/dpo_throughput.py``
times this very function.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import itertools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from tqdm import tqdm
from transformers import get_scheduler

from llm.config import RunConfig
from llm.data import PromptSet
from llm.distributed import Ranks, full_parameters, load_training_state, load_weights, training_state, wrap_for_training
from llm.dpo import DPOStats, TrunkCache, dpo_loss, label_uniforms, pseudo_labels, sequence_logprobs
from llm.dual import dual_step as projected_dual_step
from llm.implicit_rewards import ImplicitReward
from llm.methods import method
from llm.models import apply_lora, chat_prompt, trainable_parameters
from llm.paired_statistics import improvement
from llm.preference_pairs import load_preference_pairs
from llm.reference_phase import CHUNK_PROMPTS, ReferenceData, response_logprobs, score_samples
from llm.run_files import DIGEST_SUFFIX, RunFileError, read_json, read_with_digest, write_atomic, write_with_digest
from llm.run_schema import EVAL_SCORES_FILE, RunSummary, eval_scores_csv
from llm.sampling import Sample, sample_responses
from llm.scorers import Scorer, Standardization
from theory.dual import dual_value
from theory.dual_solver import solve_dual
from theory.problem import ConstrainedProblem

__all__ = [
    "STATE_FILE",
    "CAIDTrainer",
    "EpochStats",
    "LabelledPairs",
    "Learner",
    "RunSetup",
    "SavedState",
    "all_pairs",
    "build_learner",
    "dpo_epoch",
    "grouped_batches",
    "load_labelled_pairs",
    "load_state",
    "lr_scheduler",
    "pairs_loss",
    "shuffled_batches",
]

STATE_FILE = "state.json"
# Written by earlier versions with pickle; never loaded (a crafted one could run code on --resume).
_LEGACY_STATE = "state.pt"
_STATE_FORMAT = 1
_OPTIMIZER = "optimizer/"  # prefix of the optimiser's tensors in training_state_<t>.safetensors
# Keys of the run's random streams under training.common_random_numbers (the labels': llm.dpo.LABEL_STREAM).
_ORDER_STREAM, _DUAL_STREAM = 0x4F524452, 0x4455414C  # "ORDR", "DUAL"


@dataclasses.dataclass(frozen=True, eq=False)
class RunSetup:
    """What every method of a configuration shares: scorers, prompts, pi_ref and its reference phase.

    Attributes:
        scorers: The reward scorer, then one per utility.
        train: Training prompts; ``test``: held-out prompts.
        reference: The frozen pi_ref; ``tokenizer`` its tokenizer.
        train_inputs: The model inputs of the training prompts (chat template applied); ``test_inputs`` likewise.
        ref: The (cached) reference phase: pi_ref's samples, scores and log-probabilities.
        samples_key: The key of pi_ref's weights and samples without the scorers: runs that share it share the
            frozen-trunk cache (e.g. a second constraint rescoring the same samples).
        plugin: With ``caid.plugin_samples > 0``, the (cached) pool of the one-shot plug-in problem:
            ``plugin_prompts`` training prompts x ``plugin_samples`` pi_ref responses; None: the pairs' samples.
        thresholds: The b_i the run uses (``scorers.thresholds`` resolved: fractions of the plug-in maximum
            with ``scorers.threshold_units = 'plugin_fraction'``), in the units of the scores.
        standardization: With ``scorers.standardize``, the sigma_w scales every score was divided by (the
            scorers, ``ref`` and ``plugin`` are then in sigma units); None: raw units.
    """

    scorers: list[Scorer]
    train: PromptSet
    test: PromptSet
    reference: torch.nn.Module
    tokenizer: Any
    train_inputs: list[str]
    test_inputs: list[str]
    ref: ReferenceData
    samples_key: str
    plugin: ReferenceData | None = None
    thresholds: tuple[float, ...] = ()
    standardization: Standardization | None = None

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.scorers) - 1:
            raise ValueError(f"RunSetup: {len(self.thresholds)} thresholds for {len(self.scorers) - 1} utilities")


# --------------------------------------------------------------------------------------------------------------
# the DPO epoch, free of configuration
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """Means over an epoch's pairs: DPO loss, accuracy (positive implicit margin) and implicit reward margin."""

    dpo_loss: float
    dpo_accuracy: float
    dpo_margin: float

    def as_row(self) -> dict[str, float]:
        """The ``metrics.jsonl`` fields."""
        return dataclasses.asdict(self)


def pairs_loss(
    model: torch.nn.Module,
    responses: Sequence[Sample],
    pairs: np.ndarray,
    ref_logprobs: np.ndarray,
    beta: float,
    pad_id: int,
    trunk: TrunkCache | None = None,
    grouped: bool = True,
    targets: np.ndarray | None = None,
) -> tuple[torch.Tensor, DPOStats]:
    """The mean DPO loss (eq. (13)) of ``pairs``, by default with one forward per distinct response.

    With K responses per prompt and all K(K-1)/2 pairs (grouped losses), the K responses are forwarded once
    and every pair reads its two log-probabilities from that one pass. ``grouped=False`` forwards each pair's
    two responses (a response in two pairs twice), as the drawn-pairs runs always have: the same loss to
    float rounding, bit for bit the numbers of those runs.

    Args:
        model: The policy (or the module its steps run through).
        responses: The responses the pairs index.
        pairs: ``(n, 2)`` indices into ``responses``: chosen, rejected.
        ref_logprobs: ``(len(responses),)`` cached log pi_ref of each response.
        beta: DPO temperature.
        pad_id: Id used for padding.
        trunk: With top-layer training, the cache of the frozen trunk's hidden states.
        grouped: One forward per distinct response (else one per pair and side).
        targets: ``(n,)`` P(chosen preferred) of each pair for the label-averaged loss; None: drawn labels.
    """
    flat = np.concatenate([pairs[:, 0], pairs[:, 1]])  # chosen, then rejected
    # First-occurrence order: without a repeated response the batch is exactly (chosen, rejected).
    distinct = list(dict.fromkeys(flat.tolist())) if grouped else flat.tolist()
    position = {r: i for i, r in enumerate(distinct)}
    prompts = [responses[r].prompt_ids for r in distinct]
    texts = [responses[r].response_ids for r in distinct]
    logp = (
        trunk.sequence_logprobs(model, prompts, texts)
        if trunk is not None  # an empty cache has len 0: test identity, not truth
        else sequence_logprobs(model, prompts, texts, pad_id)
    )
    if grouped and len(distinct) < len(flat):
        logp = logp[torch.as_tensor([position[r] for r in flat.tolist()], device=logp.device)]
    ref_logp = torch.tensor(ref_logprobs[flat], dtype=logp.dtype, device=logp.device)
    n = len(pairs)
    target = None if targets is None else torch.as_tensor(targets, device=logp.device)
    return dpo_loss(logp[:n], logp[n:], ref_logp[:n], ref_logp[n:], beta, target)


def dpo_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    responses: Sequence[Sample],
    pairs: np.ndarray,
    ref_logprobs: np.ndarray,
    beta: float,
    batches: Iterable[np.ndarray],
    pad_id: int,
    *,
    scheduler: Any = None,
    ranks: Ranks | None = None,
    trunk: TrunkCache | None = None,
    grouped: bool = True,
    targets: np.ndarray | None = None,
    progress: bool = False,
) -> EpochStats:
    """One DPO epoch: a step per batch of labelled pairs (eq. (13), pi_ref's log-probabilities cached).

    Each batch is split across ranks; a rank's loss is weighted by its share of the batch, so the gradient
    DDP averages is the gradient of the whole batch's mean loss. A rank with no pair in a (last, small) batch
    still takes part with a zero-weighted pair, as every rank must join every gradient exchange.

    Args:
        model: The module the steps run through (the policy, or its DDP/FSDP wrapper).
        optimizer: Its optimiser.
        responses: The responses the pairs index (e.g. pi_ref's samples).
        pairs: ``(n, 2)`` indices into ``responses``: the chosen, then the rejected response of each pair.
        ref_logprobs: ``(len(responses),)`` cached log pi_ref of each response.
        beta: DPO temperature.
        batches: Pair indices of each step, in order (:func:`shuffled_batches`, :func:`grouped_batches`).
        pad_id: Id used for padding.
        scheduler: A learning-rate scheduler stepped after every optimiser step, or None.
        ranks: The processes sharing each batch (None: this process alone).
        trunk: With top-layer training, the cache of the frozen trunk's hidden states (one process only).
        grouped: One forward per distinct response of a step (:func:`pairs_loss`).
        targets: ``(n,)`` P(chosen preferred) of each pair: the label-averaged loss; None: drawn labels.
        progress: Whether to show a progress bar.

    Returns:
        The epoch's mean loss, accuracy and margin over its pairs.
    """
    ranks = ranks or Ranks()
    pairs = np.asarray(pairs)
    totals = np.zeros(4)  # pairs, and the sums of loss, accuracy and margin over them
    model.train()
    for idx in tqdm(batches, desc="DPO epoch", unit="step", leave=False, disable=not (progress and ranks.is_main)):
        local = idx[ranks.rank :: ranks.world_size]
        weight = len(local) * ranks.world_size / len(idx)
        if len(local) == 0:
            local, weight = idx[:1], 0.0
        target = None if targets is None else targets[local]
        loss, stats = pairs_loss(model, responses, pairs[local], ref_logprobs, beta, pad_id, trunk, grouped, target)
        optimizer.zero_grad()
        (loss * weight).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if weight:
            totals += len(local) * np.array([1.0, stats.loss, stats.accuracy, stats.margin])
    model.eval()
    n, loss, accuracy, margin = np.sum(ranks.gather(totals), axis=0)
    return EpochStats(loss / n, accuracy / n, margin / n)


def shuffled_batches(n_pairs: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The pairs in one random order (one ``rng.permutation``), cut into steps of ``batch_size``."""
    order = rng.permutation(n_pairs)
    return [order[start : start + batch_size] for start in range(0, n_pairs, batch_size)]


def grouped_batches(pair_prompts: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Whole prompts per step, in one random order: every pair of a prompt in the same step (grouped losses).

    Each step takes ``max(1, batch_size // pairs per prompt)`` prompts, so a response is forwarded once per
    epoch however many pairs it is in.

    Args:
        pair_prompts: ``(n,)`` the prompt of each pair.
        batch_size: Pairs per step, rounded to whole prompts.
        rng: Source of the prompt order.
    """
    prompts, counts = np.unique(pair_prompts, return_counts=True)
    per_step = max(1, batch_size // int(counts.max()))
    order = rng.permutation(prompts)
    return [np.flatnonzero(np.isin(pair_prompts, order[s : s + per_step])) for s in range(0, len(order), per_step)]


def all_pairs(n_prompts: int, k: int) -> np.ndarray:
    """``(n_prompts * k(k-1)/2, 3)`` rows ``(prompt, j_0, j_1)``: every pair of each prompt's ``k`` responses."""
    return np.array([(i, a, b) for i in range(n_prompts) for a, b in itertools.combinations(range(k), 2)])


# --------------------------------------------------------------------------------------------------------------
# the policy and its optimiser
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Learner:
    """A model DPO trains: ``model`` itself, ``trainer`` the (DDP/FSDP) module steps run through."""

    model: torch.nn.Module
    trainer: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    names: set[str]  # the trained parameters, a tied weight under one name


def lr_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The Hugging Face Trainer's schedules (Table 1): warm-up, then constant or cosine to 0 over all steps."""
    return get_scheduler(
        {"cosine": "cosine", "constant": "constant_with_warmup"}[config.training.lr_scheduler],
        optimizer,
        num_warmup_steps=config.training.warmup_steps,
        num_training_steps=total_steps,
    )


def build_learner(config: RunConfig, ranks: Ranks, reference: torch.nn.Module, total_steps: int) -> Learner:
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
    return Learner(model, trainer, optimizer, lr_scheduler(config, optimizer, total_steps), names)


_TRUNKS: dict[tuple[str, int], TrunkCache] = {}


def _shared_trunk(config: RunConfig, ranks: Ranks, setup: RunSetup, pad: int) -> TrunkCache | None:
    """The frozen-trunk cache of these reference samples, shared by every run in this process (or None).

    Keyed by the samples' content key (model weights, dtype, samples; not the scorers, so the runs of a
    sweep over scorer sets share it) and the trunk depth; only the latest is kept. Under ``torchrun`` the
    steps must run through the DDP/FSDP module: no cache.
    """
    if not config.training.cache_trunk or ranks.world_size > 1:
        return None
    frozen = len(setup.reference.model.layers) - config.model.top_k_layers
    key = (setup.samples_key, frozen)
    if key not in _TRUNKS:
        _TRUNKS.clear()
        _TRUNKS[key] = TrunkCache(frozen, pad, config.generation.batch_size)
    return _TRUNKS[key]


# --------------------------------------------------------------------------------------------------------------
# state files: state.json + safetensors, never pickle
# --------------------------------------------------------------------------------------------------------------


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


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


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
class SavedState:
    """What ``state.json`` and the files it names hold, validated."""

    iteration: int
    lam: np.ndarray
    metrics: list[dict[str, Any]]
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    numpy_rng: dict[str, Any]
    torch_rng: torch.Tensor


def load_state(out: Path, m: int, iterations: int) -> SavedState | None:
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
    return SavedState(
        iteration, lam, metrics, weights, _join_optimizer(tensors, plain), scheduler, numpy_rng, tensors["torch_rng"]
    )


# --------------------------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------------------------


class CAIDTrainer:
    """One method's training run on a shared reference phase: lambda, the policy, its optimiser and streams.

    Build it with :meth:`build` (draws the pairs, pre-aligns for PeCAID, solves the one-shot plug-in dual);
    then :meth:`iterate` runs iteration ``t`` (dual step when the method takes them and ``t > 1``, labels,
    DPO epoch), :meth:`save` / :meth:`load` checkpoint it, :meth:`evaluate` measures it.

    Attributes:
        config: The run's configuration; ``ranks`` the processes sharing it; ``spec`` its method.
        setup: The shared reference phase (scorers, prompts, pi_ref).
        ref: The reference phase the labels use (PeCAID: scores replaced by implicit rewards).
        utilities: The scorers of the on-policy dual steps (PeCAID: implicit rewards).
        pairs: ``(n, 3)`` rows ``(prompt, j_0, j_1)`` into the reference samples.
        problem: The one-shot plug-in problem (eq. (4)); ``one_shot`` its dual solution.
        learner: The policy, the module steps run through, the optimiser and the schedule.
        lam: The current multipliers; ``iteration`` the last finished iteration (0: none);
        metrics: One row per finished iteration; ``rng`` the run's numpy generator.
    """

    def __init__(
        self,
        config: RunConfig,
        setup: RunSetup,
        ranks: Ranks,
        ref: ReferenceData,
        utilities: Sequence[Scorer],
        pairs: np.ndarray,
        problem: ConstrainedProblem,
        rng: np.random.Generator,
        progress: bool = True,
    ) -> None:
        self.config, self.setup, self.ranks, self.spec = config, setup, ranks, method(config.method)
        self.ref, self.utilities, self.pairs, self.problem, self.rng = ref, list(utilities), pairs, problem, rng
        self.progress = progress and ranks.is_main
        self.one_shot = solve_dual(problem, return_policy=False).lam  # raises InfeasibleProblemError
        self.lam = self.spec.initial_multipliers(self.one_shot)
        self.iteration, self.metrics = 0, []
        self.pad = setup.tokenizer.pad_token_id
        self.learner = build_learner(config, ranks, setup.reference, config.caid.iterations * self.steps_per_epoch)
        self.trunk = _shared_trunk(config, ranks, setup, self.pad)

    @classmethod
    def build(
        cls,
        config: RunConfig,
        setup: RunSetup,
        ranks: Ranks,
        out: Path,
        record: Callable[[], None] = lambda: None,
        progress: bool = True,
    ) -> CAIDTrainer:
        """The trainer at iteration 0: pairs drawn, PeCAID's models pre-aligned, the one-shot dual solved.

        Args:
            config: The run's configuration.
            setup: Its reference phase (:func:`llm.pipeline.reference_phase`).
            ranks: The processes sharing the run.
            out: The run directory (PeCAID saves its pre-aligned models there).
            record: Called once the inputs are valid: before pre-alignment (whose models go into ``out``),
                else after the one-shot dual is solved (so infeasible thresholds leave no run record).
            progress: Whether to show progress bars.

        Raises:
            theory.InfeasibleProblemError: If the thresholds are unreachable on the plug-in pool (before any
                training, PeCAID's pre-alignment aside).
        """
        spec = method(config.method)
        rng = np.random.default_rng(config.seed)
        k, n_prompts = config.generation.samples_per_prompt, len(setup.train)
        if config.training.all_pairs:
            pairs = all_pairs(n_prompts, k)
        else:
            per_prompt = config.training.pairs_per_prompt
            drawn = [(i, *rng.choice(k, 2, replace=False)) for i in range(n_prompts) for _ in range(per_prompt)]
            pairs = np.array(drawn)
        ref, plugin, utilities = setup.ref, setup.plugin, setup.scorers[1:]
        if spec.pre_aligned:
            # A preference file is read and checked before anything is written.
            labelled = load_labelled_pairs(config, setup) if config.pecaid.preferences else None
            record()  # the pre-aligned models are saved into the run directory
            implicit = _pre_align(config, ranks, setup, pairs, out, progress, labelled)
            ref = dataclasses.replace(ref, train_scores=_implicit_scores(ranks, implicit, setup.train.prompts, ref, k))
            if plugin is not None:
                scores = _implicit_scores(ranks, implicit, setup.train.prompts, plugin, config.caid.plugin_samples)
                plugin = dataclasses.replace(plugin, train_scores=scores)
            utilities = implicit[1:]
        pool = plugin if plugin is not None else ref  # the one-shot plug-in problem's samples
        problem = pool.problem(setup.thresholds, config.caid.beta)
        trainer = cls(config, setup, ranks, ref, utilities, pairs, problem, rng, progress)
        if not spec.pre_aligned:
            record()
        return trainer

    # -- the steps ---------------------------------------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per DPO epoch."""
        return _steps_per_epoch(self.config, self.pairs)

    def _stream(self, key: int, step: int) -> np.random.Generator:
        """The run's generator, or under common random numbers a generator keyed by ``(seed, key, step)``."""
        if self.config.training.common_random_numbers:
            return np.random.default_rng([self.config.seed, key, step])
        return self.rng

    def policy_samples(
        self, prompts: Sequence[str], inputs: Sequence[str], scorers: Sequence[Scorer], n: int, seed: int, desc: str,
        log_ratio_prompts: int | None = None,
    ) -> tuple[list[Sample], np.ndarray, np.ndarray]:
        """``n`` samples per prompt from the policy, their scores and their log-ratios ``log pi / pi_ref``.

        The prompts are cut into generation batches, each seeded by its number and shared out across ranks, so
        the result is the same for any number of ranks.

        Args:
            prompts: Raw prompts (what the scorers see); ``inputs`` the same as fed to the model.
            inputs: The model inputs of ``prompts``.
            scorers: Scorers of the samples.
            n: Samples per prompt.
            seed: Seed of the first generation batch (batch ``u`` uses ``seed + u``).
            desc: Progress-bar label.
            log_ratio_prompts: Only the samples of the first this many prompts get their log-ratio (two forward
                passes, or one shared trunk pass with ``training.cache_trunk``); None: all.

        Returns:
            ``(samples, scores (len(scorers), P, n), log_ratio (P, n))``, the log-ratio NaN where not computed.
        """
        generation, policy, reference = self.config.generation, self.learner.model, self.setup.reference
        tokenizer, pad = self.setup.tokenizer, self.pad
        per_batch = max(1, generation.batch_size // n)
        starts = range(0, len(inputs), per_batch)
        limit = len(inputs) if log_ratio_prompts is None else log_ratio_prompts
        implicit = [s.model for s in scorers if isinstance(s, ImplicitReward)]

        def logprobs(
            model: torch.nn.Module, batch: list[Sample], rows: np.ndarray, trunk: TrunkCache | None
        ) -> np.ndarray:
            out = np.full(len(batch), np.nan)
            if rows.any():
                chosen = [batch[i] for i in np.flatnonzero(rows)]
                if trunk is None:
                    out[rows] = response_logprobs(model, chosen, pad, generation.batch_size, progress=False)
                else:
                    with torch.no_grad():
                        logp = trunk.sequence_logprobs(model, [s.prompt_ids for s in chosen],
                                                       [s.response_ids for s in chosen])
                    out[rows] = logp.double().cpu().numpy()
            return out

        def unit(u: int) -> tuple[list[Sample], np.ndarray, np.ndarray]:
            first = starts[u]
            batch = sample_responses(
                policy, tokenizer, inputs[first : first + per_batch], n, generation, seed + u, progress=False
            )
            batch = [dataclasses.replace(s, prompt_index=s.prompt_index + first) for s in batch]
            measured = np.array([s.prompt_index < limit for s in batch])
            # A top-layers policy shares pi_ref's frozen trunk: one trunk pass per sequence serves both models'
            # log-probs (a cache of this batch only, so nothing accumulates across evaluations).
            trunk = None if self.trunk is None else TrunkCache(self.trunk.frozen_layers, pad, generation.batch_size)
            # Implicit rewards score every sample with its log pi_ref; the log-ratios need only the measured ones.
            ref_logp = logprobs(reference, batch, np.ones(len(batch), bool) if implicit else measured, trunk)
            log_ratio = logprobs(policy, batch, measured, trunk) - ref_logp
            return batch, score_samples(scorers, prompts, batch, n, ref_logp if implicit else None), log_ratio

        with full_parameters(policy, *implicit):  # every rank gathers FSDP's shards once, then samples on its own
            parts = self.ranks.map(len(starts), unit, desc=desc, progress=self.progress)
        samples = [s for part in parts for s in part[0]]
        scores = np.concatenate([p[1] for p in parts], axis=1)
        return samples, scores, np.concatenate([p[2] for p in parts]).reshape(-1, n)

    def dual_step(self) -> list[float]:
        """On-policy dual step: sample n prompts x k responses, measure u = E[g - E_ref g] - b, project lambda.

        Returns:
            The measured slack u. (No log-probabilities: the KL is estimated at the evaluation.)
        """
        caid, train = self.config.caid, self.setup.train
        rng = self._stream(_DUAL_STREAM, self.iteration + 1)
        chosen = rng.choice(len(train), size=min(caid.dual_prompts, len(train)), replace=False)
        _, g, _ = self.policy_samples(
            [train.prompts[i] for i in chosen], [self.setup.train_inputs[i] for i in chosen], self.utilities,
            caid.dual_samples, int(rng.integers(2**31)), "on-policy samples", log_ratio_prompts=0,
        )  # fmt: skip
        ref_means = self.ref.train_scores[1:].mean(axis=2)  # (m, N): E_ref[g_i | x] from the K reference samples
        slack = (g - ref_means[:, chosen, None]).mean(axis=(1, 2)) - np.asarray(self.setup.thresholds)
        self.lam = projected_dual_step(self.lam, slack, caid.dual_step_size)
        return [float(v) for v in slack]

    def _composites(self) -> tuple[np.ndarray, np.ndarray]:
        """``r_lambda`` of the first and of the second response of each pair at the current lambda."""
        scores, pairs = self.ref.train_scores, self.pairs
        composite = self.spec.reward_weight * scores[0] + np.tensordot(self.lam, scores[1:], axes=1)
        return composite[pairs[:, 0], pairs[:, 1]], composite[pairs[:, 0], pairs[:, 2]]

    def preference_probabilities(self) -> np.ndarray:
        """``sigma(r_lambda(y_1) - r_lambda(y_0))`` of each pair at the current lambda (the pseudo-labels' law)."""
        first, second = self._composites()
        return 1.0 / (1.0 + np.exp(first - second))

    def labels(self, epoch: int) -> np.ndarray:
        """Pseudo-labels of the pairs for the current lambda: True where ``j_1`` is chosen.

        Drawn from the run's generator, or under common random numbers from the label stream (one uniform per
        pair and epoch, :func:`llm.dpo.label_uniforms`). With ``training.labels = 'expected'`` nothing is
        drawn: ``j_1`` is chosen where it is the likelier winner, and :meth:`dpo_epoch` weighs both orders.
        """
        if self.config.training.labels == "expected":
            return self.preference_probabilities() >= 0.5
        first, second = self._composites()
        crn = self.config.training.common_random_numbers
        source = label_uniforms(self.config.seed, epoch, len(first)) if crn else self.rng
        return pseudo_labels(first, second, source)

    def dpo_epoch(self, prefer_1: np.ndarray, epoch: int) -> EpochStats:
        """One DPO epoch of the policy on the pairs labelled by ``prefer_1``, in this epoch's batch order."""
        oriented = _oriented(self.pairs, prefer_1, self.config.generation.samples_per_prompt)
        batches = _batches(self.config, self.pairs, self._stream(_ORDER_STREAM, epoch))
        targets = None
        if self.config.training.labels == "expected":
            p_1 = self.preference_probabilities()
            targets = np.where(prefer_1, p_1, 1.0 - p_1)
        return _reference_epoch(
            self.config, self.learner, self.ref, oriented, batches,
            pad_id=self.pad, ranks=self.ranks, trunk=self.trunk, targets=targets, progress=self.progress,
        )  # fmt: skip

    def iterate(self) -> dict[str, Any]:
        """Run the next iteration ``t``: the dual step (if the method takes them and ``t > 1``), labels, epoch."""
        t = self.iteration + 1
        row: dict[str, Any] = {"iteration": t}
        if self.spec.dual_steps and t > 1:
            row["slack"] = self.dual_step()
        stats = self.dpo_epoch(self.labels(t), t)
        row.update(
            lam=[float(v) for v in self.lam],
            plugin_dual_value=None if self.spec.baseline else float(dual_value(self.problem, self.lam)),
            **stats.as_row(),
        )
        self.metrics.append(row)
        self.iteration = t
        return row

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def save(self, out: Path) -> None:
        """Checkpoint the finished iteration into ``out`` (rank 0 writes; every rank must call it)."""
        learner = self.learner
        weights, optimizer_state = training_state(learner.trainer, learner.optimizer, learner.names)
        # Rank 0's torch generator is the one saved; sampling reseeds it from the numpy generator anyway.
        state = {
            "iteration": self.iteration, "lam": [float(v) for v in self.lam], "metrics": self.metrics,
            "scheduler": learner.scheduler.state_dict(), "numpy_rng": self.rng.bit_generator.state,
        }  # fmt: skip
        if self.ranks.is_main:
            _save_checkpoint(out, self.iteration, weights, optimizer_state, state)
            _write_jsonl(out / "metrics.jsonl", self.metrics)

    def load(self, saved: SavedState, out: Path) -> None:
        """Continue from ``saved`` (:func:`load_state` of ``out``): weights, optimiser, schedule, lambda, streams.

        Raises:
            RunFileError: If the saved state does not fit this run (another model's shapes or names).
        """
        learner = self.learner
        try:
            load_training_state(learner.trainer, learner.optimizer, saved.weights, saved.optimizer)
            learner.scheduler.load_state_dict(saved.scheduler)
            self.rng.bit_generator.state = saved.numpy_rng
            torch.set_rng_state(saved.torch_rng)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # shapes or names of another model
            message = f"{out / STATE_FILE}: does not fit this run ({type(err).__name__}: {err}); {_restart_hint(out)}"
            raise RunFileError(message) from None
        self.lam, self.metrics, self.iteration = saved.lam, saved.metrics, saved.iteration
        if self.ranks.is_main:
            _write_jsonl(out / "metrics.jsonl", self.metrics)  # rebuilt if it was lost

    # -- evaluation ---------------------------------------------------------------------------------------------

    def evaluate(self, out: Path) -> RunSummary:
        """Held-out samples of the trained policy scored next to pi_ref's; writes the score and dual files.

        ``evaluation.policy_samples`` responses per held-out prompt, sampled from seed ``seed + 2`` for every
        method (common random numbers across the runs of a sweep), against the reference pool's
        ``evaluation.reference_samples``.
        """
        config, setup, ref, metrics = self.config, self.setup, self.ref, self.metrics
        samples, scores, log_ratio = self.policy_samples(
            setup.test.prompts, setup.test_inputs, setup.scorers, config.evaluation.policy_samples, config.seed + 2,
            "eval", config.evaluation.log_ratio_prompts or None,
        )  # fmt: skip
        names = [config.scorers.reward, *config.scorers.utilities]
        # log pi/pi_ref of each sample (exactly 0 for pi_ref's own; NaN beyond evaluation.log_ratio_prompts): the
        # KL and Lagrangian estimates need it.
        eval_csv = eval_scores_csv(names, {
            "policy": (scores, log_ratio, [x.text for x in samples]),
            "reference": (ref.test_scores, np.zeros(ref.test_scores.shape[1:]), [x.text for x in ref.test]),
        })  # fmt: skip
        buffer = io.StringIO()
        m = len(config.scorers.utilities)
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["iteration", *(f"lambda_{i + 1}" for i in range(m)), *(f"slack_{i + 1}" for i in range(m))])
        for row in metrics:
            writer.writerow([row["iteration"], *row["lam"], *(row.get("slack") or [float("nan")] * m)])
        if self.ranks.is_main:
            write_atomic(out / EVAL_SCORES_FILE, eval_csv)
            write_atomic(out / "dual_trajectory.csv", buffer.getvalue())

        improvements = {name: improvement(scores[r], ref.test_scores[r]) for r, name in enumerate(names)}
        # How much reward and each utility conflict where the pairs compare them: within a prompt.
        centred = ref.train_scores - ref.train_scores.mean(axis=2, keepdims=True)
        flat = centred.reshape(len(names), -1)
        correlation = np.corrcoef(flat)[0, 1:] if flat.std(axis=1).min() > 0 else np.full(len(names) - 1, np.nan)
        thresholds = setup.thresholds
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
            lambda_one_shot=tuple(float(v) for v in self.one_shot),
            lambda_last=tuple(float(v) for v in self.lam),
            improvements=improvements,
            constraints_satisfied=tuple(
                bool(improvements[n]["mean"] >= b) for n, b in zip(names[1:], thresholds, strict=True)
            ),
            kl_estimate=float(np.nanmean(log_ratio)),  # over the prompts measured (evaluation.log_ratio_prompts)
            last_iteration=metrics[-1]["iteration"],
            best_iteration=metrics[best]["iteration"],
            measured_slack_by_iteration={
                str(row["iteration"]): None if s is None else tuple(s) for row, s in zip(metrics, slacks, strict=True)
            },
            reference_reward_utility_correlation=dict(zip(names[1:], map(float, correlation), strict=True)),
            n_train_prompts=len(ref.train) // config.generation.samples_per_prompt,
            n_test_prompts=len(setup.test),
            reference_key=ref.key,
            score_scales=setup.standardization.scales if setup.standardization else (),
        )


def _steps_per_epoch(config: RunConfig, pairs: np.ndarray) -> int:
    """Optimiser steps per DPO epoch over ``pairs`` (what :func:`_batches` cuts)."""
    batch = config.training.batch_size
    if config.training.all_pairs:
        per_prompt = math.comb(config.generation.samples_per_prompt, 2)
        return math.ceil(len(np.unique(pairs[:, 0])) / max(1, batch // per_prompt))
    return math.ceil(len(pairs) / batch)


def _batches(config: RunConfig, pairs: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's steps: whole prompts with ``training.all_pairs``, else the pairs in shuffled batches."""
    if config.training.all_pairs:
        return grouped_batches(pairs[:, 0], config.training.batch_size, rng)
    return shuffled_batches(len(pairs), config.training.batch_size, rng)


def _oriented(pairs: np.ndarray, prefer_1: np.ndarray, k: int) -> np.ndarray:
    """Flat ``(chosen, rejected)`` indices into the ``N * K`` reference samples of the labelled pairs.

    ``pairs`` rows are ``(prompt, j_0, j_1)``; ``prefer_1`` says where ``j_1`` is the chosen response.
    """
    base = pairs[:, 0] * k
    chosen = base + np.where(prefer_1, pairs[:, 2], pairs[:, 1])
    rejected = base + np.where(prefer_1, pairs[:, 1], pairs[:, 2])
    return np.stack([chosen, rejected], axis=1)


def _reference_epoch(
    config: RunConfig,
    learner: Learner,
    ref: ReferenceData,
    pairs: np.ndarray,
    batches: list[np.ndarray],
    **options: Any,
) -> EpochStats:
    """:func:`dpo_epoch` of ``learner`` on the reference samples, ``pairs`` oriented (:func:`_oriented`)."""
    return dpo_epoch(
        learner.trainer, learner.optimizer, ref.train, pairs, ref.train_logprobs.ravel(), config.caid.beta, batches,
        scheduler=learner.scheduler, grouped=config.training.all_pairs, **options,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledPairs:
    """Labelled preference pairs from a file (``pecaid.preferences``), ready for DPO.

    Attributes:
        responses: ``y_0, y_1`` of pair i at ``2i, 2i + 1``, tokenised as the run feeds its model.
        prefer_1: Per scorer (reward first), ``(n,)`` True where ``y_1`` is preferred.
        ref_logprobs: ``(2n,)`` log pi_ref of each response.
    """

    responses: list[Sample]
    prefer_1: tuple[np.ndarray, ...]
    ref_logprobs: np.ndarray

    def oriented(self, s: int) -> np.ndarray:
        """``(n, 2)`` chosen, rejected indices into :attr:`responses` under scorer ``s``'s labels."""
        first = 2 * np.arange(len(self.prefer_1[s]))
        win = self.prefer_1[s].astype(int)
        return np.stack([first + win, first + 1 - win], axis=1)


def load_labelled_pairs(config: RunConfig, setup: RunSetup) -> LabelledPairs:
    """``pecaid.preferences`` read and validated (:func:`llm.preference_pairs.load_preference_pairs`), tokenised.

    Raises:
        ValueError: For a bad file (named, with the row and field), or objectives that are not one per scorer.
    """
    data = load_preference_pairs(config.pecaid.preferences, config.pecaid.objectives or None)
    if len(data.objectives) != len(setup.scorers):
        raise ValueError(
            f"pecaid.objectives: {data.source} gives {list(data.objectives)}; name one objective per scorer "
            f"({len(setup.scorers)}: the reward, then each utility), e.g. objectives = ['better', 'safer']"
        )
    tokenizer, eos = setup.tokenizer, setup.tokenizer.eos_token_id
    responses = []
    for i, pair in enumerate(data.pairs):
        prompt = chat_prompt(tokenizer, pair.prompt, config.model.use_chat_template)
        prompt_ids = tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        for text in pair.responses:  # as sampled responses end: with the end-of-sequence token
            ids = (*tokenizer(text, add_special_tokens=False)["input_ids"], eos)
            responses.append(Sample(i, prompt_ids, ids, text))
    ref_logprobs = response_logprobs(
        setup.reference, responses, tokenizer.pad_token_id, config.generation.batch_size, "preference log-probs"
    )
    return LabelledPairs(responses, tuple(data.prefer_1(o) for o in data.objectives), ref_logprobs)


def _pre_align(
    config: RunConfig, ranks: Ranks, setup: RunSetup, pairs: np.ndarray, out: Path, progress: bool,
    labelled: LabelledPairs | None = None,
) -> list[ImplicitReward]:
    """PeCAID's pre-alignment (Algorithm 3, lines 3-4): pi_r and each pi_g_i by DPO from pi_ref on preferences.

    On ``labelled`` pairs (a preference file) each model trains on its objective's labels; without them the
    scorers play the annotators of pi_ref's pairs: one Bradley-Terry label per pair and objective, drawn once.
    Each trained model is saved as ``pre_aligned_<i>.safetensors``; a resumed run loads it instead of training.
    """
    names = [config.scorers.reward, *config.scorers.utilities]
    ref, pad = setup.ref, setup.tokenizer.pad_token_id
    trunk = None if labelled is not None else _shared_trunk(config, ranks, setup, pad)
    rewards = []
    for s, name in enumerate(names):
        if labelled is None:
            steps_per_epoch = _steps_per_epoch(config, pairs)
        else:
            steps_per_epoch = math.ceil(len(labelled.prefer_1[s]) / config.training.batch_size)
        learner = build_learner(config, ranks, setup.reference, config.pecaid.epochs * steps_per_epoch)
        path = out / f"pre_aligned_{s}.safetensors"
        if path.is_file():
            load_weights(learner.trainer, _load_weights(path, f"delete {path} to train it again"))
        else:
            rng = np.random.default_rng([config.seed, s])  # its own stream: skipping it on resume changes nothing
            if labelled is None:
                scores = ref.train_scores[s]
                prefer_1 = pseudo_labels(scores[pairs[:, 0], pairs[:, 1]], scores[pairs[:, 0], pairs[:, 2]], rng)
            epochs = range(config.pecaid.epochs)
            for _ in tqdm(epochs, desc=f"pre-align {name}", disable=not (progress and ranks.is_main)):
                if labelled is None:
                    _reference_epoch(
                        config, learner, ref, _oriented(pairs, prefer_1, config.generation.samples_per_prompt),
                        _batches(config, pairs, rng), pad_id=pad, ranks=ranks, trunk=trunk, progress=progress,
                    )  # fmt: skip
                else:
                    oriented = labelled.oriented(s)
                    dpo_epoch(
                        learner.trainer, learner.optimizer, labelled.responses, oriented, labelled.ref_logprobs,
                        config.caid.beta, shuffled_batches(len(oriented), config.training.batch_size, rng), pad,
                        scheduler=learner.scheduler, ranks=ranks, progress=progress,
                    )  # fmt: skip
            weights, _ = training_state(learner.trainer, learner.optimizer, learner.names)
            if ranks.is_main:
                _save_weights(path, weights)
        learner.model.eval().requires_grad_(False)
        beta, batch = config.caid.beta, config.generation.batch_size
        rewards.append(ImplicitReward(f"implicit:{name}", learner.model, beta, pad, batch))
    return rewards


def _implicit_scores(
    ranks: Ranks, rewards: Sequence[ImplicitReward], prompts: Sequence[str], ref: ReferenceData, k: int
) -> np.ndarray:
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
