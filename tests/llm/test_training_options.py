"""Training options of ``llm`` runs: gradient checkpointing, bf16 weights and the learning-rate schedule."""

import dataclasses

import pytest
import torch

import llm.learner as learner
import llm.pipeline as pipeline
from llm.config import ModelConfig, RunConfig, TrainingConfig
from llm.distributed import Ranks
from llm.dpo import sequence_logprobs

TINY = ModelConfig(name="tiny", train="full")
PROMPTS = [(5, 17, 301, 9), (44, 2)]
RESPONSES = [(12, 13, 14), (7, 8, 9, 10, 11)]


def _models(model=TINY, training=None):
    """(policy, reference, tokenizer) as a run builds them."""
    config = RunConfig(model=model, training=training or TrainingConfig())
    reference, tokenizer = pipeline._models(config, torch.device("cpu"))
    policy = learner.build_learner(config.model, config.training, config.seed, Ranks(), reference, total_steps=1)
    return policy.model, reference, tokenizer


def _gradients(policy, pad):
    policy.train()
    sequence_logprobs(policy, PROMPTS, RESPONSES, pad).sum().backward()
    return {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients():
    plain, _, tokenizer = _models()
    checkpointed, _, _ = _models(training=TrainingConfig(gradient_checkpointing=True))
    assert checkpointed.is_activation_checkpointing and not plain.is_activation_checkpointing
    expected, got = _gradients(plain, tokenizer.pad_token_id), _gradients(checkpointed, tokenizer.pad_token_id)
    assert expected.keys() == got.keys() and len(expected) > 10
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_gradient_checkpointing_works_with_frozen_embeddings():
    # LoRA freezes the embeddings: non-reentrant checkpointing must still reach the adapters.
    model = ModelConfig(name="tiny", train="lora", lora_rank=2)
    policy, _, tokenizer = _models(model, TrainingConfig(gradient_checkpointing=True))
    grads = _gradients(policy, tokenizer.pad_token_id)
    assert grads and all("lora_" in name for name in grads)
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_bfloat16_weights_give_float32_log_probs_within_bf16_precision():
    full, _, tokenizer = _models()
    half, reference, _ = _models(dataclasses.replace(TINY, dtype="bfloat16"))
    assert next(half.parameters()).dtype == torch.bfloat16 and next(reference.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        expected = sequence_logprobs(full, PROMPTS, RESPONSES, tokenizer.pad_token_id)
        got = sequence_logprobs(half, PROMPTS, RESPONSES, tokenizer.pad_token_id)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=0.0)


@pytest.mark.parametrize(
    "schedule, warmup, expected",
    [("constant", 0, [1e-3] * 6), ("constant", 2, [0.0, 5e-4, 1e-3, 1e-3, 1e-3, 1e-3]),
     ("cosine", 2, [0.0, 5e-4, 1e-3, 8.535534e-4, 5e-4, 1.464466e-4])],
)  # fmt: skip
def test_learning_rate_schedule_runs_over_all_epochs(schedule, warmup, expected):
    # Two epochs of three steps: the schedule spans all T epochs, as the paper's Trainer runs do.
    config = RunConfig(training=TrainingConfig(learning_rate=1e-3, lr_scheduler=schedule, warmup_steps=warmup))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.training.learning_rate)
    scheduler = learner.lr_scheduler(config.training, optimizer, total_steps=2 * 3)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx(expected, abs=1e-9)


def test_lora_adapters_train_in_float32_on_bfloat16_weights():
    model = dataclasses.replace(TINY, train="lora", lora_rank=2, dtype="bfloat16")
    policy, _, _ = _models(model)
    dtypes = {name: p.dtype for name, p in policy.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
