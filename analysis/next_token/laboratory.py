"""The exact real-model laboratory: configuration and the resumable runner.

``run(config, out)`` builds the world (cached), solves each exact problem (Sec. 2, Lemma 2), trains every
(method, thresholds, seed) run on the cached trunk, evaluates it exactly on the held-out prompts
(:mod:`analysis.next_token.evaluation`) and writes:

* ``instance.npz``: the two-constraint held-out problem at the first threshold pair (ConstrainedProblem fields);
* ``optima.csv``: lambda*_1..m, P*, the certificate and the plug-in lambda of every threshold setting;
* ``runs/<id>.json`` + ``runs/<id>.npz``: one finished run (its row; per-prompt improvements, reward, KL and
  its lambda trajectory), written atomically, so a killed run resumes where it stopped;
* ``runs.csv``: the per-run table; ``world.json``: scales, correlations and timings.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.next_token.evaluation import evaluate
from analysis.next_token.methods import Arm, TrainingData, TrainingSettings, train_method
from analysis.next_token.policy import LastBlockPolicy
from analysis.next_token.problem import exact_problem, plug_in_problem, sample_tokens, save_instance
from analysis.next_token.world import (
    SCORE_NAMES,
    World,
    atomic_savez,
    load_or_build_world,
    make_split,
    normalised,
)
from llm.run_files import write_atomic
from theory import bounds, certify, solve_dual

__all__ = ["FULL", "QUICK", "Lab", "LabConfig", "Setting", "prepare", "run", "settings_of", "train_runs"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LabConfig:
    """Sizes and sweeps.

    Attributes:
        n_train: Train prompts.
        n_eval: Held-out prompts (the exact instance; <= ~250 keeps instance.npz under 100 MB).
        split_seed: Seed of the train/held-out split and of the threshold sample.
        k: Reference tokens per train prompt (all k(k-1)/2 pairs).
        fractions: Single-constraint thresholds, as fractions of the K-sample plug-in maximum of g_1.
        pairs: Two-constraint thresholds (g_1, g_2), as fractions of their plug-in maxima.
        seeds: Seeds of the DPO randomness (token sample, labels, batch order, sampled dual steps).
        training: DPO and dual-step settings.
        model: Model name for ``llm.models.load_model``.
    """

    n_train: int = 64
    n_eval: int = 64
    split_seed: int = 0
    k: int = 8
    fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    pairs: tuple[tuple[float, float], ...] = ((0.3, 0.3), (0.6, 0.3), (0.3, 0.6))
    seeds: tuple[int, ...] = (0, 1, 2)
    training: TrainingSettings = dataclasses.field(default_factory=TrainingSettings)
    model: str = "smollm2-135m-instruct"


QUICK = LabConfig()
"""Quick scale: 64 train and 64 held-out prompts, three seeds (81 runs)."""
FULL = LabConfig(n_train=256, n_eval=224, seeds=(0, 1, 2, 3, 4))
"""Full scale: 256 train and 224 held-out prompts (instance.npz ~ 90 MB), five seeds."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One threshold setting: which utilities, the fractions and the thresholds b they give."""

    name: str
    utilities: tuple[int, ...]
    fractions: tuple[float, ...]
    thresholds: tuple[float, ...]


def settings_of(config: LabConfig, world: World) -> list[Setting]:
    """Thresholds b = fraction x the plug-in maximum of a fixed K-sample of the train prompts (split_seed)."""
    tokens = sample_tokens(world, config.k, config.split_seed)
    maxima = plug_in_problem(world, tokens, (1, 2), np.zeros(2), config.training.beta).max_improvements
    out = [Setting(f"g1@{f:g}", (1,), (f,), (f * maxima[0],)) for f in config.fractions]
    out += [Setting(f"g1@{a:g}+g2@{b:g}", (1, 2), (a, b), (a * maxima[0], b * maxima[1])) for a, b in config.pairs]
    return out


def _arms(setting: Setting) -> list[Arm]:
    base = [Arm.ONE_SHOT_PLUGIN, Arm.ONE_SHOT_EXACT, Arm.CAID_EXACT]
    return [*base, Arm.CAID_SAMPLED] if len(setting.utilities) == 1 else base


def _load_done(folder: Path, run_id: str) -> dict | None:
    """The finished run's row, or None when it is missing or incomplete (then it is rerun)."""
    row_path, arrays_path = folder / f"{run_id}.json", folder / f"{run_id}.npz"
    if not (row_path.exists() and arrays_path.exists()):
        return None
    try:
        row = json.loads(row_path.read_text())
        with np.load(arrays_path, allow_pickle=False) as data:
            ok = {"improvements", "reward", "kl", "trajectory"} <= set(data.files)
    except (OSError, ValueError, EOFError):
        return None
    return row if ok and isinstance(row, dict) and row.get("run_id") == run_id else None


