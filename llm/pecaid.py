"""PeCAID's pre-alignment (Algorithm 3, lines 3-4): pi_r and each pi_g_i by DPO from pi_ref, then implicit rewards.

Each objective's model is trained on preferences: the labelled pairs of a preference file
(``pecaid.preferences``, :class:`LabelledPairs`), or, without one, pi_ref's reference pairs labelled once by the
scorers playing the annotators (one Bradley-Terry label per pair and objective). The trained models' implicit
rewards ``beta log(pi_i / pi_ref)`` (:class:`llm.implicit_rewards.ImplicitReward`) then replace the scores of
the reference samples (:func:`implicit_scores`) and the utilities of the on-policy dual steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from llm.checkpoints import check_weights, read_weights, write_weights
from llm.config import RunConfig
from llm.distributed import Ranks, full_parameters, load_weights, training_state
from llm.dpo import TrunkCache, epoch_batches, oriented_pairs, pseudo_labels, shuffled_batches, steps_per_epoch
from llm.implicit_rewards import ImplicitReward
from llm.learner import build_learner
from llm.models import chat_prompt
from llm.preference_pairs import PreferenceData, load_preference_pairs
from llm.prompts import PromptSet, split
from llm.reference_phase import CHUNK_PROMPTS, ReferenceData, RunSetup, response_logprobs, score_samples
from llm.sampling import Sample
from llm.scorers import plugin_fraction_thresholds
from llm.truncation import truncate

__all__ = [
    "LabelledPairs",
    "PeCAIDInputs",
    "held_out_evaluation",
    "held_out_pair_metrics",
    "implicit_phase",
    "implicit_scores",
    "implicit_thresholds",
    "load_labelled_pairs",
    "pre_align",
    "reference_implicit_scores",
]


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledPairs:
    """Labelled preference pairs from a file (``pecaid.preferences``), ready for DPO.

    Attributes:
        responses: ``y_0, y_1`` of pair i at ``2i, 2i + 1``, tokenised as the run feeds its model.
        prefer_1: Per objective (reward first), ``(n,)`` True where ``y_1`` is preferred.
        ref_logprobs: ``(2n,)`` log pi_ref of each response.
        prompts: The raw prompt of each pair.
    """

    responses: list[Sample]
    prefer_1: tuple[np.ndarray, ...]
    ref_logprobs: np.ndarray
    prompts: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.prefer_1[0])

    def subset(self, pairs: Sequence[int]) -> LabelledPairs:
        """The pairs at ``pairs``, in that order (renumbered from 0)."""
        rows = np.array([r for i in pairs for r in (2 * i, 2 * i + 1)], dtype=int)
        responses = [dataclasses.replace(self.responses[r], prompt_index=k // 2) for k, r in enumerate(rows)]
        prefer_1 = tuple(p[np.asarray(pairs, dtype=int)] for p in self.prefer_1)
        return LabelledPairs(responses, prefer_1, self.ref_logprobs[rows], tuple(self.prompts[i] for i in pairs))

    def split(self, test_fraction: float, seed: int) -> tuple[LabelledPairs, LabelledPairs]:
        """``(train, held_out)`` by prompt text (:func:`llm.prompts.split`): no prompt has pairs on both sides."""
        _, test = split(PromptSet("labelled pairs", self.prompts), test_fraction, seed)
        held_out = set(test.prompts)
        return (
            self.subset([i for i, p in enumerate(self.prompts) if p not in held_out]),
            self.subset([i for i, p in enumerate(self.prompts) if p in held_out]),
        )

    def oriented(self, s: int) -> np.ndarray:
        """``(n, 2)`` chosen, rejected indices into :attr:`responses` under scorer ``s``'s labels."""
        first = 2 * np.arange(len(self.prefer_1[s]))
        win = self.prefer_1[s].astype(int)
        return np.stack([first + win, first + 1 - win], axis=1)


