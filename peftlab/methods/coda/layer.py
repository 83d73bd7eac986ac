"""CoDA layers, written here: no PEFT library implements conditional adapters.

A CodaLayer wraps a whole encoder layer (BertLayer, Marian/mBART/M2M100EncoderLayer, T5Block). It gathers the
routed tokens into a shorter sequence, hands the frozen layer that sequence with transformers' prepared 4D
attention mask (and T5's relative position bias) cut down to the routed tokens, and scatters the results back.
The frozen layer's own code runs unchanged, so eager and sdpa attention both work.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from ..adapter_layers import BottleneckAdapter
from ..registry import MethodError
from ..wrapping import MethodLayer, RecordedHiddenStates
from .config import CodaConfig

ROUTER_INIT_STD = 0.02
_NEG = -1e4  # a padding token's scaled score: exp() of it is 0, and unlike -inf it keeps gradients finite


def tokens_to_route(valid: torch.Tensor, k_ratio: float) -> torch.Tensor:
    """k per sequence: ceil(k_ratio * real tokens), at least 1 and at most the real tokens (0 for none)."""
    n = valid.sum(dim=1)
    k = torch.ceil(n.double() * k_ratio - 1e-9).long().clamp(min=1)
    return torch.minimum(k, n)


def select_tokens(scores: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The k[b] best-scored real tokens of each sequence b, padded to K = max(k) slots.

    Returns (idx, routed), both (B, K): token positions in ascending order, then the unused slots of shorter
    rows (routed False; their positions are distinct unrouted tokens, never written back).
    """
    n = scores.shape[1]
    width = int(k.max()) if k.numel() else 0
    top = scores.detach().float().masked_fill(~valid, -math.inf).topk(width, dim=1).indices
    routed = torch.arange(width, device=k.device)[None, :] < k[:, None]
    order = torch.where(routed, top, top + n).argsort(dim=1)  # ascending positions, unused slots last
    return top.gather(1, order), routed.gather(1, order)


