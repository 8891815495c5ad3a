"""The options TRL users expect: gradient accumulation, mixed precision, truncation, LoRA targets and dropout."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import llm.pipeline as pipeline
from llm.config import CAIDConfig, DataConfig, GenerationConfig, ModelConfig, RunConfig, ScorerConfig, TrainingConfig
from llm.dpo import dpo_epoch, sequence_logprobs, steps_per_epoch
from llm.mixed_precision import MixedPrecision
from llm.reference_phase import ReferenceData
from llm.sampling import Sample
from llm.trainable import apply_lora
from llm.truncation import truncate, truncated_reference
from tests.tiny_llama import tiny_llama

PAD = 0


def _responses(n: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [
        Sample(i // 2, tuple(rng.integers(1, 50, rng.integers(2, 6))), tuple(rng.integers(1, 50, rng.integers(1, 5))),
               "")
        for i in range(n)
    ]  # fmt: skip


class Recorder(torch.optim.Optimizer):
    """An optimiser whose step records the gradients and changes nothing."""

    def __init__(self, params):
        super().__init__(params, {})
        self.grads = []

    def step(self, closure=None):
        self.grads.append([p.grad.clone() for group in self.param_groups for p in group["params"]])


def _step_gradients(batches, accumulation, precision=None):
    model = tiny_llama(seed=1)
    responses = _responses(16)
    pairs = np.arange(16).reshape(8, 2)
    ref = np.random.default_rng(2).normal(-20, 1, 16)
    optimizer = Recorder(model.parameters())
    dpo_epoch(model, optimizer, responses, pairs, ref, 0.5, batches, PAD, accumulation=accumulation,
              precision=precision)  # fmt: skip
    return optimizer.grads


def test_accumulated_gradients_equal_the_larger_batchs():
    (whole,) = _step_gradients([np.arange(8)], 1)
    for batches in ([np.arange(0, 4), np.arange(4, 8)], [np.array([0, 1, 2]), np.array([3, 4]), np.arange(5, 8)]):
        (accumulated,) = _step_gradients(batches, len(batches))
        for got, expected in zip(accumulated, whole, strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # Two steps of two batches each: each step's gradient is that of its own four pairs.
    first, second = _step_gradients([np.arange(0, 2), np.arange(2, 4), np.arange(4, 6), np.arange(6, 8)], 2)
    (expected_first,) = _step_gradients([np.arange(0, 4)], 1)
    for got, expected in zip(first, expected_first, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert second and steps_per_epoch(np.zeros((8, 3)), 2, False, 2, accumulation=2) == 2
    assert steps_per_epoch(np.zeros((9, 3)), 2, False, 2, accumulation=2) == 3  # 5 batches, the last step has one


def test_bf16_autocast_keeps_float32_weights_and_gradients_close_to_float32():
    (plain,) = _step_gradients([np.arange(8)], 1)
    (bf16,) = _step_gradients([np.arange(8)], 1, MixedPrecision("bf16"))
    assert all(g.dtype == torch.float32 for g in bf16)
    assert any(not torch.equal(a, b) for a, b in zip(bf16, plain, strict=True))  # the 16-bit matmuls did run
    total = torch.cat([g.ravel() for g in plain]).norm()
    difference = torch.cat([(a - b).ravel() for a, b in zip(bf16, plain, strict=True)]).norm()
    assert difference < 0.05 * total


def test_fp16_scales_the_loss_and_unscales_before_the_step():
    precision = MixedPrecision("fp16")
    assert precision.scaler is not None and precision.state_dict()["scale"] == 65536.0
    (fp16,) = _step_gradients([np.arange(8)], 1, precision)
    (plain,) = _step_gradients([np.arange(8)], 1)
    total = torch.cat([g.ravel() for g in plain]).norm()
    assert torch.cat([(a - b).ravel() for a, b in zip(fp16, plain, strict=True)]).norm() < 0.05 * total
    restored = MixedPrecision("fp16")
    restored.load_state_dict(json.loads(json.dumps(precision.state_dict())))  # as state.json stores it
    assert restored.state_dict() == precision.state_dict()
    assert MixedPrecision("no").state_dict() == {} and MixedPrecision("bf16").scaler is None


def test_truncation_keeps_the_prompts_end_and_the_responses_start():
    sample = Sample(0, (1, 2, 3, 4, 5), (6, 7, 8, 9), "text")
    assert truncate(sample) is sample
    assert truncate(sample, max_prompt_length=2) == Sample(0, (4, 5), (6, 7, 8, 9), "text")
    assert truncate(sample, max_length=7) == Sample(0, (1, 2, 3, 4, 5), (6, 7), "text")
    assert truncate(sample, 3, 5) == Sample(0, (3, 4, 5), (6, 7), "text")
    assert truncate(sample, max_length=4) == Sample(0, (3, 4, 5), (6,), "text")  # one response token remains


def test_truncated_reference_recomputes_pi_ref_on_the_cut_sequences():
    model = tiny_llama(seed=3)
    samples = _responses(4, seed=5)
    with torch.no_grad():
        full = sequence_logprobs(model, [s.prompt_ids for s in samples], [s.response_ids for s in samples], PAD)
    ref = ReferenceData("k", samples, np.zeros((1, 2, 2)), full.double().numpy().reshape(2, 2), [], np.zeros((1, 0, 2)))
    cut = truncated_reference(ref, model, PAD, 2, max_prompt_length=2, max_length=4)
    expected_ids = [truncate(s, 2, 4) for s in samples]
    with torch.no_grad():
        expected = sequence_logprobs(
            model, [s.prompt_ids for s in expected_ids], [s.response_ids for s in expected_ids], PAD
        )
    assert cut.train == expected_ids
    np.testing.assert_allclose(cut.train_logprobs.ravel(), expected.double().numpy(), rtol=0, atol=1e-6)
    assert truncated_reference(ref, model, PAD, 2) is ref


def test_lora_target_modules_and_dropout_reach_the_adapters():
    model = apply_lora(tiny_llama(), rank=2, target_modules=["q_proj", "v_proj"], dropout=0.25)
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trained and all(("q_proj" in n or "v_proj" in n) and "lora_" in n for n in trained)
    dropouts = [m.p for name, m in model.named_modules() if name.endswith("lora_dropout.default")]
    assert dropouts and set(dropouts) == {0.25}
    every = apply_lora(tiny_llama(), rank=2)
    assert {n.split(".")[-4] for n, p in every.named_parameters() if p.requires_grad} >= {"q_proj", "gate_proj"}
    with pytest.raises(ValueError, match=r"model\.lora_target_modules \['nope'\]"):
        apply_lora(tiny_llama(), rank=2, target_modules=["nope"])


def test_a_run_with_every_option_trains_checkpoints_and_resumes(tmp_path, tokenizer):
    config = RunConfig(
        method="caid", seed=0,
        model=ModelConfig(name="tiny", train="lora", lora_rank=2, lora_dropout=0.1, lora_target_modules=["q_proj"],
                          cache_dir=str(tmp_path / "cache")),
        data=DataConfig(prompts=["benign"], limit=6, test_fraction=0.34, max_prompt_length=12, max_length=14),
        scorers=ScorerConfig(reward="sentiment", utilities=["simplicity"], thresholds=[0.0]),
        generation=GenerationConfig(max_new_tokens=4, samples_per_prompt=2, batch_size=8),
        training=TrainingConfig(learning_rate=1e-3, batch_size=1, gradient_accumulation_steps=2,
                                mixed_precision="fp16"),
        caid=CAIDConfig(iterations=2, dual_prompts=2, dual_samples=1),
    )  # fmt: skip
    summary = pipeline.run(config, tmp_path / "run", progress=False)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["grad_scaler"]["scale"] > 0
    # 4 training prompts x 1 pair, 1 pair per batch, 2 batches per optimiser step: 2 steps per epoch, 4 in all.
    assert state["scheduler"]["last_epoch"] == 4
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "run" / "checkpoint_2.safetensors")
    assert weights and all("q_proj.lora_" in name for name in weights)
    resumed = pipeline.run(config, tmp_path / "run", resume=True, progress=False)
    assert resumed == json.loads(json.dumps(summary))
    with pytest.raises(ValueError, match=r"training\.mixed_precision"):
        dataclasses.replace(config, training=dataclasses.replace(config.training, distributed="fsdp"))
