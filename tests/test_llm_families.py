"""Bottleneck adapters on decoder-only LLMs (Llama, Mistral, Qwen2/3, Gemma 1-3) against the model written out by
hand.

AdapterHub 1.3 cannot run here (it pins transformers 4), so the reference is its Llama placement
(src/adapters/models/llama/modeling_llama.py: attention_adapters(o_proj output, residual) and
output_adapters(mlp output, residual), no LayerNorm) composed by hand from the base model's own modules: with
h = x + Attn(RMSNorm_1(x)) and s = h + MLP(RMSNorm_2(h)),

    houlsby, compacter:  h = x + a + A1(a), a = Attn(RMSNorm_1(x));  s = h + m + A2(m), m = MLP(RMSNorm_2(h))
    pfeiffer (seq_bn):   s + A(s)
    parallel (par_bn):   h + MLP(RMSNorm_2(h)) + scaling * A(h)

Gemma 2 and 3 normalise each sublayer's output before its residual: a = N_a(Attn(...)), m = N_f(MLP(...)); the
formulas above hold with those a and m (the adapters read and join the sublayer's output as the residual sees it).
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
POST_NORMS = ("gemma2", "gemma3_text")  # sublayer outputs normalised before their residuals


def _mlp(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The gated MLP of all five families (SwiGLU; GeGLU in Gemma, through its act_fn)."""
    return mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))


def _ffn(layer: torch.nn.Module, h: torch.Tensor, post_norms: bool) -> torch.Tensor:
    """The MLP sublayer's output, before its residual."""
    if post_norms:
        return layer.post_feedforward_layernorm(_mlp(layer.mlp, layer.pre_feedforward_layernorm(h)))
    return _mlp(layer.mlp, layer.post_attention_layernorm(h))


def _by_hand(base, adapted, method: str, input_ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every layer's output and the logits, from the base model's modules and the adapted model's adapters."""
    post_norms = base.config.model_type in POST_NORMS
    with torch.no_grad():
        x = base(input_ids=input_ids, output_hidden_states=True).hidden_states[0]  # embeddings (Gemma: scaled)
        length = input_ids.shape[1]
        positions = torch.arange(length)[None]
        causal = torch.full((length, length), float("-inf")).triu(1)[None, None]  # shorter than any sliding window
        outputs = []
        for i, layer in enumerate(base.model.layers):
            wrapped = adapted.model.layers[i]
            ours = wrapped.base_layer if method == "pfeiffer" else wrapped  # Pfeiffer wraps the whole layer
            if base.config.model_type == "gemma3_text":  # local and global layers rotate with different bases
                rotary = base.model.rotary_emb(x, positions, base.config.layer_types[i])
            else:
                rotary = base.model.rotary_emb(x, positions)
            a = layer.self_attn(layer.input_layernorm(x), position_embeddings=rotary, attention_mask=causal)[0]
            if post_norms:
                a = layer.post_attention_layernorm(a)
                attn_out, ffn_out = ours.post_attention_layernorm, ours.post_feedforward_layernorm
            else:
                attn_out, ffn_out = ours.self_attn.o_proj, ours.mlp.down_proj
            if method in ("houlsby", "compacter"):
                a = a + attn_out.adapter(a)
            h = x + a
            m = _ffn(layer, h, post_norms)
            if method in ("houlsby", "compacter"):
                s = h + m + ffn_out.adapter(m)
            elif method == "pfeiffer":
                s = h + m
                s = s + wrapped.adapter(s)
            else:
                s = h + m + ffn_out.scaling * ffn_out.adapter(h)
            outputs.append(s)
            x = s
        logits = base.lm_head(base.model.norm(x))
        cap = getattr(base.config, "final_logit_softcapping", None)  # Gemma 2: cap * tanh(logits / cap)
        return outputs, logits if cap is None else cap * torch.tanh(logits / cap)


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


def _adapted_names(model: torch.nn.Module) -> set[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_lora_and_ia3_targets_against_peft_defaults(family: str) -> None:
    """LoRA adapts what peft adapts by default for these model types (q_proj, v_proj: the LoRA paper's W_q, W_v).
    IA3 rescales the IA3 paper's keys and values and the MLP's inner activation: peft's default for Llama and
    Mistral; for Qwen and Gemma peft's table lists q_proj instead of k_proj, which is not the paper's."""
    from peft import IA3Config, LoraConfig, get_peft_model

    base = tiny_model(family, "causal_lm", layers=LAYERS)
    ours = _adapted_names(apply_method(copy.deepcopy(base), make_method_config("lora", {"rank": 2})))
    assert ours == _adapted_names(get_peft_model(copy.deepcopy(base), LoraConfig(r=2)))
    assert {n.rsplit(".", 1)[1] for n in ours} == {"q_proj", "v_proj"} and len(ours) == 2 * LAYERS
    ours = _adapted_names(apply_method(copy.deepcopy(base), make_method_config("ia3", {})))
    assert {n.rsplit(".", 1)[1] for n in ours} == {"k_proj", "v_proj", "down_proj"} and len(ours) == 3 * LAYERS
    peft_default = _adapted_names(get_peft_model(copy.deepcopy(base), IA3Config()))
    assert (ours == peft_default) == (family in ("llama", "mistral"))