def load_labelled_pairs(config: RunConfig, setup: RunSetup, data: PreferenceData | None = None) -> LabelledPairs:
    """``pecaid.preferences`` (or ``data``, the pairs given as an object) validated, tokenised and truncated.

    Each pair's prompt and responses are cut by ``data.max_prompt_length`` and ``data.max_length``
    (:func:`llm.truncation.truncate`) before pi_ref's log-probabilities are computed.

    Raises:
        ValueError: For a bad file (named, with the row and field), or objectives that are not one per scorer.
    """
    if data is None:
        data = load_preference_pairs(
            config.pecaid.preferences, config.pecaid.objectives or None, offline=config.model.offline
        )
    if len(data.objectives) != len(config.objectives):
        raise ValueError(
            f"pecaid.objectives: {data.source} gives {list(data.objectives)}; name one objective per scorer "
            f"({len(config.objectives)}: the reward, then each utility), e.g. objectives = ['better', 'safer']"
        )
    tokenizer, eos = setup.tokenizer, setup.tokenizer.eos_token_id
    responses = []
    for i, pair in enumerate(data.pairs):
        prompt = chat_prompt(tokenizer, pair.prompt, config.model.use_chat_template)
        prompt_ids = tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        for text in pair.responses:  # as sampled responses end: with the end-of-sequence token
            ids = (*tokenizer(text, add_special_tokens=False)["input_ids"], eos)
            cut = truncate(Sample(i, prompt_ids, ids, text), config.data.max_prompt_length, config.data.max_length)
            responses.append(cut)
    ref_logprobs = response_logprobs(
        setup.ref_model, responses, tokenizer.pad_token_id, config.generation.batch_size, "preference log-probs"
    )
    prefer_1 = tuple(data.prefer_1(o) for o in data.objectives)
    return LabelledPairs(responses, prefer_1, ref_logprobs, tuple(pair.prompt for pair in data.pairs))


@dataclasses.dataclass(frozen=True)
class PeCAIDInputs:
    """What PeCAID's pre-alignment reads from its trainer.

    Attributes:
        config: The run's configuration.
        ranks: The processes sharing the run.
        setup: The reference phase (pi_ref, its samples and scores).
        pairs: ``(n, 3)`` reference pairs ``(prompt, j_0, j_1)`` (used without a preference file).
        out: The run directory.
        trunk: The frozen-trunk cache of the reference samples (None: full forwards).
        progress: Whether to show progress bars.
    """

    config: RunConfig
    ranks: Ranks
    setup: RunSetup
    pairs: np.ndarray
    out: Path
    trunk: TrunkCache | None
    progress: bool


