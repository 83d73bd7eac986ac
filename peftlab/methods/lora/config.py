import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..registry import MethodConfig, check_choice, check_float, check_int, normalise_names

SCALINGS = ("rslora", "fixed_alpha", "alpha_per_rank")
# alpha when none is given: the LoRA paper's 16 for rslora and fixed_alpha; for alpha_per_rank, 2, the common
# "lora_alpha = 2 * rank" rule (16 there would scale every update by 16)
DEFAULT_ALPHA = {"rslora": 16.0, "fixed_alpha": 16.0, "alpha_per_rank": 2.0}


@dataclass
class LoraMethodConfig(MethodConfig):
    """LoRA (Hu et al. 2021) through peft: W x + scale * B A x, with B A of rank r.

    How the update's scale depends on the rank is the `scaling` option, because a budget sweep changes the
    rank (1 to several hundred) and with it, unless scaled right, the effective learning rate:
    - `rslora` (the default): scale = alpha / sqrt(r), rank-stabilised LoRA (Kalajdzievski 2023, peft's
      `use_rslora`). The default because it is the choice that keeps a budget sweep a sweep over budget
      only: that paper shows scale must be Theta(1/sqrt(r)) for the update's activations and gradients to
      stay the same size as r grows; with alpha / r (below) they shrink as 1/sqrt(r), so large ranks learn
      slower at one learning rate (over ranks 1..300 the scale spans 16..0.05), and a constant scale makes
      them grow as sqrt(r). At r = 1 all three agree when alpha does.
    - `fixed_alpha`: scale = alpha / r, the LoRA paper's (and peft's default) convention, alpha fixed across
      ranks; kept to reproduce papers that use it.
    - `alpha_per_rank`: alpha grows with the rank, peft's lora_alpha = alpha * r, so scale = alpha at every
      rank (the "alpha = 2r" practice; alpha defaults to 2 here).

    Args:
        rank: the size knob, r of the low-rank update B @ A added to each target matrix.
        alpha: the scale's numerator (see `scaling`); None takes 16 (rslora, fixed_alpha) or 2 (alpha_per_rank).
        scaling: rslora, fixed_alpha or alpha_per_rank (see above).
        dropout: dropout on the LoRA branch's input.
        target_modules: module-name suffixes to adapt; None = the family's default (query and value).
    """

    method: ClassVar[str] = "lora"
    knob: ClassVar[str] = "rank"

    rank: int = field(default=8, metadata={"help": "LoRA rank r (the size knob)"})
    alpha: float | None = field(
        default=None, metadata={"help": "scale numerator; None: 16 (rslora, fixed_alpha) or 2 (alpha_per_rank)"}
    )
    scaling: str = field(
        default="rslora", metadata={"help": f"how the scale depends on the rank, one of {list(SCALINGS)}"}
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout probability on the LoRA branch input"})
    target_modules: tuple[str, ...] | None = field(
        default=None, metadata={"help": "module-name suffixes to adapt; None: the family's query/value"}
    )

    def __post_init__(self) -> None:
        check_int(self, "rank")
        check_choice(self, "scaling", SCALINGS)
        if self.alpha is None:  # resolved before it is recorded, so the saved config says what ran
            self.alpha = DEFAULT_ALPHA[self.scaling]
        check_float(self, "alpha", minimum=0.0)
        check_float(self, "dropout", maximum=1.0)
        normalise_names(self, "target_modules")

    @property
    def lora_alpha(self) -> float:
        """peft's lora_alpha for this config."""
        return self.alpha * self.rank if self.scaling == "alpha_per_rank" else self.alpha

    @property
    def scale(self) -> float:
        """The factor on B A x (peft's LoraLayer.scaling)."""
        return self.lora_alpha / (math.sqrt(self.rank) if self.scaling == "rslora" else self.rank)

    def derived(self) -> dict[str, Any]:
        return {"scale": self.scale, "lora_alpha": self.lora_alpha}

    def knob_range(self, model_config: Any) -> range:
        return range(1, model_config.hidden_size + 1)  # beyond d the update is no longer low-rank
