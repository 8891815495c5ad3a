"""The CAID trainer's engineering: the config-free DPO epoch, grouped all-pairs losses, the frozen-trunk cache,
common random numbers and the evaluation sizes, each against an independent computation."""

import copy
import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import llm.dpo as dpo
import llm.pipeline as pipeline
import llm.trainer as trainer
from llm.config import ConfigError, EvaluationConfig, ModelConfig, RunConfig, TrainingConfig
from llm.distributed import Ranks
from llm.dpo import TrunkCache, dpo_loss, label_uniforms, sequence_logprobs
from llm.learner import Learner, TrunkCaches
from llm.run_files import RunFileError
from llm.run_schema import load_eval_scores
from llm.sampling import Sample
from llm.trainable import trainable_parameters
from tests.llm.test_pipeline import TINY

PAD = 0


def _llama(layers: int = 3, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=60, hidden_size=16, intermediate_size=32, num_hidden_layers=layers, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _responses(k: int, n_prompts: int = 2, seed: int = 0) -> list[Sample]:
    """``n_prompts`` prompts x ``k`` responses of random lengths (so batches are padded)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_prompts):
        prompt = tuple(int(t) for t in rng.integers(1, 60, size=rng.integers(2, 6)))
        for _ in range(k):
            out.append(Sample(i, prompt, tuple(int(t) for t in rng.integers(1, 60, size=rng.integers(1, 7))), ""))
    return out


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_grouped_all_pairs_loss_and_gradients_equal_the_per_pair_loss():
    """K = 4 responses per prompt, all 6 pairs each: one forward per response, the per-pair loss to 1e-6."""
    k, model = 4, _llama()
    responses = _responses(k)
    rows = [(i * k + a, i * k + b) for i in range(2) for a, b in itertools.combinations(range(k), 2)]
    flip = np.random.default_rng(1).random(len(rows)) < 0.5  # random chosen/rejected orientation
    pairs = np.array([(b, a) if f else (a, b) for (a, b), f in zip(rows, flip, strict=True)])
    ref = np.random.default_rng(2).normal(-20, 2, size=len(responses))
    forwarded = []
    hook = model.model.embed_tokens.register_forward_hook(lambda m, i, o: forwarded.append(o.shape[0]))
    loss, _ = dpo.pairs_loss(model, responses, pairs, ref, 0.5, PAD)
    hook.remove()
    assert forwarded == [len(responses)]  # 8 sequences, not 2 x 12
    loss.backward()
    grouped = _grads(model)
    model.zero_grad()

    # Per pair: its own forward of its two responses, the DPO loss by hand, averaged.
    losses = []
    for c, r in pairs:
        logp = sequence_logprobs(model, [responses[c].prompt_ids, responses[r].prompt_ids],
                                 [responses[c].response_ids, responses[r].response_ids], PAD)  # fmt: skip
        margin = 0.5 * ((logp[0] - ref[c]) - (logp[1] - ref[r]))
        losses.append(-torch.nn.functional.logsigmoid(margin))
    expected = torch.stack(losses).mean()
    expected.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    per_pair = _grads(model)
    assert grouped.keys() == per_pair.keys() and len(grouped) > 10
    for name, grad in per_pair.items():
        torch.testing.assert_close(grouped[name], grad, rtol=0, atol=1e-6, msg=name)


def test_grouped_batches_keep_every_pair_of_a_prompt_together():
    pairs = dpo.all_pairs(5, 4)
    assert len(pairs) == 5 * 6 and {tuple(p[1:]) for p in pairs} == set(itertools.combinations(range(4), 2))
    batches = dpo.grouped_batches(pairs[:, 0], 13, np.random.default_rng(0))  # 13 pairs: 2 prompts per step
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(pairs)))
    assert [len(np.unique(pairs[b, 0])) for b in batches] == [2, 2, 1]
    for b in batches:
        prompts = np.unique(pairs[b, 0])
        assert len(b) == 6 * len(prompts)  # whole prompts


@pytest.mark.parametrize("frozen", [1, 2])
def test_trunk_cache_gives_the_full_forwards_loss_and_gradients(frozen):
    """Top-k layers on a cached frozen trunk: the same log-probs and gradients as the full forward to 1e-5."""
    model = _llama(layers=3)
    trainable_parameters(model, "top_layers", 3 - frozen)
    responses = _responses(3, n_prompts=3)
    prompts, texts = [s.prompt_ids for s in responses], [s.response_ids for s in responses]
    model.train()
    full = sequence_logprobs(model, prompts, texts, PAD)
    full.sum().backward()
    expected = _grads(model)
    model.zero_grad()
    trunk = TrunkCache(frozen, PAD, batch_size=4)
    calls = []
    hook = model.model.layers[0].register_forward_hook(lambda m, i, o: calls.append(1))
    for _ in range(2):  # the second pass reuses the cache: no trunk layer runs
        model.zero_grad()
        cached = trunk.sequence_logprobs(model, prompts, texts)
        cached.sum().backward()
    hook.remove()
    assert len(calls) == 3 and len(trunk) == len(responses)  # 9 sequences in batches of 4, once
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)
    got = _grads(model)
    assert got.keys() == expected.keys() and all(not n.startswith("model.layers.0.") for n in got)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-5, msg=name)


def test_dpo_epoch_takes_the_steps_of_a_hand_written_loop():
    """The config-free epoch against AdamW steps on losses computed here from per-sequence forwards."""
    model, responses = _llama(layers=2), _responses(2, n_prompts=4)
    pairs = np.array([(2 * i, 2 * i + 1) for i in range(4)])
    ref = np.random.default_rng(3).normal(-15, 1, size=len(responses))
    batches = [np.array([2, 0]), np.array([3, 1])]
    twin = copy.deepcopy(model)
    stats = dpo.dpo_epoch(model, torch.optim.AdamW(model.parameters(), lr=1e-2), responses, pairs, ref, 0.3,
                              batches, PAD)  # fmt: skip
    optimizer, losses = torch.optim.AdamW(twin.parameters(), lr=1e-2), []
    twin.train()
    for batch in batches:
        logp = torch.stack([
            sequence_logprobs(twin, [responses[j].prompt_ids], [responses[j].response_ids], PAD)[0]
            for i in batch for j in pairs[i]
        ]).reshape(-1, 2)  # fmt: skip
        c, r = pairs[batch, 0], pairs[batch, 1]
        loss, _ = dpo_loss(logp[:, 0], logp[:, 1], torch.tensor(ref[c]).float(), torch.tensor(ref[r]).float(), 0.3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert stats.dpo_loss == pytest.approx(np.mean(losses), abs=1e-5)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    assert not model.training


def test_label_stream_is_a_function_of_seed_epoch_and_pair():
    first = label_uniforms(3, 2, 50)
    np.testing.assert_array_equal(first[:20], label_uniforms(3, 2, 20))  # pair i's uniform ignores n
    np.testing.assert_array_equal(first, label_uniforms(3, 2, 50))
    assert not np.array_equal(first, label_uniforms(3, 1, 50)) and not np.array_equal(first, label_uniforms(4, 2, 50))
    assert 0 <= first.min() and first.max() < 1


def test_config_refuses_a_trunk_cache_without_a_frozen_trunk_and_pairs_with_all_pairs():
    with pytest.raises(ConfigError, match=r"training\.cache_trunk"):
        RunConfig(model=ModelConfig(train="full"), training=TrainingConfig(cache_trunk=True))
    with pytest.raises(ConfigError, match=r"training\.pairs_per_prompt"):
        TrainingConfig(all_pairs=True, pairs_per_prompt=2)
    with pytest.raises(ConfigError, match=r"evaluation\.policy_samples"):
        EvaluationConfig(policy_samples=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _config(cache, **training):
    model = dataclasses.replace(TINY.model, cache_dir=str(cache))
    return dataclasses.replace(TINY, model=model, training=dataclasses.replace(TINY.training, **training))


@pytest.mark.parametrize("crn", [True, False])
def test_common_random_numbers_give_equal_labels_at_equal_lambda(cache, tmp_path, crn):
    """CAID and one-shot at one seed: after CAID's dual step (which draws samples) and at equal lambda, the same
    labels under common random numbers, and labels u < sigma(Delta r_lambda) with the stream's u; not without."""
    config = _config(cache, common_random_numbers=crn, pairs_per_prompt=3)
    setup = pipeline.run_setup(config)
    caid = trainer.CAIDTrainer.build(config, setup, Ranks(), tmp_path / "a", progress=False)
    one_shot = trainer.CAIDTrainer.build(dataclasses.replace(config, method="one_shot"), setup, Ranks(),
                                         tmp_path / "b", progress=False)  # fmt: skip
    caid.iteration = one_shot.iteration = 1
    caid.multipliers.step(caid.slack(2))
    for lam in (np.array([0.0]), np.array([0.7]), np.array([3.0])):
        labels = caid.labels(2, lam)
        if crn:
            np.testing.assert_array_equal(labels, one_shot.labels(2, lam))
            r, g = setup.ref.train_scores
            composite = r + lam[0] * g
            p = caid.pairs
            prob = 1 / (1 + np.exp(composite[p[:, 0], p[:, 1]] - composite[p[:, 0], p[:, 2]]))
            np.testing.assert_array_equal(labels, np.random.default_rng([0, 0x4C41424C, 2]).random(len(p)) < prob)
    if not crn:
        lam = np.array([0.7])
        assert not np.array_equal(caid.labels(3, lam), one_shot.labels(3, lam))  # the streams have drifted apart


def test_evaluation_sizes_are_settings(cache, tmp_path):
    """3 policy and 1 reference sample per held-out prompt; the improvement recomputed from eval_scores.csv."""
    config = dataclasses.replace(
        _config(cache), method="one_shot", caid=dataclasses.replace(TINY.caid, iterations=1),
        evaluation=EvaluationConfig(policy_samples=3, reference_samples=1),
    )  # fmt: skip
    summary = pipeline.run(config, tmp_path / "run", progress=False)
    frame = pd.read_csv(tmp_path / "run" / "eval_scores.csv")
    counts = frame.groupby(["model", "prompt_index"]).size()
    assert set(counts["policy"]) == {3} and set(counts["reference"]) == {1}
    means = frame.groupby(["model", "prompt_index"])["sentiment"].mean()
    expected = (means["policy"] - means["reference"]).mean()
    assert summary["improvements"]["sentiment"]["mean"] == pytest.approx(expected, abs=1e-5)


def test_log_ratios_of_the_first_held_out_prompts_only(cache, tmp_path):
    """evaluation.log_ratio_prompts = 1: the first held-out prompt keeps the log-ratios of the same run measuring
    all (same samples), the other is NaN, the KL is the first prompt's mean; a half-measured prompt is refused."""
    base = dataclasses.replace(
        _config(cache), method="one_shot", caid=dataclasses.replace(TINY.caid, iterations=1),
        evaluation=EvaluationConfig(policy_samples=2, reference_samples=2),
    )  # fmt: skip
    runs = {}
    for n in (0, 1):
        config = dataclasses.replace(base, evaluation=dataclasses.replace(base.evaluation, log_ratio_prompts=n))
        summary = pipeline.run(config, tmp_path / f"n{n}", progress=False)
        runs[n] = summary, load_eval_scores(tmp_path / f"n{n}")
    full, part = runs[0][1].policy_log_ratio, runs[1][1].policy_log_ratio
    assert full.shape == (2, 2) and np.isfinite(full).all() and np.abs(full).max() > 0
    # Each log-ratio is a difference of two float32 sums of ~100 nats (resolution ~1e-5): the LM head's GEMM over
    # another batch's shape rounds differently at that level, so the two runs agree to float32, not to 1e-6.
    np.testing.assert_allclose(part[0], full[0], rtol=1e-5, atol=3e-5)
    assert np.isnan(part[1]).all()
    np.testing.assert_array_equal(runs[1][1].policy, runs[0][1].policy)
    assert runs[1][0]["kl_estimate"] == pytest.approx(full[0].mean(), rel=1e-4, abs=1e-6)
    frame = pd.read_csv(tmp_path / "n1" / "eval_scores.csv")
    first = (frame["model"] == "policy") & (frame["prompt_index"] == 0) & (frame["sample"] == 0)
    frame.loc[first, "log_ratio"] = np.nan
    frame.to_csv(tmp_path / "n1" / "eval_scores.csv", index=False)
    with pytest.raises(RunFileError, match="non-finite"):
        load_eval_scores(tmp_path / "n1")


def test_runs_over_other_scorers_of_the_same_samples_share_the_trunk_cache(cache):
    """The trunk's hidden states depend on pi_ref's weights and samples, not on the scorers (a second constraint)."""
    base = _config(cache, all_pairs=True)
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, train="top_layers", top_k_layers=1))
    base = dataclasses.replace(base, training=dataclasses.replace(base.training, cache_trunk=True))
    two = dataclasses.replace(base, scorers=dataclasses.replace(
        base.scorers, utilities=["-toxicity", "simplicity"], thresholds=[0.0, 0.0]))
    setups = [pipeline.run_setup(c) for c in (base, two)]
    assert setups[0].ref.key != setups[1].ref.key and setups[0].samples_key == setups[1].samples_key
    caches = TrunkCaches()

    def trunk(config, setup):
        return trainer.CAIDTrainer.build(config, setup, Ranks(), cache / "unused", progress=False, trunks=caches).trunk

    trunks = [trunk(c, s) for c, s in zip((base, two), setups, strict=True)]
    assert trunks[0] is not None and trunks[0] is trunks[1]
    other = dataclasses.replace(base, generation=dataclasses.replace(base.generation, max_new_tokens=3))
    assert trunk(other, pipeline.run_setup(other)) is not trunks[0]


