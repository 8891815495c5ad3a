"""Sampling draws from softmax(logits / T), truncated only by the configured top-k and top-p."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm.config import ConfigError, GenerationConfig  # noqa: E402
from llm.models import tiny_model  # noqa: E402
from llm.sampling import sample_responses  # noqa: E402

PROMPT = "The review says"


def _first_tokens(model, tokenizer, n: int, **generation) -> np.ndarray:
    config = GenerationConfig(max_new_tokens=1, temperature=1.0, top_p=1.0, batch_size=n, **generation)
    samples = sample_responses(model, tokenizer, [PROMPT], n, config, seed=0, progress=False)
    return np.array([s.response_ids[0] for s in samples])


def _exact_logprobs(model, tokenizer) -> np.ndarray:
    enc = tokenizer([PROMPT], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return torch.log_softmax(model(**enc).logits[0, -1].double(), -1).numpy()


@pytest.mark.parametrize(
    "model_settings",
    [{}, {"top_k": 2, "min_p": 0.5, "typical_p": 0.2, "repetition_penalty": 3.0, "no_repeat_ngram_size": 1}],
    ids=["transformers-defaults", "model-generation-config"],
)
def test_samples_follow_the_full_softmax(tokenizer, model_settings):
    """top-k 0, top-p 1: the drawn tokens' exact log-probabilities average to minus the entropy (Monte Carlo,
    4 SE) and hundreds of distinct tokens appear. transformers' own default (top-k 50) or the model's generation
    config would keep at most 50 tokens, each more likely than average."""
    model = tiny_model(tokenizer, hidden_size=32, layers=2, heads=4, seed=3)
    model.generation_config.update(**model_settings)
    tokens = _first_tokens(model, tokenizer, 2000, top_k=0)
    logp = _exact_logprobs(model, tokenizer)
    entropy = -(np.exp(logp) * logp).sum()
    drawn = logp[tokens]
    assert len(np.unique(tokens)) > 500
    assert abs(drawn.mean() + entropy) < 4 * drawn.std(ddof=1) / np.sqrt(len(drawn))


def test_top_k_keeps_the_k_most_likely_tokens(tokenizer):
    model = tiny_model(tokenizer, hidden_size=32, layers=2, heads=4, seed=3)
    tokens = _first_tokens(model, tokenizer, 500, top_k=5)
    assert set(tokens.tolist()) == set(np.argsort(_exact_logprobs(model, tokenizer))[-5:].tolist())


@pytest.mark.parametrize("bad", [-1, True, 2.5])
def test_top_k_must_be_a_non_negative_integer(bad):
    with pytest.raises(ConfigError, match=r"generation\.top_k"):
        GenerationConfig(top_k=bad)
