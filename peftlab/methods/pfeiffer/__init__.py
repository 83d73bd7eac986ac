"""pfeiffer: one bottleneck adapter per layer, after the FFN's residual (and LayerNorm), as AdapterHub's seq_bn."""

from ..registry import register_method
from .config import PfeifferConfig

register_method("pfeiffer", PfeifferConfig, f"{__name__}.model")
