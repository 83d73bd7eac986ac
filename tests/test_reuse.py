"""Reusing trained runs outside the workflow: peft's own loader reads LoRA / IA3 / prefix runs
(PeftModel.from_pretrained is the reference: it never runs peftlab code), load_run rebuilds a run from its
train.json, and what a run writes follows the user's umask."""

import json
import os
import stat

import pytest
import torch
from peft import PeftModel

from peftlab.methods import apply_method, load_method, make_method_config, save_method
from peftlab.methods.core import PEFT_DIR, PEFT_FILES
from peftlab.methods.tiny import example_batch, minilm_classifier, tiny_model

torch.set_num_threads(1)

CASES = [("marian", "lora", {"rank": 4}), ("marian", "ia3", {}), ("marian", "prefix", {"num_virtual_tokens": 3}),
         ("minilm", "lora", {"rank": 4}), ("minilm", "prefix", {"num_virtual_tokens": 3})]


def fresh(which: str) -> torch.nn.Module:
    return minilm_classifier(seed=1) if which == "minilm" else tiny_model("marian", seed=1)


def trained(which: str, method: str, options: dict) -> tuple[torch.nn.Module, object]:
    """A base with the method applied and every trainable tensor (method and head) moved off its initial value,
    so a loader that drops any of them gives different logits."""
    cfg = make_method_config(method, options)
    torch.manual_seed(0)
    model = apply_method(fresh(which), cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval(), cfg


def logits(model: torch.nn.Module, which: str) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**example_batch(fresh(which), seed=3)).logits


@pytest.mark.parametrize("which,method,options", CASES, ids=[f"{w}-{m}" for w, m, _ in CASES])
def test_peft_loads_the_run_with_the_same_outputs_as_peftlab(tmp_path, which, method, options):
    model, cfg = trained(which, method, options)
    sha256 = save_method(model, cfg, tmp_path)
    assert {f"{PEFT_DIR}/{f}" for f in PEFT_FILES} <= set(sha256)
    assert sorted(os.listdir(tmp_path / PEFT_DIR)) == sorted(PEFT_FILES)
    ours = logits(load_method(fresh(which), tmp_path, sha256), which)
    theirs = logits(PeftModel.from_pretrained(fresh(which), tmp_path / PEFT_DIR), which)
    assert torch.allclose(ours, logits(model, which), atol=1e-5)
    assert torch.allclose(theirs, ours, atol=1e-5)
    assert not torch.allclose(logits(fresh(which), which), ours, atol=1e-3)  # the method changed the outputs


def test_methods_peft_cannot_express_are_saved_in_peftlab_format_only(tmp_path):
    model, cfg = trained("marian", "houlsby", {})
    assert set(save_method(model, cfg, tmp_path)) == {"method.safetensors", "method_config.json"}
    assert not (tmp_path / PEFT_DIR).exists()
