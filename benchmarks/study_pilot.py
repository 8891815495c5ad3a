"""Pilot of the powered multi-token study (issue 16): sampling throughput and the reference pool's noise.

Usage::

    python -m benchmarks.study_pilot --out results/benchmarks [--pool-prompts 96] [--pool-k 8] [--rounds 2]
    python -m benchmarks.study_pilot --out results/benchmarks --part dpo [--dpo-epochs 2] [--dpo-prompts 32]

What ``--part sampling`` (the default) measures, on the ``reviews`` prompts (:mod:`llm.prompts.reviews`) with
SmolLM2-135M-Instruct in completion mode (no chat template), 24-token continuations at temperature 1:

1. **Sampling throughput** (:func:`llm.sampling.sample_responses`) at batch 16, 32 and 64 sequences with top-p
   0.9 and 1.0, ``--rounds`` rounds in a rotated order after one warm-up batch. Each measurement records the
   1-minute load average before it; on a shared machine the absolute tokens/s are pessimistic, and the ratios
   between settings measured in the same round are what carries over.
2. **The reference pool**: ``--pool-prompts`` prompts x ``--pool-k`` samples at top-p 1.0, scored by every
   candidate objective (relevance r, positivity g1 = VADER, simplicity g2, toxicity). Per objective: the
   pooled within-prompt SD sigma_w (:func:`llm.scorers.within_prompt_sd`), the between-prompt SD of the prompt
   means (raw, and with the sampling noise sigma_w^2 / K removed), the K-sample plug-in maximum
   ``mean_x(max_k g - mean_k g)`` for K = 4, 6, 8 (averaged exactly over all K-subsets of the pool's samples,
   :func:`llm.scorers.plugin_maximum`), in raw and sigma units, next to its Gaussian value; the within-prompt
   correlations rho(a, b | x) of every two objectives with prompt-bootstrap intervals.
3. **Sample sizes** (:func:`sample_sizes`) that decide the issue's claims at 95% with 80% power, from the
   measured plug-in maximum (the README's "Powered study pilot" section gives the formulas).

``--part dpo`` runs DPO on positivity alone with the public :mod:`llm.dpo` functions and reports, per epoch, the
held-out gain in sigma units and the KL (:func:`dpo_pilot`).

``--part sampling`` writes ``DIR/study_pilot.json`` (configuration, machine, versions, every measurement, the
sample sizes, a few example continuations) and ``DIR/study_pilot_pool.json`` (the pool's prompts, texts and raw
scores, for reuse); ``--part dpo`` writes ``DIR/study_pilot_dpo_<hard|soft>_lr<lr>.json``; all atomically, with
a printed summary. Rerunnable: every number is recomputed, nothing is cached except the converted model
(``--cache-dir``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import integrate
from scipy.stats import norm

from analysis.claims import MARGIN
from analysis.decisions import ALPHA
from llm.cli_errors import exit_2_on_user_error
from llm.run_files import machine_description, package_versions, write_atomic
from llm.scorers import plugin_maximum, within_prompt_sd

JSON_NAME = "study_pilot.json"
POOL_NAME = "study_pilot_pool.json"
DPO_NAME = "study_pilot_dpo_{labels}_lr{lr:g}.json"  # one file per label mode and learning rate
OBJECTIVES = ("relevance", "sentiment", "simplicity", "toxicity")  # r, g1 (positivity), g2, and the old cost
PLUGIN_K = (4, 6, 8)
BATCHES = (16, 32, 64)
TOP_PS = (0.9, 1.0)

# The first design's sizing rules (issue 16, item 4; README "Powered study pilot"): the level and the margin are
# the claims' own (analysis.decisions, analysis.claims); the fractions and the spacing rule are that design's.
POWER = 0.80
FRACTIONS = (0.25, 0.75)  # the first design's thresholds, as fractions of the plug-in maximum
SLACK_SE = 0.1  # dual-step slack SE target, sigma units
SPACING_RATIO = 0.3  # the first design's "half-width / threshold spacing <= 0.3" (replaced by size and coverage)


# --------------------------------------------------------------------------------------------------------------
# statistics of a reference pool (pure functions, tested in tests/benchmarks/test_study_pilot.py)
# --------------------------------------------------------------------------------------------------------------


def gaussian_plugin_maximum(k: int) -> float:
    """``E[max of k iid N(0, 1)]`` (the plug-in maximum in sigma units of a Gaussian utility)."""
    value, _ = integrate.quad(lambda x: k * x * norm.pdf(x) * norm.cdf(x) ** (k - 1), -np.inf, np.inf)
    return float(value)


def within_prompt_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """rho(a, b | x): the correlation of two ``(N, K)`` scores after removing each prompt's means."""
    da = a - a.mean(axis=1, keepdims=True)
    db = b - b.mean(axis=1, keepdims=True)
    return float((da * db).sum() / math.sqrt((da * da).sum() * (db * db).sum()))


