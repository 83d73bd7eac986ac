from dataclasses import dataclass
from typing import ClassVar

from ..registry import MethodConfig


@dataclass
class BaseMethodConfig(MethodConfig):
    """The un-adapted base model. No options, no size knob; classification models train only their head."""

    method: ClassVar[str] = "base"
    needs_family: ClassVar[bool] = False  # trains nothing (base) or everything (full): no attach points
