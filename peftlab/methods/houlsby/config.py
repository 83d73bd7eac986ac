from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..adapter_options import ACTIVATION_NAMES, bottleneck_range
from ..registry import MethodConfig, check_choice, check_int


@dataclass
class HoulsbyConfig(MethodConfig):
    """Houlsby et al. 2019 bottleneck adapters: two per layer, after the attention output projection and
    after the FFN output projection (then the model's own dropout, residual and LayerNorm follow).

    In eval mode this equals AdapterHub's `double_seq_bn` (tests/test_adapterhub_reference.py). Deliberate
    deviations: the adapter sits before the sublayer's dropout (AdapterHub: after it), so in training the
    dropout also drops the adapter's delta; the default activation is gelu (AdapterHub's: swish).

    Args:
        bottleneck: the size knob, r; each adapter on a d-dim projection has 2*d*r + r + d parameters.
        activation: the adapter's nonlinearity.
        cross_attention: also adapt the decoder's cross-attention output (encoder-decoder models only).
    """

    method: ClassVar[str] = "houlsby"
    knob: ClassVar[str] = "bottleneck"

    bottleneck: int = field(default=64, metadata={"help": "bottleneck size r (the size knob)"})
    activation: str = field(default="gelu", metadata={"help": f"nonlinearity, one of {sorted(ACTIVATION_NAMES)}"})
    cross_attention: bool = field(
        default=False, metadata={"help": "add a third adapter on the decoder's cross-attention output"}
    )

    def __post_init__(self) -> None:
        check_int(self, "bottleneck")
        check_choice(self, "activation", ACTIVATION_NAMES)
        check_choice(self, "cross_attention", (True, False))

    def knob_range(self, model_config: Any) -> range:
        return bottleneck_range(model_config)
