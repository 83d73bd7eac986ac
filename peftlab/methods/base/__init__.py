"""base: the un-adapted base model (the baseline row of every comparison); nothing trains."""

from ..registry import register_method
from .config import BaseMethodConfig

register_method("base", BaseMethodConfig, f"{__name__}.model")
