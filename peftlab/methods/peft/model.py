"""peft: the model side of the generic path (inject), imported on first use."""

import contextlib
import dataclasses

import torch
from peft import PeftConfig, PeftType, TaskType, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from torch import nn

from ..families import DECODER_ONLY, family_of, head_names
from ..registry import MethodError
from .config import PeftTunerConfig


def peft_config(cfg: PeftTunerConfig, model: nn.Module) -> PeftConfig:
    """The tuner's peft config for this model; peft's own checks of the study's fields become MethodErrors."""
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[cfg.tuner]]
    heads = head_names(model)
    name = type(model).__name__
    if heads:
        task = TaskType.SEQ_CLS
    elif model.config.is_encoder_decoder:
        task = TaskType.SEQ_2_SEQ_LM
    elif model.get_output_embeddings() is not None:
        task = TaskType.CAUSAL_LM
    else:
        raise MethodError(f"peft: supports seq2seq, causal LM and classification models, not {name}")
    if cfg.spec.prompt_learning and heads and model.config.is_encoder_decoder:
        # peft 0.21 prepends virtual tokens as inputs_embeds, which (m)T5 and mBART classifiers refuse at the first
        # forward ("Passing input embeddings is currently not supported"): refuse before training instead
        raise MethodError(f"peft: {cfg.tuner} needs a model that takes inputs_embeds; {name} does not")
    if cfg.spec.prompt_learning and heads and model.config.model_type in DECODER_ONLY:
        # a decoder-only classifier pools each row's last non-pad token, found from input_ids; given inputs_embeds
        # (peft's virtual tokens) it takes the last position, a pad for every shorter row of a right-padded batch
        raise MethodError(f"peft: {cfg.tuner} cannot find the last token {name} classifies: it classifies each "
                          f"row at its last non-pad token, which it cannot find from the inputs_embeds peft passes")
    kwargs = cfg.peft_kwargs()
    if not cfg.spec.prompt_learning:
        kwargs.setdefault("target_modules", list(family_of(model).lora_targets))
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise MethodError(f"peft: {config_cls.__name__} has no field {unknown[0]!r}; its fields: {sorted(fields)}")
    try:
        return config_cls(task_type=task, modules_to_save=heads or None, **kwargs)
    except (TypeError, ValueError) as err:  # peft's __post_init__ checks (e.g. AdaLoRA's total_step)
        raise MethodError(f"peft: {cfg.tuner} config {cfg.config}: {err}") from err


def inject(model: nn.Module, cfg: PeftTunerConfig) -> nn.Module:
    config = peft_config(cfg, model)
    meta = any(p.is_meta for p in model.parameters())
    # BOFT fills its butterfly permutation matrices entry by entry (Tensor.item()), which the meta device cannot
    # do: build them on the CPU; peft moves the trainable blocks to the base layer's (meta) device itself.
    device = torch.device("cpu") if meta and cfg.tuner == "BOFT" else contextlib.nullcontext()
    try:
        with device:
            return get_peft_model(model, config)
    except (ValueError, NotImplementedError) as err:  # e.g. "Target modules ... not found", a block size
        raise MethodError(f"peft: {cfg.tuner} on {type(model).__name__}: {err}") from err

