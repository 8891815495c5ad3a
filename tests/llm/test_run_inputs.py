import copy
import dataclasses

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from llm.config import RunConfig, ScorerConfig  # noqa: E402
from llm.models import tiny_model  # noqa: E402
from llm.run_inputs import RunInputs, object_fingerprint, tokenizer_fingerprint  # noqa: E402

MINE = RunConfig(scorers=ScorerConfig(reward="length", utilities=["-toxicity"], thresholds=[0.1]))


def _length(prompts, responses):
    return [float(len(r)) for r in responses]


def test_objects_are_checked_before_any_model_loads(tokenizer):
    model = tiny_model(tokenizer)
    with pytest.raises(ValueError, match="go together"):
        RunInputs.of(MINE, model=model, scorers={"length": _length})
    with pytest.raises(TypeError, match="a transformers causal LM"):
        RunInputs.of(MINE, model="gpt2", tokenizer=tokenizer, scorers={"length": _length})
    small = tiny_model(tokenizer)
    small.resize_token_embeddings(100)
    with pytest.raises(ValueError, match="the model embeds 100"):
        RunInputs.of(MINE, model=small, tokenizer=tokenizer, scorers={"length": _length})
    with pytest.raises(ValueError, match="unknown scorer 'length'"):
        RunInputs.of(MINE)
    with pytest.raises(ValueError, match=r"scorers \['other'\]: no spec names them"):
        RunInputs.of(MINE, scorers={"length": _length, "other": _length})
    with pytest.raises(ValueError, match="set method = 'pecaid'"):
        RunInputs.of(MINE, scorers={"length": _length}, preferences=pd.DataFrame({"prompt": ["p"]}))
    with pytest.raises(ValueError, match=r"prompts: row 1 \(0-based\): missing field 'prompt'"):
        RunInputs.of(MINE, scorers={"length": _length}, prompts=[{"prompt": "a"}, {"text": "b"}])


def test_the_run_gets_a_prepared_copy_of_the_tokenizer_and_data_limit_applies(tokenizer):
    model = tiny_model(tokenizer)
    tokenizer.padding_side = "right"
    try:
        inputs = RunInputs.of(
            dataclasses.replace(MINE, data=dataclasses.replace(MINE.data, limit=2)), model=model, tokenizer=tokenizer,
            prompts=["a", "b", "c"], scorers={"length": _length},
        )  # fmt: skip
        assert inputs.tokenizer is not tokenizer and inputs.tokenizer.padding_side == "left"
        assert tokenizer.padding_side == "right"  # the caller's object is left as it was
    finally:
        tokenizer.padding_side = "left"
    assert inputs.prompts.prompts == ("a", "b") and inputs.model is model and not inputs.empty
    assert RunInputs.of(RunConfig()).empty


def test_fingerprints_change_with_the_weights_the_tokenizer_the_prompts_and_the_scorer_code(tokenizer):
    model = tiny_model(tokenizer)
    before = RunInputs.of(MINE, model=model, tokenizer=tokenizer, prompts=["a", "b"], scorers={"length": _length})
    first = before.fingerprints()
    assert before.fingerprints() == first  # deterministic
    assert object_fingerprint(tiny_model(tokenizer)) == first["model"]  # same seed, same weights
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1e-3  # one weight, deep inside a tensor
    assert object_fingerprint(model)["weights"] != first["model"]["weights"]
    assert object_fingerprint(model)["config"] == first["model"]["config"]
    assert object_fingerprint(tiny_model(tokenizer, layers=3))["config"] != first["model"]["config"]
    other = RunInputs.of(MINE, prompts=["a", "c"], scorers={"length": lambda p, r: [0.0] * len(r)}).fingerprints()
    assert other["prompts"] != first["prompts"] and other["scorers"]["length"] != first["scorers"]["length"]
    extra = copy.deepcopy(before.tokenizer)
    extra.add_tokens(["<caid-extra-token>"])
    assert tokenizer_fingerprint(extra) != first["tokenizer"]


def test_a_weight_changed_in_the_middle_of_a_large_tensor_changes_the_fingerprint():
    """A 4 MiB weight: a change far from its first and last MiB is seen (the cache keys every byte)."""
    layer = torch.nn.Linear(1024, 1024)
    before = object_fingerprint(layer)
    with torch.no_grad():
        layer.weight[512, 0] += 1.0
    assert object_fingerprint(layer)["weights"] != before["weights"]
