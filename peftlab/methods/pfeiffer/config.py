from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..adapter_options import ACTIVATION_NAMES, bottleneck_range
from ..registry import MethodConfig, check_choice, check_int


@dataclass
class PfeifferConfig(MethodConfig):
    """Pfeiffer et al. 2021 adapters as AdapterHub's `seq_bn` places them: one bottleneck adapter per layer, on
    the FFN sublayer's output after its residual. With s = x + FFN(x):
    post-LN (BERT, XLM-R, Marian) out = LN(s + adapter(LN(s))), the model's own LayerNorm applied twice;
    pre-LN (mBART, M2M100, T5) out = s + adapter(s). Matches AdapterHub 1.3 to 1e-6 on every hidden state
    (tests/test_adapterhub_reference.py), dropout included: the FFN's dropout acts before s, the adapter has none.

    Args:
        bottleneck: the size knob, r; each adapter has 2*d*r + r + d parameters.
        activation: the adapter's nonlinearity (relu, as AdapterHub's seq_bn).
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
