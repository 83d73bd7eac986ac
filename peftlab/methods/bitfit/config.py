from dataclasses import dataclass
from typing import ClassVar

from ..registry import MethodConfig


@dataclass
class BitFitConfig(MethodConfig):
    """BitFit (Ben Zaken et al. 2022): train every bias term of the backbone. No options, no size knob."""

    method: ClassVar[str] = "bitfit"
