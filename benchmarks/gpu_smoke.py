"""A GPU check of the paper's configuration, scaled down: peak memory and time per phase of one CAID run.

Usage::

    python -m benchmarks.gpu_smoke --out DIR [--model NAME] [--prompts SPEC ...] [--limit 32] [--set TABLE.KEY=VALUE]

``configs/paper_pku_saferlhf.toml`` (LoRA r = 8, bfloat16 weights, gradient checkpointing, the paper's beta and
schedule) with what a smoke run changes: ``--model`` in place of Alpaca-7B (default: the embedded
SmolLM2-135M-Instruct, which needs no download), built-in scorers in place of the Beaver-7B models (relevance and
-toxicity; ``--set scorers.reward=...`` for others), ``--limit`` prompts of ``--prompts``, bfloat16 autocast
(``training.mixed_precision``), 2 CAID iterations, shorter responses and smaller dual steps. Each phase (the
reference phase, the trainer's set-up, each iteration, the evaluation, the export of the policy) is timed, with
the GPU's peak allocated memory over it (``torch.cuda.max_memory_allocated``, reset before each phase) and the
process's peak resident memory. Writes ``DIR/gpu_smoke.json``.

Without CUDA it says so and exits 0, unless ``--cpu`` asks for the same phases on the CPU (a plumbing check:
peak GPU memory is then not measured).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "paper_pku_saferlhf.toml"
VERSIONS = ("caid-toolkit", "torch", "transformers", "peft", "numpy")


def smoke_overrides(args: argparse.Namespace) -> list[str]:
    """The changes to the paper configuration that make it a smoke run (then ``--set``)."""
    prompts = ", ".join(json.dumps(spec) for spec in args.prompts)
    return [
        f"model.name={json.dumps(args.model)}", f"model.dtype={json.dumps(args.dtype)}",
        f"model.device={json.dumps('cpu' if args.cpu else 'cuda')}",
        f"model.cache_dir={json.dumps(str(args.out / 'cache'))}",
        f"data.prompts=[{prompts}]", f"data.limit={args.limit}", "data.test_fraction=0.25",
        'scorers.reward="relevance"', 'scorers.utilities=["-toxicity"]', "scorers.thresholds=[0.3]",
        'scorers.threshold_units="plugin_fraction"',
        "generation.max_new_tokens=64", "generation.batch_size=16",
        "training.batch_size=4", "training.gradient_accumulation_steps=2", "training.warmup_steps=0",
        f"training.mixed_precision={json.dumps(args.precision)}",
        "caid.iterations=2", "caid.dual_prompts=8", "caid.dual_samples=4", "caid.plugin_prompts=0",
        "caid.plugin_samples=0", 'pecaid.preferences=""', "pecaid.objectives=[]", *args.overrides,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_smoke.json, the run and the policy")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="pi_ref (default: the embedded SmolLM2)")
    parser.add_argument("--prompts", nargs="+", default=["benign"], help="prompt specs (data.prompts)")
    parser.add_argument("--limit", type=int, default=32, help="prompts per source")
    parser.add_argument("--dtype", default="bfloat16", help="model.dtype")
    parser.add_argument("--precision", default="bf16", help="training.mixed_precision")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE")
    parser.add_argument("--cpu", action="store_true", help="run the phases on the CPU when there is no CUDA")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not args.cpu:
        print("gpu_smoke: no CUDA device here, so nothing was measured (pass --cpu for a plumbing check)")
        return 0
    from llm.config_files import load_config, to_dict
    from llm.distributed import init_ranks
    from llm.pipeline import VERSIONS as RUN_VERSIONS
    from llm.pipeline import run_setup
    from llm.policy_export import export
    from llm.run_files import machine_description, package_versions, write_atomic, write_run_record
    from llm.trainer import CAIDTrainer

    config = load_config(PAPER_CONFIG, smoke_overrides(args))
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / "run"
    phases: list[dict[str, Any]] = []
    cuda = torch.cuda.is_available() and not args.cpu

    def phase(name: str, work: Callable[[], Any]) -> Any:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = work()
        if cuda:
            torch.cuda.synchronize()
        phases.append({
            "phase": name, "seconds": round(time.perf_counter() - start, 3),
            "peak_gpu_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
            "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 3) if cuda else None,
            "peak_rss_gib_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        })  # fmt: skip
        print(json.dumps(phases[-1]), file=sys.stderr, flush=True)
        return result

    ranks = init_ranks(config.model.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    setup = phase("reference phase", lambda: run_setup(config, ranks))
    record = lambda: write_run_record(run_dir, to_dict(config), RUN_VERSIONS)  # noqa: E731
    trainer = phase("set-up (pairs, one-shot dual)", lambda: CAIDTrainer.build(config, setup, ranks, run_dir, record,
                                                                                  progress=False))  # fmt: skip
    for t in range(1, config.caid.iterations + 1):
        phase(f"iteration {t}", lambda: (trainer.iterate(), trainer.save(run_dir)))
    summary = phase("evaluation", lambda: trainer.evaluate(run_dir))
    summary.write(run_dir)
    phase("export", lambda: export(run_dir, args.out / "policy"))
    result = {
        "config": to_dict(config), "phases": phases, "summary": summary.to_json(),
        "device": torch.cuda.get_device_name() if cuda else "cpu", "machine": machine_description(),
        "versions": package_versions(VERSIONS),
    }  # fmt: skip
    write_atomic(args.out / "gpu_smoke.json", json.dumps(result, indent=2) + "\n")
    print(args.out / "gpu_smoke.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
