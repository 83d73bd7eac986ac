"""pfeiffer: one bottleneck adapter per layer, after the FFN (Houlsby's layer, one attach point)."""

from ..registry import register_method
from .config import PfeifferConfig

register_method("pfeiffer", PfeifferConfig, f"{__name__}.model")
