"""houlsby: two bottleneck adapters per layer (Houlsby et al. 2019), the project's own implementation."""

from ..registry import register_method
from .config import HoulsbyConfig
from .model import inject

register_method("houlsby", HoulsbyConfig, inject)
