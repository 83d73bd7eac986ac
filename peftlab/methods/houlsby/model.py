from torch import nn

from ..adapter_layers import bottleneck_wrapper
from ..families import family_of
from ..registry import MethodError
from ..wrapping import wrap_modules
from .config import HoulsbyConfig


def inject(model: nn.Module, cfg: HoulsbyConfig) -> nn.Module:
    family = family_of(model)
    patterns = [family.attn_out, family.ffn_out]
    if cfg.cross_attention:
        if family.cross_attn_out is None or not model.config.is_encoder_decoder:
            raise MethodError(f"houlsby: cross_attention needs an encoder-decoder model, not {family.name}")
        patterns.append(family.cross_attn_out)
    wrap_modules(model, patterns, bottleneck_wrapper(cfg.bottleneck, cfg.activation), cfg.method,
                 kind=None if family.out_is_norm else nn.Linear)
    return model
