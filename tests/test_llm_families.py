"""Bottleneck adapters on decoder-only LLMs (Llama, Mistral, Qwen2/3, Gemma) against the model written out by hand.

AdapterHub 1.3 cannot run here (it pins transformers 4), so the reference is its Llama placement
(src/adapters/models/llama/modeling_llama.py: attention_adapters(o_proj output, residual) and
output_adapters(mlp output, residual), no LayerNorm) composed by hand from the base model's own modules: with
h = x + Attn(RMSNorm_1(x)) and s = h + MLP(RMSNorm_2(h)),

    houlsby, compacter:  h = x + a + A1(a), a = Attn(RMSNorm_1(x));  s = h + m + A2(m), m = MLP(RMSNorm_2(h))
    pfeiffer (seq_bn):   s + A(s)
    parallel (par_bn):   h + MLP(RMSNorm_2(h)) + scaling * A(h)

The adapters get random weights (at init they are the identity), and every layer's output and the logits of the
adapted model must equal the hand-written forward.
"""

from __future__ import annotations

import copy

import pytest
import torch

from peftlab.methods import apply_method, make_method_config
from peftlab.methods.core import added_parameters
from peftlab.methods.tiny import DECODER_FAMILIES, example_batch, tiny_model

torch.set_num_threads(1)

OPTIONS = {
    "houlsby": {"bottleneck": 4},
    "compacter": {"bottleneck": 8, "phm_dim": 4},
    "pfeiffer": {"bottleneck": 4},
    "parallel": {"bottleneck": 4, "scaling": 4.0},
}
LAYERS = 2  # two layers: the adapters of one layer feed the next
CASES = [(m, f) for m in OPTIONS for f in DECODER_FAMILIES]


def _mlp(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The gated MLP of all five families (SwiGLU; GeGLU in Gemma, through its act_fn)."""
    return mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


def _by_hand(base, adapted, method: str, input_ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every layer's output and the logits, from the base model's modules and the adapted model's adapters."""
    with torch.no_grad():
        x = base(input_ids=input_ids, output_hidden_states=True).hidden_states[0]  # embeddings (Gemma: scaled)
        length = input_ids.shape[1]
        positions = torch.arange(length)[None]
        rotary = base.model.rotary_emb(x, positions)
        causal = torch.full((length, length), float("-inf")).triu(1)[None, None]
        outputs = []
        for i, layer in enumerate(base.model.layers):
            ours = adapted.model.layers[i]
            a = layer.self_attn(layer.input_layernorm(x), position_embeddings=rotary, attention_mask=causal)[0]
            if method in ("houlsby", "compacter"):
                a = a + ours.self_attn.o_proj.adapter(a)
            h = x + a
            m = _mlp(layer.mlp, layer.post_attention_layernorm(h))
            if method in ("houlsby", "compacter"):
                s = h + m + ours.mlp.down_proj.adapter(m)
            elif method == "pfeiffer":
                s = h + m
                s = s + ours.adapter(s)
            else:
                wrapper = ours.mlp.down_proj
                s = h + m + wrapper.scaling * wrapper.adapter(h)
            outputs.append(s)
            x = s
        return outputs, base.lm_head(base.model.norm(x))


@pytest.mark.parametrize("method,family", CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_adapters_match_the_hand_written_forward(method: str, family: str) -> None:
    base = tiny_model(family, "causal_lm", layers=LAYERS).eval()
    adapted = apply_method(copy.deepcopy(base), make_method_config(method, OPTIONS[method])).eval()
    with torch.no_grad():
        for p in added_parameters(adapted):
            p.normal_(std=0.5)
    input_ids = example_batch(base, length=9)["input_ids"]
    layers, logits = _by_hand(base, adapted, method, input_ids)
    with torch.no_grad():
        out = adapted(input_ids=input_ids, output_hidden_states=True)
        base_logits = base(input_ids=input_ids).logits
    # transformers 5 records each layer's output, the last one after the final RMSNorm
    states = out.hidden_states[1:]
    assert len(states) == LAYERS
    for i in range(LAYERS - 1):
        torch.testing.assert_close(states[i], layers[i], rtol=0, atol=1e-5)
    torch.testing.assert_close(states[-1], base.model.norm(layers[-1]), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.logits, logits, rtol=0, atol=1e-5)
    assert (out.logits - base_logits).abs().max() > 0.1  # the adapters moved the outputs well past the tolerance
