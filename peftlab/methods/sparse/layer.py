"""Fixed-mask linear layers and the pruning scores for SparseAdapter.

Written here rather than with torch.nn.utils.prune or parametrize: both rename the weight in the state dict
(`weight_orig`, `parametrizations.weight.original`), so a saved method would not load into a freshly adapted
model. No PEFT library implements pruning at initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..adapter_layers import DOWN_INIT_STD


class MaskedLinear(nn.Module):
    """An nn.Linear whose weight has a fixed binary mask: y = x @ (W * M)^T + b.

    The wrapped layer's Parameters are reused, so state-dict keys stay `<name>.weight` / `<name>.bias`; the mask
    is the persistent buffer `<name>.weight_mask`, saved with the method's weights. Pruned entries are zero in W
    as well, and their gradient is zero (the mask is applied in forward), so they stay zero through training:
    AdamW's decoupled weight decay keeps a zero at zero.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        # a meta-device model (the budget solver's) gets real masks on the CPU, so that counting still works
        device = "cpu" if linear.weight.is_meta else linear.weight.device
        self.register_buffer("weight_mask", torch.ones(linear.weight.shape, dtype=torch.bool, device=device))
        # the dense initial weights, and the values they are scored at (see set_scoring_weights): SNIP scores
        # them in calibrate, after inject, and pruning restarts from them
        self.register_buffer("weight_init", linear.weight.detach().clone(), persistent=False)
        self.register_buffer("weight_scored", self.weight_init, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_mask, self.bias)

    def fixed_masks(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Read by peftlab.methods.core: masked entries count as removed and the mask is saved."""
        return [(self.weight, self.weight_mask)]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


Pair = tuple[MaskedLinear, MaskedLinear]  # (down, up) of one adapter, or (A, B) of one LoRA update


def bottleneck_up_scoring_init(weight: torch.Tensor) -> torch.Tensor:
    """A bottleneck adapter's zero up-projection is scored at the down-projection's init, N(0, DOWN_INIT_STD)."""
    return nn.init.normal_(torch.empty_like(weight), std=DOWN_INIT_STD)


def lora_b_scoring_init(weight: torch.Tensor) -> torch.Tensor:
    """LoRA's zero B is scored at LoRA A's init over its own fan-in: nn.Linear's default, Kaiming-uniform with
    a = sqrt(5) (what peft gives B with init_lora_weights=False)."""
    return nn.init.kaiming_uniform_(torch.empty_like(weight), a=math.sqrt(5))


def set_scoring_weights(pairs: list[Pair], zero_init: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Choose the values each adapter weight is scored at (the rule and its reason: SparseConfig's docstring):
    its dense initial value, or, for a matrix that starts at zero, `zero_init(weight)`, drawn from torch's RNG."""
    for pair in pairs:
        for m in pair:
            if not m.weight_init.any():
                m.weight_scored = zero_init(m.weight_init)


def synflow_scores(pairs: list[Pair], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """SynFlow (Tanaka et al. 2020), one shot and per adapter, as in the SparseAdapter code (which runs each
    adapter on an all-ones input with |W|): R = 1^T |U| |D| 1, score = |w * dR/dw|. Closed form for two layers:
    dR/d|D|_ij = sum_k |U|_ki, dR/d|U|_ki = sum_j |D|_ij."""
    scores = []
    for i in range(0, len(weights), 2):
        down, up = weights[i].abs().float(), weights[i + 1].abs().float()
        scores.append(down * up.sum(dim=0)[:, None])
        scores.append(up * down.sum(dim=1)[None, :])
    return scores


def snip_scores(
    layers: list[MaskedLinear], weights: list[torch.Tensor], losses: list[Callable[[], torch.Tensor]]
) -> list[torch.Tensor]:
    """SNIP (Lee et al. 2019): |w * dL/dw| at w = the scoring weights, all masks open, L the mean of `losses`
    (one per batch; the gradients are summed batch by batch, so only one batch's graph is held at a time)."""
    with torch.no_grad():
        for layer, w in zip(layers, weights, strict=True):
            layer.weight.copy_(w)
            layer.weight_mask.fill_(True)
    total = [torch.zeros_like(w, dtype=torch.float) for w in weights]
    for loss_fn in losses:
        grads = torch.autograd.grad(loss_fn() / len(losses), [layer.weight for layer in layers], allow_unused=True)
        for t, g in zip(total, grads, strict=True):
            if g is not None:
                t += g.float()
    return [(w.float() * g).abs() for w, g in zip(weights, total, strict=True)]


def keep_masks(scores: list[torch.Tensor], sparsity: float, scope: str) -> list[torch.Tensor]:
    """Boolean keep-masks that remove exactly round(sparsity * n) of the lowest-scored entries (n: all entries
    for a global ranking, each matrix's for a layer-wise one). Ties are broken by torch.topk, never by a
    threshold, so the removed fraction is exact."""
    if scope == "global":
        flat = torch.cat([s.detach().reshape(-1).float().cpu() for s in scores])
        keep = _keep(flat, sparsity)
        return [m.view(s.shape) for m, s in zip(keep.split([s.numel() for s in scores]), scores, strict=True)]
    return [_keep(s.detach().reshape(-1).float().cpu(), sparsity).view(s.shape) for s in scores]


def _keep(flat: torch.Tensor, sparsity: float) -> torch.Tensor:
    keep = torch.ones(flat.numel(), dtype=torch.bool, device="cpu")  # explicit: the solver runs under a meta default
    removed = n_removed(flat.numel(), sparsity)
    if removed:
        keep[torch.topk(flat, removed, largest=False, sorted=False).indices] = False
    return keep


def n_removed(n: int, sparsity: float) -> int:
    return math.floor(sparsity * n + 0.5)


def planned_masks(layers: list[MaskedLinear], sparsity: float, scope: str) -> list[torch.Tensor]:
    """Masks with the right counts and no scores, for meta-device models (the budget solver counts on those).

    A global ranking removes round(s * N) in all; how many from each matrix depends on the scores, so the plan
    spreads them in proportion (largest remainders), which gives the same total."""
    sizes = [layer.weight.numel() for layer in layers]
    if scope == "layer":
        removed = [n_removed(n, sparsity) for n in sizes]
    else:
        exact = [sparsity * n for n in sizes]
        removed = [math.floor(e) for e in exact]
        short = n_removed(sum(sizes), sparsity) - sum(removed)
        for i in sorted(range(len(sizes)), key=lambda i: exact[i] - removed[i], reverse=True)[:short]:
            removed[i] += 1
    masks = []
    for layer, r in zip(layers, removed, strict=True):
        keep = torch.ones(layer.weight.numel(), dtype=torch.bool, device="cpu")
        keep[:r] = False
        masks.append(keep.view(layer.weight.shape))
    return masks
