"""bitfit: the model side of the method (inject), imported on first use."""

from torch import nn

from ..core import task_heads
from ..families import is_fixed_table
from ..registry import MethodConfig, MethodError


def inject(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    skip = {id(p) for m in model.modules() if is_fixed_table(m) for p in m.parameters()}
    skip |= {id(p) for h in task_heads(model) for p in h.parameters()}
    biases = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] == "bias" and id(p) not in skip]
    if not biases:  # T5 and mT5 have no bias terms at all
        raise MethodError(f"bitfit: a {model.config.model_type} model has no bias terms to train")
    for p in biases:
        p.requires_grad_(True)
    return model
