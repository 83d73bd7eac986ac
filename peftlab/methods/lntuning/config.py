from dataclasses import dataclass
from typing import ClassVar

from ..registry import MethodConfig


@dataclass
class LNTuningConfig(MethodConfig):
    """LayerNorm tuning: train only the LayerNorm gains and biases (the BitFit variant of Ustun & Cooper
    Stickland 2022). No options, no size knob."""

    method: ClassVar[str] = "lntuning"
