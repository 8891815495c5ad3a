"""Implicit rewards of DPO-trained models, the scores of PeCAID (Algorithm 3).

A model pi_s trained by DPO (temperature beta, reference pi_ref) on preferences that follow a
Bradley-Terry model in a score s satisfies, at the population optimum,
``beta log(pi_s(y|x) / pi_ref(y|x)) = s(x, y) - beta log Z_s(x)``: the log-ratio recovers s up to a
per-prompt constant. PeCAID uses these implicit rewards in place of reward and utility models. The
constant cancels wherever CAID uses a utility: in pseudo-labels (differences within a prompt) and in the
dual step, whose slack subtracts the reference mean ``E_ref[beta log(pi_g / pi_ref)] =
-beta KL(pi_ref || pi_g)``, which is exactly PeCAID's KL correction
``u = E_pi[beta log(pi_g / pi_ref)] + beta KL(pi_ref || pi_g) - b``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from llm.reference_phase import response_logprobs
from llm.sampling import Sample

__all__ = ["ImplicitReward"]


@dataclasses.dataclass(frozen=True, eq=False)
class ImplicitReward:
    """``beta log(pi_s(y|x) / pi_ref(y|x))`` of a sample, from its token ids (a sample scorer).

    Attributes:
        name: What it stands for (e.g. ``"implicit:-toxicity"``).
        model: The DPO-trained pi_s.
        beta: The DPO temperature pi_s was trained with.
        pad_id: The tokenizer's padding id.
        batch_size: Sequences per forward pass.
    """

    name: str
    model: torch.nn.Module
    beta: float
    pad_id: int
    batch_size: int

    def score_samples(self, samples: Sequence[Sample], ref_logprobs: np.ndarray | None) -> np.ndarray:
        """``(len(samples),)`` implicit rewards, given the samples' ``(len(samples),)`` log pi_ref(y|x).

        pi_ref's log-probabilities come from the caller, who has them already (the cached reference phase,
        or the KL estimate of on-policy samples): one reference pass serves every implicit reward.

        Raises:
            ValueError: If ``ref_logprobs`` is missing or does not have one value per sample.
        """
        if ref_logprobs is None or np.shape(ref_logprobs) != (len(samples),):
            raise ValueError(
                f"ref_logprobs: implicit reward {self.name!r} needs log pi_ref of each of the {len(samples)} "
                f"samples, got {None if ref_logprobs is None else np.shape(ref_logprobs)}"
            )
        logp = response_logprobs(self.model, samples, self.pad_id, self.batch_size, progress=False)
        return self.beta * (logp - ref_logprobs)
