"""DPO epoch cost of grouped all-pairs losses and the cached frozen trunk, against the drawn-pairs code, in one run.

Usage::

    python -m benchmarks.dpo_engineering --out DIR [--model tiny] [--prompts 8] [--k 4] [--top-k-layers 2]

``--prompts`` review openings (``llm.prompts.prompt_set("reviews")``, completion mode), ``--k`` responses each
sampled from the model (temperature 1, top-p 1.0, at most ``--response-tokens`` new tokens), and all
``k(k-1)/2`` pairs of each prompt, trained top ``--top-k-layers`` layers (``model.train = "top_layers"``),
float32, through :func:`llm.dpo.dpo_epoch` (the pipeline's own epoch) with ``--batch-size`` pairs per step:

- **per_pair**: what runs did before ``training.all_pairs``/``training.cache_trunk``: shuffled batches of pairs,
  each pair's two responses forwarded (a response in several pairs of a step forwarded several times);
- **grouped**: whole prompts per step, one forward per response (``training.all_pairs``);
- **per_pair_trunk** / **grouped_trunk**: the same with the trunk's hidden states cached
  (``training.cache_trunk``), filled in the first epoch and reused by the later ones.

Each variant runs ``--epochs`` epochs on a fresh copy of the policy; the headline is pairs/s over the epochs
after the first (a run's later epochs and every other method of a sweep reuse the cache) and the first epoch's
too. Variants run in a rotated order in each of ``--repeats`` rounds, in one process, so the ratios compare
runs under the same machine load (the machine may be shared: absolute numbers are not comparable across runs).
Writes ``DIR/dpo_engineering.json`` and ``DIR/dpo_engineering.md``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.report import write_report
from llm.cli_errors import check_out_dir, exit_2_on_user_error
from llm.config import GenerationConfig
from llm.dpo import TrunkCache, all_pairs, dpo_epoch, grouped_batches, shuffled_batches
from llm.models import DEFAULT_MODEL, load_model, load_tokenizer, tiny_model
from llm.prompts import prompt_set
from llm.reference_phase import response_logprobs
from llm.run_files import machine_description, package_versions
from llm.sampling import Sample, sample_responses
from llm.trainable import trainable_parameters

VARIANTS = ("per_pair", "grouped", "per_pair_trunk", "grouped_trunk")
VERSIONS = ("caid-toolkit", "torch", "transformers", "numpy")


def run_variant(
    name: str,
    policy: torch.nn.Module,
    responses: Sequence[Sample],
    ref_logprobs: np.ndarray,
    args: argparse.Namespace,
    pad: int,
) -> dict[str, Any]:
    """``args.epochs`` epochs of one variant on a fresh copy of ``policy``; seconds per epoch."""
    model = copy.deepcopy(policy)
    optimizer = torch.optim.AdamW(trainable_parameters(model, "top_layers", args.top_k_layers), lr=1e-5)
    pairs = all_pairs(args.prompts, args.k)
    index = np.stack([pairs[:, 0] * args.k + pairs[:, 1], pairs[:, 0] * args.k + pairs[:, 2]], axis=1)
    grouped = name.startswith("grouped")
    trunk = TrunkCache(len(model.model.layers) - args.top_k_layers, pad, 16) if name.endswith("trunk") else None
    rng = np.random.default_rng(args.seed)
    row: dict[str, Any] = {"variant": name, "load_1min": os.getloadavg()[0], "epoch_s": [], "loss": []}
    for _ in range(args.epochs):
        batches = (
            grouped_batches(pairs[:, 0], args.batch_size, rng)
            if grouped
            else shuffled_batches(len(pairs), args.batch_size, rng)
        )
        start = time.perf_counter()
        stats = dpo_epoch(model, optimizer, responses, index, ref_logprobs, 0.1, batches, pad, trunk=trunk,
                          grouped=grouped)  # fmt: skip
        row["epoch_s"].append(time.perf_counter() - start)
        row["loss"].append(stats.dpo_loss)
    n = len(pairs)
    row["pairs_per_s_first"] = n / row["epoch_s"][0]
    row["pairs_per_s_later"] = n * (args.epochs - 1) / sum(row["epoch_s"][1:])
    return row


def to_markdown(record: dict[str, Any]) -> str:
    """The summary table: median pairs/s per variant and the ratio to ``per_pair`` (same run, same load)."""
    cfg, summary = record["config"], record["summary"]
    lines = [
        "# DPO epoch: grouped all-pairs losses and the cached frozen trunk",
        "",
        f"Machine: {record['machine']}; torch threads {record['torch_threads']}. Model {cfg['model']}, top "
        f"{cfg['top_k_layers']} layers trained, float32; {cfg['prompts']} prompts x {cfg['k']} responses "
        f"({record['pairs']} pairs), batch {cfg['batch_size']} pairs, {cfg['epochs']} epochs, median of "
        f"{cfg['repeats']} rounds; mean sequence {record['mean_tokens']:.0f} tokens; wall {record['wall_s']:.0f} s.",
        "",
        "| variant | pairs/s, later epochs | ratio | pairs/s, first epoch | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in VARIANTS:
        s = summary[name]
        lines.append(
            f"| {name} | {s['pairs_per_s_later']:.3g} | {s['ratio_later']:.2f} | {s['pairs_per_s_first']:.3g} "
            f"| {s['ratio_first']:.2f} |"
        )
    return "\n".join([*lines, ""])


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dpo_engineering", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the JSON and markdown report")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"{DEFAULT_MODEL!r} (default) or 'tiny'")
    parser.add_argument("--prompts", type=int, default=8, help="prompts")
    parser.add_argument("--k", type=int, default=4, help="responses per prompt (all k(k-1)/2 pairs train)")
    parser.add_argument("--response-tokens", type=int, default=24, help="new tokens per response")
    parser.add_argument("--batch-size", type=int, default=12, help="pairs per step")
    parser.add_argument("--top-k-layers", type=int, default=2, help="trained top decoder layers")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant (>= 2)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the four variants")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts, samples and batch order")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache root (default: the toolkit's)")
    args = parser.parse_args(argv)
    check_out_dir(args.out)  # before any timing: a file there would fail only at the end
    if min(args.prompts, args.repeats, args.batch_size, args.top_k_layers) < 1 or args.k < 2 or args.epochs < 2:
        parser.error("--prompts, --repeats, --batch-size, --top-k-layers must be >= 1, --k and --epochs >= 2")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.model == "tiny":
        tokenizer = load_tokenizer(DEFAULT_MODEL, cache_dir=args.cache_dir)
        policy = tiny_model(tokenizer, seed=args.seed, layers=4)
    else:
        policy, tokenizer = load_model(args.model, cache_dir=args.cache_dir)
    policy.eval().requires_grad_(False)
    prompts = list(prompt_set("reviews", args.prompts, args.seed).prompts)[: args.prompts]
    if len(prompts) < args.prompts:
        parser.error(f"--prompts: only {len(prompts)} review prompts")
    generation = GenerationConfig(max_new_tokens=args.response_tokens, top_p=1.0, samples_per_prompt=args.k,
                                  batch_size=32)  # fmt: skip
    responses = sample_responses(policy, tokenizer, prompts, args.k, generation, args.seed, progress=False)
    pad = tokenizer.pad_token_id
    ref_logprobs = response_logprobs(policy, responses, pad, 16, progress=False)
    runs = []
    for r in range(args.repeats):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for name in order:
            print(f"round {r + 1}: {name}", file=sys.stderr, flush=True)
            runs.append({"round": r + 1, **run_variant(name, policy, responses, ref_logprobs, args, pad)})
    summary: dict[str, Any] = {}
    for name in VARIANTS:
        mine = [x for x in runs if x["variant"] == name]
        summary[name] = {k: statistics.median(x[k] for x in mine) for k in ("pairs_per_s_first", "pairs_per_s_later")}
    for name in VARIANTS:
        for k in ("first", "later"):
            summary[name][f"ratio_{k}"] = summary[name][f"pairs_per_s_{k}"] / summary["per_pair"][f"pairs_per_s_{k}"]
    losses = {x["variant"]: x["loss"][0] for x in runs if x["round"] == 1}
    record = {
        "config": {**vars(args), "out": str(args.out), "cache_dir": str(args.cache_dir)},
        "versions": package_versions(VERSIONS),
        "machine": machine_description(),
        "torch_threads": torch.get_num_threads(),
        "pairs": args.prompts * args.k * (args.k - 1) // 2,
        "mean_tokens": float(np.mean([len(s.prompt_ids) + len(s.response_ids) for s in responses])),
        "first_epoch_loss": losses,  # per_pair = per_pair_trunk and grouped = grouped_trunk (same batches)
        "runs": runs,
        "summary": summary,
        "wall_s": time.perf_counter() - start,
    }
    write_report(args.out, "dpo_engineering", record, to_markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
