"""base: the model side of the method (inject), imported on first use."""

from torch import nn

from ..registry import MethodConfig


def inject(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    return model  # apply_method has frozen everything; a classification model still trains its head
