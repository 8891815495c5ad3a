"""The real default model end to end: load -> sample -> score -> one DPO step (about a minute on 2 cores)."""

import numpy as np
import pytest
import torch

from llm.config import GenerationConfig
from llm.dpo import dpo_loss, sequence_logprobs
from llm.models import chat_prompt, load_model
from llm.reference_phase import score_samples
from llm.sampling import sample_responses
from llm.scorers import build_scorer
from llm.trainable import trainable_parameters


@pytest.fixture(scope="module")
def smollm2():
    return load_model()


def test_load_sample_score_and_one_dpo_step(smollm2):
    model, tokenizer = smollm2
    prompts = ["Write one sentence about the sea.", "Say something kind to a friend."]
    inputs = [chat_prompt(tokenizer, p) for p in prompts]
    samples = sample_responses(model, tokenizer, inputs, 2, GenerationConfig(max_new_tokens=8), seed=0, progress=False)
    assert len(samples) == 4 and all(s.response_ids for s in samples)
    scores = score_samples([build_scorer("sentiment"), build_scorer("-toxicity")], prompts, samples, 2)
    assert scores.shape == (2, 2, 2) and np.all(np.isfinite(scores))

    pad = tokenizer.pad_token_id
    params = trainable_parameters(model, "top_layers", 1)
    frozen = model.get_input_embeddings().weight.detach().clone()
    chosen, rejected = [samples[0], samples[2]], [samples[1], samples[3]]
    with torch.no_grad():
        ref_c = sequence_logprobs(model, [s.prompt_ids for s in chosen], [s.response_ids for s in chosen], pad)
        ref_r = sequence_logprobs(model, [s.prompt_ids for s in rejected], [s.response_ids for s in rejected], pad)
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def loss():
        pc = sequence_logprobs(model, [s.prompt_ids for s in chosen], [s.response_ids for s in chosen], pad)
        pr = sequence_logprobs(model, [s.prompt_ids for s in rejected], [s.response_ids for s in rejected], pad)
        return dpo_loss(pc, pr, ref_c, ref_r, beta=0.1)

    model.train()
    first, stats = loss()
    assert stats.loss == pytest.approx(np.log(2), abs=1e-4)  # policy == reference: margin 0
    optimizer.zero_grad()
    first.backward()
    optimizer.step()
    second, _ = loss()
    assert float(second.detach()) < float(first.detach())
    assert torch.equal(model.get_input_embeddings().weight, frozen)
