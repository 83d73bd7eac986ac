"""peft: any tuner of peft's catalogue that fits the model families (PeftTunerConfig.TUNERS), through one generic
path: the study names the tuner and its peft config, the budget solver sets the tuner's size field, and peft's
get_peft_model applies it (apply_method returns that PeftModel)."""

from ..registry import register_method
from .config import PeftTunerConfig

register_method("peft", PeftTunerConfig, f"{__name__}.model")
