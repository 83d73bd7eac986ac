"""compacter: the model side of the method (inject), imported on first use."""

from torch import nn

from ..adapter_layers import AdapterWrapper, output_size
from ..families import family_of
from ..registry import MethodError
from ..wrapping import wrap_modules
from .config import CompacterConfig
from .layer import PHMAdapter, new_rule


def inject(model: nn.Module, cfg: CompacterConfig) -> nn.Module:
    family = family_of(model)
    if model.config.hidden_size % cfg.phm_dim:
        raise MethodError(f"compacter: hidden size {model.config.hidden_size} is not a multiple of phm_dim")
    weight = next(model.parameters())
    rule = new_rule(cfg.phm_dim, weight.device, weight.dtype)  # one set for the whole model

    def make(name: str, module: nn.Module) -> AdapterWrapper:
        adapter = PHMAdapter(output_size(module), cfg.bottleneck, rule, cfg.phm_rank, cfg.activation)
        return AdapterWrapper(module, adapter)

    wrap_modules(model, [family.attn_out, family.ffn_out], make, cfg.method,
                 kind=None if family.out_is_norm else nn.Linear)
    return model
