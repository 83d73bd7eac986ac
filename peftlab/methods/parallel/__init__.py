"""parallel: He et al. 2021's scaled parallel adapter on every layer's FFN."""

from ..registry import register_method
from .config import ParallelConfig

register_method("parallel", ParallelConfig, f"{__name__}.model")