def test_trunk_cache_and_grouped_pairs_in_a_run_match_the_full_forward(cache, tmp_path):
    """A top-layer run with the trunk cached logs the losses and the held-out log-ratios of the same run without
    it, to 1e-5; the evaluation's trunk pass does not grow the shared cache."""
    base = _config(cache, all_pairs=True)
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, train="top_layers", top_k_layers=1))
    metrics, log_ratios = [], []
    for name, on in (("plain", False), ("cached", True)):
        config = dataclasses.replace(base, training=dataclasses.replace(base.training, cache_trunk=on))
        caches = TrunkCaches()
        pipeline.execute(config, tmp_path / name, False, False, caches)
        metrics.append(pd.read_json(tmp_path / name / "metrics.jsonl", lines=True))
        log_ratios.append(load_eval_scores(tmp_path / name).policy_log_ratio)
        # The cached run filled the trunk with every reference sample (the pairs use them all); the plain none.
        filled = len(caches)
        assert filled == (len(pipeline.run_setup(config).ref.train) if on else 0)
    for column in ("dpo_loss", "dpo_margin"):
        np.testing.assert_allclose(metrics[1][column], metrics[0][column], rtol=0, atol=1e-5)
    assert np.isfinite(log_ratios[0]).all() and np.abs(log_ratios[0]).max() > 1e-3
    np.testing.assert_allclose(log_ratios[1], log_ratios[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.stack(metrics[1]["lam"]), np.stack(metrics[0]["lam"]), atol=1e-6)


def test_expected_labels_train_on_the_label_averaged_loss(cache, tmp_path, monkeypatch):
    """training.labels = 'expected': no draws; each pair oriented to its likelier winner with target
    max(p, 1 - p), p = sigma(Delta r_lambda) computed here from the reference scores."""
    config = _config(cache, labels="expected", pairs_per_prompt=3)
    setup = pipeline.run_setup(config)
    caid = trainer.CAIDTrainer.build(config, setup, Ranks(), tmp_path / "a", progress=False)
    caid.multipliers.value = np.array([0.7])
    r, g = setup.ref.train_scores
    composite, p = r + 0.7 * g, caid.pairs
    prob = 1 / (1 + np.exp(composite[p[:, 0], p[:, 1]] - composite[p[:, 0], p[:, 2]]))
    np.testing.assert_array_equal(caid.labels(2), prob >= 0.5)
    np.testing.assert_array_equal(caid.labels(2), caid.labels(3))  # nothing drawn: the same in every epoch
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return dpo.EpochStats(0.0, 0.0, 0.0)

    monkeypatch.setattr(Learner, "epoch", lambda self, *a, **k: spy(*a, **k))
    caid.fit(np.array([0.7]), 2)
    np.testing.assert_allclose(seen["targets"], np.maximum(prob, 1 - prob), rtol=1e-12)
