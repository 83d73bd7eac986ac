"""base: the un-adapted base model (the baseline row of every comparison); nothing trains."""

from torch import nn

from ..registry import MethodConfig, register_method
from .config import BaseMethodConfig


def inject(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    return model  # apply_method has frozen everything; a classification model still trains its head


register_method("base", BaseMethodConfig, inject)
