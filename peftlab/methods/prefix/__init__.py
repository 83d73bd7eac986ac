"""prefix: prefix tuning through peft's get_peft_model (prompt learning needs peft's model wrapper,
which prepends the prefix as past key/values); apply_method returns that PeftModel."""

from ..registry import register_method
from .config import PrefixConfig

register_method("prefix", PrefixConfig, f"{__name__}.model")
