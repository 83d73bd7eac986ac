"""parallel: the model side of the method (inject), imported on first use."""

import re

from torch import nn

from ..adapter_layers import BottleneckAdapter, output_size
from ..families import family_of
from ..registry import MethodError
from ..wrapping import wrap_modules
from .config import ParallelConfig
from .layer import FFNInputTap, ParallelAdapterWrapper

_LAYER = re.compile(r"^(.*\.(?:layer|layers|block)\.\d+)\.")  # the layer a module belongs to


def inject(model: nn.Module, cfg: ParallelConfig) -> nn.Module:
    family = family_of(model)
    outputs: dict[str, ParallelAdapterWrapper] = {}  # by layer

    def make_output(name: str, module: nn.Module) -> ParallelAdapterWrapper:
        w = module.weight
        adapter = BottleneckAdapter(output_size(module), cfg.bottleneck, cfg.activation, w.device, w.dtype)
        return ParallelAdapterWrapper(module, adapter, cfg.scaling)

    kind = None if family.out_is_norm else nn.Linear
    for name in wrap_modules(model, [family.ffn_out], make_output, cfg.method, kind=kind):
        outputs[_LAYER.match(name).group(1)] = model.get_submodule(name)

    def make_tap(name: str, module: nn.Module) -> FFNInputTap:
        layer = _LAYER.match(name).group(1)
        if layer not in outputs:
            raise MethodError(f"parallel: {name} has no FFN output projection in its layer")
        return FFNInputTap(module, outputs.pop(layer))

    wrap_modules(model, [family.ffn_residual_in], make_tap, cfg.method, kind=None)  # a Linear or a LayerNorm
    if outputs:
        raise MethodError(f"parallel: no FFN input found in {sorted(outputs)}")
    return model
