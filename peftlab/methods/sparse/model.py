"""inject (apply_method's part) and calibrate (apply_method's data-dependent part) for SparseAdapter."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from ..adapter_layers import BottleneckAdapter
from ..registry import MethodError, get_method
from .config import DATA_SCORINGS, SparseConfig
from .layer import (
    MaskedLinear,
    Pair,
    bottleneck_up_scoring_init,
    keep_masks,
    lora_b_scoring_init,
    planned_masks,
    set_scoring_weights,
    snip_scores,
    synflow_scores,
)


def inject(model: nn.Module, cfg: SparseConfig) -> nn.Module:
    """Apply the dense base method and put fixed masks on its weight matrices; prune them with a data-free
    scoring (magnitude, random, synflow). SNIP needs the run's training batches: apply_method hands them to
    `calibrate` right after this, and until then the masks are open. On a meta-device model (the budget
    solver's) only the counts are set.
    """
    model = get_method(cfg.base).inject(model, cfg.base_config())
    pairs = _mask_pairs(model)
    if not pairs:
        raise MethodError(f"sparse: the {cfg.base} method added no adapter weights to prune")
    layers = [m for pair in pairs for m in pair]
    if any(m.weight.is_meta for m in layers):
        _set_masks(layers, planned_masks(layers, cfg.sparsity, cfg.scope))
        return model
    set_scoring_weights(pairs, lora_b_scoring_init if cfg.base == "lora" else bottleneck_up_scoring_init)
    if cfg.scoring not in DATA_SCORINGS:
        weights = [m.weight_scored for m in layers]
        if cfg.scoring == "synflow":
            scores = synflow_scores(pairs, weights)
        elif cfg.scoring == "magnitude":
            scores = [w.abs() for w in weights]
        else:
            scores = [torch.rand_like(w, dtype=torch.float) for w in weights]
        _set_masks(layers, keep_masks(scores, cfg.sparsity, cfg.scope))
    return model


def calibrate(model: nn.Module, cfg: SparseConfig, batches: list[Mapping[str, torch.Tensor]]) -> None:
    """SNIP on `batches` (model(**batch) inputs with labels: the run's first training batches), from the
    adapters' dense initial weights; sets the masks that training keeps and that are saved with the method.
    L is the mean of the model's own loss (cross-entropy) over the batches, in eval mode (no dropout noise).
    """
    if cfg.scoring not in DATA_SCORINGS:
        raise MethodError(f"sparse: scoring {cfg.scoring!r} uses no data; there is nothing to calibrate")
    pairs = _masked_pairs(model)
    if not pairs:
        raise MethodError("sparse: the model has no sparse adapters to calibrate (apply the method first)")
    layers = [m for pair in pairs for m in pair]
    for layer in layers:
        if not torch.equal(layer.weight.detach(), layer.weight_init * layer.weight_mask):
            raise MethodError("sparse: calibrate must run right after inject, before training changes the weights")
    weights = [layer.weight_scored for layer in layers]
    scores = snip_scores(layers, weights, [_loss_fn(model, batch) for batch in batches])
    _set_masks(layers, keep_masks(scores, cfg.sparsity, cfg.scope))


def _mask_pairs(model: nn.Module) -> list[Pair]:
    """Replace each adapter's projections (LoRA's A and B) by MaskedLinear, in module order."""
    pairs = []
    for module in list(model.modules()):
        if isinstance(module, BottleneckAdapter):
            module.down, module.up = MaskedLinear(module.down), MaskedLinear(module.up)
            pairs.append((module.down, module.up))
        elif isinstance(module, LoraLayer):
            for name in list(module.lora_A):
                module.lora_A[name] = MaskedLinear(module.lora_A[name])
                module.lora_B[name] = MaskedLinear(module.lora_B[name])
                pairs.append((module.lora_A[name], module.lora_B[name]))
    return pairs


def _masked_pairs(model: nn.Module) -> list[Pair]:
    pairs = []
    for module in model.modules():
        if isinstance(module, BottleneckAdapter) and isinstance(module.down, MaskedLinear):
            pairs.append((module.down, module.up))
        elif isinstance(module, LoraLayer):
            pairs.extend((module.lora_A[n], module.lora_B[n]) for n in module.lora_A
                         if isinstance(module.lora_A[n], MaskedLinear))
    return pairs


def _set_masks(layers: list[MaskedLinear], masks: list[torch.Tensor]) -> None:
    """Set the keep-masks and restart the kept weights from their dense initial values."""
    with torch.no_grad():
        for layer, keep in zip(layers, masks, strict=True):
            layer.weight_mask.copy_(keep)
            if not layer.weight.is_meta:
                layer.weight.copy_(layer.weight_init * layer.weight_mask)


def _loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    if "labels" not in batch:
        raise MethodError("sparse: a SNIP batch needs labels, so that the model returns a loss")
    return lambda: _loss(model, batch)


def _loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's loss on `batch` in eval mode: no dropout noise in the scores."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    training = model.training
    model.eval()
    try:
        loss = model(**batch).loss
    finally:
        model.train(training)
    if loss is None:
        raise MethodError(f"sparse: {type(model).__name__} returned no loss for the SNIP batch; use a model with a "
                          "task head, or scoring magnitude, random or synflow")
    return loss
