"""peftlab's bottleneck adapters against AdapterHub's (adapters 1.3), from a committed fixture.

tests/fixtures/adapterhub/make_reference.py (run once, in its own environment) built tiny random BERT, BART,
mBART and T5 models, added AdapterHub's seq_bn (Pfeiffer), double_seq_bn (Houlsby), par_bn (parallel) and
compacter with random weights and recorded every hidden state. Here the same base weights go into
transformers 5 models, peftlab's method goes on, AdapterHub's adapter weights are copied in by name, and every
hidden state must agree (in eval mode: dropout placement is documented in each method's config). BART stands
in for Marian (its layers are BART's; AdapterHub supports BART, not Marian), mBART for M2M100/NLLB (the same
pre-LN layers).

    PYTHONPATH=. python tests/test_adapterhub_reference.py   # prints the differences, per adapter and family
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import transformers as tf
from safetensors.torch import load_file

from peftlab.methods import apply_method, count_parameters, make_method_config
from peftlab.methods.families import FAMILIES

FIXTURE = Path(__file__).parent / "fixtures" / "adapterhub"
TOL = 1e-5
# AdapterHub's config -> peftlab's method and options (bottleneck d / reduction factor = 16 / 4; the rest
# AdapterHub's defaults: seq_bn and par_bn use relu, double_seq_bn swish; par_bn scales by 4)
METHODS = {
    "seq_bn": ("pfeiffer", {"bottleneck": 4, "activation": "relu"}),
    "double_seq_bn": ("houlsby", {"bottleneck": 4, "activation": "swish"}),
    "par_bn": ("parallel", {"bottleneck": 4, "activation": "relu", "scaling": 4.0}),
    # Houlsby placement, PHM projections (n = 4, rank 1, one shared rule tensor), gelu; bottleneck 16 / 2
    "compacter": ("compacter", {"bottleneck": 8, "phm_dim": 4, "phm_rank": 1, "activation": "gelu"}),
}
MODEL_TYPES = ("bert", "bart", "mbart", "t5")
CASES = [(a, m) for a in METHODS for m in MODEL_TYPES]


@pytest.fixture(scope="module")
def reference() -> tuple[dict, dict[str, torch.Tensor]]:
    return _load()


def _load() -> tuple[dict, dict[str, torch.Tensor]]:
    return json.loads((FIXTURE / "reference.json").read_text()), load_file(FIXTURE / "reference.safetensors")


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _base_model(meta: dict, tensors: dict[str, torch.Tensor], model_type: str) -> torch.nn.Module:
    spec = meta["models"][model_type]
    cls = getattr(tf, spec["class"])
    model = cls(cls.config_class(**spec["config"]))
    missing, unexpected = model.load_state_dict(_section(tensors, f"{model_type}/base/"), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def _our_site(model_type: str, method: str, site: str) -> str:
    """Where peftlab puts the adapter AdapterHub keeps under `site` (the module holding its `adapters`)."""
    rules = {  # (AdapterHub site, method or None for any) -> peftlab's wrapped module
        "bert": [(r"(.*)\.attention\.output", None, r"\1.attention.output.dense"),
                 (r"(.*)\.output", "pfeiffer", r"\1.output.LayerNorm"),
                 (r"(.*)\.output", None, r"\1.output.dense")],
        "bart": [(r"(.*)\.attention_adapters", None, r"\1.self_attn.out_proj"),
                 (r"(.*)\.output_adapters", "pfeiffer", r"\1.final_layer_norm"),
                 (r"(.*)\.output_adapters", None, r"\1.fc2")],
        "mbart": [(r"(.*)\.attention_adapters", None, r"\1.self_attn.out_proj"),
                  (r"(.*)\.output_adapters", "pfeiffer", r"\1"),
                  (r"(.*)\.output_adapters", None, r"\1.fc2")],
        "t5": [(r"(.*)\.layer\.0", None, r"\1.layer.0.SelfAttention.o"),
               (r"(.*)\.layer\.([12])", "pfeiffer", r"\1.layer.\2"),
               (r"(.*)\.layer\.([12])", None, r"\1.layer.\2.DenseReluDense.wo")],
    }[model_type]
    for pattern, only, ours in rules:
        if only in (None, method) and re.fullmatch(pattern, site):
            return re.sub(pattern, ours, site)
    raise AssertionError(f"no peftlab site for AdapterHub's {site} ({model_type}, {method})")


_PARAMS = {"adapter_down.0.weight": "down.weight", "adapter_down.0.bias": "down.bias",
           "adapter_up.weight": "up.weight", "adapter_up.bias": "up.bias",
           # Compacter's PHM layers: W = sum_i kron(rule_i, W_left_i @ W_right_i) (ours: s_i @ t_i)
           "adapter_down.0.W_left": "down.s", "adapter_down.0.W_right": "down.t", "adapter_down.0.b": "down.bias",
           "adapter_up.W_left": "up.s", "adapter_up.W_right": "up.t", "adapter_up.b": "up.bias"}


def _our_name(model_type: str, method: str, key: str, adapter: str, params: dict[str, torch.Tensor]) -> str:
    """peftlab's parameter for AdapterHub's `key`."""
    if key == f"shared_parameters.{adapter}.phm_rule":  # one tensor, shared by every PHM layer in both
        return next(n for n in params if n.endswith(".rule"))
    site, _, param = key.partition(f".adapters.{adapter}.")
    return f"{_our_site(model_type, method, site)}.adapter.{_PARAMS[param]}"


def _states(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    if getattr(out, "encoder_hidden_states", None) is not None:
        return ({f"encoder.{i}": h for i, h in enumerate(out.encoder_hidden_states)}
                | {f"decoder.{i}": h for i, h in enumerate(out.decoder_hidden_states)})
    return {f"encoder.{i}": h for i, h in enumerate(out.hidden_states)}


def _max_diff(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> float:
    assert set(ours) == set(theirs)
    return max(float((ours[k] - theirs[k]).abs().max()) for k in theirs)


def adapted_difference(reference, adapter: str, model_type: str) -> tuple[float, float, int, int]:
    """(max |ours - AdapterHub's| over all hidden states, max |AdapterHub's - base model's|, our added
    parameters, AdapterHub's)."""
    meta, tensors = reference
    method, options = METHODS[adapter]
    model = apply_method(_base_model(meta, tensors, model_type), make_method_config(method, options)).eval()
    params = dict(model.named_parameters())
    theirs = _section(tensors, f"{model_type}/{adapter}/adapter/")
    copied = {key: _our_name(model_type, method, key, adapter, params) for key in theirs}
    with torch.no_grad():
        for key, value in theirs.items():
            params[copied[key]].copy_(value)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(copied.values())  # every adapter weight came from AdapterHub, and nothing else trains
    inputs = _section(tensors, f"{model_type}/inputs/")
    expected = {k: v for k, v in _section(tensors, f"{model_type}/{adapter}/").items() if "/" not in k}
    base = {k: v for k, v in _section(tensors, f"{model_type}/none/").items()}
    added = meta["models"][model_type]["added_parameters"][adapter]
    return _max_diff(_states(model, inputs), expected), _max_diff(base, expected), count_parameters(model).added, added


@pytest.fixture(autouse=True)
def _bart_as_marian(monkeypatch):
    monkeypatch.setitem(FAMILIES, "bart", FAMILIES["marian"])  # the test's BART runs peftlab's Marian code


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_base_models_match_the_reference(reference, model_type: str) -> None:
    meta, tensors = reference
    model = _base_model(meta, tensors, model_type)
    ours = _states(model, _section(tensors, f"{model_type}/inputs/"))
    assert _max_diff(ours, _section(tensors, f"{model_type}/none/")) < TOL


@pytest.mark.parametrize("adapter,model_type", CASES, ids=[f"{a}-{m}" for a, m in CASES])
def test_adapters_match_adapterhub(reference, adapter: str, model_type: str) -> None:
    diff, moved, ours, theirs = adapted_difference(reference, adapter, model_type)
    assert ours == theirs  # the same parameter count
    assert moved > 0.5  # the adapters change the hidden states well beyond the tolerance
    assert diff < TOL


if __name__ == "__main__":
    FAMILIES["bart"] = FAMILIES["marian"]
    ref = _load()
    for adapter, model_type in CASES:
        diff, moved, ours, theirs = adapted_difference(ref, adapter, model_type)
        print(f"{adapter:14s} {model_type:6s} max|peftlab - AdapterHub| {diff:.2e}   "
              f"max|AdapterHub - base| {moved:.3f}   parameters {ours} / {theirs}")