@dataclasses.dataclass(frozen=True, eq=False)
class Lab:
    """What every run of the laboratory (and of the nu dial) shares.

    Attributes:
        config: Sizes and sweeps.
        out: Output folder.
        model: The reference LM.
        world: Prompts, pi_ref and score tables.
        settings: The threshold settings.
        optima: Setting name -> (exact held-out optimum, exact lambda* of the train prompts).
        seconds_world: Time to build or read the world.
    """

    config: LabConfig
    out: Path
    model: torch.nn.Module
    world: World
    settings: list[Setting]
    optima: dict[str, tuple[bounds.ExactOptimum, np.ndarray]]
    seconds_world: float

    @functools.cached_property
    def ref_train(self) -> np.ndarray:
        """``(X_train, V)`` float64 log pi_ref of the train prompts, rows renormalised."""
        return normalised(self.world.ref_train)

    @functools.cached_property
    def ref_eval(self) -> np.ndarray:
        """``(X_eval, V)`` float64 log pi_ref of the held-out prompts, rows renormalised."""
        return normalised(self.world.ref_eval)

    @functools.cached_property
    def p_train(self) -> np.ndarray:
        """``(X_train, V)`` pi_ref on the train prompts."""
        return np.exp(self.ref_train)

    def training_data(self, setting: Setting, seed: int, k: int | None = None,
                      tokens: np.ndarray | None = None) -> TrainingData:
        """DPO's data for ``setting``: ``k`` (default ``config.k``) reference tokens per train prompt at ``seed``.

        ``tokens``: that sample (:func:`~analysis.next_token.problem.sample_tokens`) when the caller has it.
        """
        world, ref_train = self.world, self.ref_train
        tokens = sample_tokens(world, self.config.k if k is None else k, seed) if tokens is None else tokens
        tables = world.scores[np.array(setting.utilities)]
        return TrainingData(
            world.trunk_train, tokens, world.scores[[0, *setting.utilities]][:, tokens],
            np.take_along_axis(ref_train, tokens, axis=1), tables, tables @ self.p_train.T,
        )  # fmt: skip

    def plug_in_lam(self, setting: Setting, seed: int) -> np.ndarray:
        """The K-sample plug-in lambda of ``setting`` at ``seed`` (Sec. 2.2; one-shot's and CAID's start)."""
        tokens = sample_tokens(self.world, self.config.k, seed)
        prob = plug_in_problem(self.world, tokens, setting.utilities, np.array(setting.thresholds),
                               self.config.training.beta)
        return solve_dual(prob, return_policy=False).lam


def prepare(config: LabConfig, out: Path, *, model: torch.nn.Module | None = None, tokenizer: object | None = None,
            cache_dir: Path | None = None, progress: bool = True) -> Lab:
    """Build (or read) the world, solve every setting's exact problem, write ``optima.csv`` and ``instance.npz``.

    Args:
        config: Sizes and sweeps.
        out: Output folder.
        model: The reference LM (default: ``llm.models.load_model(config.model)``).
        tokenizer: Its tokenizer.
        cache_dir: Cache root (default ``llm.models.default_cache_root()``).
        progress: Show tqdm progress bars.
    """
    from tqdm.auto import tqdm

    from llm.models import DEFAULT_MODEL, MARKER_FILE, converted_model_dir, default_cache_root, load_model

    start = time.perf_counter()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    model_given = model is not None  # a model passed in (tests) is keyed by its name alone
    if model is None:
        model, tokenizer = load_model(config.model, cache_dir=cache_dir)
    torch.set_grad_enabled(True)
    train, held_out = make_split(config.n_train, config.n_eval, config.split_seed)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_root()
    marker = converted_model_dir(cache) / MARKER_FILE  # holds the converted SmolLM2's source fingerprint
    default = not model_given and config.model == DEFAULT_MODEL and marker.is_file()
    model_id = config.model + (marker.read_text() if default else "")
    world = load_or_build_world(model, tokenizer, train, held_out, cache / "next_token", model_id)
    t_world = time.perf_counter() - start
    settings = settings_of(config, world)
    beta = config.training.beta

    optima, optimum_rows = {}, []
    for s in tqdm(settings, desc="exact problems", disable=not progress):
        prob = exact_problem(world, s.utilities, np.array(s.thresholds), beta)
        opt = bounds.ExactOptimum.of(prob)
        cert = certify(prob, opt.solution.policy, opt.solution.lam)
        lam_train = solve_dual(exact_problem(world, s.utilities, np.array(s.thresholds), beta, train=True),
                               return_policy=False).lam
        optima[s.name] = (opt, lam_train)
        optimum_rows.append({
            "setting": s.name, **{f"b_{i + 1}": b for i, b in enumerate(s.thresholds)},
            **{f"lam_star_{i + 1}": v for i, v in enumerate(opt.solution.lam)},
            **{f"lam_star_train_{i + 1}": v for i, v in enumerate(lam_train)},
            "P_star": opt.P_star, "duality_gap": cert.duality_gap, "max_violation": cert.max_violation,
            "M": opt.M, "L_D": opt.L_D, "mu_D": opt.mu_D,
        })  # fmt: skip
        if s.utilities == (1, 2) and not (out / "instance.npz").exists():
            optimum_rows[-1]["instance_bytes"] = save_instance(prob, out / "instance.npz")
    pd.DataFrame(optimum_rows).to_csv(out / "optima.csv", index=False)
    return Lab(config, out, model, world, settings, optima, t_world)


