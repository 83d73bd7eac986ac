from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..registry import MethodConfig, check_int

MAX_VIRTUAL_TOKENS = 512


@dataclass
class PrefixConfig(MethodConfig):
    """Prefix tuning (Li & Liang 2021) through peft, without the reparametrising MLP.

    peft learns num_virtual_tokens x num_layers x 2 x d values (a key and a value per layer). On
    encoder-decoder models peft feeds them to the decoder only (the same prefix to self- and
    cross-attention); on encoders (BERT, XLM-R) to every layer.

    Args:
        num_virtual_tokens: the size knob, the prefix length.
    """

    method: ClassVar[str] = "prefix"
    knob: ClassVar[str] = "num_virtual_tokens"

    num_virtual_tokens: int = field(default=20, metadata={"help": "prefix length (the size knob)"})

    def __post_init__(self) -> None:
        check_int(self, "num_virtual_tokens")

    def knob_range(self, model_config: Any) -> range:
        return range(1, MAX_VIRTUAL_TOKENS + 1)
