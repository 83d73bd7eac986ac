"""ia3: the model side of the method (inject), imported on first use."""

from peft import IA3Config, inject_adapter_in_model
from torch import nn

from ..families import family_of
from ..registry import MethodError
from .config import IA3MethodConfig


def inject(model: nn.Module, cfg: IA3MethodConfig) -> nn.Module:
    family = family_of(model)
    if cfg.target_modules is None:  # regexes: exact attach points (see families.py)
        targets, feedforward = family.ia3_targets, family.ia3_feedforward
    else:
        targets, feedforward = list(cfg.target_modules), list(cfg.feedforward_modules)
    peft_config = IA3Config(target_modules=targets, feedforward_modules=feedforward)
    try:
        return inject_adapter_in_model(peft_config, model)
    except ValueError as err:
        raise MethodError(f"ia3: {err}") from err
