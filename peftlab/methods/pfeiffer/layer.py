"""Pfeiffer's adapter where AdapterHub's `seq_bn` puts it: on the FFN sublayer's output after the residual,
and in post-LN models after the LayerNorm too (AdapterHub 1.3: original_ln_before=True, residual_before_ln=True,
original_ln_after=True). With s = x + FFN(x), the residual sum:

    post-LN (BERT, XLM-R, Marian):  out = LN(s + adapter(LN(s)))   the model's own LayerNorm, applied twice
    pre-LN (mBART, M2M100, T5):     out = s + adapter(s)

The FFN's own dropout acts before s, as in AdapterHub; the adapter has none (seq_bn's dropout is 0). One
difference left: an mBART/M2M100 encoder layer clamps fp16 overflow before returning s, so here the adapter
reads the clamped s (AdapterHub: clamps after the adapter); it matters only where fp16 overflows.
Wrapping the projection (as Houlsby's adapter does) cannot see s, so these wrap the LayerNorm s goes into, or
the module that returns s.
"""

from __future__ import annotations

import torch
from torch import nn

from ..wrapping import MethodLayer, RecordedHiddenStates


class PostNormAdapter(MethodLayer):
    """Wraps the LayerNorm after the FFN's residual: LN(s) -> LN(s + adapter(LN(s)))."""

    def __init__(self, base_layer: nn.Module, adapter: nn.Module) -> None:
        super().__init__(base_layer)
        self.adapter = adapter

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.base_layer(s + self.adapter(self.base_layer(s)))


class SublayerOutputAdapter(MethodLayer):
    """Wraps the module that returns s = x + FFN(LN(x)) (T5LayerFF, a pre-LN mBART/M2M100 layer):
    s -> s + adapter(s); a tuple output keeps its other entries."""

    def __init__(self, base_layer: nn.Module, adapter: nn.Module) -> None:
        super().__init__(base_layer)
        self.adapter = adapter

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor | tuple:
        record = RecordedHiddenStates()  # a wrapped mBART/M2M100 layer is where transformers records states
        result = self.base_layer(hidden_states, *args, **kwargs)
        s = result[0] if isinstance(result, tuple) else result
        out = s + self.adapter(s)
        record.replace(hidden_states, out)
        return (out, *result[1:]) if isinstance(result, tuple) else out
