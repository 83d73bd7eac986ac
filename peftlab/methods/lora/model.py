from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from ..families import family_of
from ..registry import MethodError
from .config import LoraMethodConfig


def inject(model: nn.Module, cfg: LoraMethodConfig) -> nn.Module:
    targets = list(cfg.target_modules or family_of(model).lora_targets)
    peft_config = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.lora_alpha, use_rslora=cfg.scaling == "rslora", lora_dropout=cfg.dropout,
        target_modules=targets, bias="none",
    )
    try:
        return inject_adapter_in_model(peft_config, model)
    except ValueError as err:  # e.g. "Target modules ... not found in the base model"
        raise MethodError(f"lora: {err}") from err
