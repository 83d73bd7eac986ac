"""PHM (parameterised hypercomplex multiplication) layers for Compacter."""

from __future__ import annotations

import torch
from torch import nn

from ..adapter_layers import ACTIVATIONS

RULE_INIT_STD = 0.01  # Compacter's phm_init_range (normal init of the rule matrices)


class PHMLinear(nn.Module):
    """y = x @ W + b, W = sum_i kron(A_i, s_i @ t_i): n*k*(in/n + out/n) = k*(in + out) own weights + out.

    `rule` (A, n x n x n) is a Parameter shared with every other PHMLinear of the model; it is the same
    tensor object, so it is counted and saved once.
    """

    def __init__(self, in_features: int, out_features: int, rule: nn.Parameter, rank: int, zero: bool):
        super().__init__()
        n = rule.shape[0]
        if in_features % n or out_features % n:
            raise ValueError(f"PHM: {in_features} -> {out_features} is not divisible by phm_dim {n}")
        kw = dict(device=rule.device, dtype=rule.dtype)
        self.in_features, self.out_features = in_features, out_features
        self.rule = rule
        self.s = nn.Parameter(torch.empty(n, in_features // n, rank, **kw))
        self.t = nn.Parameter(torch.empty(n, rank, out_features // n, **kw))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw))
        nn.init.xavier_uniform_(self.s)
        # zero t on the up-projection: the adapter then adds exactly zero at step 0
        nn.init.zeros_(self.t) if zero else nn.init.xavier_uniform_(self.t)

    def full_weight(self) -> torch.Tensor:
        n = self.rule.shape[0]
        b = self.s @ self.t  # (n, in/n, out/n)
        # kron(A_i, B_i)[a*p + b, c*q + e] = A_i[a, c] * B_i[b, e]
        w = torch.einsum("iac,ibe->abce", self.rule, b)
        return w.reshape(n * b.shape[1], n * b.shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.full_weight() + self.bias


class PHMAdapter(nn.Module):
    """A bottleneck adapter (delta only) with PHM down- and up-projections."""

    def __init__(self, dim: int, bottleneck: int, rule: nn.Parameter, rank: int, activation: str) -> None:
        super().__init__()
        self.down = PHMLinear(dim, bottleneck, rule, rank, zero=False)
        self.act = ACTIVATIONS[activation]()
        self.up = PHMLinear(bottleneck, dim, rule, rank, zero=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


def new_rule(n: int, device: torch.device, dtype: torch.dtype) -> nn.Parameter:
    rule = nn.Parameter(torch.empty(n, n, n, device=device, dtype=dtype))
    nn.init.normal_(rule, std=RULE_INIT_STD)
    return rule