def between_prompt_sd(pool: np.ndarray) -> tuple[float, float]:
    """SD of the prompt means, raw and with the sampling noise ``sigma_w^2 / K`` removed (0 when negative)."""
    means = pool.mean(axis=1)
    raw = float(means.std(ddof=1))
    noise = float(pool.var(axis=1, ddof=1).mean()) / pool.shape[1]
    return raw, math.sqrt(max(raw**2 - noise, 0.0))


def _bootstrap_interval(pools: Sequence[np.ndarray], stat, n_boot: int, seed: int) -> list[float]:
    """95% percentile interval of ``stat(*pools)`` over prompt resamples (the same prompts for every pool)."""
    rng = np.random.default_rng(seed)
    n = pools[0].shape[0]
    draws = [stat(*(p[idx] for p in pools)) for idx in (rng.integers(0, n, n) for _ in range(n_boot))]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return [float(low), float(high)]


def pool_statistics(pool: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """sigma_w, between-prompt SDs, zero fraction and plug-in maxima (raw and sigma units) of one objective."""
    sigma_w = float(within_prompt_sd(pool[None])[0])
    raw_between, corrected_between = between_prompt_sd(pool)
    out: dict[str, Any] = {
        "mean": float(pool.mean()),
        "sigma_w": sigma_w,
        "sigma_w_ci95": _bootstrap_interval([pool], lambda p: float(np.sqrt(p.var(axis=1, ddof=1).mean())), n_boot,
                                            seed),
        "between_sd_raw": raw_between,
        "between_sd": corrected_between,
        "between_over_within": corrected_between / sigma_w if sigma_w > 0 else None,
        "zero_fraction": float(np.mean(np.abs(pool) < 1e-12)),
        "plugin_max": {},
    }  # fmt: skip
    for k in PLUGIN_K:
        if k > pool.shape[1]:
            continue
        value = plugin_maximum(pool, k)
        out["plugin_max"][str(k)] = {
            "raw": value,
            "sigma": value / sigma_w if sigma_w > 0 else None,
            "sigma_ci95": _bootstrap_interval(
                [pool], lambda p, k=k: plugin_maximum(p, k) / np.sqrt(p.var(axis=1, ddof=1).mean()), n_boot, seed
            ),
            "gaussian_sigma": gaussian_plugin_maximum(k),
        }
    return out


# --------------------------------------------------------------------------------------------------------------
# sample sizes
# --------------------------------------------------------------------------------------------------------------


def sample_sizes(
    plugin_max_sigma: float,
    *,
    k: int,
    policy_samples: int = 1,
    reference_samples: int = 4,
    dual_samples: int = 2,
    seeds: int = 3,
    seed_sd: float = 0.07,
) -> dict[str, Any]:
    """Held-out prompts (and dual-step prompts) that decide each claim at level ALPHA with power POWER.

    All in sigma units (standardised scores). A held-out prompt contributes ``g_policy - mean_ref g`` with
    variance ``v = 1/policy_samples + 1/reference_samples`` (the prompt's own mean cancels in the paired
    difference; between-prompt heterogeneity of the effect is taken as 0, as the quick-scale study measured).
    ``z_a = z_{1-ALPHA}``, ``z_b = z_{POWER}``. Formulas (n = held-out prompts per run, one seed):

    - tracking, TOST within +-MARGIN at a true error 0: ``n = v ((z_a + z_{1-(1-POWER)/2}) / MARGIN)^2``;
    - half-width / threshold spacing <= SPACING_RATIO, spacing = (0.75 - 0.25) M: ``n = v (1.96 / (0.3 * 0.5 M))^2``;
    - one-sided short/over of size d = MARGIN: ``n = v ((z_a + z_b) / d)^2``;
    - CAID vs one-shot, paired over prompts (shared reference), difference d = MARGIN: ``n = (2/policy_samples)
      ((z_a + z_b) / d)^2``;
    - two constraints, non-inferiority at -MARGIN for both (power sqrt(POWER) each): ``n = v ((z_a + z_{sqrt
      POWER}) / MARGIN)^2`` per constraint;
    - dual step, slack SE <= SLACK_SE with per-prompt reference means from the K-sample pool:
      ``n_dual = (1/dual_samples + 1/k) / SLACK_SE^2``;
    - with ``seeds`` seeds each evaluated on n prompts and a seed-to-seed SD ``seed_sd`` of the run's mean (an
      assumption: 0.04-0.1 sigma in the design notes, not measured here), ``SE^2 = (v/n + seed_sd^2) / seeds``;
      the per-seed n for the TOST target is given too (None when the seeds alone exceed it).

    Args:
        plugin_max_sigma: M, the measured K-sample plug-in maximum of the constrained utility, sigma units.
        k: K, reference samples per training prompt (the pool the dual steps subtract).
        policy_samples: policy samples per held-out prompt.
        reference_samples: reference samples per held-out prompt (shared by every run).
        dual_samples: on-policy samples per dual-step prompt.
        seeds: training seeds.
        seed_sd: assumed seed-to-seed SD of a run's mean, sigma units.
    """
    z_a, z_b = norm.ppf(1 - ALPHA), norm.ppf(POWER)
    z_tost = norm.ppf(1 - (1 - POWER) / 2)  # both one-sided tests must pass at a true error of 0
    z_two = norm.ppf(math.sqrt(POWER))  # two constraints, both must pass
    v = 1 / policy_samples + 1 / reference_samples
    spacing = (FRACTIONS[1] - FRACTIONS[0]) * plugin_max_sigma
    se_tost = MARGIN / (z_a + z_tost)
    se_spacing = SPACING_RATIO * spacing / norm.ppf(0.975)
    target = min(se_tost, se_spacing)
    per_seed = seeds * target**2 - seed_sd**2
    return {
        "inputs": {
            "plugin_max_sigma": plugin_max_sigma, "k": k, "policy_samples": policy_samples,
            "reference_samples": reference_samples, "dual_samples": dual_samples, "seeds": seeds,
            "seed_sd_assumed": seed_sd, "alpha_one_sided": ALPHA, "power": POWER, "margin": MARGIN,
            "fractions": list(FRACTIONS), "slack_se": SLACK_SE,
        },
        "thresholds_sigma": [f * plugin_max_sigma for f in FRACTIONS],
        "variance_per_prompt": v,
        "se_target_tost": se_tost,
        "se_target_spacing": se_spacing,
        "n_tost": math.ceil(v / se_tost**2),
        "n_spacing": math.ceil(v / se_spacing**2),
        "n_one_sided": math.ceil(v * ((z_a + z_b) / MARGIN) ** 2),
        "n_paired": math.ceil(2 / policy_samples * ((z_a + z_b) / MARGIN) ** 2),
        "n_non_inferiority_two": math.ceil(v * ((z_a + z_two) / MARGIN) ** 2),
        "n_dual": math.ceil((1 / dual_samples + 1 / k) / SLACK_SE**2),
        "n_per_seed_with_seed_noise": math.ceil(v / per_seed) if per_seed > 0 else None,
    }  # fmt: skip


def minimum_detectable(n: int, variance: float) -> float:
    """The one-sided effect (sigma units) detected with power POWER at level ALPHA from n prompts of ``variance``."""
    return float((norm.ppf(1 - ALPHA) + norm.ppf(POWER)) * math.sqrt(variance / n))


# --------------------------------------------------------------------------------------------------------------
# measurements (need the model)
# --------------------------------------------------------------------------------------------------------------


def _generation(top_p: float, batch: int, tokens: int):
    from llm.config import GenerationConfig

    # top-k 50: what transformers applied silently when the pilot was recorded (configs/reviews_study.toml keeps it)
    return GenerationConfig(max_new_tokens=tokens, temperature=1.0, top_p=top_p, top_k=50, batch_size=batch)


def measure_throughput(
    model, tokenizer, prompts: Sequence[str], tokens: int, rounds: int, seed: int, threads: int, contrast: int | None
) -> list[dict]:
    """One batch per (batch size, top-p) per round, rotated; tokens/s and the load average before each.

    With ``contrast``, each round ends with batch 16, top-p 1.0 once more under that many torch threads (on a
    shared machine, more threads than free cores can be several times slower: spinning workers wait for each
    other).
    """
    import torch

    from llm.sampling import sample_responses

    settings = [(b, p, threads) for b, p in itertools.product(BATCHES, TOP_PS)]
    sample_responses(model, tokenizer, prompts[:8], 1, _generation(1.0, 8, tokens), seed, progress=False)  # warm-up
    rows = []
    for r in range(rounds):
        extra = [(BATCHES[0], 1.0, contrast)] if contrast else []
        for batch, top_p, n_threads in settings[r % len(settings) :] + settings[: r % len(settings)] + extra:
            torch.set_num_threads(n_threads)
            load = os.getloadavg()[0]
            start = time.perf_counter()
            samples = sample_responses(
                model, tokenizer, prompts[:batch], 1, _generation(top_p, batch, tokens), seed + r, progress=False
            )
            seconds = time.perf_counter() - start
            lengths = [len(s.response_ids) for s in samples]
            rows.append({
                "round": r, "batch": batch, "top_p": top_p, "threads": n_threads, "seconds": seconds, "load_1min": load,
                "slot_tokens_per_s": batch * tokens / seconds, "response_tokens_per_s": sum(lengths) / seconds,
                "mean_response_tokens": float(np.mean(lengths)),
            })  # fmt: skip
            print(f"  round {r} batch {batch:2d} top-p {top_p} threads {n_threads}: {batch * tokens / seconds:6.1f} "
                  f"tok/s, load {load:.1f}")  # fmt: skip
    torch.set_num_threads(threads)
    return rows


def throughput_summary(rows: list[dict], threads: int) -> dict[str, Any]:
    """Median tokens/s per setting and the within-round ratios (top-p 1.0 / 0.9; batch b / 16; other threads /
    ``threads`` at batch 16, top-p 1.0), medians over rounds."""
    def rate(r: int, batch: int, top_p: float, n_threads: int = threads) -> float:
        key = (r, batch, top_p, n_threads)
        return next(x["slot_tokens_per_s"] for x in rows if (x["round"], x["batch"], x["top_p"], x["threads"]) == key)

    rounds = sorted({x["round"] for x in rows})
    contrast = sorted({x["threads"] for x in rows} - {threads})
    summary: dict[str, Any] = {"median_tokens_per_s": {}, "ratio_top_p_1_over_0_9": {}, "ratio_over_batch_16": {}}
    for batch, top_p in itertools.product(BATCHES, TOP_PS):
        summary["median_tokens_per_s"][f"b{batch}_p{top_p}"] = float(np.median([rate(r, batch, top_p) for r in rounds]))
    for batch in BATCHES:
        summary["ratio_top_p_1_over_0_9"][f"b{batch}"] = float(
            np.median([rate(r, batch, 1.0) / rate(r, batch, 0.9) for r in rounds])
        )
        for top_p in TOP_PS:
            summary["ratio_over_batch_16"][f"b{batch}_p{top_p}"] = float(
                np.median([rate(r, batch, top_p) / rate(r, 16, top_p) for r in rounds])
            )
    for n_threads in contrast:
        summary[f"ratio_threads_{n_threads}_over_{threads}_b16_p1.0"] = float(
            np.median([rate(r, 16, 1.0, n_threads) / rate(r, 16, 1.0) for r in rounds])
        )
    summary["load_1min_range"] = [min(x["load_1min"] for x in rows), max(x["load_1min"] for x in rows)]
    return summary


def reference_pool(model, tokenizer, prompts: Sequence[str], k: int, tokens: int, batch: int, seed: int):
    """K samples per prompt at temperature 1, top-p 1.0, and their ``(objectives, N, K)`` raw scores."""
    from llm.sampling import sample_responses
    from llm.scorers import build_scorer, score

    start = time.perf_counter()
    samples = sample_responses(model, tokenizer, prompts, k, _generation(1.0, batch, tokens), seed, desc="pool")
    sampling_s = time.perf_counter() - start
    texts = [s.text for s in samples]
    repeated = [prompts[s.prompt_index] for s in samples]
    start = time.perf_counter()
    scores = np.stack([score(build_scorer(name), repeated, texts) for name in OBJECTIVES])
    scoring_s = time.perf_counter() - start
    return texts, scores.reshape(len(OBJECTIVES), len(prompts), k), {"sampling_s": sampling_s, "scoring_s": scoring_s}


def analyse_pool(scores: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Per-objective statistics and every within-prompt correlation with its prompt-bootstrap interval."""
    stats = {name: pool_statistics(scores[i], n_boot, seed) for i, name in enumerate(OBJECTIVES)}
    correlations = {}
    for i, j in itertools.combinations(range(len(OBJECTIVES)), 2):
        correlations[f"{OBJECTIVES[i]}~{OBJECTIVES[j]}"] = {
            "rho": within_prompt_correlation(scores[i], scores[j]),
            "ci95": _bootstrap_interval([scores[i], scores[j]], within_prompt_correlation, n_boot, seed),
        }
    return {"objectives": stats, "within_prompt_correlation": correlations}


def _mean_and_se(per_prompt: np.ndarray) -> tuple[float, float]:
    return float(per_prompt.mean()), float(per_prompt.std(ddof=1) / math.sqrt(per_prompt.size))


def dpo_pilot(model, tokenizer, prompts: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    """DPO on positivity alone (DPO_g): how far held-out positivity moves, and at what KL, per epoch.

    Only the public :mod:`llm.dpo` functions (no pipeline): ``--dpo-prompts`` train prompts x ``--dpo-k``
    reference samples (top-p 1.0), positivity standardised by its sigma_w on them (:func:`llm.scorers.standardize`),
    all K(K-1)/2 pairs per prompt, Bradley-Terry labels ``sigma(g(y_1) - g(y_0))`` redrawn each epoch from a
    dedicated stream (:func:`llm.dpo.pseudo_labels`) or, with ``--dpo-soft-labels``, the label-averaged loss
    ``-[p log sigma(m) + (1 - p) log sigma(-m)]``, p = sigma(g(y_1) - g(y_0)); the DPO loss at temperature
    ``--dpo-beta`` (sigma units: the optimum is pi_ref exp(g / beta)) on the last ``--dpo-layers`` decoder layers,
    AdamW. After each epoch,
    ``--dpo-eval-prompts`` held-out prompts (the other side of :func:`llm.prompts.split`) get 2 policy samples,
    compared with 4 reference samples each: the gain in sigma units and the KL (mean log-ratio of the policy's
    own samples; exact in expectation at top-p 1.0), each with its SE over prompts. Go criterion (design notes):
    gain >= 1.3 x the high threshold (0.75 x the K-sample plug-in maximum) within <= 3 nats.
    """
    import copy

    import torch

    from llm.dpo import dpo_loss, pseudo_labels, sequence_logprobs
    from llm.prompts import PromptSet, split
    from llm.sampling import sample_responses
    from llm.scorers import Sentiment, score, standardize
    from llm.trainable import trainable_parameters

    k, beta, pad = args.dpo_k, args.dpo_beta, tokenizer.pad_token_id
    train_side, test_side = split(PromptSet("reviews", tuple(prompts)), 0.5, args.seed)
    train, held = train_side.prompts[: args.dpo_prompts], test_side.prompts[: args.dpo_eval_prompts]
    reference = model.eval().requires_grad_(False)
    policy = copy.deepcopy(reference)
    trained = trainable_parameters(policy, "top_layers", args.dpo_layers)
    sentiment = Sentiment()
    generation = _generation(1.0, args.pool_batch, args.tokens)

    def positivity(samples, texts_of) -> np.ndarray:
        return score(sentiment, [texts_of[s.prompt_index] for s in samples], [s.text for s in samples])

    def logprobs(net, samples) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(samples), 16):
                chunk = samples[i : i + 16]
                out.append(sequence_logprobs(net, [s.prompt_ids for s in chunk], [s.response_ids for s in chunk], pad))
        return torch.cat(out).double().numpy()

    start = time.perf_counter()
    ref_train = sample_responses(reference, tokenizer, train, k, generation, args.seed + 2, desc="dpo pool")
    raw = positivity(ref_train, train).reshape(1, len(train), k)
    scaled, scales = standardize(raw, ["sentiment"])
    g = scaled[0].ravel()
    plugin = plugin_maximum(scaled[0], k)
    target = 1.3 * FRACTIONS[1] * plugin
    within = list(itertools.combinations(range(k), 2))  # all K(K-1)/2 pairs of each prompt
    pairs = np.array([(x * k + i, x * k + j) for x in range(len(train)) for i, j in within])
    ref_lp = torch.from_numpy(logprobs(reference, ref_train))
    ref_held = sample_responses(reference, tokenizer, held, 4, generation, args.seed + 3, desc="held-out reference")
    g_ref_held = scales.apply(positivity(ref_held, held)[None])[0].reshape(len(held), 4).mean(axis=1)
    setup_s = time.perf_counter() - start

    optimizer = torch.optim.AdamW(trained, lr=args.dpo_lr)
    label_rng, order_rng = np.random.default_rng([args.seed, 1]), np.random.default_rng([args.seed, 2])
    epochs = []
    for epoch in range(args.dpo_epochs):
        start = time.perf_counter()
        prefer_1 = pseudo_labels(g[pairs[:, 0]], g[pairs[:, 1]], label_rng)
        chosen = np.where(prefer_1, pairs[:, 1], pairs[:, 0])
        rejected = np.where(prefer_1, pairs[:, 0], pairs[:, 1])
        policy.train()
        losses, accuracies = [], []
        for batch in np.array_split(order_rng.permutation(len(pairs)), math.ceil(len(pairs) / args.dpo_batch)):
            both = [ref_train[i] for i in (*chosen[batch], *rejected[batch])]
            lp = sequence_logprobs(policy, [s.prompt_ids for s in both], [s.response_ids for s in both], pad)
            n = len(batch)
            target = None
            if args.dpo_soft_labels:  # the label-averaged loss (training.labels = 'expected')
                target = torch.as_tensor(1.0 / (1.0 + np.exp(g[rejected[batch]] - g[chosen[batch]])))
            loss, stats = dpo_loss(lp[:n], lp[n:], ref_lp[chosen[batch]], ref_lp[rejected[batch]], beta, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            accuracies.append(stats.accuracy)
        train_s = time.perf_counter() - start
        samples = sample_responses(policy, tokenizer, held, 2, generation, args.seed + 10 + epoch, desc="held-out")
        g_pol = scales.apply(positivity(samples, held)[None])[0].reshape(len(held), 2).mean(axis=1)
        log_ratio = (logprobs(policy, samples) - logprobs(reference, samples)).reshape(len(held), 2).mean(axis=1)
        gain, gain_se = _mean_and_se(g_pol - g_ref_held)
        kl, kl_se = _mean_and_se(log_ratio)
        epochs.append({
            "epoch": epoch + 1, "loss": float(np.mean(losses)), "accuracy": float(np.mean(accuracies)),
            "gain_sigma": gain, "gain_se": gain_se, "kl_nats": kl, "kl_se": kl_se,
            "train_s": train_s, "pairs_per_s": len(pairs) / train_s, "eval_s": time.perf_counter() - start - train_s,
        })  # fmt: skip
        print(f"  epoch {epoch + 1}: loss {epochs[-1]['loss']:.3f}, held-out gain {gain:+.3f} +- {gain_se:.3f} sigma, "
              f"KL {kl:.3f} +- {kl_se:.3f} nats, {len(pairs) / train_s:.2f} pairs/s")  # fmt: skip
    return {
        "train_prompts": len(train), "k": k, "pairs": len(pairs), "held_out_prompts": len(held), "beta_sigma": beta,
        "labels": "soft" if args.dpo_soft_labels else "hard", "lr": args.dpo_lr, "layers": args.dpo_layers,
        "batch_pairs": args.dpo_batch, "sigma_w": scales.scales[0],
        "plugin_max_sigma": plugin, "target_gain_sigma": target, "setup_s": setup_s, "epochs": epochs,
        "go": bool(any(e["gain_sigma"] >= target and e["kl_nats"] <= 3 for e in epochs)),
    }  # fmt: skip


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON files")
    parser.add_argument("--part", choices=("sampling", "dpo"), default="sampling",
                        help="'sampling': throughput, pool and sample sizes (study_pilot.json); 'dpo': DPO on "
                        "positivity alone (study_pilot_dpo_<hard|soft>_lr<lr>.json)")  # fmt: skip
    parser.add_argument("--pool-prompts", type=int, default=96, help="reference-pool prompts")
    parser.add_argument("--pool-k", type=int, default=8, help="reference samples per pool prompt (>= 8 for K = 8)")
    parser.add_argument("--pool-batch", type=int, default=64, help="sequences per batch when sampling")
    parser.add_argument("--tokens", type=int, default=24, help="new tokens per continuation")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (0 skips the throughput part)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared machine)")
    parser.add_argument("--contrast-threads", type=int, default=2,
                        help="also time batch 16, top-p 1.0 with this many threads each round (0: skip)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="prompt-bootstrap resamples for the intervals")
    parser.add_argument("--dpo-prompts", type=int, default=32, help="DPO part: train prompts")
    parser.add_argument("--dpo-k", type=int, default=4, help="DPO part: reference samples per train prompt")
    parser.add_argument("--dpo-eval-prompts", type=int, default=48, help="DPO part: held-out prompts")
    parser.add_argument("--dpo-epochs", type=int, default=2, help="DPO part: epochs (labels redrawn each)")
    parser.add_argument("--dpo-beta", type=float, default=0.5, help="DPO part: temperature, sigma units")
    parser.add_argument("--dpo-lr", type=float, default=2e-4, help="DPO part: AdamW learning rate")
    parser.add_argument("--dpo-layers", type=int, default=2, help="DPO part: trained top decoder layers")
    parser.add_argument("--dpo-batch", type=int, default=8, help="DPO part: pairs per step")
    parser.add_argument("--dpo-soft-labels", action="store_true",
                        help="DPO part: label-averaged (soft) Bernoulli loss instead of drawn labels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache root of the converted model")
    args = parser.parse_args(argv)
    positive = ("pool_prompts", "tokens", "threads", "dpo_prompts", "dpo_eval_prompts", "dpo_epochs", "dpo_layers",
                "dpo_batch", "pool_batch")  # fmt: skip
    problems = [f"--{n.replace('_', '-')} must be >= 1" for n in positive if getattr(args, n) < 1]
    problems += [f"--{n.replace('_', '-')} must be >= 2" for n in ("pool_k", "dpo_k") if getattr(args, n) < 2]
    problems += [f"--{n.replace('_', '-')} must be >= 0" for n in ("rounds", "contrast_threads")
                 if getattr(args, n) < 0]  # fmt: skip
    problems += [f"--{n.replace('_', '-')} must be > 0" for n in ("dpo_beta", "dpo_lr") if not getattr(args, n) > 0]
    if args.out.exists() and not args.out.is_dir():
        problems.append(f"--out {args.out} is a file; pass a folder")
    if problems:
        print("error: " + "; ".join(problems), file=sys.stderr)
        return None
    return args


@exit_2_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Run one part of the pilot and write its JSON files; returns the exit status (2: bad arguments)."""
    args = _parse(argv)
    if args is None:
        return 2

    import torch

    from llm.models import load_model
    from llm.prompts import review_prompts

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tokenizer = load_model(cache_dir=args.cache_dir)
    prompts = list(review_prompts(None, args.seed).prompts)
    record: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": "smollm2-135m-instruct (completion mode, no chat template)",
        "machine": machine_description(),
        "versions": package_versions(("caid-toolkit", "numpy", "torch", "transformers", "vaderSentiment")),
        "load_1min_start": os.getloadavg()[0],
    }
    if args.part == "dpo":
        print("DPO on positivity alone:")
        record["dpo"] = dpo_pilot(model, tokenizer, prompts, args)
        record["wall_s"] = time.perf_counter() - started
        record["load_1min_end"] = os.getloadavg()[0]
        name = DPO_NAME.format(labels=record["dpo"]["labels"], lr=args.dpo_lr)
        write_atomic(args.out / name, json.dumps(record, indent=2) + "\n")
        print(f"go: {record['dpo']['go']}; wall {record['wall_s']:.0f} s; written {name}")
        return 0
    if args.rounds:
        print("throughput:")
        rows = measure_throughput(
            model, tokenizer, prompts, args.tokens, args.rounds, args.seed, args.threads,
            args.contrast_threads if args.contrast_threads not in (0, args.threads) else None,
        )
        record["throughput"] = {"runs": rows, "summary": throughput_summary(rows, args.threads)}
    print("reference pool:")
    pool_prompts = prompts[: args.pool_prompts]
    texts, scores, timing = reference_pool(
        model, tokenizer, pool_prompts, args.pool_k, args.tokens, args.pool_batch, args.seed + 1
    )
    record["pool"] = {"prompts": len(pool_prompts), "k": args.pool_k, **timing,
                      **analyse_pool(scores, args.bootstrap, args.seed)}  # fmt: skip
    record["examples"] = [{"prompt": pool_prompts[i // args.pool_k], "continuation": texts[i]}
                          for i in range(0, min(len(texts), 12 * args.pool_k), args.pool_k)]  # fmt: skip
    positivity = record["pool"]["objectives"]["sentiment"]["plugin_max"]
    record["sample_sizes"] = {
        f"K{k}": sample_sizes(v["sigma"], k=int(k)) for k, v in positivity.items() if v["sigma"] is not None
    }
    record["wall_s"] = time.perf_counter() - started
    record["load_1min_end"] = os.getloadavg()[0]
    write_atomic(args.out / JSON_NAME, json.dumps(record, indent=2) + "\n")
    pool_record = {"objectives": list(OBJECTIVES), "prompts": pool_prompts, "k": args.pool_k, "texts": texts,
                   "scores": scores.tolist()}  # fmt: skip
    write_atomic(args.out / POOL_NAME, json.dumps(pool_record) + "\n")
    _print_summary(record)
    return 0


def _print_summary(record: dict[str, Any]) -> None:
    for name, s in record["pool"]["objectives"].items():
        maxima = ", ".join(f"K={k}: {v['sigma']:.2f}" for k, v in s["plugin_max"].items() if v["sigma"] is not None)
        print(f"{name:10s} sigma_w {s['sigma_w']:.4f}  between {s['between_sd']:.4f}  zeros {s['zero_fraction']:.2f}  "
              f"plug-in max (sigma) {maxima}")
    for pair, c in record["pool"]["within_prompt_correlation"].items():
        print(f"rho({pair} | x) = {c['rho']:+.3f}  [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]")
    if "throughput" in record:
        print("throughput ratios:", json.dumps(record["throughput"]["summary"], indent=1))
    print(f"wall {record['wall_s']:.0f} s; written {JSON_NAME} and {POOL_NAME}")


if __name__ == "__main__":
    sys.exit(main())
