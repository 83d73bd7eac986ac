import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..registry import MethodConfig, MethodError, check_choice, check_int, get_method, make_method_config

BASES = ("houlsby", "pfeiffer", "parallel", "lora")
SCORINGS = ("snip", "magnitude", "random", "synflow")
SCOPES = ("global", "layer")


@dataclass
class SparseConfig(MethodConfig):
    """SparseAdapter (He et al. 2022): a bottleneck adapter (or LoRA) whose weight matrices are pruned once, at
    initialisation, and keep that fixed sparsity pattern through training. Biases are not pruned (as in the
    paper's code, `prune_bias=False`).

    The size knob is `size`, the base method's own knob (bottleneck for houlsby/pfeiffer/parallel, rank for lora).
    Under a budget, the solver sizes
    - `large: true` (Large-Sparse, the default): a bottleneck about 1/(1 - sparsity) times the dense one, so that
      the weights left after pruning meet the budget, as every other method's trainable parameters do;
    - `large: false` (the paper's plain SparseAdapter): as the dense base method at that budget, then pruned,
      so the run trains about (1 - sparsity) of the budget, on purpose (its realised budget and rel_error say
      how much).

    Args:
        base: the adapter to prune: houlsby, pfeiffer, parallel or lora.
        sparsity: the fraction of the adapter's weight entries removed, 0 <= s < 1. (The paper's code calls the
            kept fraction `--sparsity`; here it is the removed fraction.)
        scoring: how weights are ranked at initialisation: snip (|w * dL/dw| on a batch), magnitude (|w|),
            random, or synflow (data-free synaptic flow through each adapter, one shot).
        scope: rank all adapter weights together (global, the paper's default) or each matrix on its own (layer).
        large: how a budget sizes the adapter (see above); with `size` given it changes nothing.
        size: the base method's knob; None takes the base method's default.
        base_options: the base method's other options, e.g. {"activation": "relu"} or {"alpha": 16}.
    """

    method: ClassVar[str] = "sparse"
    knob: ClassVar[str] = "size"

    base: str = field(default="pfeiffer", metadata={"help": f"the adapter to prune, one of {list(BASES)}"})
    sparsity: float = field(default=0.5, metadata={"help": "fraction of adapter weights removed, 0 <= s < 1"})
    scoring: str = field(default="snip", metadata={"help": f"pruning score, one of {list(SCORINGS)}"})
    scope: str = field(default="global", metadata={"help": f"ranking scope, one of {list(SCOPES)}"})
    large: bool = field(default=True, metadata={"help": "true: the budget counts the pruned adapter (Large-Sparse); "
                                                        "false: sized as the dense adapter, then pruned"})
    size: int | None = field(default=None, metadata={"help": "the base method's knob (bottleneck or rank)"})
    base_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "the base method's options"})

    def __post_init__(self) -> None:
        check_choice(self, "base", BASES)
        check_choice(self, "scoring", SCORINGS)
        check_choice(self, "scope", SCOPES)
        check_choice(self, "large", (True, False))
        s = self.sparsity
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise MethodError(f"sparse: option 'sparsity' (the fraction removed) must be in [0, 1), got {s!r}")
        if self.size is not None:
            check_int(self, "size")
        if not isinstance(self.base_options, dict):
            raise MethodError(f"sparse: option 'base_options' must be a mapping, got {self.base_options!r}")
        knob = get_method(self.base).knob
        if knob in self.base_options:
            raise MethodError(f"sparse: set the {self.base} knob {knob!r} with the option 'size', not in base_options")
        self.base_config()  # the base method validates its own options

    def base_config(self) -> MethodConfig:
        """The dense base method's config: the adapter before pruning."""
        options = dict(self.base_options)
        if self.size is not None:
            options[get_method(self.base).knob] = self.size
        return make_method_config(self.base, options)

    def builds_on(self) -> tuple[str, ...]:
        return (self.base,)

    def sizing_config(self) -> MethodConfig:
        """What solve_budget matches against the budget: the dense adapter, or (Large-Sparse) the pruned one."""
        return self if self.large else self.base_config()

    def knob_range(self, model_config: Any) -> range:
        knobs = self.base_config().knob_range(model_config)
        if not self.large:
            return knobs
        # Large-Sparse keeps the budget with a bottleneck up to 1/(1 - s) times the dense range's largest
        stop = math.ceil((knobs[-1] + 1) / (1 - self.sparsity))
        return range(knobs.start, stop, knobs.step)
