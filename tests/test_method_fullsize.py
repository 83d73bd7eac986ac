"""Every method on the full-size architectures the studies use, built on the meta device (shapes only):
the attach points, the counts and the budget solver work beyond the tiny test configs."""

from __future__ import annotations

import copy

import pytest
import torch
from test_methods import OPTIONS, _expected_trainable

from peftlab.methods import MethodError, apply_method, count_parameters, make_method_config, solve_budget
from peftlab.methods.tiny import FULL_SIZE, full_size_meta_model

torch.set_num_threads(1)

# Published totals (backbone, as counted here) of the hub checkpoints, in millions.
TOTAL_M = {
    "opus-mt-en-de (marian)": 73.9,  # Marian's sinusoidal position tables (0.5M) not counted
    "mbart-large-50 (mbart)": 610.9,
    "nllb-200-distilled-600M (m2m_100)": 615.1,
    "t5-base (t5)": 222.9,
    # mT5's checkpoint has its own lm_head (250112 x 768 = 192.1M), which from_pretrained keeps; transformers 5
    # builds it tied from the config (390.3M), so full_size_meta_model unties it (untie_output_layer)
    "mt5-base (mt5)": 582.4,
    "bert-base-uncased (bert)": 109.5,
    # 124.6M published includes the pooler, which RobertaForSequenceClassification does not build (0.6M)
    "roberta-base (roberta)": 124.1,
    # the paper's 86M backbone + 98M embeddings (128k vocabulary); 512x768 relative position table included
    "deberta-v3-base (deberta-v2)": 183.8,
    "xlm-roberta-base (xlm-roberta)": 277.5,
    # the model cards' exact counts (safetensors metadata): 1,235,814,400 (tied), 7,241,732,096, 494,032,768
    # (tied), Qwen3's "0.6B, 0.44B non-embedding" (+ 151936 x 1024 tied embeddings), 2,506,172,416 (tied)
    "Llama-3.2-1B (llama)": 1235.8,
    "Mistral-7B-v0.1 (mistral)": 7241.7,
    "Qwen2.5-0.5B (qwen2)": 494.0,
    "Qwen3-0.6B (qwen3)": 596.0,
    "gemma-2b (gemma)": 2506.2,
    "gemma-2-2b (gemma2)": 2614.3,  # 2,614,341,888 (tied)
    "gemma-3-1b-pt (gemma3_text)": 999.9,  # 999,885,952 (tied)
}
# the documented gaps: BitFit where there are no biases (T5, and every LLM here but Qwen2), prefix on DeBERTa
REFUSED = {("bitfit", f) for f in ("t5", "mt5", "llama", "mistral", "qwen3", "gemma", "gemma2", "gemma3_text")}
REFUSED |= {("prefix", "deberta-v2")}


@pytest.fixture(scope="module", params=list(FULL_SIZE))
def full_size(request):
    return request.param, full_size_meta_model(request.param)


def test_totals_match_published_sizes(full_size) -> None:
    name, model = full_size
    assert count_parameters(model).total / 1e6 == pytest.approx(TOTAL_M[name], abs=0.05)


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_every_method_applies_and_counts(full_size, method: str) -> None:
    name, base = full_size
    cfg = make_method_config(method, OPTIONS[method])
    try:
        model = apply_method(copy.deepcopy(base), cfg)
    except MethodError as err:
        assert (method, name.split(" (")[1][:-1]) in REFUSED, err
        return
    assert count_parameters(model).trainable == _expected_trainable(method, base, cfg)


def test_solver_on_full_size_is_quick(full_size) -> None:
    _, model = full_size
    sol = solve_budget(model, "lora", {}, 0.01)
    assert abs(sol.rel_error) < 0.05
