"""The laboratory's claims table, computed from its saved runs (:mod:`analysis.claims`, :mod:`analysis.decisions`).

Errors are per held-out prompt and exact: e(x) = E_pi g(x) - E_ref g(x) - b, in sigma units; the mean over
prompts is the constraint slack. Arrays are (seeds x prompts), so intervals cover the DPO randomness too; the
prompts' frame (``world.FRAMES``) is their cluster when ``world.json`` records the split seed.

The Fig. 1 / Fig. 2 claims are the multi-token study's, built by the same code with the laboratory's methods:
CAID with exact and with sampled dual steps, one-shot at the plug-in and at the exact lambda*, and the negative
controls pi_ref (its exact improvement is 0 on every prompt; its own runs are used where the laboratory has them)
and DPO_h (reward only). Two further rows are exact (no sampling, so no size): D(lambda) - L(pi, lambda) >= 0 for
every run (weak duality), and measured U-OPT / R-OPT within their Theorem 6 bounds where the bound's hypotheses
allow evaluating it ("not testable" where they never do). ``violations.csv`` gives, per method and constraint, the
share of held-out prompts whose own improvement misses b and the 10% / 90% quantiles.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.claims import (
    CONTROLS,
    ArmData,
    ClaimRow,
    claims_table,
    single_constraint_rows,
    two_constraint_rows,
    violation_rows,
)
from analysis.decisions import Exact, NotTestable
from analysis.next_token.world import FRAMES, make_split
from llm.run_files import write_atomic

__all__ = ["CAID", "ONE_SHOT", "load_arms", "load_errors", "verdicts", "write_verdicts"]

CAID = ("caid_exact", "caid_sampled")
ONE_SHOT = ("one_shot_plugin", "one_shot_exact")
VIOLATIONS_FILE = "violations.csv"


def _arrays(out: Path, table: pd.DataFrame, method: str, setting: str) -> tuple[pd.DataFrame, list[dict]]:
    rows = table[(table["method"] == method) & (table["setting"] == setting)].sort_values("seed")
    arrays = []
    for _, row in rows.iterrows():
        path = Path(out) / "runs" / f"{row['run_id']}.npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays.append({"improvements": np.asarray(data["improvements"], float),
                               "reward": np.asarray(data["reward"], float)})  # fmt: skip
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable run arrays ({exc}); delete it and rerun the laboratory") from exc
    return rows, arrays


def load_errors(out: Path, table: pd.DataFrame, method: str, setting: str, quantity: str = "error",
                constraint: int = 1) -> np.ndarray:
    """``(seeds, prompts)`` per-prompt errors e_i(x) (``"error"``), improvements, or reward improvements.

    Raises:
        ValueError: A run's arrays are missing or malformed (the message names the file).
    """
    rows, arrays = _arrays(out, table, method, setting)
    out_rows = []
    for (_, row), data in zip(rows.iterrows(), arrays, strict=True):
        if quantity == "reward":
            out_rows.append(data["reward"])
            continue
        values = data["improvements"][constraint - 1]
        out_rows.append(values - (row[f"b_{constraint}"] if quantity == "error" else 0.0))
    return np.array(out_rows)


def _arm(out: Path, table: pd.DataFrame, method: str, setting: str) -> ArmData:
    rows, arrays = _arrays(out, table, method, setting)
    if not arrays:
        raise ValueError(f"{out}/runs.csv: no {method} run at {setting}; rerun the laboratory")
    m = arrays[0]["improvements"].shape[0]
    thresholds = rows[[f"b_{i + 1}" for i in range(m)]].to_numpy(dtype=float)
    improvements = np.stack([a["improvements"] for a in arrays], axis=1)
    return ArmData(thresholds, improvements, np.stack([a["reward"] for a in arrays]))


def _clusters(out: Path, n_prompts: int) -> np.ndarray | None:
    """The frame of each held-out prompt, when ``world.json`` records the split (else None: each prompt alone)."""
    path = Path(out) / "world.json"
    try:
        world = json.loads(path.read_text())
        _, held_out = make_split(int(world["n_train"]), int(world["n_eval"]), int(world["split_seed"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    stems = [f.split("{s}")[0] for f in FRAMES]
    labels = np.array([next(i for i, stem in enumerate(stems) if p.startswith(stem)) for p in held_out])
    return labels if len(labels) == n_prompts else None


def load_arms(out: Path) -> tuple[dict[tuple[str, float], ArmData], list[float], list[str], np.ndarray | None]:
    """``((method, fraction) -> ArmData, fractions, two-constraint settings, clusters)`` from ``out/runs.csv``."""
    out = Path(out)
    table = pd.read_csv(out / "runs.csv")
    single = sorted(table.loc[table["setting"].str.count("@") == 1, "setting"].unique(),
                    key=lambda s: float(s.split("@")[1]))
    fractions = [float(s.split("@")[1]) for s in single]
    arms = {(m, f): _arm(out, table, m, s) for s, f in zip(single, fractions, strict=True) for m in (*CAID, *ONE_SHOT)}
    first = arms[CAID[0], fractions[0]]
    for control in CONTROLS:
        runs = table[table["method"] == control]
        if len(runs):
            base = _arm(out, table, control, str(runs["setting"].iloc[0]))
        elif control == "reference":  # pi_ref's exact improvement is 0 on every prompt
            base = ArmData(first.thresholds, np.zeros_like(first.improvements), np.zeros_like(first.reward))
        else:
            continue
        for f in fractions:
            arms[control, f] = base.at(arms[CAID[0], f].thresholds)
    double = sorted(table.loc[table["setting"].str.count("@") == 2, "setting"].unique())
    for s in double:
        arms[CAID[0], s] = _arm(out, table, CAID[0], s)
    return arms, fractions, double, _clusters(out, first.improvements.shape[2])


def _rows(out: Path) -> tuple[list[ClaimRow], dict[tuple[str, str], ArmData]]:
    arms, fractions, double, clusters = load_arms(out)
    controls = tuple(c for c in CONTROLS if (c, fractions[0]) in arms)
    names = {f: f"g1@{f:g}" for f in fractions}
    rows = single_constraint_rows(arms, fractions, clusters, caid=CAID, one_shot=ONE_SHOT, controls=controls,
                                  setting=names)  # fmt: skip
    for s in double:
        rows += two_constraint_rows(arms[CAID[0], s], s, CAID[0], clusters)
    table = pd.read_csv(Path(out) / "runs.csv")
    gap = table["dual_minus_lagrangian"].dropna()
    rows.append(ClaimRow("D(lambda) - L(pi, lambda) >= 0", "all", "all", Exact(
        "exact minimum over runs", float(gap.min()), float(gap.min()), float(gap.max()), bool(gap.min() >= -1e-9),
        "a run's Lagrangian exceeds the dual function (weak duality violated)")))  # fmt: skip
    with_lambda = table[table["lam_1"].notna()]
    a4_fails = int(with_lambda["hypotheses"].str.contains("A4 fails").sum())
    for name in ("u_opt", "r_opt"):
        claim = f"{name.upper().replace('_', '-')} within its Theorem 6 bound"
        bounded = with_lambda[np.isfinite(with_lambda[f"{name}_bound"].astype(float))]
        where = f"{len(bounded)} of {len(with_lambda)} runs bounded (Assumption 4 fails in {a4_fails})"
        if bounded.empty:
            rows.append(ClaimRow(claim, "all", where, NotTestable(
                "measured / bound", f"the bound's hypotheses fail in every run (Assumption 4 fails in {a4_fails} of "
                f"{len(with_lambda)}; nu is measured at each run's lambda, an Assumption 3 proxy)")))  # fmt: skip
            continue
        ratio = bounded[name] / bounded[f"{name}_bound"]
        rows.append(ClaimRow(claim, "all", where, Exact(
            "measured / bound", float(ratio.max()), float(ratio.min()), float(ratio.max()), bool((ratio <= 1).all()),
            "a measured gap exceeds its bound")))  # fmt: skip
    by_setting = {(m, names.get(f, f)): a for (m, f), a in arms.items()}
    return rows, by_setting


def verdicts(out: Path) -> pd.DataFrame:
    """All claims as a table (one row per claim), with size, power and coverage."""
    rows, _ = _rows(Path(out))
    return claims_table(rows)


def write_verdicts(out: Path) -> pd.DataFrame:
    """Compute the claims table and write ``verdicts.csv`` and ``violations.csv`` into ``out``."""
    out = Path(out)
    rows, arms = _rows(out)
    write_atomic(out / VIOLATIONS_FILE, violation_rows(arms).to_csv(index=False))
    frame = claims_table(rows)
    write_atomic(out / "verdicts.csv", frame.to_csv(index=False))
    return frame