def run(config: LabConfig, out: Path, *, model: torch.nn.Module | None = None, tokenizer: object | None = None,
        cache_dir: Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Run (or resume) the laboratory into ``out`` and return the per-run table (arguments: :func:`prepare`)."""
    start = time.perf_counter()
    lab = prepare(config, out, model=model, tokenizer=tokenizer, cache_dir=cache_dir, progress=progress)
    return train_runs(lab, progress=progress, start=start)


def train_runs(lab: Lab, *, progress: bool = True, start: float | None = None) -> pd.DataFrame:
    """Train and evaluate every (method, setting, seed) run not finished yet; write ``runs.csv``, ``world.json``."""
    from tqdm.auto import tqdm

    start = time.perf_counter() if start is None else start
    config, out, world, settings, optima = lab.config, lab.out, lab.world, lab.settings, lab.optima
    jobs = [(seed, s, arm) for seed in config.seeds for s in settings for arm in _arms(s)]
    jobs += [(seed, settings[0], arm) for seed in config.seeds for arm in (Arm.DPO_H, Arm.DPO_G)]
    rows = []
    for seed, s, arm in tqdm(jobs, desc="runs", disable=not progress):
        run_id = f"{arm.value}-{s.name}-seed{seed}"
        done = _load_done(out / "runs", run_id)
        if done is not None:
            rows.append(done)
            continue
        t0 = time.perf_counter()
        data = lab.training_data(s, seed)
        thresholds = np.array(s.thresholds)
        plug_lam = lab.plug_in_lam(s, seed)
        opt, lam_train = optima[s.name]
        lam0 = lam_train if arm is Arm.ONE_SHOT_EXACT else plug_lam
        policy = LastBlockPolicy(lab.model)
        result = train_method(policy, data, arm, lam0, thresholds, config.training, seed)
        ev = evaluate(opt, policy.distribution(world.trunk_eval), result.lam,
                      eta=config.training.dual_step_size if arm.is_caid else 0.0, second_moment=result.second_moment)
        row = {
            "run_id": run_id, "method": arm.value, "setting": s.name, "seed": seed,
            **{f"b_{i + 1}": b for i, b in enumerate(thresholds)},
            **{f"fraction_{i + 1}": f for i, f in enumerate(s.fractions)},
            **{f"plugin_lam_{i + 1}": v for i, v in enumerate(plug_lam)},
            **{f"lam_star_{i + 1}": v for i, v in enumerate(opt.solution.lam)},
            **ev.row, "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        atomic_savez(out / "runs" / f"{run_id}.npz", improvements=ev.improvements, reward=ev.reward, kl=ev.kl,
                     trajectory=result.trajectory)
        write_atomic(out / "runs" / f"{run_id}.json", json.dumps(row, default=float))
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "runs.csv", index=False)
    summary = {
        "scale": dict(zip(SCORE_NAMES, world.scale.tolist(), strict=True)),
        "rho_reward_g1": world.correlation(0, 1), "rho_reward_g2": world.correlation(0, 2),
        "rho_g1_g2": world.correlation(1, 2), "n_train": config.n_train, "n_eval": config.n_eval,
        "split_seed": config.split_seed,
        "vocab": world.vocab_size, "seconds_world": lab.seconds_world, "seconds_total": time.perf_counter() - start,
    }  # fmt: skip
    write_atomic(out / "world.json", json.dumps(summary, indent=1))
    return table