def pre_align(inputs: PeCAIDInputs, labelled: LabelledPairs | None = None) -> list[ImplicitReward]:
    """PeCAID's pre-alignment: one model per objective (reward first), DPO from pi_ref, as implicit rewards.

    Each trained model is saved as ``pre_aligned_<i>.safetensors`` in ``inputs.out``; a resumed run loads it
    instead of training. ``labelled``: the preference file's pairs, or None (the scorers label the reference pairs).
    """
    config, ranks, setup, pairs = inputs.config, inputs.ranks, inputs.setup, inputs.pairs
    out, trunk, progress = inputs.out, inputs.trunk, inputs.progress
    names = list(config.objectives)
    ref, pad, k = setup.ref, setup.tokenizer.pad_token_id, config.generation.samples_per_prompt
    training, beta = config.training, config.caid.beta
    rewards = []
    for s, name in enumerate(names):
        if labelled is None:
            accumulation = training.gradient_accumulation_steps
            steps = steps_per_epoch(pairs, training.batch_size, training.all_pairs, k, accumulation)
        else:
            batches = math.ceil(len(labelled.prefer_1[s]) / training.batch_size)
            steps = math.ceil(batches / training.gradient_accumulation_steps)
        total = config.pecaid.epochs * steps
        learner = build_learner(config.model, training, config.seed, ranks, setup.ref_model, total)
        path = out / f"pre_aligned_{s}.safetensors"
        if path.is_file():
            fix = f"delete {path} to train it again"
            weights = read_weights(path, fix)
            check_weights(weights, {n: p.shape for n, p in learner.model.named_parameters() if n in learner.names},
                          path, fix)  # fmt: skip
            load_weights(learner.module, weights)
        else:
            rng = np.random.default_rng([config.seed, s])  # its own stream: skipping it on resume changes nothing
            if labelled is None:
                scores = ref.train_scores[s]
                prefer_1 = pseudo_labels(scores[pairs[:, 0], pairs[:, 1]], scores[pairs[:, 0], pairs[:, 2]], rng)
            show = progress and ranks.is_main
            for _ in tqdm(range(config.pecaid.epochs), desc=f"pre-align {name}", disable=not show):
                if labelled is None:
                    learner.epoch(
                        ref.train, oriented_pairs(pairs, prefer_1, k), ref.train_logprobs.ravel(), beta,
                        epoch_batches(pairs, training.batch_size, training.all_pairs, rng), pad,
                        grouped=training.all_pairs, ranks=ranks, trunk=trunk, progress=progress,
                    )  # fmt: skip
                else:
                    oriented = labelled.oriented(s)
                    learner.epoch(
                        labelled.responses, oriented, labelled.ref_logprobs, beta,
                        shuffled_batches(len(oriented), training.batch_size, rng), pad, ranks=ranks, progress=progress,
                    )  # fmt: skip
            weights, _ = training_state(learner.module, learner.optimizer, learner.names)
            if ranks.is_main:
                write_weights(path, weights)
        learner.model.eval().requires_grad_(False)
        rewards.append(ImplicitReward(f"implicit:{name}", learner.model, beta, pad, config.generation.batch_size))
    return rewards


def implicit_scores(
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


def reference_implicit_scores(config: RunConfig, setup: RunSetup, implicit: Sequence[ImplicitReward]) -> np.ndarray:
    """``(m, P, n_ref)`` the implicit utilities of pi_ref's held-out samples, what PeCAID's constraints compare with.

    Every rank computes them (one pi_ref pass over the held-out samples, then the implicit models').
    """
    with full_parameters(*(reward.model for reward in implicit)):
        logprobs = response_logprobs(
            setup.ref_model, setup.ref.test, setup.tokenizer.pad_token_id, config.generation.batch_size,
            "reference log-probs", progress=False,
        )  # fmt: skip
        k = config.evaluation.reference_samples
        return score_samples(implicit, setup.test.prompts, setup.ref.test, k, logprobs)


def held_out_pair_metrics(
    policy: torch.nn.Module, pairs: LabelledPairs, objectives: Sequence[str], beta: float, pad_id: int, batch_size: int
) -> dict[str, dict[str, float]]:
    """Per objective, how the policy orders held-out labelled pairs: PeCAID's evaluation without scorers.

    The implicit reward margin of a pair is ``beta [log pi/pi_ref (y_w) - log pi/pi_ref (y_l)]`` with ``y_w`` the
    response the objective prefers; ``margin`` is its mean, ``accuracy`` the share of pairs where it is positive
    (both 0 for pi_ref itself, whose margins are all 0).
    """
    log_ratio = response_logprobs(policy, pairs.responses, pad_id, batch_size, "held-out pairs", progress=False)
    log_ratio = beta * (log_ratio - pairs.ref_logprobs)
    metrics = {}
    for name, prefer_1 in zip(objectives, pairs.prefer_1, strict=True):
        margin = np.where(prefer_1, 1.0, -1.0) * (log_ratio[1::2] - log_ratio[0::2])
        metrics[name] = {"margin": float(margin.mean()), "accuracy": float(np.mean(margin > 0)),
                         "n_pairs": float(len(margin))}  # fmt: skip
    return metrics


def held_out_evaluation(
    config: RunConfig,
    setup: RunSetup,
    implicit: Sequence[ImplicitReward],
    policy_implicit: np.ndarray,
    policy: torch.nn.Module,
    pairs: LabelledPairs | None,
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, dict[str, float]]]:
    """PeCAID's held-out evaluation: implicit utilities of held-out samples, and held-out labelled pairs.

    The implicit utilities of the policy's and pi_ref's held-out samples are what its constraints are checked on;
    without scorers, the held-out labelled pairs' metrics per objective (:func:`held_out_pair_metrics`) join them.

    Args:
        config: The run's configuration.
        setup: The reference phase.
        implicit: The implicit utilities.
        policy_implicit: ``(m, P, n)`` their scores of the policy's held-out samples.
        policy: The trained policy.
        pairs: The held-out labelled pairs (None: there are none, the scorers evaluate).
    """
    held_out = (policy_implicit, reference_implicit_scores(config, setup, implicit))
    if pairs is None:
        return held_out, {}
    with full_parameters(policy):
        metrics = held_out_pair_metrics(policy, pairs, config.objectives, config.caid.beta,
                                        setup.tokenizer.pad_token_id, config.generation.batch_size)  # fmt: skip
    return held_out, metrics


