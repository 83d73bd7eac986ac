"""houlsby: two bottleneck adapters per layer (Houlsby et al. 2019), the project's own implementation."""

from ..registry import register_method
from .config import HoulsbyConfig

register_method("houlsby", HoulsbyConfig, f"{__name__}.model")
