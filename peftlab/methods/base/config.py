from dataclasses import dataclass
from typing import ClassVar

from ..registry import MethodConfig


@dataclass
class BaseMethodConfig(MethodConfig):
    """The un-adapted base model. No options, no size knob; classification models train only their head."""

    method: ClassVar[str] = "base"
