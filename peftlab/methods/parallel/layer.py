"""A parallel adapter needs the FFN sublayer's residual input x and must add to the FFN's output. The FFN is
not one module in every family (BERT splits it into `intermediate` and `output`; BART-likes inline fc1/fc2 in
the layer), so two wrappers cooperate: a tap on the module that reads x (the first projection in post-LN
models, the FFN's LayerNorm in pre-LN ones) hands it to the wrapper on the last projection."""

from __future__ import annotations

import torch
from torch import nn

from ..wrapping import MethodLayer


class ParallelAdapterWrapper(MethodLayer):
    """Wraps the FFN's last projection (Gemma 2/3: its output norm): returns base(h) + scaling * adapter(x), x being
    the FFN sublayer's input."""

    def __init__(self, base_layer: nn.Module, adapter: nn.Module, scaling: float) -> None:
        super().__init__(base_layer)
        self.adapter = adapter
        self.scaling = scaling
        self._ffn_input: torch.Tensor | None = None

    def receive(self, x: torch.Tensor) -> None:
        self._ffn_input = x

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x, self._ffn_input = self._ffn_input, None  # drop the reference: it is one layer's activation
        if x is None:
            raise RuntimeError("parallel adapter: the FFN's input tap did not run before its last projection")
        return self.base_layer(h) + self.scaling * self.adapter(x)


class FFNInputTap(MethodLayer):
    """Wraps the module that reads the FFN sublayer's input and passes that input on; owns no parameters."""

    def __init__(self, base_layer: nn.Module, target: ParallelAdapterWrapper) -> None:
        super().__init__(base_layer)
        object.__setattr__(self, "target", target)  # a plain reference, not a submodule: register once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.target.receive(x)
        return self.base_layer(x)
