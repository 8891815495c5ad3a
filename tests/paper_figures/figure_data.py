"""Independent readings of the synthetic results, and the data a drawn matplotlib Figure holds.

The expected values are recomputed here from the fixture's CSV files with the csv module, numpy and scipy
(never through ``analysis``), so that a figure test compares what is plotted with what the files say.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from scipy import stats


def eval_columns(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{model: {column: (n_prompts, samples) array}}`` of a run's ``eval_scores.csv``."""
    with open(run_dir / "eval_scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out: dict[str, dict[str, np.ndarray]] = {}
    for model in ("policy", "reference"):
        mine = [r for r in rows if r["model"] == model]
        mine.sort(key=lambda r: (int(r["prompt_index"]), int(r["sample"])))
        n_prompts = len({r["prompt_index"] for r in mine})
        columns = [c for c in mine[0] if c not in ("model", "prompt_index", "sample", "response")]
        out[model] = {c: np.array([float(r[c]) for r in mine]).reshape(n_prompts, -1) for c in columns}
    return out


def paired_t(run_dir: Path, scorer: str) -> tuple[float, float, float]:
    """``(mean, low, high)``: the 95% Student-t interval of the per-prompt paired improvement of ``scorer``."""
    data = eval_columns(run_dir)
    diff = data["policy"][scorer].mean(axis=1) - data["reference"][scorer].mean(axis=1)
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    return float(diff.mean()), float(diff.mean() - half), float(diff.mean() + half)


def lagrangian_gap(run_dir: Path) -> tuple[float, float, float]:
    """``(dual_value, lagrangian, gap)`` means over prompts at the run's last multiplier, from the raw files.

    ``D_x = beta log mean_k exp(s_ref / beta)`` over pi_ref's samples and ``L_x = mean_j (s_pi - beta log
    ratio)`` over the policy's, with ``s = r + lambda^T g`` and the shared offset ``lambda^T (mean g_ref + b)``.
    """
    summary = json.loads((run_dir / "summary.json").read_text())
    beta = json.loads((run_dir / "config.json").read_text())["config"]["caid"]["beta"]
    lam, b = np.array(summary["lambda_last"]), np.array(summary["thresholds"])
    data = eval_columns(run_dir)
    scorers = [c for c in data["policy"] if c != "log_ratio"]
    weights = np.concatenate([[1.0], lam])
    s_ref = sum(w * data["reference"][c] for w, c in zip(weights, scorers, strict=True))
    s_pi = sum(w * data["policy"][c] for w, c in zip(weights, scorers, strict=True))
    offset = sum(lam[i] * (data["reference"][c].mean(axis=1) + b[i]) for i, c in enumerate(scorers[1:]))
    top = (s_ref / beta).max(axis=1, keepdims=True)
    dual = beta * (top[:, 0] + np.log(np.exp(s_ref / beta - top).mean(axis=1))) - offset
    lagrangian = (s_pi - beta * data["policy"]["log_ratio"]).mean(axis=1) - offset
    return float(dual.mean()), float(lagrangian.mean()), float((dual - lagrangian).mean())


def errorbars(ax: Axes) -> dict[str, list[dict[str, np.ndarray]]]:
    """Label -> the errorbar series drawn on ``ax`` under it: their x, y and error-bar ends (NaN where none).

    ``y_low``/``y_high`` (and ``x_low``/``x_high``) are read from the drawn bar segments, not from the data.
    """
    found: dict[str, list[dict[str, np.ndarray]]] = {}
    for container in ax.containers:
        if not isinstance(container, ErrorbarContainer):
            continue
        line, _, bars = container.lines
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        series = {"x": x, "y": y}
        for collection in bars:
            segments = np.array(collection.get_segments())  # (n, 2, 2): two ends of each bar
            vertical = np.allclose(segments[:, 0, 0], segments[:, 1, 0])
            ends = np.sort(segments[:, :, 1 if vertical else 0], axis=1)
            axis = "y" if vertical else "x"
            series[f"{axis}_low"], series[f"{axis}_high"] = ends[:, 0], ends[:, 1]
        found.setdefault(container.get_label(), []).append(series)
    return found
