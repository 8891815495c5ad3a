"""CAID inside the Hugging Face stack: a model object, a datasets.Dataset and a Python scorer in, a policy out.

The exported folder is checked against the trained policy itself (captured from the trainer at evaluation),
not against anything the export computes: reloaded with transformers or peft, it gives the same log-probs.
"""

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

import llm  # noqa: E402
import llm.pipeline as pipeline  # noqa: E402
import llm.trainer as trainer  # noqa: E402
from llm.config import (  # noqa: E402
    CAIDConfig,
    DataConfig,
    GenerationConfig,
    ModelConfig,
    RunConfig,
    ScorerConfig,
    TrainingConfig,
)
from llm.dpo import sequence_logprobs  # noqa: E402
from llm.models import tiny_model  # noqa: E402

PROMPTS = [
    "Name a fruit.", "Say something kind.", "Describe the sea.", "Count to three.",
    "Give a colour.", "Name a city.", "Tell a joke.", "Describe a cat.",
]  # fmt: skip


def length(prompts, responses):
    """The reward: response length in characters, over ten."""
    return [len(r) / 10 for r in responses]


def vowels(prompts, responses):
    """The utility: share of vowels among the response's letters."""
    return [sum(c in "aeiou" for c in r.lower()) / max(1, sum(c.isalpha() for c in r)) for r in responses]


def _config(tmp_path, train="full", **changes):
    return RunConfig(
        method="caid", seed=0,
        model=ModelConfig(name="tiny", train=train, lora_rank=2, cache_dir=str(tmp_path / "cache")),
        data=DataConfig(limit=0, test_fraction=0.25),
        scorers=ScorerConfig(reward="length", utilities=["vowels"], thresholds=[0.0]),
        generation=GenerationConfig(max_new_tokens=4, samples_per_prompt=2, batch_size=8),
        training=TrainingConfig(learning_rate=1e-2, batch_size=2),
        caid=CAIDConfig(beta=0.1, iterations=2, dual_step_size=1.0, dual_prompts=2, dual_samples=1),
        **changes,
    )  # fmt: skip


@pytest.fixture
def trained(monkeypatch):
    """The policy object the trainer evaluates (the run's last iterate)."""
    policies = []
    evaluate = trainer.CAIDTrainer.evaluate

    def capture(self, out):
        policies.append(self.learner.model)
        return evaluate(self, out)

    monkeypatch.setattr(trainer.CAIDTrainer, "evaluate", capture)
    return policies


def _logprobs(model, tokenizer):
    """log pi(y|x) of a few fixed (prompt, response) token sequences."""
    pairs = [("Name a fruit.", " An apple."), ("Tell a joke.", " No."), ("Describe the sea.", " Blue and wide.")]
    prompts = [tokenizer(p)["input_ids"] for p, _ in pairs]
    responses = [tokenizer(r, add_special_tokens=False)["input_ids"] for _, r in pairs]
    with torch.no_grad():
        return sequence_logprobs(model.eval(), prompts, responses, tokenizer.pad_token_id).double()


