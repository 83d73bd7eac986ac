"""lntuning: train only the backbone's LayerNorm (T5: RMS-norm) parameters, in place.

peft's LNTuning keeps a trainable copy of each norm layer instead; training in place keeps the state-dict
keys those of the base model and the count exactly the norms' parameters.
"""

from ..registry import register_method
from .config import LNTuningConfig

register_method("lntuning", LNTuningConfig, f"{__name__}.model")
