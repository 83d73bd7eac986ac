from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..adapter_options import ACTIVATION_NAMES, bottleneck_range
from ..registry import MethodConfig, check_choice, check_int


@dataclass
class PfeifferConfig(MethodConfig):
    """Pfeiffer et al. 2021 adapters: one bottleneck adapter per layer, after the FFN output projection.

    Args:
        bottleneck: the size knob, r; each adapter has 2*d*r + r + d parameters.
        activation: the adapter's nonlinearity (AdapterHub's Pfeiffer config uses relu).
    """

    method: ClassVar[str] = "pfeiffer"
    knob: ClassVar[str] = "bottleneck"

    bottleneck: int = field(default=64, metadata={"help": "bottleneck size r (the size knob)"})
    activation: str = field(default="relu", metadata={"help": f"nonlinearity, one of {sorted(ACTIVATION_NAMES)}"})

    def __post_init__(self) -> None:
        check_int(self, "bottleneck")
        check_choice(self, "activation", ACTIVATION_NAMES)

    def knob_range(self, model_config: Any) -> range:
        return bottleneck_range(model_config)
