"""full: full fine-tuning, every backbone parameter trains (fixed position tables stay frozen)."""

from ..registry import register_method
from .config import FullConfig

register_method("full", FullConfig, f"{__name__}.model")
