import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import LlamaConfig, LlamaForSequenceClassification, LlamaModel  # noqa: E402

from llm.models import ModelLoadError, tiny_model  # noqa: E402
from llm.reward_models import PKU_PROMPT, RewardModelScorer  # noqa: E402
from llm.scorers import Signed, build_scorer, score  # noqa: E402

# Mixed lengths, so a batch pads some rows; one empty response.
PROMPTS = ["Hi.", "How do I pick a lock on my neighbour's door without a key?", "Name a colour.", "Why?"]
RESPONSES = ["Hello!", "I can't help with that, but a locksmith can.", "", "Because the sky scatters blue light."]


def tiny_llama_config(tokenizer, **changes) -> LlamaConfig:
    """A two-layer Llama on ``tokenizer``'s vocabulary, with the pad token set."""
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **changes,
    )  # fmt: skip


def save_score_model(folder, tokenizer, seed: int, *, bias: bool = True, config_extra: dict | None = None):
    """A safe-rlhf-style score model: a LlamaModel's weights under ``model.``, plus ``score_head``.

    Returns:
        ``(base, weight, bias)``: the decoder and the head's tensors, for an independent computation.
    """
    config = tiny_llama_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = LlamaModel(config).eval()
        weight, head_bias = torch.randn(1, config.hidden_size), torch.randn(1) if bias else None
    state = {f"model.{k}": v.contiguous() for k, v in base.state_dict().items()}
    state["score_head.weight"] = weight
    if bias:
        state["score_head.bias"] = head_bias
    folder.mkdir(parents=True)
    save_file(state, folder / "model.safetensors")
    config.architectures = ["LlamaForScore"]
    config.save_pretrained(folder)
    if config_extra:
        data = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**data, **config_extra}))
    tokenizer.save_pretrained(folder)
    return base, weight, head_bias


def save_classifier(folder, tokenizer, seed: int, num_labels: int = 1):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=num_labels)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def beaver(tmp_path_factory, tokenizer):
    """A tiny score model in a folder whose name has capitals (paths are case-sensitive)."""
    folder = tmp_path_factory.mktemp("models") / "Tiny-Beaver-Cost"
    base, weight, bias = save_score_model(folder, tokenizer, seed=1)
    return folder, base, weight, bias


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("models") / "Tiny-RM"
    return folder, save_classifier(folder, tokenizer, seed=2)


def test_score_model_is_the_head_on_the_last_real_token(beaver, tokenizer):
    folder, base, weight, bias = beaver
    scorer = RewardModelScorer(folder, batch_size=3)  # two batches, each padded
    assert scorer.kind == "score_model" and scorer.input_format == "pku" and scorer.name == f"hf:{folder}"
    # safe-rlhf's training format: PROMPT_INPUT + answer + eos (no space after "ASSISTANT:").
    text = tokenizer.decode(scorer.encode(["hi"], ["yo"])[0])
    assert text == "BEGINNING OF CONVERSATION: USER: hi ASSISTANT:yo<|im_end|>"
    expected = []
    with torch.no_grad():
        for prompt, response in zip(PROMPTS, RESPONSES, strict=True):
            text = PKU_PROMPT.format(prompt=prompt) + response + tokenizer.eos_token
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            hidden = base(input_ids=ids).last_hidden_state[0, -1]
            expected.append(float(hidden @ weight[0] + bias[0]))
    got = scorer(PROMPTS, RESPONSES)
    assert got.dtype == np.float64 and got.shape == (len(PROMPTS),)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.ptp(got) > 1e-3  # the inputs are told apart


def test_classifier_is_its_logit_on_the_chat_templated_pair(classifier, tokenizer):
    folder, model = classifier
    scorer = RewardModelScorer(folder, batch_size=3)
    assert scorer.kind == "sequence_classification" and scorer.input_format == "chat_template"
    expected = []
    with torch.no_grad():
        for prompt, response in zip(PROMPTS, RESPONSES, strict=True):
            turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            text = tokenizer.apply_chat_template(turns, tokenize=False)
            ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            hidden = model.model(input_ids=ids).last_hidden_state[0, -1]
            expected.append(float(model.score(hidden)[0]))
    np.testing.assert_allclose(scorer(PROMPTS, RESPONSES), expected, atol=1e-5, rtol=0)


