"""Bounded memory (issue 26): no full-vocabulary logits over a prompt, no generation past the model's positions.

Before, DPO's log-probabilities built ``(length, vocab)`` logits over every position (a 20 KB prompt got the
process OOM-killed at 23.5 GB), and ``max_new_tokens = 3000`` on a model of 2048 positions ran for minutes
into 7.2 GB.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from llm.config import GenerationConfig  # noqa: E402
from llm.dpo import sequence_logprobs  # noqa: E402
from llm.models import tiny_model  # noqa: E402
from llm.sampling import sample_responses  # noqa: E402
from tests.tiny_llama import tiny_llama  # noqa: E402

PAD = 0


def _dense_logprobs(model, prompts, responses) -> torch.Tensor:
    """sum_t log softmax(logits)[y_t], one unpadded sequence at a time, from the full logits (independent)."""
    out = []
    for p, r in zip(prompts, responses, strict=True):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([[*p, *r]])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        out.append(sum(logp[len(p) - 1 + t, token] for t, token in enumerate(r)))
    return torch.stack(out).float()


def test_the_lm_head_runs_only_where_a_response_token_is_predicted():
    model = tiny_llama(vocab_size=1000, max_positions=512)
    prompts = [tuple(range(1, 301)), (5, 6, 7)]  # a long prompt beside a short one
    responses = [(11, 12, 13), (21, 22, 23, 24)]
    seen = []
    hook = model.lm_head.register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    with torch.no_grad():
        got = sequence_logprobs(model, prompts, responses, PAD)
    hook.remove()
    positions = seen[0][-2] if len(seen[0]) == 3 else seen[0][0]
    # Positions predicting a response token in some row: 299..301 (row 0) and 2..5 (row 1); before, all 303.
    assert positions == 7, seen
    torch.testing.assert_close(got, _dense_logprobs(model, prompts, responses), rtol=1e-5, atol=1e-5)


def test_log_probs_and_gradients_match_the_full_computation():
    model = tiny_llama(vocab_size=60, max_positions=64)
    prompts, responses = [(5, 17, 30, 9), (44, 2), (3,)], [(12, 13, 14), (7, 8, 9, 10, 11), (1, 2)]
    torch.testing.assert_close(sequence_logprobs(model, prompts, responses, PAD),
                               _dense_logprobs(model, prompts, responses), rtol=1e-5, atol=1e-5)
    model.train()
    sequence_logprobs(model, prompts, responses, PAD).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    total = 0
    for p, r in zip(prompts, responses, strict=True):
        logits = model(input_ids=torch.tensor([[*p, *r]])).logits[0]
        total = total + sum(torch.log_softmax(logits, -1)[len(p) - 1 + t, y] for t, y in enumerate(r))
    total.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_a_model_without_logits_to_keep_still_works():
    inner = tiny_llama(vocab_size=60, max_positions=64)

    class Plain(torch.nn.Module):  # forward(input_ids, attention_mask) only
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return inner(input_ids=input_ids, attention_mask=attention_mask)

    prompts, responses = [(5, 17, 30), (44,)], [(12, 13), (7, 8, 9)]
    torch.testing.assert_close(sequence_logprobs(Plain(), prompts, responses, PAD),
                               _dense_logprobs(inner, prompts, responses), rtol=1e-5, atol=1e-5)


def test_max_new_tokens_beyond_the_models_positions_is_refused_before_sampling(tokenizer):
    model = tiny_model(tokenizer, hidden_size=16, layers=1, heads=2, seed=0)
    positions = model.config.max_position_embeddings
    calls = []
    model.generate = lambda *args, **kwargs: calls.append(kwargs)  # nothing may be generated
    config = GenerationConfig(max_new_tokens=positions + 952, batch_size=2)
    with pytest.raises(ValueError, match=rf"generation\.max_new_tokens: {positions + 952} new tokens do not fit in "
                                         rf"the model's {positions} positions"):
        sample_responses(model, tokenizer, ["Hello"], 2, config, seed=0, progress=False)
    long_prompt = "word " * (positions - 10)
    config = GenerationConfig(max_new_tokens=64, batch_size=2)
    with pytest.raises(ValueError, match=r"prompt 1 \(\d+ tokens, starting 'word word.*exceeds the model's"):
        sample_responses(model, tokenizer, ["Hello", long_prompt], 2, config, seed=0, progress=False)
    assert calls == []
