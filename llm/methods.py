"""The methods a run can use, defined once: the pipeline, the sweep, the CLI and the figures read this registry.

Methods (arXiv 2505.19387: Algorithms 1-3 and the baselines of the single-constraint experiment, Fig. 1):

* ``caid`` (MoCAID, the paper's multi-shot): lambda starts at the one-shot solution; every iteration after
  the first takes an on-policy dual step (Algorithm 2, eq. (6));
* ``one_shot`` (MoCAN): lambda fixed at the one-shot solution of the plug-in dual problem (4);
* ``pecaid`` (Algorithm 3): as ``caid``, on the implicit rewards of pre-aligned models;
* ``dpo_h`` / ``dpo_g``: the single-objective DPO baselines of Fig. 1 (the paper's DPO_h and DPO_s),
  pseudo-labels from the reward alone / the first utility alone; their labels ignore lambda;
* ``reference``: pi_ref itself, not trained, evaluated through the same pipeline as a negative control.

Torch-free (numpy only), so the CLI's ``--help`` and the figures can read it cheaply.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import numpy as np

__all__ = [
    "COMPARED",
    "CONSTRAINED_METHODS",
    "CONTROLS",
    "DPO_BASELINES",
    "METHODS",
    "REGISTRY",
    "RENAMED",
    "SWEEP_DEFAULT_METHODS",
    "InitialLambda",
    "Method",
    "MethodKey",
    "method",
]

MethodKey = Literal["caid", "one_shot", "dpo_h", "dpo_g", "pecaid", "reference"]
InitialLambda = Literal["one_shot", "zero", "first_utility"]


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the paper's comparison.

    Attributes:
        key: Its name in configurations, run directories and tables (``caid``).
        paper_name: Its name in the paper (``MoCAID``).
        label: Its legend label in figures.
        color: Its matplotlib colour in figures.
        marker: Its matplotlib marker in figures.
        reward_weight: Weight of the reward r in the pseudo-labels' composite ``w r + lambda^T g``.
        initial_lambda: Where lambda starts: the one-shot plug-in dual solution, zero, or the first unit vector.
        dual_steps: Whether it takes on-policy dual steps (Algorithm 1) after the first iteration.
        baseline: Whether it is a single-objective DPO baseline (its labels ignore lambda and the thresholds).
        pre_aligned: Whether it replaces the scores by implicit rewards of pre-aligned models (Algorithm 3).
        trains: Whether it trains at all (``reference``: pi_ref is evaluated as it is).
    """

    key: MethodKey
    paper_name: str
    label: str
    color: str
    marker: str
    reward_weight: float
    initial_lambda: InitialLambda
    dual_steps: bool
    baseline: bool
    pre_aligned: bool = False
    trains: bool = True

    def initial_multipliers(self, one_shot: np.ndarray) -> np.ndarray:
        """Multipliers at the first iteration, given the one-shot solution ``one_shot`` (m,)."""
        one_shot = np.asarray(one_shot, float)
        if self.initial_lambda == "one_shot":
            return one_shot
        if self.initial_lambda == "zero":
            return np.zeros_like(one_shot)
        return np.eye(len(one_shot))[0]


REGISTRY: dict[str, Method] = {
    m.key: m
    for m in (
        Method("caid", "MoCAID", "multi-shot (CAID)", "tab:red", "o", 1.0, "one_shot", dual_steps=True, baseline=False),
        Method("one_shot", "MoCAN", "one-shot", "tab:blue", "s", 1.0, "one_shot", dual_steps=False, baseline=False),
        Method(
            "dpo_h", "DPO_h", r"DPO$_h$ (reward only)", "tab:green", "^", 1.0, "zero",
            dual_steps=False, baseline=True,
        ),
        Method(
            "dpo_g", "DPO_s", r"DPO$_g$ (utility only)", "tab:purple", "v", 0.0, "first_utility",
            dual_steps=False, baseline=True,
        ),
        Method(
            "pecaid", "PeCAID", "PeCAID", "tab:orange", "D", 1.0, "one_shot", dual_steps=True, baseline=False,
            pre_aligned=True,
        ),
        Method(
            "reference", "pi_ref", r"$\pi_{\mathrm{ref}}$ (no training)", "tab:gray", "x", 0.0, "zero",
            dual_steps=False, baseline=True, trains=False,
        ),
    )
}
if tuple(REGISTRY) != typing.get_args(MethodKey):  # pragma: no cover - a registry edit without the Literal
    raise AssertionError("llm.methods: REGISTRY and MethodKey disagree")

METHODS: tuple[str, ...] = tuple(REGISTRY)
DPO_BASELINES: tuple[str, ...] = tuple(k for k, m in REGISTRY.items() if m.baseline and m.trains)
"""Single-objective DPO baselines: the thresholds change nothing but the verdict."""
CONTROLS: tuple[str, ...] = tuple(k for k, m in REGISTRY.items() if m.baseline)
"""Negative controls of a constrained claim: the DPO baselines and pi_ref; none of them targets b."""
CONSTRAINED_METHODS: tuple[str, ...] = tuple(k for k, m in REGISTRY.items() if not m.baseline)
RENAMED = {"dpo_reward": "dpo_h", "dpo_utility": "dpo_g"}
"""Method names of earlier versions and their names now."""
COMPARED: tuple[str, ...] = tuple(k for k, m in REGISTRY.items() if not m.baseline and not m.pre_aligned)
"""The paper's comparison along the thresholds (Fig. 1, Fig. 2): multi-shot CAID and one-shot, on the scores."""
SWEEP_DEFAULT_METHODS: tuple[str, ...] = (*COMPARED, *DPO_BASELINES)
"""What ``python -m llm sweep`` runs when ``--methods`` is not given (the comparison of Fig. 1)."""


def method(key: str) -> Method:
    """The registered method ``key``.

    Raises:
        ValueError: If ``key`` is not registered (the message lists the methods).
    """
    try:
        return REGISTRY[key]
    except KeyError:
        renamed = f" ({key!r} is now called {RENAMED[key]!r})" if key in RENAMED else ""
        raise ValueError(f"method: use one of {', '.join(METHODS)}, got {key!r}{renamed}") from None
