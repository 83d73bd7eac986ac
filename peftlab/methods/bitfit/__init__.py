"""bitfit: train only the backbone's bias terms (linear layers and LayerNorms)."""

from ..registry import register_method
from .config import BitFitConfig

register_method("bitfit", BitFitConfig, f"{__name__}.model")
