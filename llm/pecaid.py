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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llm.checkpoints import check_weights, read_weights, write_weights
from llm.config import RunConfig
from llm.distributed import Ranks, full_parameters, load_weights, training_state
from llm.dpo import TrunkCache, epoch_batches, oriented_pairs, pseudo_labels, shuffled_batches, steps_per_epoch
from llm.implicit_rewards import ImplicitReward
from llm.learner import build_learner
from llm.models import chat_prompt
from llm.preference_pairs import load_preference_pairs
from llm.reference_phase import CHUNK_PROMPTS, ReferenceData, RunSetup, response_logprobs, score_samples
from llm.sampling import Sample

__all__ = ["LabelledPairs", "implicit_scores", "load_labelled_pairs", "pre_align"]


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
        setup.ref_model, responses, tokenizer.pad_token_id, config.generation.batch_size, "preference log-probs"
    )
    return LabelledPairs(responses, tuple(data.prefer_1(o) for o in data.objectives), ref_logprobs)


def pre_align(
    config: RunConfig,
    ranks: Ranks,
    setup: RunSetup,
    pairs: np.ndarray,
    out: Path,
    trunk: TrunkCache | None,
    progress: bool,
    labelled: LabelledPairs | None = None,
) -> list[ImplicitReward]:
    """PeCAID's pre-alignment: one model per objective (reward first), DPO from pi_ref, as implicit rewards.

    Each trained model is saved as ``pre_aligned_<i>.safetensors``; a resumed run loads it instead of training.

    Args:
        config: The run's configuration.
        ranks: The processes sharing the run.
        setup: The reference phase (pi_ref, its samples and scores).
        pairs: ``(n, 3)`` reference pairs ``(prompt, j_0, j_1)`` (used without a preference file).
        out: The run directory.
        trunk: The frozen-trunk cache of the reference samples (None: full forwards).
        progress: Whether to show progress bars.
        labelled: The preference file's pairs, or None (the scorers label the reference pairs).
    """
    names = [config.scorers.reward, *config.scorers.utilities]
    ref, pad, k = setup.ref, setup.tokenizer.pad_token_id, config.generation.samples_per_prompt
    training, beta = config.training, config.caid.beta
    rewards = []
    for s, name in enumerate(names):
        if labelled is None:
            steps = steps_per_epoch(pairs, training.batch_size, training.all_pairs, k)
        else:
            steps = math.ceil(len(labelled.prefer_1[s]) / training.batch_size)
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