def soft_topk(scores: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """CoDA's soft top-k: lambda = argmax s.lambda + H(lambda) s.t. sum(lambda) = k, 0 <= lambda <= 1, whose
    solution is lambda_i = min(1, exp(s_i + a)). `scores` are already divided by the temperature.

    The paper finds a with dual iterations; those converge slowly once a trained router spreads its scores
    (20 iterations leave sum(lambda) several tokens short), so a is solved exactly instead: with the m best
    tokens saturated, a = log(k - m) - logsumexp(the other scores), for the one m where that is consistent.
    Rows with k >= their real tokens get exactly 1 (every token is routed), padding exactly 0.
    """
    s = scores.float().masked_fill(~valid, _NEG)
    ranked = s.sort(dim=1, descending=True).values
    rest = torch.logcumsumexp(ranked.flip(1), dim=1).flip(1)  # rest[:, m] = logsumexp(ranked[:, m:])
    m = torch.arange(s.shape[1], device=s.device)[None, :]
    a = torch.log((k[:, None] - m).clamp(min=1).float()) - rest  # a if exactly m tokens saturate
    above = torch.cat([torch.full_like(ranked[:, :1], math.inf), ranked[:, :-1]], dim=1)
    # consistent m: token m is not saturated and token m - 1 is; numerically, the least inconsistent m < k
    miss = torch.relu(ranked + a).detach() + torch.relu(-(above + a)).detach()
    miss = miss.masked_fill(m >= k[:, None], math.inf)
    a = a.gather(1, miss.argmin(dim=1, keepdim=True))
    lam = torch.exp(torch.clamp(s + a, max=0.0))
    full = (k >= valid.sum(dim=1))[:, None]
    return torch.where(valid, torch.where(full, torch.ones_like(lam), lam), torch.zeros_like(lam))


def token_validity(mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> torch.Tensor:
    """Real (non-padding) tokens, (B, n), read from the 4D mask the layer receives: a key no query may attend to
    is padding. transformers 5 passes None (no padding, sdpa), a bool mask (sdpa) or an additive one (eager)."""
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise MethodError(f"coda: unsupported attention mask {type(mask).__name__}; use eager or sdpa attention")
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    return allowed.flatten(1, 2).any(dim=1).expand(batch, length)


def route_mask(
    mask: torch.Tensor | None, idx: torch.Tensor, routed: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor | None:
    """The layer's 4D mask restricted to the routed tokens (B, 1|H, K, K); unused slots are masked as keys, and
    as queries they attend to the routed tokens (an all-masked row would give NaN in sdpa's backward)."""
    batch, width = idx.shape
    keys = routed.clone()
    keys[:, 0] |= ~routed.any(dim=1)  # a row with nothing routed still needs one key
    if mask is None:
        if bool(routed.all()):
            return None
        return torch.zeros(batch, 1, 1, width, dtype=dtype, device=idx.device).masked_fill(
            ~keys[:, None, None, :], torch.finfo(dtype).min
        )
    m = mask.expand(batch, *mask.shape[1:])
    heads = m.shape[1]
    if m.shape[2] > 1:
        m = m.gather(2, idx[:, None, :, None].expand(batch, heads, width, m.shape[3]))
    m = m.gather(3, idx[:, None, None, :].expand(batch, heads, m.shape[2], width))
    if m.dtype == torch.bool:
        key_row = keys[:, None, None, :]
        m = m & key_row
    else:
        low = torch.finfo(m.dtype).min
        key_row = torch.zeros_like(keys, dtype=m.dtype).masked_fill(~keys, low)[:, None, None, :]
        m = m.masked_fill(~keys[:, None, None, :], low)
    if m.shape[2] > 1:  # unused slots' query rows attend to the routed tokens
        m = torch.where(routed[:, None, :, None], m, key_row)
    return m


def gather_pairs(bias: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """T5's relative position bias (1|B, H, n, n) for the routed tokens' pairs: (B, H, K, K). The bias is
    computed from the original positions, so a routed token keeps its distance to the others."""
    batch, width = idx.shape
    b = bias.expand(batch, *bias.shape[1:])
    heads = b.shape[1]
    b = b.gather(2, idx[:, None, :, None].expand(batch, heads, width, b.shape[3]))
    return b.gather(3, idx[:, None, None, :].expand(batch, heads, width, width))


def _positional_names(layer: nn.Module) -> list[str]:
    params = inspect.signature(layer.forward).parameters.values()  # follows transformers' checkpointing wrapper
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds][1:]  # after hidden_states


class CodaLayer(MethodLayer):
    """Router + parallel adapter around a frozen encoder layer:

        out = x + scaling * adapter(x),  and for each routed token i:  out_i += lambda_i * (layer(x_R)_i - x_i)

    where x_R are the routed tokens and lambda their gates (computed with torch.lerp, which is exact at 1).
    """

    def __init__(self, base_layer: nn.Module, dim: int, cfg: CodaConfig, t5: bool) -> None:
        super().__init__(base_layer)
        ref = next(base_layer.parameters())
        self.router = nn.Linear(dim, 1, device=ref.device, dtype=ref.dtype)
        nn.init.normal_(self.router.weight, std=ROUTER_INIT_STD)
        nn.init.zeros_(self.router.bias)
        self.adapter = BottleneckAdapter(dim, cfg.bottleneck, cfg.activation, ref.device, ref.dtype)
        self.k_ratio, self.gate, self.temperature = cfg.k_ratio, cfg.gate, cfg.router_temperature
        self.scaling = cfg.scaling
        self.t5 = t5
        self._names = _positional_names(base_layer)

    def gates(self, scores: torch.Tensor, valid: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.gate == "sigmoid":
            return torch.sigmoid(scores.float() / self.temperature)
        return soft_topk(scores / self.temperature, valid, k)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor | tuple:
        x = hidden_states
        batch, length, dim = x.shape
        call = dict(zip(self._names, args, strict=False)) | kwargs
        mask = call.get("attention_mask")
        valid = token_validity(mask, batch, length, x.device)
        scores = self.router(x).squeeze(-1)
        k = tokens_to_route(valid, self.k_ratio)
        idx, routed = select_tokens(scores, valid, k)
        parallel = self.scaling * self.adapter(x)
        full_bias = call.get("position_bias") if self.t5 else None
        if self.t5 and full_bias is None:
            full_bias = self._t5_bias(length, x.device)
        if idx.shape[1] == 0:  # nothing to route (every sequence is padding)
            out = x + parallel
            return (out, full_bias, None) if self.t5 else out
        x_routed = x.gather(1, idx[..., None].expand(-1, -1, dim))
        call["attention_mask"] = route_mask(mask, idx, routed, x.dtype)
        if self.t5:
            call["position_bias"] = gather_pairs(full_bias, idx)
        if isinstance(call.get("position_ids"), torch.Tensor):
            call["position_ids"] = call["position_ids"].expand(batch, length).gather(1, idx)
        record = RecordedHiddenStates()
        result = self.base_layer(x_routed, **call)
        y_routed = result[0] if isinstance(result, tuple) else result
        lam = self.gates(scores, valid, k).gather(1, idx).to(x.dtype)[..., None]
        mixed = torch.where(routed[..., None], torch.lerp(x_routed, y_routed, lam), x_routed)
        out = x.scatter(1, idx[..., None].expand(-1, -1, dim), mixed) + parallel
        record.replace(x, out)
        if isinstance(result, tuple):  # T5Block: (hidden, self-attention bias for the next block, cross bias)
            return (out, full_bias, *result[2:]) if self.t5 else (out, *result[1:])
        return out

    def _t5_bias(self, length: int, device: torch.device) -> torch.Tensor:
        attention = self.base_layer.layer[0].SelfAttention
        if attention.has_relative_attention_bias:
            return attention.compute_bias(length, length, device=device)
        ref = attention.q.weight
        return torch.zeros(1, attention.n_heads, length, length, device=device, dtype=ref.dtype)


class ParallelLayer(MethodLayer):
    """A dense decoder layer with a parallel adapter: out = layer(x) + scaling * adapter(x)."""

    def __init__(self, base_layer: nn.Module, dim: int, cfg: CodaConfig) -> None:
        super().__init__(base_layer)
        ref = next(base_layer.parameters())
        self.adapter = BottleneckAdapter(dim, cfg.bottleneck, cfg.activation, ref.device, ref.dtype)
        self.scaling = cfg.scaling

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor | tuple:
        record = RecordedHiddenStates()
        result = self.base_layer(hidden_states, *args, **kwargs)
        out = (result[0] if isinstance(result, tuple) else result) + self.scaling * self.adapter(hidden_states)
        record.replace(hidden_states, out)
        return (out, *result[1:]) if isinstance(result, tuple) else out
