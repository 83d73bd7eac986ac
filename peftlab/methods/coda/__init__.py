"""coda: CoDA conditional adapters (Lei et al. 2023), the project's own implementation (no PEFT library has
them): routed tokens only through each frozen encoder layer, a parallel adapter for every token."""

from ..registry import register_method
from .config import CodaConfig

register_method("coda", CodaConfig, f"{__name__}.model")
