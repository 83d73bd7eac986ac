from dataclasses import dataclass, field
from typing import ClassVar

from ..registry import MethodConfig, MethodError, normalise_names


@dataclass
class IA3MethodConfig(MethodConfig):
    """(IA)^3 (Liu et al. 2022) through peft: learned vectors rescale the keys, the values and the FFN's
    inner activation. Initialised to ones, so step 0 equals the base model. No size knob.

    Args:
        target_modules: module-name suffixes to rescale; None = the family's keys, values and FFN output.
        feedforward_modules: the subset of target_modules whose input (not output) is rescaled; give both
            or neither.
    """

    method: ClassVar[str] = "ia3"

    target_modules: tuple[str, ...] | None = field(
        default=None, metadata={"help": "module-name suffixes to rescale; None: keys, values, FFN output"}
    )
    feedforward_modules: tuple[str, ...] | None = field(
        default=None, metadata={"help": "targets whose input is rescaled (the FFN's second projection)"}
    )

    def __post_init__(self) -> None:
        normalise_names(self, "target_modules")
        normalise_names(self, "feedforward_modules")
        if (self.target_modules is None) != (self.feedforward_modules is None):
            raise MethodError("ia3: give both target_modules and feedforward_modules, or neither")
        if self.target_modules is not None and not set(self.feedforward_modules) <= set(self.target_modules):
            raise MethodError("ia3: feedforward_modules must be a subset of target_modules")
