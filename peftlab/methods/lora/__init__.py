"""lora: LoRA through peft's inject_adapter_in_model, which keeps the transformers model itself
(generate works, state-dict keys are the model's own plus `.lora_A.default.weight`)."""

from ..registry import register_method
from .config import LoraMethodConfig
from .model import inject

register_method("lora", LoraMethodConfig, inject, mergeable=True)