def implicit_thresholds(config: RunConfig, pool: ReferenceData) -> tuple[float, ...]:
    """PeCAID's thresholds b_i in implicit-reward units.

    As configured, or fractions of the plug-in maximum of ``pool``'s implicit utilities
    (``scorers.threshold_units = 'plugin_fraction'``).
    """
    if config.scorers.threshold_units == "absolute":
        return tuple(float(b) for b in config.scorers.thresholds)
    return plugin_fraction_thresholds(config.scorers.thresholds, pool.train_scores[1:])


def implicit_phase(
    inputs: PeCAIDInputs, record: Callable[[], None], preferences: PreferenceData | None = None
) -> tuple[RunSetup, ReferenceData, ReferenceData | None, list[ImplicitReward], LabelledPairs | None]:
    """Algorithm 3, lines 3-4, for a trainer: the pre-aligned models' implicit rewards in place of the scores.

    A preference file (or ``preferences``) is read and checked before anything is written; without scorers,
    ``data.test_fraction`` of its pairs (by prompt) are held out for the evaluation. ``record`` is called before the
    pre-aligned models are saved into ``inputs.out``.

    Returns:
        ``(setup, ref, plugin, utilities, held_out)``: the setup with thresholds in implicit-reward units
        (:func:`implicit_thresholds`), the reference pool and plug-in pool with implicit scores, the implicit
        utilities, and the held-out labelled pairs (None with scorers or without a preference file).
    """
    config, ranks, setup = inputs.config, inputs.ranks, inputs.setup
    given = config.pecaid.preferences or preferences is not None
    labelled = load_labelled_pairs(config, setup, preferences) if given else None
    held_out = None
    if labelled is not None and config.scorers.none:  # no scorer: held-out pairs are the evaluation
        labelled, held_out = labelled.split(config.data.test_fraction, config.data_seed)
    record()
    # Labelled pairs are the file's own responses, not the reference samples the trunk cache holds.
    implicit = pre_align(inputs if labelled is None else dataclasses.replace(inputs, trunk=None), labelled)
    prompts, k = setup.train.prompts, config.generation.samples_per_prompt
    ref = dataclasses.replace(setup.ref, train_scores=implicit_scores(ranks, implicit, prompts, setup.ref, k))
    plugin = setup.plugin
    if plugin is not None:
        scores = implicit_scores(ranks, implicit, prompts, plugin, config.caid.plugin_samples)
        plugin = dataclasses.replace(plugin, train_scores=scores)
    thresholds = implicit_thresholds(config, plugin if plugin is not None else ref)
    return dataclasses.replace(setup, thresholds=thresholds), ref, plugin, implicit[1:], held_out
