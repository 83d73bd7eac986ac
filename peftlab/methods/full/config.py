from dataclasses import dataclass
from typing import ClassVar

from ..registry import MethodConfig


@dataclass
class FullConfig(MethodConfig):
    """Full fine-tuning. No options, no size knob."""

    method: ClassVar[str] = "full"
    needs_family: ClassVar[bool] = False  # trains nothing (base) or everything (full): no attach points
