"""The CAID trainer: one method's training state and Algorithm 2's steps (Algorithm 3 for PeCAID).

:class:`CAIDTrainer` owns what a run trains: the policy and its optimiser (a :class:`llm.learner.Learner`), the
ranks, the multipliers (:class:`llm.caid.Multipliers`), the metrics so far and the random streams. Each
iteration is :func:`llm.caid.caid_iteration`, the loop every CAID of the toolkit runs, on the trainer's two steps:

* :meth:`CAIDTrainer.slack`: the on-policy constraint slack ``u = E[g - E_ref g] - b`` from n prompts x k fresh
  samples of the current policy (Algorithm 2, line 6; the multipliers then take the step of eq. (6));
* :meth:`CAIDTrainer.fit`: pseudo-labels ``Bernoulli(sigma(Delta(r + lambda^T g)))`` of the reference pairs,
  then one DPO epoch on them (eq. (13)).

:meth:`CAIDTrainer.evaluate` scores held-out samples of the trained policy next to pi_ref's (Fig. 1);
:meth:`CAIDTrainer.save` / :meth:`CAIDTrainer.load` checkpoint a finished iteration (:mod:`llm.checkpoints`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm import pecaid
from llm.caid import Multipliers, caid_iteration, composite_reward
from llm.checkpoints import (
    STATE_FILE,
    SavedState,
    check_optimizer,
    check_weights,
    restart_hint,
    save_checkpoint,
    write_jsonl,
)
from llm.config import RunConfig
from llm.distributed import Ranks, full_parameters, load_training_state, training_state
from llm.dpo import EpochStats, TrunkCache, all_pairs, epoch_batches, label_uniforms, oriented_pairs, pseudo_labels
from llm.dpo import steps_per_epoch as epoch_steps
from llm.evaluation import DUAL_TRAJECTORY_FILE, dual_trajectory_csv, summarize
from llm.implicit_rewards import ImplicitReward
from llm.learner import TrunkCaches, build_learner
from llm.methods import method
from llm.preference_pairs import PreferenceData
from llm.reference_phase import ReferenceData, RunSetup, response_logprobs, score_samples
from llm.run_files import RunFileError, write_atomic
from llm.run_schema import EVAL_SCORES_FILE, RunSummary, eval_scores_csv
from llm.sampling import Sample, sample_responses
from llm.scorers import Scorer
from llm.truncation import truncated_setup
from theory.dual import dual_value
from theory.dual_solver import solve_dual
from theory.problem import ConstrainedProblem

__all__ = ["CAIDTrainer"]

# Keys of the run's random streams under training.common_random_numbers (the labels': llm.dpo.LABEL_STREAM).
_ORDER_STREAM, _DUAL_STREAM = 0x4F524452, 0x4455414C  # "ORDR", "DUAL"


class CAIDTrainer:
    """One method's training run on a shared reference phase: the multipliers, the policy, its optimiser, streams.

    Build it with :meth:`build` (draws the pairs, pre-aligns for PeCAID, solves the one-shot plug-in dual);
    then :meth:`iterate` runs iteration ``t`` (:func:`llm.caid.caid_iteration`), :meth:`save` / :meth:`load`
    checkpoint it, :meth:`evaluate` measures it.

    Attributes:
        config: The run's configuration; ``ranks`` the processes sharing it; ``spec`` its method.
        setup: The shared reference phase (scorers, prompts, pi_ref).
        ref: The reference phase the labels use (PeCAID: scores replaced by implicit rewards).
        utilities: The scorers of the on-policy dual steps (PeCAID: implicit rewards).
        pairs: ``(n, 3)`` rows ``(prompt, j_0, j_1)`` into the reference samples.
        problem: The one-shot plug-in problem (eq. (4)); ``one_shot`` its dual solution.
        learner: The policy, the module steps run through, the optimiser and the schedule.
        multipliers: lambda, its dual step and trajectory; ``iteration`` the last finished iteration (0: none).
        metrics: One row per finished iteration; ``rng`` the run's numpy generator.
        trunk: The frozen-trunk cache of the reference samples (None: full forwards).
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
        trunk: TrunkCache | None,
        progress: bool = True,
    ) -> None:
        self.config, self.setup, self.ranks, self.spec = config, setup, ranks, method(config.method)
        self.ref, self.utilities, self.pairs, self.problem, self.rng = ref, list(utilities), pairs, problem, rng
        self.progress = progress and ranks.is_main
        self.one_shot = solve_dual(problem, return_policy=False).lam  # raises InfeasibleProblemError
        caid = config.caid
        self.multipliers = Multipliers(self.spec.initial_multipliers(self.one_shot), caid.dual_step_size,
                                       caid.dual_update)  # fmt: skip
        self.iteration, self.metrics = 0, []
        self.pad = setup.tokenizer.pad_token_id
        total_steps = caid.iterations * self.steps_per_epoch
        self.learner = build_learner(config.model, config.training, config.seed, ranks, setup.ref_model, total_steps)
        self.trunk = trunk
        self.held_out_pairs: pecaid.LabelledPairs | None = None  # PeCAID without scorers: its evaluation pairs

    @classmethod
    def build(
        cls,
        config: RunConfig,
        setup: RunSetup,
        ranks: Ranks,
        out: Path,
        record: Callable[[], None] = lambda: None,
        progress: bool = True,
        trunks: TrunkCaches | None = None,
        preferences: PreferenceData | None = None,
    ) -> CAIDTrainer:
        """The trainer at iteration 0: pairs drawn, PeCAID's models pre-aligned, the one-shot dual solved.

        Args:
            config: The run's configuration.
            setup: Its reference phase (:func:`llm.pipeline.run_setup`).
            ranks: The processes sharing the run.
            out: The run directory (PeCAID saves its pre-aligned models there).
            record: Called once the inputs are valid: before pre-alignment (whose models go into ``out``),
                else after the one-shot dual is solved (so infeasible thresholds leave no run record).
            progress: Whether to show progress bars.
            trunks: The frozen-trunk caches this run may share with others of the process (None: its own).
            preferences: PeCAID's labelled pairs as an object (``llm.run(preferences=...)``), or None.

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
        frozen = len(setup.ref_model.model.layers) - config.model.top_k_layers if config.training.cache_trunk else 0
        trunk = (trunks if trunks is not None else TrunkCaches()).get(
            setup.samples_key, frozen, setup.tokenizer.pad_token_id, config.generation.batch_size,
            config.training.cache_trunk, ranks,
        )  # fmt: skip
        setup = truncated_setup(setup, config.data, config.generation.batch_size)  # the pairs DPO forwards
        ref, plugin, utilities, held_out = setup.ref, setup.plugin, setup.scorers[1:], None
        if spec.pre_aligned:  # Algorithm 3, lines 3-4: implicit rewards (and thresholds) in place of the scores
            inputs = pecaid.PeCAIDInputs(config, ranks, setup, pairs, out, trunk, progress)
            setup, ref, plugin, utilities, held_out = pecaid.implicit_phase(inputs, record, preferences)
        pool = plugin if plugin is not None else ref  # the one-shot plug-in problem's samples
        problem = pool.problem(setup.thresholds, config.caid.beta)
        trainer = cls(config, setup, ranks, ref, utilities, pairs, problem, rng, trunk, progress)
        trainer.held_out_pairs = held_out
        if not spec.pre_aligned:
            record()
        return trainer

    # -- the steps of Algorithm 2 --------------------------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps per DPO epoch."""
        training, k = self.config.training, self.config.generation.samples_per_prompt
        return epoch_steps(self.pairs, training.batch_size, training.all_pairs, k, training.gradient_accumulation_steps)

    @property
    def lam(self) -> np.ndarray:
        """The current multipliers lambda."""
        return self.multipliers.value

    def _stream(self, key: int, step: int) -> np.random.Generator:
        """The run's generator, or under common random numbers a generator keyed by ``(seed, key, step)``."""
        if self.config.training.common_random_numbers:
            return np.random.default_rng([self.config.seed, key, step])
        return self.rng

    def slack(self, iteration: int) -> np.ndarray:
        """On-policy slack of the current policy: n prompts x k samples, ``u = E[g - E_ref g] - b``.

        (No log-probabilities: the KL is estimated at the evaluation.)
        """
        caid, train = self.config.caid, self.setup.train
        rng = self._stream(_DUAL_STREAM, iteration)
        chosen = rng.choice(len(train), size=min(caid.dual_prompts, len(train)), replace=False)
        _, g, _ = self.policy_samples(
            [train.prompts[i] for i in chosen], [self.setup.train_inputs[i] for i in chosen], self.utilities,
            caid.dual_samples, int(rng.integers(2**31)), "on-policy samples", log_ratio_prompts=0,
        )  # fmt: skip
        ref_means = self.ref.train_scores[1:].mean(axis=2)  # (m, N): E_ref[g_i | x] from the K reference samples
        return (g - ref_means[:, chosen, None]).mean(axis=(1, 2)) - np.asarray(self.setup.thresholds)

    def _composites(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``r_lambda`` of the first and of the second response of each pair."""
        composite = composite_reward(self.ref.train_scores, lam, self.spec.reward_weight)
        return composite[self.pairs[:, 0], self.pairs[:, 1]], composite[self.pairs[:, 0], self.pairs[:, 2]]

    def preference_probabilities(self, lam: np.ndarray | None = None) -> np.ndarray:
        """``sigma(r_lambda(y_1) - r_lambda(y_0))`` of each pair (the pseudo-labels' law; default: current lambda)."""
        first, second = self._composites(self.lam if lam is None else lam)
        return 1.0 / (1.0 + np.exp(first - second))

    def labels(self, epoch: int, lam: np.ndarray | None = None) -> np.ndarray:
        """Pseudo-labels of the pairs at ``lam`` (default: the current lambda): True where ``j_1`` is chosen.

        Drawn from the run's generator, or under common random numbers from the label stream (one uniform per
        pair and epoch, :func:`llm.dpo.label_uniforms`). With ``training.labels = 'expected'`` nothing is
        drawn: ``j_1`` is chosen where it is the likelier winner, and :meth:`fit` weighs both orders.
        """
        lam = self.lam if lam is None else lam
        if self.config.training.labels == "expected":
            return self.preference_probabilities(lam) >= 0.5
        first, second = self._composites(lam)
        crn = self.config.training.common_random_numbers
        source = label_uniforms(self.config.seed, epoch, len(first)) if crn else self.rng
        return pseudo_labels(first, second, source)

    def fit(self, lam: np.ndarray, iteration: int) -> EpochStats:
        """The primal step: one DPO epoch of the policy on the pairs labelled at ``lam``, in this epoch's order."""
        config = self.config
        prefer_1 = self.labels(iteration, lam)
        oriented = oriented_pairs(self.pairs, prefer_1, config.generation.samples_per_prompt)
        rng = self._stream(_ORDER_STREAM, iteration)
        batches = epoch_batches(self.pairs, config.training.batch_size, config.training.all_pairs, rng)
        targets = None
        if config.training.labels == "expected":
            p_1 = self.preference_probabilities(lam)
            targets = np.where(prefer_1, p_1, 1.0 - p_1)
        return self.learner.epoch(
            self.ref.train, oriented, self.ref.train_logprobs.ravel(), config.caid.beta, batches, self.pad,
            grouped=config.training.all_pairs, ranks=self.ranks, trunk=self.trunk, targets=targets,
            progress=self.progress,
        )  # fmt: skip

    def iterate(self) -> dict[str, Any]:
        """Run the next iteration ``t`` (:func:`llm.caid.caid_iteration`); return its ``metrics.jsonl`` row."""
        done = caid_iteration(self, self.multipliers, self.iteration + 1, self.spec.dual_steps)
        row: dict[str, Any] = {"iteration": done.iteration}
        if done.slack is not None:
            row["slack"] = [float(v) for v in done.slack]
        row.update(
            lam=[float(v) for v in done.lam],
            plugin_dual_value=None if self.spec.baseline else float(dual_value(self.problem, done.lam)),
            **done.stats.as_row(),
        )
        self.metrics.append(row)
        self.iteration = done.iteration
        return row

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def save(self, out: Path) -> None:
        """Checkpoint the finished iteration into ``out`` (rank 0 writes; every rank must call it)."""
        learner = self.learner
        weights, optimizer_state = training_state(learner.module, learner.optimizer, learner.names)
        # Rank 0's torch generator is the one saved; sampling reseeds it from the numpy generator anyway.
        state = {
            "iteration": self.iteration, "multipliers": self.multipliers.state_dict(), "metrics": self.metrics,
            "scheduler": learner.scheduler.state_dict(), "numpy_rng": self.rng.bit_generator.state,
        }  # fmt: skip
        if learner.precision.scaler is not None:  # fp16's loss scale (other runs' state files are unchanged)
            state["grad_scaler"] = learner.precision.state_dict()
        if self.ranks.is_main:
            save_checkpoint(out, self.iteration, weights, optimizer_state, state, self.config.training.keep_checkpoints)
            write_jsonl(out / "metrics.jsonl", self.metrics)

    def load(self, saved: SavedState, out: Path) -> None:
        """Continue from ``saved`` (:func:`llm.checkpoints.load_state` of ``out``): weights, optimiser, lambda, streams.

        Raises:
            RunFileError: If the saved state does not fit this run (another model's shapes or names).
        """
        learner = self.learner
        trained = {name: p.shape for name, p in learner.model.named_parameters() if name in learner.names}
        check_weights(saved.weights, trained, out / STATE_FILE, restart_hint(out))
        check_optimizer(saved.optimizer, trained, out / STATE_FILE, restart_hint(out))
        try:
            load_training_state(learner.module, learner.optimizer, saved.weights, saved.optimizer)
            learner.scheduler.load_state_dict(saved.scheduler)
            learner.precision.load_state_dict(saved.grad_scaler)
            self.rng.bit_generator.state = saved.numpy_rng
            torch.set_rng_state(saved.torch_rng)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # shapes or names of another model
            message = f"{out / STATE_FILE}: does not fit this run ({type(err).__name__}: {err}); {restart_hint(out)}"
            raise RunFileError(message) from None
        self.multipliers, self.metrics, self.iteration = saved.multipliers, saved.metrics, saved.iteration
        if self.ranks.is_main:
            write_jsonl(out / "metrics.jsonl", self.metrics)  # rebuilt if it was lost

    # -- samples of the policy, and the evaluation ---------------------------------------------------------------

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
        generation, policy, reference = self.config.generation, self.learner.model, self.setup.ref_model
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

    def evaluate(self, out: Path) -> RunSummary:
        """Held-out samples of the trained policy scored next to pi_ref's; writes the score and dual files.

        ``evaluation.policy_samples`` responses per held-out prompt, sampled from seed ``seed + 2`` for every
        method (common random numbers across the runs of a sweep), against the reference pool's
        ``evaluation.reference_samples``.
        """
        config, setup, ref, metrics = self.config, self.setup, self.ref, self.metrics
        # PeCAID's constraints are on its implicit utilities: the same samples are scored by them too.
        implicit = list(self.utilities) if self.spec.pre_aligned else []
        samples, scores, log_ratio = self.policy_samples(
            setup.test.prompts, setup.test_inputs, [*setup.scorers, *implicit], config.evaluation.policy_samples,
            config.seed + 2, "eval", config.evaluation.log_ratio_prompts or None,
        )  # fmt: skip
        scores, policy_implicit = scores[: len(setup.scorers)], scores[len(setup.scorers) :]
        names = list(config.scorers.specs)
        # log pi/pi_ref of each sample (exactly 0 for pi_ref's own; NaN beyond evaluation.log_ratio_prompts): the
        # KL and Lagrangian estimates need it.
        eval_csv = eval_scores_csv(names, {
            "policy": (scores, log_ratio, [x.text for x in samples]),
            "reference": (ref.test_scores, np.zeros(ref.test_scores.shape[1:]), [x.text for x in ref.test]),
        })  # fmt: skip
        if self.ranks.is_main:
            write_atomic(out / EVAL_SCORES_FILE, eval_csv)
            write_atomic(out / DUAL_TRAJECTORY_FILE, dual_trajectory_csv(metrics, len(config.objectives) - 1))
        held_out, pairs = (None, {}) if not implicit else pecaid.held_out_evaluation(
            config, setup, implicit, policy_implicit, self.learner.model, self.held_out_pairs)  # fmt: skip
        return summarize(config, setup, ref, metrics, scores, log_ratio, self.one_shot, self.lam, held_out, pairs)