def test_model_object_dataset_and_python_scorer_in_exported_policy_out(tmp_path, tokenizer, trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = tiny_model(tokenizer, seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prompts = datasets.Dataset.from_dict({"prompt": PROMPTS})
    run_dir = tmp_path / "run"
    summary = llm.run(
        _config(tmp_path), str(run_dir), model=model, tokenizer=tokenizer, prompts=prompts,
        scorers={"length": length, "vowels": vowels}, progress=False,
    )  # fmt: skip
    assert set(summary["improvements"]) == {"length", "vowels"} and summary["n_test_prompts"] == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the object is left as it was
    record = json.loads((run_dir / "config.json").read_text())
    assert record["config"]["inputs"]["scorers"].keys() == {"length", "vowels"}

    with pytest.raises(ValueError, match="pass the same model and tokenizer"):
        llm.export(run_dir, tmp_path / "policy")
    target = llm.export(str(run_dir), tmp_path / "policy", model=model, tokenizer=tokenizer)
    reloaded = AutoModelForCausalLM.from_pretrained(target)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(target)
    expected = _logprobs(trained[-1], tokenizer)
    assert not torch.allclose(expected, _logprobs(model, tokenizer), atol=1e-3)  # training moved the policy
    torch.testing.assert_close(_logprobs(reloaded, reloaded_tokenizer), expected, rtol=0, atol=1e-5)
    exported = json.loads((target / "caid.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert exported["lambda"] == metrics[-1]["lam"] and exported["beta"] == 0.1
    assert exported["thresholds"] == summary["thresholds"] and exported["iteration"] == 2
    assert exported["format"] == "save_pretrained" and exported["provenance"]["checkpoint"]["file"]
    with pytest.raises(ValueError, match="exists"):
        llm.export(run_dir, target, model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="not the model the run started from"):
        llm.export(run_dir, tmp_path / "other", model=tiny_model(tokenizer, seed=4), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="weights were not kept"):
        llm.export(run_dir, tmp_path / "first", iteration=1, model=model, tokenizer=tokenizer)


def test_lora_policy_exports_as_a_peft_adapter_folder_at_any_kept_iteration(tmp_path, tokenizer, monkeypatch):
    import copy

    from peft import PeftModel

    saved = {}
    save = trainer.CAIDTrainer.save

    def capture(self, out):
        saved[self.iteration] = copy.deepcopy(self.learner.model)
        return save(self, out)

    monkeypatch.setattr(trainer.CAIDTrainer, "save", capture)
    import llm.models

    # The run and each export load SmolLM2's tokenizer for model.name = "tiny": the session's copy, not the GGUF.
    monkeypatch.setattr(llm.models, "load_tokenizer", lambda *args, **kwargs: copy.deepcopy(tokenizer))
    config = _config(tmp_path, train="lora")
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, keep_checkpoints=True))
    run_dir = tmp_path / "lora"
    summary = pipeline.run(config, run_dir, prompts=PROMPTS, scorers={"length": length, "vowels": vowels},
                           progress=False)  # fmt: skip
    for iteration in (1, 2):
        target = llm.export(run_dir, tmp_path / f"adapter_{iteration}", iteration=iteration)
        assert (target / "adapter_config.json").is_file() and (target / "adapter_model.safetensors").is_file()
        base = tiny_model(tokenizer, seed=0)  # the run's base: model.name = "tiny" at data seed 0
        reloaded = PeftModel.from_pretrained(base, target)
        expected = _logprobs(saved[iteration], tokenizer)
        torch.testing.assert_close(_logprobs(reloaded, tokenizer), expected, rtol=0, atol=1e-5)
        exported = json.loads((target / "caid.json").read_text())
        assert exported["format"] == "peft_adapter" and exported["iteration"] == iteration
    assert not torch.allclose(_logprobs(saved[1], tokenizer), _logprobs(saved[2], tokenizer), atol=1e-4)
    best = llm.export(run_dir, tmp_path / "best", best=True)
    assert json.loads((best / "caid.json").read_text())["iteration"] == summary["best_iteration"]


def test_bad_specs_and_objects_are_refused_before_any_model_loads(tmp_path, monkeypatch):
    def loaded(*args, **kwargs):
        raise AssertionError("a model or scorer loaded before the input was checked")

    monkeypatch.setattr(pipeline, "base_model", loaded)
    monkeypatch.setattr(pipeline, "build_scorer", loaded)
    with pytest.raises(ValueError, match="unknown scorer 'length'"):
        pipeline.run(_config(tmp_path), tmp_path / "a", prompts=PROMPTS, progress=False)
    missing = dataclasses.replace(_config(tmp_path).data, prompts=[f"hf:{tmp_path / 'no-such-dataset'}"])
    with pytest.raises(ValueError, match="no-such-dataset"):
        pipeline.run(dataclasses.replace(_config(tmp_path), data=missing), tmp_path / "b",
                     scorers={"length": length, "vowels": vowels}, progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"prompts: row 0 \(0-based\): missing field 'prompt'"):
        pipeline.run(_config(tmp_path), tmp_path / "c", prompts=[{"text": "x"}],
                     scorers={"length": length, "vowels": vowels}, progress=False)  # fmt: skip
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_a_peft_model_keeps_training_its_own_adapters(tmp_path, tokenizer, trained):
    from peft import PeftModel

    from llm.trainable import apply_lora

    given = apply_lora(tiny_model(tokenizer, seed=5), rank=2, seed=1)
    with torch.no_grad():  # adapters that already change the model, as a fine-tuned one's would
        for name, parameter in given.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    run_dir = tmp_path / "peft"
    llm.run(_config(tmp_path, train="lora"), run_dir, model=given, tokenizer=tokenizer, prompts=PROMPTS,
            scorers={"length": length, "vowels": vowels}, progress=False)  # fmt: skip
    target = llm.export(run_dir, tmp_path / "adapter", model=given, tokenizer=tokenizer)
    reloaded = PeftModel.from_pretrained(tiny_model(tokenizer, seed=5), target)
    expected = _logprobs(trained[-1], tokenizer)
    torch.testing.assert_close(_logprobs(reloaded, tokenizer), expected, rtol=0, atol=1e-5)
    assert not torch.allclose(expected, _logprobs(given, tokenizer), atol=1e-3)


def test_preferences_as_a_data_frame_train_as_the_file_does(tmp_path):
    import pandas as pd

    from llm.config import PeCAIDConfig

    pku = "tests/llm/data/preference_pairs_pku.jsonl"
    rows = pd.read_json(pku, lines=True)
    base = dataclasses.replace(
        _config(tmp_path), method="pecaid", caid=dataclasses.replace(_config(tmp_path).caid, iterations=1),
        scorers=ScorerConfig(reward="length", utilities=["vowels"], thresholds=[0.0]),
    )  # fmt: skip
    mine = {"length": length, "vowels": vowels}
    objectives = PeCAIDConfig(epochs=1, objectives=["better", "safer"])
    pipeline.run(dataclasses.replace(base, pecaid=objectives), tmp_path / "object", preferences=rows,
                 prompts=PROMPTS, scorers=mine, progress=False)  # fmt: skip
    from_file = dataclasses.replace(objectives, preferences=pku)
    pipeline.run(dataclasses.replace(base, pecaid=from_file), tmp_path / "file", prompts=PROMPTS, scorers=mine,
                 progress=False)  # fmt: skip
    for s in range(2):
        name = f"pre_aligned_{s}.safetensors"
        assert (tmp_path / "object" / name).read_bytes() == (tmp_path / "file" / name).read_bytes()


def test_pecaid_thresholds_constraints_and_best_iterate_are_in_implicit_reward_units(tmp_path, monkeypatch):
    """Thresholds as fractions of the implicit utility's plug-in maximum, recomputed here from the saved models."""
    import copy

    from safetensors.torch import load_file

    from llm.config import PeCAIDConfig
    from llm.reference_phase import ReferenceData, response_logprobs
    from llm.scorers import plugin_maximum

    config = dataclasses.replace(
        _config(tmp_path), method="pecaid", pecaid=PeCAIDConfig(epochs=1),
        scorers=ScorerConfig(reward="length", utilities=["vowels"], thresholds=[0.5],
                             threshold_units="plugin_fraction"),
    )  # fmt: skip
    out = tmp_path / "pecaid"
    summary = pipeline.run(config, out, prompts=PROMPTS, scorers={"length": length, "vowels": vowels},
                           progress=False)  # fmt: skip
    reference, tokenizer = pipeline._models(config, torch.device("cpu"))
    (entry,) = (tmp_path / "cache" / "reference").glob("*.npz")
    ref = ReferenceData.from_file(entry, entry.stem)
    pad = tokenizer.pad_token_id
    utility = copy.deepcopy(reference)
    utility.load_state_dict(load_file(out / "pre_aligned_1.safetensors"), strict=False)
    implicit = config.caid.beta * (
        response_logprobs(utility, ref.train, pad, 8, progress=False)
        - response_logprobs(reference, ref.train, pad, 8, progress=False)
    ).reshape(ref.train_logprobs.shape)
    assert summary["thresholds"][0] == pytest.approx(0.5 * plugin_maximum(implicit), rel=1e-6)
    assert summary["constraint_units"] == "implicit_reward" and set(summary["implicit_improvements"]) == {"vowels"}
    b, held_out = summary["thresholds"][0], summary["implicit_improvements"]["vowels"]["mean"]
    assert summary["constraints_satisfied"] == [held_out >= b]
    assert summary["measured_slack_by_iteration"]["2"] == [pytest.approx(held_out - b)]  # the last iterate's
    assert set(summary["improvements"]) == {"length", "vowels"}  # the scorers are still reported
    assert json.loads((out / "summary.json").read_text())["constraint_units"] == "implicit_reward"


def test_pecaid_from_labelled_pairs_alone_evaluates_on_held_out_pairs(tmp_path):
    """No scorer configured: the held-out pairs' margins, recomputed here from the saved policy and pi_ref."""
    import numpy as np
    import pandas as pd
    from safetensors.torch import load_file

    from llm.config import PeCAIDConfig
    from llm.models import chat_prompt
    from llm.prompts import PromptSet, split

    pku = "tests/llm/data/preference_pairs_pku.jsonl"
    config = dataclasses.replace(
        _config(tmp_path), method="pecaid", scorers=ScorerConfig(reward="", utilities=[], thresholds=[0.0]),
        pecaid=PeCAIDConfig(epochs=1, preferences=pku, objectives=["better", "safer"]),
    )  # fmt: skip
    out = tmp_path / "pairs"
    summary = pipeline.run(config, out, prompts=PROMPTS, progress=False)
    assert summary["improvements"] == {} and summary["constraint_units"] == "implicit_reward"
    assert set(summary["implicit_improvements"]) == {"safer"} and set(summary["held_out_pairs"]) == {"better", "safer"}

    rows = pd.read_json(pku, lines=True)
    _, test = split(PromptSet("pairs", tuple(rows["prompt"])), config.data.test_fraction, config.data_seed)
    held = rows[rows["prompt"].isin(test.prompts)]
    reference, tokenizer = pipeline._models(config, torch.device("cpu"))
    policy = copy_of(reference)
    policy.load_state_dict(load_file(out / "checkpoint_2.safetensors"), strict=False)
    prompts = [tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in held["prompt"]]

    def log_ratio(column):
        eos = tokenizer.eos_token_id
        responses = [(*tokenizer(r, add_special_tokens=False)["input_ids"], eos) for r in held[column]]
        with torch.no_grad():
            args = (prompts, responses, tokenizer.pad_token_id)
            return (sequence_logprobs(policy, *args) - sequence_logprobs(reference, *args)).double().numpy()

    delta = config.caid.beta * (log_ratio("response_1") - log_ratio("response_0"))  # y_1 over y_0
    for objective in ("better", "safer"):
        margin = np.where(held[f"{objective}_response_id"] == 1, delta, -delta)
        got = summary["held_out_pairs"][objective]
        assert got["n_pairs"] == len(held) >= 1
        # float32 log-probs of ~100 nats, batched otherwise than in the run: agreement to ~1e-5 nats x beta
        assert got["margin"] == pytest.approx(margin.mean(), abs=1e-5)
        assert got["accuracy"] == pytest.approx(np.mean(margin > 0))


def copy_of(model):
    import copy

    return copy.deepcopy(model)
