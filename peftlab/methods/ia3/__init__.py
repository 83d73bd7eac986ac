"""ia3: (IA)^3 through peft's inject_adapter_in_model (the transformers model stays itself)."""

from ..registry import register_method
from .config import IA3MethodConfig

register_method("ia3", IA3MethodConfig, f"{__name__}.model", mergeable=True)
