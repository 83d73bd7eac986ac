"""full: full fine-tuning, every backbone parameter trains (fixed position tables stay frozen)."""

from torch import nn

from ..registry import MethodConfig, register_method
from .config import FullConfig


def inject(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    return model.requires_grad_(True)


register_method("full", FullConfig, inject)
