"""The evaluation's log-ratios log pi/pi_ref: two full forwards against one shared trunk pass (top-layers policy).

Usage::

    python -m benchmarks.eval_log_ratios [--samples 64] [--rounds 3] [--top-k-layers 2]

SmolLM2 samples ``--samples`` held-out review continuations with the study's generation settings
(``configs/reviews_study.toml``); then, in alternating rounds, their log-ratio is timed as the pipeline computed
it before (:func:`llm.reference_phase.response_logprobs` of both models) and as it does now with
``training.cache_trunk`` (one :class:`llm.dpo.TrunkCache` of the batch serving both models). The policy is pi_ref
itself, which changes no FLOP. Prints the seconds of each round and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence

import torch

from llm.cli_errors import exit_2_on_user_error
from llm.config_files import load_config
from llm.dpo import TrunkCache
from llm.models import load_model
from llm.prompts import review_prompts
from llm.reference_phase import response_logprobs
from llm.sampling import sample_responses

STUDY_CONFIG = "configs/reviews_study.toml"


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval_log_ratios", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=64, help="held-out samples (one generation batch)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    parser.add_argument("--top-k-layers", type=int, default=2, help="trained top layers (the study's 2)")
    args = parser.parse_args(argv)
    model, tokenizer = load_model()
    generation = dataclasses.replace(load_config(STUDY_CONFIG).generation, batch_size=args.samples)
    samples = sample_responses(model, tokenizer, list(review_prompts(args.samples).prompts), 1, generation, seed=0,
                               progress=False)  # fmt: skip
    pad, frozen = tokenizer.pad_token_id, len(model.model.layers) - args.top_k_layers
    prompts, responses = [s.prompt_ids for s in samples], [s.response_ids for s in samples]
    for r in range(args.rounds):
        start = time.perf_counter()
        for _ in range(2):  # log pi and log pi_ref
            response_logprobs(model, samples, pad, args.samples, progress=False)
        full_s = time.perf_counter() - start
        start = time.perf_counter()
        trunk = TrunkCache(frozen, pad, args.samples)
        with torch.no_grad():
            for _ in range(2):
                trunk.sequence_logprobs(model, prompts, responses)
        trunk_s = time.perf_counter() - start
        print(f"round {r}: two full forwards {full_s:.2f} s, one trunk pass {trunk_s:.2f} s, "
              f"ratio {full_s / trunk_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
