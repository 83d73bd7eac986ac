"""lora: LoRA through peft's inject_adapter_in_model, which keeps the transformers model itself
(generate works, state-dict keys are the model's own plus `.lora_A.default.weight`)."""

from ..registry import register_method
from .config import LoraMethodConfig

register_method("lora", LoraMethodConfig, f"{__name__}.model", mergeable=True)
