"""configs/paper_pku_saferlhf.toml holds the paper's numbers, and the same file runs end to end with tiny stand-ins."""

import copy
import json
import math
from pathlib import Path

import pandas as pd

from llm.config import RunConfig
from llm.config_files import from_dict, load_config, to_dict
from tests.markers import needs_smollm2

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper_pku_saferlhf.toml"


def test_paper_config_holds_the_papers_values():
    config = load_config(PAPER)
    assert config.method == "caid"
    # Sec. 4.1.1: Alpaca-7B-reproduced, Beaver-7B-v1.0 reward r and cost c with g = -c, PKU-SafeRLHF-30K prompts.
    assert Path(config.model.name).name == "alpaca-7b-reproduced"
    assert config.scorers.reward == "hf:PKU-Alignment/beaver-7b-v1.0-reward"
    assert config.scorers.utilities == ["-hf:PKU-Alignment/beaver-7b-v1.0-cost"]
    assert len(config.scorers.thresholds) == 1 and config.scorers.thresholds[0] in range(3, 10)  # b = 3..9
    assert len(config.data.prompts) == 1 and config.data.prompts[0].startswith("file:")
    assert config.data.limit == 0
    # Table 1 (multi-shot column) and the LoRA settings stated with it.
    assert config.caid.beta == 0.1
    assert config.caid.iterations == 4
    assert config.training.learning_rate == 5e-4
    assert config.training.batch_size == 7 * 5  # per-device 7 on 5 GPUs, no gradient accumulation
    assert config.training.lr_scheduler == "cosine" and config.training.warmup_steps == 100
    assert config.training.gradient_checkpointing is True
    assert (config.model.train, config.model.lora_rank, config.model.lora_alpha) == ("lora", 8, 16.0)
    assert config.model.dtype == "bfloat16"
    # Table 3 (generation), Sec. 4.1.1 (600 prompts x 64 responses per dual step; eta unreported, 0.05-0.1 suggested).
    assert config.generation.temperature == 1.0 and config.generation.top_p == 0.9
    assert config.generation.max_new_tokens == 512
    assert (config.caid.dual_prompts, config.caid.dual_samples) == (600, 64)
    assert 0.05 <= config.caid.dual_step_size <= 0.1
    # App. C.2, Fig. 3: the one-shot plug-in problem on 600 prompts x 64 responses, apart from the pairs' K = 2.
    assert (config.caid.plugin_prompts, config.caid.plugin_samples) == (600, 64)
    assert config.generation.samples_per_prompt == 2


@needs_smollm2
def test_paper_config_runs_with_tiny_stand_ins(tmp_path):
    import numpy as np

    import llm.pipeline as pipeline
    from llm.models import chat_prompt, load_model, load_tokenizer, tiny_model
    from llm.reward_models import PKU_CHAT_TEMPLATE, PKU_PROMPT
    from tests.llm.test_reward_models import save_score_model

    tokenizer = load_tokenizer()
    # pi_ref: a tiny Llama whose tokenizer carries safe-rlhf's prompt format, as the README prepares Alpaca's.
    policy_dir = tmp_path / "alpaca-7b-reproduced"
    tiny_model(tokenizer, seed=0).save_pretrained(policy_dir)
    pku = copy.deepcopy(tokenizer)
    pku.chat_template = PKU_CHAT_TEMPLATE
    pku.save_pretrained(policy_dir)
    _, loaded = load_model(policy_dir)
    prompt = "How do I stay safe online?"
    assert chat_prompt(loaded, prompt) == loaded.bos_token + PKU_PROMPT.format(prompt=prompt)
    # Beaver reward and cost: tiny safe-rlhf score models.
    save_score_model(tmp_path / "beaver-reward", tokenizer, seed=1)
    save_score_model(tmp_path / "beaver-cost", tokenizer, seed=2)
    # PKU-SafeRLHF-30K's layout: a prompt and two Alpaca responses per row.
    rows = [
        {"prompt": f"Question {i}: how do I {task}?", "response_0": "Like this.", "response_1": "I won't.",
         "is_response_0_safe": True, "is_response_1_safe": True, "better_response_id": 0, "safer_response_id": 1}
        for i, task in enumerate(["cook rice", "fix a bike", "hide a body", "learn French", "pick a lock",
                                  "write a poem", "steal a car", "plant a tree"])
    ]  # fmt: skip
    data = tmp_path / "pku_saferlhf_30k_train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    d = to_dict(load_config(PAPER))
    d["model"].update(name=str(policy_dir), dtype="float32", device="cpu", cache_dir=str(tmp_path / "cache"))
    d["scorers"].update(
        reward=f"hf:{tmp_path / 'beaver-reward'}", utilities=[f"-hf:{tmp_path / 'beaver-cost'}"], thresholds=[0.0]
    )
    d["data"].update(prompts=[f"file:{data}"], test_fraction=0.25)
    d["generation"].update(max_new_tokens=8, samples_per_prompt=2, batch_size=16)
    d["training"].update(batch_size=4)
    d["caid"].update(iterations=2, dual_prompts=2, dual_samples=2, plugin_prompts=2, plugin_samples=3)
    config = from_dict(RunConfig, d)

    out = tmp_path / "run"
    summary = pipeline.run(config, out, progress=False)
    for name in ("summary.json", "dual_trajectory.csv", "eval_scores.csv", "metrics.jsonl"):
        assert (out / name).is_file(), name
    assert set(summary["improvements"]) == {config.scorers.reward, *config.scorers.utilities}
    assert np.all(np.isfinite(summary["lambda_last"]))
    trajectory = pd.read_csv(out / "dual_trajectory.csv")
    assert len(trajectory) == 2 and all(math.isfinite(v) for v in trajectory["lambda_1"])
