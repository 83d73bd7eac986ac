"""apply_method, the counting convention, and saving/loading a method's weights."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file
from torch import nn

from peftlab.atomic import follow_umask, replace_dir

from .families import family_of, head_names, is_fixed_table
from .registry import MethodConfig, MethodError, get_method, make_method_config
from .wrapping import MethodLayer

WEIGHTS_NAME = "method.safetensors"
CONFIG_NAME = "method_config.json"
METHOD_FILES = (WEIGHTS_NAME, CONFIG_NAME)
# The methods that are peft tuners end to end (lora, ia3, prefix and every tuner of the generic `peft` method) are
# also saved in peft's own format, in <method dir>/peft, so PeftModel.from_pretrained(base, <method dir>/peft)
# loads them without peftlab. SparseAdapter builds on LoRA layers but its masks have no peft equivalent: ours only.
PEFT_DIR = "peft"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
PEFT_METHODS = frozenset({"lora", "ia3", "prefix", "peft"})


def apply_method(model: nn.Module, cfg: MethodConfig,
                 calibration: Sequence[Mapping[str, torch.Tensor]] | None = None) -> nn.Module:
    """Apply a method to a transformers model, in place, and return the model to train.

    Everything is frozen except the method's parameters and, for classification models, the task head.
    The result is the model itself except for prefix tuning, which returns peft's PeftModel wrapper
    (it supports the same calls: model(**batch), generate, train/eval, parameters).

    A method that scores data when applied (cfg.calibration_batches() > 0: SparseAdapter's SNIP) takes exactly
    that many batches in `calibration`, model(**batch) inputs with labels; a training run hands over the first
    batches it trains on (peftlab.train.first_batches). A meta-device model (the budget solver's) has no values
    to score and takes none.
    """
    needed = cfg.calibration_batches()
    meta = any(p.is_meta for p in model.parameters())
    if needed and not meta:
        batches = list(calibration or ())
        if len(batches) != needed:
            raise MethodError(
                f"{cfg.method}: applying it scores {needed} training batch(es), got {len(batches)}; pass "
                f"calibration=peftlab.train.first_batches(train_rows, train_cfg, pad_id, {needed})"
            )
    elif calibration is not None:
        raise MethodError(f"{cfg.method}: this configuration scores no data; calibration batches were given")
    model = _apply(model, cfg)
    if needed and not meta:
        get_method(cfg.method).calibrate(model, cfg, batches)
    return model


def _apply(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    """apply_method without calibration: load_method's, whose masks come from the saved file."""
    spec = get_method(cfg.method)
    if not isinstance(cfg, spec.config_cls):
        raise MethodError(f"{cfg.method}: expected a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    if spec.needs_family:
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


def mask_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The fixed masks' buffers by state-dict name (saved with the method and in training checkpoints)."""
    ids = {id(keep) for _, keep in fixed_masks(model)}
    return {name: b for name, b in model.named_buffers() if id(b) in ids}


def _has_wrappers(model: nn.Module) -> bool:
    return any(isinstance(m, (MethodLayer, BaseTunerLayer)) for m in model.modules())


def task_heads(model: nn.Module) -> list[nn.Module]:
    """The classification head(s) of a *For<Task> model (direct children named as in HEAD_NAMES)."""
    hf = model.get_base_model() if isinstance(model, PeftModel) else model
    return [getattr(hf, name) for name in head_names(hf)]


def added_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters a method added, found by walking wrapper modules (peft's and ours), not by name."""
    out: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, MethodLayer):
            out.extend(module.method_parameters())
        elif isinstance(module, BaseTunerLayer):
            base = {id(p) for p in module.get_base_layer().parameters()}
            out.extend(p for p in module.parameters() if id(p) not in base)
    if isinstance(model, PeftModel) and model.active_peft_config.is_prompt_learning:  # other tuners have none
        out.extend(model.prompt_encoder.parameters())
    return list({id(p): p for p in out}.values())


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors (the method's and the head's), keyed by parameter name, each tensor once."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def save_method(model: nn.Module, cfg: MethodConfig, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write out_dir/method.safetensors (trainable tensors only) and out_dir/method_config.json; return
    {file name: sha256} of both, for the run record: load_method refuses files that no longer match.

    The config holds the resolved options, plus cfg.derived() under "derived" (e.g. LoRA's effective scale).
    LoRA, IA3, prefix tuning and peft's other tuners are also written in peft's format to out_dir/peft
    (save_peft_format); their sha256s are returned too, as "peft/adapter_config.json" and
    "peft/adapter_model.safetensors"."""
    from peftlab import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().cpu() for k, v in (trainable_state_dict(model) | mask_buffers(model)).items()}
    config = cfg.to_dict() | {"peftlab_version": __version__}
    if cfg.derived():
        config["derived"] = cfg.derived()
    # write then rename, so a reader never sees a half-written file
    save_file(state, out / (WEIGHTS_NAME + ".tmp"), metadata={"method": cfg.method})
    (out / (CONFIG_NAME + ".tmp")).write_text(json.dumps(config, sort_keys=True, indent=2) + "\n")
    checksums = {name: hashlib.sha256((out / (name + ".tmp")).read_bytes()).hexdigest() for name in METHOD_FILES}
    for name in METHOD_FILES:
        follow_umask(out / (name + ".tmp"))  # safetensors writes 0600
        os.replace(out / (name + ".tmp"), out / name)
    return checksums | save_peft_format(model, cfg, out / PEFT_DIR)


def save_peft_format(model: nn.Module, cfg: MethodConfig, out_dir: str | os.PathLike) -> dict[str, str]:
    """Save a LoRA / IA3 / prefix / `peft` method model as peft's PeftModel.save_pretrained does (adapter_config.json,
    adapter_model.safetensors), so that PeftModel.from_pretrained(fresh_base, out_dir) rebuilds it; a
    classifier's head is saved as modules_to_save. Returns {"peft/<file>": sha256}; {} for other methods.

    LoRA and IA3 are injected into the model itself (inject_adapter_in_model: no PeftModel to call
    save_pretrained on), so their file is written here under peft's key convention: "base_model.model." +
    parameter name without the adapter name, the head's parameters under their own names."""
    if cfg.method not in PEFT_METHODS:
        return {}
    from peft import TaskType

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    if isinstance(model, PeftModel):  # prefix tuning and the `peft` method: peft's own wrapper saves itself
        model.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # a generated model card: not part of the method
        config = model.peft_config["default"]
    else:
        config = copy.deepcopy(model.peft_config["default"])
        heads = head_names(model)
        if heads:
            config.task_type, config.modules_to_save = TaskType.SEQ_CLS, heads
        elif model.config.is_encoder_decoder:
            config.task_type = TaskType.SEQ_2_SEQ_LM
        elif type(model).__name__.endswith("ForCausalLM"):
            config.task_type = TaskType.CAUSAL_LM
        config.inference_mode = True
        config.base_model_name_or_path = getattr(model.config, "_name_or_path", None) or None
        state = {"base_model.model." + name.replace(".default", ""): p.contiguous().cpu()
                 for name, p in trainable_state_dict(model).items()}
        config.save_pretrained(tmp)
        save_file(state, tmp / PEFT_FILES[1], metadata={"format": "pt"})
    sort_set_fields(tmp / PEFT_FILES[0], config)
    checksums = {f"{PEFT_DIR}/{name}": hashlib.sha256((tmp / name).read_bytes()).hexdigest() for name in PEFT_FILES}
    follow_umask(tmp)
    replace_dir(tmp, out)
    return checksums


def sort_set_fields(config_file: Path, config: PeftConfig) -> None:
    """peft writes a config's set fields (target_modules, IA3's feedforward_modules) as lists in hash order, which
    changes from process to process: sorted, one run saved twice gives the same bytes and the same sha256."""
    sets = {name for name, value in vars(config).items() if isinstance(value, set)}
    fields = json.loads(config_file.read_text())
    for name in sets & fields.keys():
        if isinstance(fields[name], list):
            fields[name] = sorted(fields[name])
    config_file.write_text(json.dumps(fields, indent=2, sort_keys=True))  # peft's own layout


def read_method_files(out_dir: str | os.PathLike, sha256: Mapping[str, str]) -> dict[str, bytes]:
    """The bytes of a saved method's files, each checked against the sha256 its run recorded (save_method's
    return value). A file that changed since training (bit rot, a partial copy, another run's file) raises
    MethodError naming the file and both hashes, instead of evaluating as some other model."""
    out = Path(out_dir)
    contents = {}
    for name in METHOD_FILES:
        path = out / name
        if not sha256.get(name):
            raise MethodError(f"no sha256 recorded for {path}: its run record predates checksums; retrain the run")
        data = path.read_bytes()
        if (actual := hashlib.sha256(data).hexdigest()) != sha256[name]:
            raise MethodError(f"{path} is corrupt or was changed after training: its sha256 is {actual}, "
                              f"the run recorded {sha256[name]}; retrain the run")
        contents[name] = data
    return contents


def saved_method_name(out_dir: str | os.PathLike) -> str:
    """The registry name of the method saved in out_dir (by save_method); load_method verifies the files."""
    path = Path(out_dir) / CONFIG_NAME
    name = json.loads(path.read_text()).get("method")
    if name is None:
        raise MethodError(f"{path} has no 'method' key")
    return name


def load_method(base_model: nn.Module, out_dir: str | os.PathLike, sha256: Mapping[str, str]) -> nn.Module:
    """Apply the saved method to a fresh base model and load its weights; the files must match `sha256`
    (what save_method returned, recorded in the run's train.json) and the keys must match exactly."""
    out = Path(out_dir)
    files = read_method_files(out, sha256)  # the bytes that were checked are the bytes that are parsed
    options = json.loads(files[CONFIG_NAME])
    name = options.pop("method", None)
    if name is None:
        raise MethodError(f"{out / CONFIG_NAME} has no 'method' key")
    options.pop("peftlab_version", None)
    derived = options.pop("derived", None)
    cfg = make_method_config(name, options)
    if derived is not None and derived != cfg.derived():
        # the code now derives other values from the same options (e.g. LoRA's scale): not the model that trained
        raise MethodError(f"{out / CONFIG_NAME}: saved derived values {derived} != {cfg.derived()} computed now")
    model = _apply(base_model, cfg)  # no data: the saved masks are loaded below
    state = load_bytes(files[WEIGHTS_NAME])
    masks = mask_buffers(model)
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
