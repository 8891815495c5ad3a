"""The next-token laboratory's arms: methods of the registry :mod:`llm.methods` with the laboratory's variants.

Torch-free, so the figures can read the arms' styles cheaply.
"""

from __future__ import annotations

import enum

from llm.methods import Method, method

__all__ = ["Arm"]


class Arm(str, enum.Enum):
    """The laboratory's arms: a registry method (:attr:`method`) and, for one-shot and CAID, a variant."""

    ONE_SHOT_PLUGIN = "one_shot_plugin"
    ONE_SHOT_EXACT = "one_shot_exact"
    CAID_EXACT = "caid_exact"
    CAID_SAMPLED = "caid_sampled"
    DPO_H = "dpo_h"
    DPO_G = "dpo_g"

    @property
    def method(self) -> Method:
        """The registry's method (:mod:`llm.methods`): its reward weight, dual steps, label and colour."""
        return method(self.value.removesuffix("_plugin").removesuffix("_exact").removesuffix("_sampled"))

    @property
    def is_caid(self) -> bool:
        """Whether the arm takes dual steps."""
        return self.method.dual_steps

    @property
    def style(self) -> tuple[str, str, str]:
        """``(colour, marker, label)`` in figures: the registry method's colour, a marker and label per variant."""
        variant = {
            "one_shot_plugin": ("s", "one-shot, plug-in λ"), "one_shot_exact": ("D", "one-shot, exact λ*"),
            "caid_exact": ("o", "CAID, exact dual steps"), "caid_sampled": ("v", "CAID, sampled dual steps"),
            "dpo_h": ("^", "DPO_h (reward only)"), "dpo_g": ("P", "DPO_g (g₁ only)"),
        }[self.value]
        return (self.method.color, *variant)
