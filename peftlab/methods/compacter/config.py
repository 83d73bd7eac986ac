from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..adapter_options import ACTIVATION_NAMES
from ..registry import MethodConfig, MethodError, check_choice, check_int


@dataclass
class CompacterConfig(MethodConfig):
    """Compacter (Mahabadi et al. 2021): Houlsby-placed adapters (two per layer) whose projections are
    PHM layers, W = sum_i A_i (x) (s_i t_i), with the n x n rule matrices A_i shared by every layer.

    The size knob is the bottleneck r, at fixed phm_dim n and phm_rank k: a multiple of n. Per adapter on
    a d-dim projection: 2*k*(d + r) + r + d parameters, plus n^3 for the shared rules (once per model).

    In eval mode this equals AdapterHub's `compacter` config (tests/test_adapterhub_reference.py); as with
    houlsby, the adapter sits before the sublayer's dropout (AdapterHub: after it).

    Args:
        bottleneck: the size knob, r (a multiple of phm_dim).
        phm_dim: n, the number of Kronecker summands; d must be divisible by it.
        phm_rank: k, the rank of each factorised s_i t_i (Compacter uses 1).
        activation: the adapter's nonlinearity.
    """

    method: ClassVar[str] = "compacter"
    knob: ClassVar[str] = "bottleneck"

    bottleneck: int = field(default=32, metadata={"help": "bottleneck r, a multiple of phm_dim (the knob)"})
    phm_dim: int = field(default=4, metadata={"help": "n: Kronecker summands / rule matrix size"})
    phm_rank: int = field(default=1, metadata={"help": "k: rank of the factorised PHM weights"})
    activation: str = field(default="gelu", metadata={"help": f"nonlinearity, one of {sorted(ACTIVATION_NAMES)}"})

    def __post_init__(self) -> None:
        check_int(self, "bottleneck")
        check_int(self, "phm_dim")
        check_int(self, "phm_rank")
        check_choice(self, "activation", ACTIVATION_NAMES)
        if self.bottleneck % self.phm_dim:
            raise MethodError(f"compacter: bottleneck {self.bottleneck} is not a multiple of phm_dim")

    def knob_range(self, model_config: Any) -> range:
        return range(self.phm_dim, model_config.hidden_size + 1, self.phm_dim)
