"""pfeiffer: the model side of the method (inject), imported on first use."""

from torch import nn

from ..adapter_layers import bottleneck_wrapper
from ..families import family_of
from ..wrapping import wrap_modules
from .config import PfeifferConfig


def inject(model: nn.Module, cfg: PfeifferConfig) -> nn.Module:
    make = bottleneck_wrapper(cfg.bottleneck, cfg.activation)
    wrap_modules(model, [family_of(model).ffn_out], make, cfg.method)
    return model
