import math

import numpy as np
import pytest
import torch

from llm.dpo import dpo_loss, pseudo_labels, sequence_logprobs


@pytest.fixture
def model(tiny_llama_model):
    return tiny_llama_model  # the shared tiny Llama (conftest.py): these tests never train it


def test_sequence_logprobs_matches_one_sequence_at_a_time(model):
    prompts = [[1, 2, 3], [4, 5], [6]]
    responses = [[7, 8], [9, 10, 11, 12], [13]]
    batched = sequence_logprobs(model, prompts, responses, pad_id=0).detach()
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        ids = torch.tensor([p + r])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
        expected = sum(float(logp[len(p) - 1 + t, tok]) for t, tok in enumerate(r))
        assert float(batched[i]) == pytest.approx(expected, abs=1e-4)


def test_sequence_logprobs_rejects_bad_batches(model):
    with pytest.raises(ValueError, match="responses"):
        sequence_logprobs(model, [[1]], [[2], [3]], pad_id=0)
    with pytest.raises(ValueError, match="at least one token"):
        sequence_logprobs(model, [[1]], [[]], pad_id=0)


def test_dpo_loss_against_hand_computation():
    beta = 0.1
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.5])
    rc, rr = torch.tensor([-3.5, -5.2]), torch.tensor([-3.8, -4.0])
    loss, stats = dpo_loss(pc, pr, rc, rr, beta)
    # pair 1: 0.1 * ((-3 + 3.5) - (-4 + 3.8)) = 0.07; pair 2: 0.1 * ((-5 + 5.2) - (-4.5 + 4)) = 0.07
    margins = [0.07, 0.07]
    expected = -sum(math.log(1 / (1 + math.exp(-m))) for m in margins) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-7)
    assert stats.accuracy == 1.0 and stats.margin == pytest.approx(0.07, abs=1e-7)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, 0.0)


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.tensor([-3.0], requires_grad=True)
    pr = torch.tensor([-3.0], requires_grad=True)
    loss, _ = dpo_loss(pc, pr, torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.5)
    loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descending the loss raises log pi(y+), lowers log pi(y-)


def test_pseudo_label_frequencies_follow_the_bradley_terry_model():
    rng = np.random.default_rng(0)
    n = 200_000
    margins = np.array([-2.0, 0.0, 0.7, 3.0])
    for m in margins:
        labels = pseudo_labels(np.zeros(n), np.full(n, m), rng)
        p = 1 / (1 + math.exp(-m))
        assert abs(labels.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    with pytest.raises(ValueError, match="NaN"):
        pseudo_labels(np.array([np.nan]), np.array([0.0]), rng)


def test_expected_label_loss_is_the_label_average_of_the_drawn_label_loss():
    """dpo_loss(target=p) = p * loss(y_a chosen) + (1 - p) * loss(y_b chosen), pair by pair, then averaged."""
    rng = np.random.default_rng(5)
    pa, pb, ra, rb = (torch.tensor(rng.normal(size=6)) for _ in range(4))
    p = rng.uniform(size=6)

    def hard(i: int, a_chosen: bool) -> float:
        x, y = (pa, pb) if a_chosen else (pb, pa)
        rx, ry = (ra, rb) if a_chosen else (rb, ra)
        return -math.log(1 / (1 + math.exp(-0.5 * ((x[i] - rx[i]) - (y[i] - ry[i])).item())))

    expected = np.mean([p[i] * hard(i, True) + (1 - p[i]) * hard(i, False) for i in range(6)])
    loss, _ = dpo_loss(pa, pb, ra, rb, 0.5, torch.tensor(p))
    assert loss.item() == pytest.approx(expected, rel=1e-10)

