from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..registry import MethodConfig, check_float, check_int, normalise_names


@dataclass
class LoraMethodConfig(MethodConfig):
    """LoRA (Hu et al. 2021) through peft.

    Args:
        rank: the size knob, r of the low-rank update B @ A added to each target matrix.
        alpha: the update is scaled by alpha / rank. Kept fixed across ranks, as the LoRA paper does, so
            that changing the rank needs no new learning rate.
        dropout: dropout on the LoRA branch's input.
        target_modules: module-name suffixes to adapt; None = the family's default (query and value).
    """

    method: ClassVar[str] = "lora"
    knob: ClassVar[str] = "rank"

    rank: int = field(default=8, metadata={"help": "LoRA rank r (the size knob)"})
    alpha: float = field(default=16.0, metadata={"help": "the update is scaled by alpha/rank"})
    dropout: float = field(default=0.0, metadata={"help": "dropout probability on the LoRA branch input"})
    target_modules: tuple[str, ...] | None = field(
        default=None, metadata={"help": "module-name suffixes to adapt; None: the family's query/value"}
    )

    def __post_init__(self) -> None:
        check_int(self, "rank")
        check_float(self, "alpha", minimum=0.0)
        check_float(self, "dropout", maximum=1.0)
        normalise_names(self, "target_modules")

    def knob_range(self, model_config: Any) -> range:
        return range(1, model_config.hidden_size + 1)  # beyond d the update is no longer low-rank
