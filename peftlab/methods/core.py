"""apply_method, the counting convention, and saving/loading a method's weights."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from safetensors.torch import load_file, save_file
from torch import nn

from .families import HEAD_NAMES, family_of, is_fixed_table
from .registry import MethodConfig, MethodError, get_method, make_method_config
from .wrapping import MethodLayer

WEIGHTS_NAME = "method.safetensors"
CONFIG_NAME = "method_config.json"


def apply_method(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    """Apply a method to a transformers model, in place, and return the model to train.

    Everything is frozen except the method's parameters and, for classification models, the task head.
    The result is the model itself except for prefix tuning, which returns peft's PeftModel wrapper
    (it supports the same calls: model(**batch), generate, train/eval, parameters).
    """
    spec = get_method(cfg.method)
    if not isinstance(cfg, spec.config_cls):
        raise MethodError(f"{cfg.method}: expected a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    family_of(model)
    if isinstance(model, PeftModel) or _has_wrappers(model):
        raise MethodError("this model already has a method applied; start from a fresh base model")
    model.requires_grad_(False)
    model = spec.inject(model, cfg)
    for module in model.modules():
        if is_fixed_table(module):
            module.requires_grad_(False)
    for head in task_heads(model):
        if not isinstance(head, ModulesToSaveWrapper):  # peft's wrapper trains its own copy of the head
            head.requires_grad_(True)
    return model


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts under the project's convention (see the package docstring).

    trainable: trainable parameters outside the task head (method parameters; all of them for `full`).
    total: the base model's backbone: every parameter except the task head, fixed position tables and
        the parameters the method added. Identical before and after apply_method, so it is the budget's
        denominator.
    head: the task head (0 for seq2seq models), trained by every method, never part of a budget.
    added: parameters the method added (adapters, LoRA matrices, prefixes).
    """

    trainable: int
    total: int
    head: int = 0
    added: int = 0

    @property
    def fraction(self) -> float:
        """trainable / total: the realised budget."""
        return self.trainable / self.total if self.total else 0.0


def count_parameters(model: nn.Module) -> ParamCount:
    params = {id(p): p for p in model.parameters()}  # a tied tensor is one Parameter object: counted once
    fixed = {id(p) for m in model.modules() if is_fixed_table(m) for p in m.parameters()}
    head_all, head_own = set(), set()
    for head in task_heads(model):
        head_all |= {id(p) for p in head.parameters()}
        own = head.modules_to_save if isinstance(head, ModulesToSaveWrapper) else head
        head_own |= {id(p) for p in own.parameters()}
    added = {id(p) for p in added_parameters(model)}
    backbone = [p for i, p in params.items() if i not in fixed and i not in head_all]
    pruned = {id(p): p.numel() - int(keep.sum()) for p, keep in fixed_masks(model)}  # removed, not trained
    return ParamCount(
        trainable=sum(p.numel() - pruned.get(id(p), 0) for p in backbone if p.requires_grad),
        total=sum(p.numel() for p in backbone if id(p) not in added),
        head=sum(params[i].numel() for i in head_own),
        added=sum(params[i].numel() - pruned.get(i, 0) for i in added),
    )


def output_layer_tied(model: nn.Module) -> bool:
    """Whether the model's output layer (lm_head) is its input embedding matrix (one Parameter, counted once)."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def untie_output_layer(model: nn.Module) -> nn.Module:
    """Give a weightless (meta-device) model its own output layer, as its checkpoint has it.

    transformers 5 builds (m)T5 from a config with lm_head tied to the input embeddings whatever the config says
    (T5Config/MT5Config force tie_word_embeddings=True), but checkpoints whose config.json says
    tie_word_embeddings: false (mT5, T5 v1.1) store their own lm_head, and from_pretrained leaves the two apart:
    mT5-base loads with 582.4M parameters, not the 390.3M its config builds. Planning and the budget solver count
    on architectures built from configs, so they untie what the checkpoint unties."""
    out = model.get_output_embeddings()
    if out is None:
        return model
    if out.weight.device.type != "meta":
        raise MethodError("untie_output_layer is for meta-device architectures (a real model is loaded untied)")
    if output_layer_tied(model):
        out.weight = nn.Parameter(torch.empty_like(out.weight), requires_grad=out.weight.requires_grad)
    return model


def fixed_masks(model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, boolean keep-mask) pairs of methods that hold some entries of their parameters at zero
    (SparseAdapter). Modules declare them with a `fixed_masks()` method; the masked entries count as removed,
    and the masks (persistent buffers) are saved and loaded with the method's weights."""
    return [pair for m in model.modules() if callable(getattr(m, "fixed_masks", None)) for pair in m.fixed_masks()]


