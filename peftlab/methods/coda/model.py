"""coda: the model side of the method (inject), imported on first use."""

import re

from torch import nn

from ..families import family_of
from ..registry import MethodError
from .config import CodaConfig
from .layer import CodaLayer, ParallelLayer

# whole layers, by family (families.py names projections inside them)
_ENCODER = {
    "bert": r"(.*\.)?encoder\.layer\.\d+",
    "bart": r"(.*\.)?encoder\.layers\.\d+",
    "t5": r"(.*\.)?encoder\.block\.\d+",
}
_DECODER = {"bart": r"(.*\.)?decoder\.layers\.\d+", "t5": r"(.*\.)?decoder\.block\.\d+"}
_DECODER_ONLY = ("llama",)  # families.py's decoder-only LLMs (Llama, Mistral, Qwen2/3, Gemma)


def inject(model: nn.Module, cfg: CodaConfig) -> nn.Module:
    family = family_of(model)
    if not model.config.is_encoder_decoder and family.name in _DECODER_ONLY:
        # CoDA (Lei et al. 2023) routes tokens past an encoder's layers; a causal decoder's skipped tokens would
        # have no keys/values for the tokens after them, and generation feeds one token at a time: nothing to route
        raise MethodError(f"coda: {model.config.model_type} is a decoder-only model; CoDA's token routing needs an "
                          f"encoder (supported: {sorted(_ENCODER)})")
    if family.name not in _ENCODER:  # DeBERTa's layers take relative positions that routing would have to cut too
        raise MethodError(f"coda: no token routing for the {family.name!r} family; supported: {sorted(_ENCODER)}")
    attention = model.config._attn_implementation
    if attention not in ("eager", "sdpa"):
        raise MethodError(f"coda: needs eager or sdpa attention (4D masks it can cut down), not {attention!r}")
    dim = model.config.hidden_size
    t5 = family.name == "t5"
    _wrap_layers(model, _ENCODER[family.name], lambda layer: CodaLayer(layer, dim, cfg, t5))
    if cfg.decoder_adapters and model.config.is_encoder_decoder:
        _wrap_layers(model, _DECODER[family.name], lambda layer: ParallelLayer(layer, dim, cfg))
    return model


def _wrap_layers(model: nn.Module, pattern: str, make) -> None:
    names = [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]
    if not names:
        raise MethodError(f"coda: no layer of this {type(model).__name__} matches {pattern}")
    for name in names:
        parent, _, child = name.rpartition(".")
        layers = model.get_submodule(parent)
        setattr(layers, child, make(getattr(layers, child)))
