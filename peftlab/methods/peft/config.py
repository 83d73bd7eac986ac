from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from ..prefix.config import MAX_VIRTUAL_TOKENS
from ..registry import MethodConfig, MethodError, check_int


class Tuner(NamedTuple):
    """A peft tuner this path supports: the config field the budget solver sets, how far it may go, and its
    default (peft's own, so that an entry without a budget trains what peft's docs describe)."""

    knob: str  # the peft config field that sets the tuner's size
    span: str  # the knob's values: "rank" 1..d, "wide" 1..16d, "area" 1..d^2, "tokens" 1..512, "divisor" of d
    default: int
    prompt_learning: bool = False  # learns virtual tokens (peft's PeftModel prepends them), attaches to no module


# Why these knobs: each is the one field that the tuner's trainable count grows with (monotonically, which the
# solver's bracketing needs) while the others keep their meaning. Counts per adapted d_in x d_out matrix:
TUNERS: dict[str, Tuner] = {
    "LORA": Tuner("r", "rank", 8),  # r (d_in + d_out) (+ d_out with DoRA); also rsLoRA, PiSSA, OLoRA (config)
    "ADALORA": Tuner("init_r", "rank", 12),  # init_r (d_in + d_out + 1): AdaLoRA masks down to target_r, keeps them
    "LOHA": Tuner("r", "rank", 8),  # 2 r (d_in + d_out)
    "LOKR": Tuner("r", "rank", 8),  # the Kronecker factors' rank: grows with r (full factor beyond d / 2)
    # VeRA: r (shared frozen random projections' size) + d_out per matrix; the trainable part grows by one per
    # matrix per unit of r, so a budget needs r well beyond d (the VeRA paper uses r = 1024 on RoBERTa-base, d 768)
    "VERA": Tuner("r", "wide", 256),
    "FOURIERFT": Tuner("n_frequency", "area", 1000),  # n_frequency learned spectral coefficients, at most d_in d_out
    # OFT: d_in / b blocks of b (b - 1) / 2 (skew-symmetric): d_in (b - 1) / 2, growing with the block size b; the
    # other field, the number of blocks r = d_in / b, shrinks the count as it grows. b must divide d_in.
    "OFT": Tuner("oft_block_size", "divisor", 32),
    # BOFT: (butterfly factors + 1) x d_in / b blocks of b x b, + d_out scales; boft_block_num shrinks it instead
    "BOFT": Tuner("boft_block_size", "divisor", 4),
    "PROMPT_TUNING": Tuner("num_virtual_tokens", "tokens", 20, prompt_learning=True),  # tokens x d (x2 seq2seq)
    "P_TUNING": Tuner("num_virtual_tokens", "tokens", 20, prompt_learning=True),  # tokens x d (x2) + encoder MLP
}
# set by peftlab, not by a study: the task type follows the model, the task head is trained by every method
# (modules_to_save), the size is the solver's
RESERVED = ("peft_type", "task_type", "modules_to_save", "inference_mode", "base_model_name_or_path")


@dataclass
class PeftTunerConfig(MethodConfig):
    """A tuner of peft's catalogue, configured by the study (peft's config class, e.g. LoraConfig, takes
    `config` as keyword arguments) and sized by the budget solver through the tuner's knob (TUNERS).

    DoRA is LORA with config {use_dora: true}, rsLoRA {use_rslora: true}, PiSSA and OLoRA
    {init_lora_weights: pissa | olora} (computed from the model's weights when applied). Modules to adapt default
    to the family's LoRA targets (families.py), {target_modules: [...]} overrides them. The tuner name is checked
    when the study is planned; the config's fields and values by peft itself, when the budget is solved (planning,
    for models whose architecture is known then) and when the method is applied.

    Args:
        tuner: peft's PeftType name, one of TUNERS.
        config: keyword arguments of the tuner's peft config class, except its size knob and RESERVED.
        size: the size knob's value (the budget solver's choice); None: the tuner's default (TUNERS).
    """

    method: ClassVar[str] = "peft"
    knob: ClassVar[str] = "size"

    tuner: str = field(default="LORA", metadata={"help": f"peft's PeftType name, one of {sorted(TUNERS)}"})
    config: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "keyword arguments of the tuner's peft config class"}
    )
    size: int | None = field(default=None, metadata={"help": "the tuner's size knob (TUNERS); the budget's choice"})

    def __post_init__(self) -> None:
        if self.tuner not in TUNERS:
            raise MethodError(f"peft: unknown tuner {self.tuner!r}; supported: {sorted(TUNERS)}")
        if not isinstance(self.config, dict) or not all(isinstance(k, str) for k in self.config):
            raise MethodError(f"peft: option 'config' must be a mapping of peft config fields, got {self.config!r}")
        knob = TUNERS[self.tuner].knob
        for key in (knob, *RESERVED):
            if key in self.config:
                why = "the option 'size' (or the budget) sets it" if key == knob else "peftlab sets it"
                raise MethodError(f"peft: {self.tuner} config field {key!r} cannot be given in 'config': {why}")
        if self.tuner == "ADALORA" and self.config.get("orth_reg_weight", 0.5) != 0:  # 0.5: peft's default
            # peft adds AdaLoRA's orthogonality penalty to outputs.loss, which peftlab's loop does not use (it computes
            # its own token loss, for label smoothing and accumulation): say that it is off instead of recording 0.5
            raise MethodError("peft: ADALORA needs config {orth_reg_weight: 0}: peftlab's training loop computes its "
                              "own loss, without the orthogonality penalty peft adds to outputs.loss")
        self.config = dict(self.config)
        if self.size is None:  # resolved before it is recorded, so the saved config says what ran
            self.size = TUNERS[self.tuner].default
        check_int(self, "size")

    @property
    def spec(self) -> Tuner:
        return TUNERS[self.tuner]

    def peft_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for the tuner's peft config class: the study's config plus the size."""
        return self.config | {self.spec.knob: self.size}

    def derived(self) -> dict[str, Any]:
        return {"peft_field": self.spec.knob}

    def knob_range(self, model_config: Any) -> range | list[int]:
        d = model_config.hidden_size
        span = self.spec.span
        if span == "divisor":  # a block size must divide the adapted layers' input size (d for the default targets)
            return [b for b in range(2, d + 1) if d % b == 0]  # b = 1: OFT trains nothing
        return {"rank": range(1, d + 1), "wide": range(1, 16 * d + 1), "area": range(1, d * d + 1),
                "tokens": range(1, MAX_VIRTUAL_TOKENS + 1)}[span]