def _mask_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    ids = {id(keep) for _, keep in fixed_masks(model)}
    return {name: b for name, b in model.named_buffers() if id(b) in ids}


def _has_wrappers(model: nn.Module) -> bool:
    return any(isinstance(m, (MethodLayer, BaseTunerLayer)) for m in model.modules())


def task_heads(model: nn.Module) -> list[nn.Module]:
    """The classification head(s) of a *For<Task> model (direct children named as in HEAD_NAMES)."""
    hf = model.get_base_model() if isinstance(model, PeftModel) else model
    return [m for name in HEAD_NAMES if isinstance(m := getattr(hf, name, None), nn.Module)]


def added_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters a method added, found by walking wrapper modules (peft's and ours), not by name."""
    out: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, MethodLayer):
            out.extend(module.method_parameters())
        elif isinstance(module, BaseTunerLayer):
            base = {id(p) for p in module.get_base_layer().parameters()}
            out.extend(p for p in module.parameters() if id(p) not in base)
    if isinstance(model, PeftModel) and model.prompt_encoder is not None:
        out.extend(model.prompt_encoder.parameters())
    return list({id(p): p for p in out}.values())


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors (the method's and the head's), keyed by parameter name, each tensor once."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def save_method(model: nn.Module, cfg: MethodConfig, out_dir: str | os.PathLike) -> None:
    """Write out_dir/method.safetensors (trainable tensors only) and out_dir/method_config.json (the resolved
    options, plus cfg.derived() under "derived")."""
    from peftlab import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().cpu() for k, v in (trainable_state_dict(model) | _mask_buffers(model)).items()}
    config = cfg.to_dict() | {"peftlab_version": __version__}
    if cfg.derived():
        config["derived"] = cfg.derived()
    # write then rename, so a reader never sees a half-written file
    save_file(state, out / (WEIGHTS_NAME + ".tmp"), metadata={"method": cfg.method})
    (out / (CONFIG_NAME + ".tmp")).write_text(json.dumps(config, sort_keys=True, indent=2) + "\n")
    os.replace(out / (WEIGHTS_NAME + ".tmp"), out / WEIGHTS_NAME)
    os.replace(out / (CONFIG_NAME + ".tmp"), out / CONFIG_NAME)


def load_method(base_model: nn.Module, out_dir: str | os.PathLike) -> nn.Module:
    """Apply the saved method to a fresh base model and load its weights; keys must match exactly."""
    out = Path(out_dir)
    options = json.loads((out / CONFIG_NAME).read_text())
    name = options.pop("method", None)
    if name is None:
        raise MethodError(f"{out / CONFIG_NAME} has no 'method' key")
    options.pop("peftlab_version", None)
    derived = options.pop("derived", None)
    cfg = make_method_config(name, options)
    if derived is not None and derived != cfg.derived():
        # the code now derives other values from the same options (e.g. LoRA's scale): not the model that trained
        raise MethodError(f"{out / CONFIG_NAME}: saved derived values {derived} != {cfg.derived()} computed now")
    model = apply_method(base_model, cfg)
    state = load_file(out / WEIGHTS_NAME)
    masks = _mask_buffers(model)
    params = dict(model.named_parameters()) | masks
    expected = set(trainable_state_dict(model)) | set(masks)
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise MethodError(
            f"{out / WEIGHTS_NAME} does not fit {name}: missing keys {missing}, unexpected keys {unexpected}"
        )
    with torch.no_grad():
        for key, value in state.items():
            if params[key].shape != value.shape:
                raise MethodError(f"{key}: saved shape {tuple(value.shape)} != {tuple(params[key].shape)}")
            params[key].copy_(value)
    return model


def merge_method(model: nn.Module) -> nn.Module:
    """Fold LoRA / IA3 into the base weights and remove the wrappers (for inference without overhead)."""
    if isinstance(model, PeftModel) or any(isinstance(m, MethodLayer) for m in model.modules()):
        raise MethodError("only LoRA and IA3 can be merged into the base weights")
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    return model
