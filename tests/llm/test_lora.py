import copy

import torch

from llm.dpo import dpo_loss, sequence_logprobs
from llm.trainable import apply_lora
from tests.tiny_llama import tiny_llama


def test_lora_starts_at_the_base_model_and_trains_only_adapters():
    base = tiny_llama(vocab_size=40, max_positions=32)
    frozen = copy.deepcopy(base)
    model = apply_lora(base, rank=4, alpha=8)
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, frozen(input_ids=ids).logits)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    prompts, chosen, rejected = [[1, 2], [3, 4]], [[5, 6], [7]], [[8], [9, 10]]
    with torch.no_grad():
        ref_c = sequence_logprobs(frozen, prompts, chosen, pad_id=0)
        ref_r = sequence_logprobs(frozen, prompts, rejected, pad_id=0)
    model.train()
    for _ in range(3):
        loss, _ = dpo_loss(
            sequence_logprobs(model, prompts, chosen, 0), sequence_logprobs(model, prompts, rejected, 0), ref_c, ref_r,
            beta=0.5,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    merged = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in model.named_parameters()}
    for name, p in frozen.named_parameters():
        torch.testing.assert_close(merged[name], p)  # base weights untouched
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, frozen(input_ids=ids).logits)
