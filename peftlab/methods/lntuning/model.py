"""lntuning: the model side of the method (inject), imported on first use."""

from torch import nn

from ..core import task_heads
from ..families import is_norm
from ..registry import MethodConfig, MethodError


def inject(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    in_head = {id(m) for h in task_heads(model) for m in h.modules()}
    norms = [m for m in model.modules() if is_norm(m) and id(m) not in in_head]
    if not any(True for m in norms for _ in m.parameters()):
        raise MethodError(f"lntuning: a {model.config.model_type} model has no LayerNorm parameters")
    for m in norms:
        m.requires_grad_(True)
    return model
