"""inject (apply_method's part) and prune_at_init for SparseAdapter."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from ..adapter_layers import BottleneckAdapter
from ..core import task_heads
from ..registry import MethodError, get_method
from .config import SparseConfig
from .layer import MaskedLinear, Pair, keep_masks, planned_masks, set_scoring_weights, snip_scores, synflow_scores

CALIBRATION_SHAPE = (8, 32)  # (sequences, tokens) of the synthetic SNIP batch
_FIRST_ID = 4  # synthetic token ids start above the usual special ids (pad, bos/cls, eos/sep, unk)


def inject(model: nn.Module, cfg: SparseConfig) -> nn.Module:
    """Apply the dense base method, put fixed masks on its weight matrices and prune them.

    apply_method gets no data, so SNIP scores here use a synthetic batch (`synthetic_batch`: random token ids
    from the model's vocabulary, random labels; from torch's global RNG, which the training code seeds before
    apply_method). Call `prune_at_init(model, cfg, batch)` right after apply_method to score a real batch
    instead. On a meta-device model (the budget solver's) only the counts are set.
    """
    model = get_method(cfg.base).inject(model, cfg.base_config())
    pairs = _mask_pairs(model)
    if not pairs:
        raise MethodError(f"sparse: the {cfg.base} method added no adapter weights to prune")
    if not any(m.weight.is_meta for pair in pairs for m in pair):
        set_scoring_weights(pairs)
    _prune(model, pairs, cfg, None)
    return model


def prune_at_init(model: nn.Module, cfg: SparseConfig, batch: Mapping[str, torch.Tensor]) -> None:
    """Prune again from the adapters' dense initial weights, scoring `batch` (a model(**batch) input with labels,
    so that the model returns a loss: one training batch is what SNIP uses). Must run before the first training
    step; the masks it sets are the ones saved with the method.
    """
    if cfg.method != "sparse":
        raise MethodError(f"prune_at_init needs a sparse config, got {cfg.method!r}")
    pairs = _masked_pairs(model)
    if not pairs:
        raise MethodError("prune_at_init: the model has no sparse adapters (apply_method(model, cfg) first)")
    for layer in (m for pair in pairs for m in pair):
        if not torch.equal(layer.weight.detach(), layer.weight_init * layer.weight_mask):
            raise MethodError("prune_at_init must run right after apply_method, before training changes the weights")
    _prune(model, pairs, cfg, batch)


def synthetic_batch(model: nn.Module, shape: tuple[int, int] = CALIBRATION_SHAPE) -> dict[str, torch.Tensor]:
    """Random token ids from the model's vocabulary, ending in EOS (mBART and T5 classifiers pool on it), and
    random labels: classes for a classifier, a target sequence for a seq2seq model."""
    config = model.config
    device = next(model.parameters()).device
    batch, length = shape[0], min(shape[1], getattr(config, "max_position_embeddings", None) or shape[1])
    low = min(_FIRST_ID, config.vocab_size - 1)
    ids = torch.randint(low, config.vocab_size, (batch, length), device=device)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        ids[ids == eos] = low if eos != low else low + 1
        ids[:, -1] = eos
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if task_heads(model):
        if config.num_labels == 1:  # regression
            out["labels"] = torch.randn(batch, device=device)
        else:
            out["labels"] = torch.randint(0, config.num_labels, (batch,), device=device)
    elif config.is_encoder_decoder:
        out["labels"] = torch.randint(low, config.vocab_size, (batch, max(2, length // 2)), device=device)
    else:
        raise MethodError(
            f"sparse: SNIP needs a loss, and a bare {type(model).__name__} has none; use a model with a task head, "
            "or scoring magnitude, random or synflow"
        )
    return out


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


def _prune(model: nn.Module, pairs: list[Pair], cfg: SparseConfig, batch: Mapping[str, torch.Tensor] | None) -> None:
    layers = [m for pair in pairs for m in pair]
    if any(layer.weight.is_meta for layer in layers):
        masks = planned_masks(layers, cfg.sparsity, cfg.scope)
    else:
        weights = [layer.weight_scored for layer in layers]
        if cfg.scoring == "snip":
            scores = snip_scores(layers, weights, lambda: _loss(model, batch))
        elif cfg.scoring == "synflow":
            scores = synflow_scores(pairs, weights)
        elif cfg.scoring == "magnitude":
            scores = [w.abs() for w in weights]
        else:
            scores = [torch.rand_like(w, dtype=torch.float) for w in weights]
        masks = keep_masks(scores, cfg.sparsity, cfg.scope)
    with torch.no_grad():
        for layer, keep in zip(layers, masks, strict=True):
            layer.weight_mask.copy_(keep)
            if not layer.weight.is_meta:
                layer.weight.copy_(layer.weight_init * layer.weight_mask)


def _loss(model: nn.Module, batch: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
    """The model's loss on `batch` (or a synthetic one) in eval mode: no dropout noise in the scores."""
    device = next(model.parameters()).device
    batch = synthetic_batch(model) if batch is None else {k: v.to(device) for k, v in batch.items()}
    if "labels" not in batch:
        raise MethodError("sparse: the SNIP batch needs labels, so that the model returns a loss")
    training = model.training
    model.eval()
    try:
        loss = model(**batch).loss
    finally:
        model.train(training)
    if loss is None:
        raise MethodError(f"sparse: {type(model).__name__} returned no loss for the SNIP batch")
    return loss
