from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..adapter_options import ACTIVATION_NAMES, bottleneck_range
from ..registry import MethodConfig, check_choice, check_float, check_int


@dataclass
class ParallelConfig(MethodConfig):
    """Parallel adapters (He et al. 2021, "scaled PA"): a bottleneck adapter reads the FFN sublayer's input x
    (the residual stream: before the FFN's LayerNorm in pre-LN models) and its output, times `scaling`, is
    added to the FFN's output. One per layer.

    In eval mode this equals AdapterHub's `par_bn` (scaling 4, relu; tests/test_adapterhub_reference.py).
    Deliberate deviation: the delta is added before the FFN's dropout (AdapterHub: after it), so in training
    the dropout also drops the adapter's delta.

    Args:
        bottleneck: the size knob, r; each adapter has 2*d*r + r + d parameters.
        scaling: s in FFN(x) + s * adapter(x); He et al. use 4.
        activation: the adapter's nonlinearity.
    """

    method: ClassVar[str] = "parallel"
    knob: ClassVar[str] = "bottleneck"

    bottleneck: int = field(default=64, metadata={"help": "bottleneck size r (the size knob)"})
    scaling: float = field(default=4.0, metadata={"help": "s: the adapter's output is multiplied by s"})
    activation: str = field(default="relu", metadata={"help": f"nonlinearity, one of {sorted(ACTIVATION_NAMES)}"})

    def __post_init__(self) -> None:
        check_int(self, "bottleneck")
        check_float(self, "scaling")
        check_choice(self, "activation", ACTIVATION_NAMES)

    def knob_range(self, model_config: Any) -> range:
        return bottleneck_range(model_config)
