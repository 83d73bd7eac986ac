"""pfeiffer: the model side of the method (inject), imported on first use."""

from torch import nn

from ..adapter_layers import BottleneckAdapter
from ..families import family_of
from ..wrapping import wrap_modules
from .config import PfeifferConfig
from .layer import PostNormAdapter, SublayerOutputAdapter


def inject(model: nn.Module, cfg: PfeifferConfig) -> nn.Module:
    family = family_of(model)
    dim = model.config.hidden_size

    def adapter(module: nn.Module) -> BottleneckAdapter:
        ref = next(module.parameters())
        return BottleneckAdapter(dim, cfg.bottleneck, cfg.activation, ref.device, ref.dtype)

    if family.ffn_norm is not None:
        wrap_modules(model, [family.ffn_norm], lambda _, ln: PostNormAdapter(ln, adapter(ln)), cfg.method,
                     kind=nn.LayerNorm)
    else:
        wrap_modules(model, [family.ffn_sublayer], lambda _, m: SublayerOutputAdapter(m, adapter(m)), cfg.method,
                     kind=None)
    return model
