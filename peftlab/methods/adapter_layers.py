"""Bottleneck adapter layers shared by houlsby, pfeiffer, parallel and compacter.

Written here rather than taken from AdapterHub: `adapters` 1.3 pins transformers 4.x and cannot load
Marian or NLLB (M2M100) at all. (Not named bottleneck.py: that shadows a package pandas probes.)"""

from __future__ import annotations

import torch
from torch import nn

from .adapter_options import ACTIVATION_NAMES
from .wrapping import MethodLayer

ACTIVATIONS = dict(zip(ACTIVATION_NAMES, (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh), strict=True))
DOWN_INIT_STD = 1e-2  # Houlsby et al. 2019, Sec. 2.1: near-identity initialisation


class BottleneckAdapter(nn.Module):
    """down (d -> r), nonlinearity, up (r -> d); returns the delta only: 2*d*r + r + d parameters.

    The up-projection starts at zero, so the adapted model equals the base model at step 0.
    """

    def __init__(
        self, dim: int, bottleneck: int, activation: str,
        device: torch.device | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, device=device, dtype=dtype)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, dim, device=device, dtype=dtype)
        nn.init.normal_(self.down.weight, std=DOWN_INIT_STD)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class AdapterWrapper(MethodLayer):
    """A serial adapter on a projection's (or a sublayer's output norm's) output: y = base(x); return y + adapter(y)."""

    def __init__(self, base_layer: nn.Module, adapter: nn.Module) -> None:
        super().__init__(base_layer)
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        return h + self.adapter(h)


def output_size(module: nn.Module) -> int:
    """The width of a wrapped module's output: a projection's out_features, a norm's size (Gemma 2/3's sublayer
    outputs are RMSNorms, whose weight is one vector)."""
    return module.out_features if isinstance(module, nn.Linear) else module.weight.shape[0]


def bottleneck_wrapper(bottleneck: int, activation: str):
    """A factory for wrap_modules: a BottleneckAdapter on the wrapped module's output, on its device/dtype."""

    def make(name: str, module: nn.Module) -> AdapterWrapper:
        weight = module.weight
        adapter = BottleneckAdapter(output_size(module), bottleneck, activation, weight.device, weight.dtype)
        return AdapterWrapper(module, adapter)

    return make
