from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..adapter_options import ACTIVATION_NAMES, bottleneck_range
from ..registry import MethodConfig, MethodError, check_choice, check_float, check_int

GATES = ("soft_topk", "sigmoid")


@dataclass
class CodaConfig(MethodConfig):
    """CoDA conditional adapters (Lei et al. 2023). Each encoder layer gets a router (d -> 1 score per token) and
    a parallel adapter that reads the layer's input and adds to its output. Per sequence, only the
    k = ceil(k_ratio * real tokens) best-scored tokens go through the frozen layer (attending only to each
    other); the rest skip it. Padding is never routed. Decoder layers stay dense.

    A routed token's layer update is scaled by its gate, which is how the router is trained: `soft_topk` is the
    paper's entropy-regularised soft top-k (lambda_i = min(1, exp((s_i + a) / t)), sum of lambda = k, a solved
    exactly); with k equal to the number of real tokens every lambda is exactly 1, and the layer
    computes exactly frozen layer + parallel adapter. `sigmoid` uses lambda_i = sigmoid(s_i / t) instead.

    Per encoder layer: (d + 1) + (2*d*r + r + d) parameters; per decoder layer (decoder_adapters): 2*d*r + r + d.

    Args:
        k_ratio: fraction of each sequence's real tokens routed through the frozen layer, 0 < k_ratio <= 1.
        bottleneck: the size knob, r of the parallel adapters.
        gate: soft_topk (the paper's) or sigmoid.
        router_temperature: t above; lower is closer to a hard top-k.
        scaling: the adapter's output is multiplied by this.
        activation: the adapter's nonlinearity.
        decoder_adapters: seq2seq models also get a dense parallel adapter (no router) on each decoder layer.
    """

    method: ClassVar[str] = "coda"
    knob: ClassVar[str] = "bottleneck"

    k_ratio: float = field(default=0.25, metadata={"help": "fraction of real tokens routed, in (0, 1]"})
    bottleneck: int = field(default=64, metadata={"help": "bottleneck r of the parallel adapters (the knob)"})
    gate: str = field(default="soft_topk", metadata={"help": f"router gate, one of {list(GATES)}"})
    router_temperature: float = field(default=0.1, metadata={"help": "temperature t of the gate"})
    scaling: float = field(default=1.0, metadata={"help": "the adapter's output is multiplied by this"})
    activation: str = field(default="relu", metadata={"help": f"nonlinearity, one of {sorted(ACTIVATION_NAMES)}"})
    decoder_adapters: bool = field(default=True, metadata={"help": "dense parallel adapters on decoder layers"})

    def __post_init__(self) -> None:
        check_float(self, "k_ratio", maximum=1.0)
        if self.k_ratio <= 0:
            raise MethodError(f"coda: option 'k_ratio' must be in (0, 1], got {self.k_ratio!r}")
        check_int(self, "bottleneck")
        check_choice(self, "gate", GATES)
        check_float(self, "router_temperature")
        if self.router_temperature <= 0:
            raise MethodError(f"coda: option 'router_temperature' must be > 0, got {self.router_temperature!r}")
        check_float(self, "scaling")
        check_choice(self, "activation", ACTIVATION_NAMES)
        check_choice(self, "decoder_adapters", (True, False))

    def knob_range(self, model_config: Any) -> range:
        return bottleneck_range(model_config)