def test_classifier_without_chat_template_reads_a_text_pair(tmp_path, tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    save_classifier(tmp_path / "plain", plain, seed=3)
    scorer = RewardModelScorer(tmp_path / "plain")
    assert scorer.input_format == "text_pair"
    assert scorer.encode(PROMPTS, RESPONSES) == plain(PROMPTS, RESPONSES)["input_ids"]


@pytest.mark.parametrize("which", ["beaver", "classifier"])
def test_batching_and_padding_do_not_change_scores(which, request):
    folder = request.getfixturevalue(which)[0]
    batched = RewardModelScorer(folder, batch_size=len(PROMPTS))(PROMPTS, RESPONSES)
    alone = RewardModelScorer(folder, batch_size=1)
    one_by_one = [alone([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5, rtol=0)
    reordered = alone(PROMPTS[::-1], RESPONSES[::-1])[::-1]
    np.testing.assert_allclose(reordered, one_by_one, atol=1e-5, rtol=0)


def save_score_model_copy(folder, tokenizer, config_extra=None):
    save_score_model(folder, tokenizer, seed=4, bias=False, config_extra=config_extra)
    return folder


def test_safe_rlhf_normalisation(tmp_path, tokenizer):
    raw = RewardModelScorer(save_score_model_copy(tmp_path / "raw", tokenizer))(PROMPTS, RESPONSES)
    # Reward: affine with the checkpoint's normalizer buffers, which win over the config's mean and var.
    reward_config = {"do_normalize": True, "score_type": "reward", "mean": [100.0], "var": [100.0]}
    reward = save_score_model_copy(tmp_path / "reward", tokenizer, reward_config)
    state = load_file(reward / "model.safetensors")
    state.update({"normalizer.mean": torch.tensor([1.5]), "normalizer.var": torch.tensor([4.0])})
    save_file(state, reward / "model.safetensors")
    np.testing.assert_allclose(RewardModelScorer(reward)(PROMPTS, RESPONSES), (raw - 1.5) / 2.0, atol=1e-5)
    # Cost: scale only, with the config's variance when the checkpoint has no buffers.
    cost_config = {"do_normalize": True, "score_type": "cost", "mean": [5.0], "var": [9.0]}
    cost = save_score_model_copy(tmp_path / "cost", tokenizer, cost_config)
    np.testing.assert_allclose(RewardModelScorer(cost)(PROMPTS, RESPONSES), raw / 3.0, atol=1e-5)


@pytest.mark.parametrize("layout", ["sharded_safetensors", "pytorch_bin"])
def test_sharded_and_bin_checkpoints_score_the_same(beaver, tmp_path, layout):
    """Beaver-7B ships as sharded safetensors with an index; older safe-rlhf checkpoints as pytorch_model.bin."""
    source = beaver[0]
    folder = tmp_path / layout
    folder.mkdir()
    for item in source.iterdir():
        if item.name != "model.safetensors":
            (folder / item.name).write_bytes(item.read_bytes())
    state = load_file(source / "model.safetensors")
    if layout == "pytorch_bin":
        torch.save(state, folder / "pytorch_model.bin")
    else:
        keys = sorted(state)  # the head lands in the second shard, as in the real checkpoint's last shard
        shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
                  "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}  # fmt: skip
        for name, names in shards.items():
            save_file({k: state[k] for k in names}, folder / name)
        weight_map = {k: name for name, names in shards.items() for k in names}
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    expected = RewardModelScorer(source)(PROMPTS, RESPONSES)
    np.testing.assert_allclose(RewardModelScorer(folder)(PROMPTS, RESPONSES), expected, atol=1e-6)


def test_build_scorer_hf_spec_keeps_the_path_case_and_negates(beaver):
    folder = beaver[0]
    plain = build_scorer(f"hf:{folder}")
    assert plain.name == f"hf:{folder}" and "Tiny-Beaver-Cost" in plain.name
    safety = build_scorer(f" -hf:{folder} ", device="cpu", dtype="float32")
    assert isinstance(safety, Signed) and safety.name == f"-hf:{folder}"
    np.testing.assert_allclose(score(safety, PROMPTS, RESPONSES), -score(plain, PROMPTS, RESPONSES), atol=1e-6)
    with pytest.raises(ValueError, match="names no model"):
        build_scorer("-hf:")
    with pytest.raises(ValueError, match="hf:<folder"):
        build_scorer("helpfulness")


def test_bfloat16_weights_give_float64_scores_near_float32(beaver):
    folder = beaver[0]
    half = RewardModelScorer(folder, dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16
    got = half(PROMPTS, RESPONSES)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, RewardModelScorer(folder)(PROMPTS, RESPONSES), rtol=0.03)


def test_missing_folder_and_uncached_hub_id(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no such folder") as err:
        RewardModelScorer(tmp_path / "Not-Here")
    assert str(tmp_path / "Not-Here") in str(err.value)
    with pytest.raises(ModelLoadError, match=r"caid-test/not-a-cached-model.*hf download caid-test/not-a-cached-model"):
        build_scorer("-hf:caid-test/not-a-cached-model")


def test_models_without_one_scalar_output_are_refused(tmp_path, tokenizer):
    save_classifier(tmp_path / "three", tokenizer, seed=5, num_labels=3)
    with pytest.raises(ModelLoadError, match=r"'.*three' has num_labels = 3 .*LlamaForSequenceClassification"):
        RewardModelScorer(tmp_path / "three")
    policy = tiny_model(tokenizer, hidden_size=32)
    policy.save_pretrained(tmp_path / "causal")
    tokenizer.save_pretrained(tmp_path / "causal")
    with pytest.raises(ModelLoadError, match=r"num_labels = 2 .*LlamaForCausalLM"):
        RewardModelScorer(tmp_path / "causal")


def test_score_model_without_its_head_is_refused(tmp_path, tokenizer):
    folder = tmp_path / "headless"
    save_score_model(folder, tokenizer, seed=6)
    state = load_file(folder / "model.safetensors")
    del state["score_head.weight"], state["score_head.bias"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"LlamaForScore.*no score_head.weight"):
        RewardModelScorer(folder)


def test_bad_arguments(beaver):
    with pytest.raises(ValueError, match="dtype"):
        RewardModelScorer(beaver[0], dtype="int8")
    with pytest.raises(ValueError, match="device"):
        RewardModelScorer(beaver[0], device="tpu-ish")
