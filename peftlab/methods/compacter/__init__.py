"""compacter: Houlsby-placed adapters built from PHM layers with shared rule matrices."""

from ..registry import register_method
from .config import CompacterConfig

register_method("compacter", CompacterConfig, f"{__name__}.model")
