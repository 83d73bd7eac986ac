"""Where each supported model family gets its adapters, LoRA and IA3 (one table, keyed by model_type).

Patterns are regular expressions matched in full against a module's qualified name (as in
`model.named_modules()`), so that the same table works for the bare model, the *ForSequenceClassification
and the *ForConditionalGeneration classes, and for the full-size hub checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .registry import MethodError

if TYPE_CHECKING:  # the table is read when a grid is planned, which must not import torch
    from torch import nn


@dataclass(frozen=True)
class Family:
    name: str
    attn_out: str  # self-attention output projection (Houlsby's first adapter)
    cross_attn_out: str | None  # decoder cross-attention output projection (optional adapters)
    ffn_out: str  # last FFN projection (Houlsby's second adapter)
    # Pfeiffer's adapter reads the FFN sublayer's output after its residual (and, post-LN, its LayerNorm).
    # Post-LN families name the LayerNorm that sum goes into, pre-LN families the module that returns it.
    ffn_norm: str | None  # post-LN (BERT, RoBERTa, XLM-R, Marian): the LayerNorm after the FFN's residual
    ffn_sublayer: str | None  # pre-LN (mBART, M2M100, T5, decoder-only LLMs): the module whose output is x + FFN(LN(x))
    # the module whose input is x, the FFN sublayer's residual input, which parallel adapters read (AdapterHub's
    # par_bn, He et al.'s code): the first projection's input post-LN, the FFN's LayerNorm's input pre-LN
    ffn_residual_in: str
    lora_targets: tuple[str, ...]  # peft target_modules (name suffixes): the LoRA paper's W_q and W_v
    ia3_targets: str  # keys, values and the FFN's second projection (IA3 paper)
    ia3_feedforward: str  # IA3 scales these layers' input (the FFN's inner activation), not their output
    # Gemma 2/3 normalise each sublayer's output before its residual: attn_out and ffn_out then name those
    # RMSNorms (the sublayer's last module, where Houlsby's and the parallel adapter's deltas join), not projections
    out_is_norm: bool = False


_BERT = r".*\.layer\.\d+\."
_BART = r".*\.layers\.\d+\."  # Marian, mBART and M2M100/NLLB share BART's layer layout
_T5 = r".*\.block\.\d+\.layer\.\d+\."
# T5LayerFF, the last of a block's sublayers (1 in the encoder, 2 in the decoder, after cross-attention)
_T5_FF = r"(.*\.)?(encoder\.block\.\d+\.layer\.1|decoder\.block\.\d+\.layer\.2)"

_bert = Family(
    name="bert",
    attn_out=_BERT + r"attention\.output\.dense",
    cross_attn_out=None,
    ffn_out=_BERT + r"output\.dense",
    ffn_norm=_BERT + r"output\.LayerNorm",
    ffn_sublayer=None,
    ffn_residual_in=_BERT + r"intermediate\.dense",
    lora_targets=("query", "value"),
    # peft's default for BERT is the suffix "output.dense", which also catches attention.output.dense
    ia3_targets=_BERT + r"(attention\.self\.(key|value)|output\.dense)",
    ia3_feedforward=_BERT + r"output\.dense",
)
# DeBERTa-v2/v3: BERT's layer layout, but its attention projections are query_proj/key_proj/value_proj
_deberta = replace(
    _bert,
    name="deberta-v2",
    lora_targets=("query_proj", "value_proj"),
    ia3_targets=_BERT + r"(attention\.self\.(key_proj|value_proj)|output\.dense)",
)
_bart = Family(
    name="bart",
    attn_out=_BART + r"self_attn\.out_proj",
    cross_attn_out=_BART + r"encoder_attn\.out_proj",
    ffn_out=_BART + r"fc2",
    ffn_norm=_BART + r"final_layer_norm",  # Marian, like BART, is post-LN
    ffn_sublayer=None,
    ffn_residual_in=_BART + r"fc1",
    lora_targets=("q_proj", "v_proj"),  # peft has no default for marian/mbart/m2m_100
    ia3_targets=_BART + r"((self_attn|encoder_attn)\.(k_proj|v_proj)|fc2)",
    ia3_feedforward=_BART + r"fc2",
)
# mBART and M2M100/NLLB are pre-LN: the FFN is the last sublayer, so the layer returns x + FFN(LN(x)).
# Same layer layout (and name) as BART; only where Pfeiffer's adapter goes differs.
_bart_pre_ln = replace(
    _bart, ffn_norm=None, ffn_sublayer=r".*\.layers\.\d+", ffn_residual_in=_BART + r"final_layer_norm"
)
_t5 = Family(
    name="t5",
    attn_out=_T5 + r"SelfAttention\.o",
    cross_attn_out=_T5 + r"EncDecAttention\.o",
    ffn_out=_T5 + r"DenseReluDense\.wo",
    ffn_norm=None,
    ffn_sublayer=_T5_FF,
    ffn_residual_in=_T5_FF + r"\.layer_norm",
    lora_targets=("q", "v"),
    ia3_targets=_T5 + r"((SelfAttention|EncDecAttention)\.(k|v)|DenseReluDense\.wo)",
    ia3_feedforward=_T5 + r"DenseReluDense\.wo",
)

# Decoder-only LLMs (Llama, Mistral, Qwen2/3, Gemma; Gemma 2/3 below) are pre-norm: a layer returns
# s = h + MLP(post_attention_layernorm(h)), h = x + o_proj(Attn(input_layernorm(x))), a tensor in transformers 5.
# AdapterHub's Llama (attention_adapters(o_proj output, residual), output_adapters(mlp output, residual), no
# LayerNorm) puts Houlsby on o_proj's and down_proj's outputs, Pfeiffer on s (the layer's output) and reads the
# parallel adapter's input from h (the MLP's RMSNorm's input). tests/test_llm_families.py checks each against the
# forward written out by hand.
_LLAMA = r".*\.layers\.\d+\."
_llama = Family(
    name="llama",
    attn_out=_LLAMA + r"self_attn\.o_proj",
    cross_attn_out=None,
    ffn_out=_LLAMA + r"mlp\.down_proj",
    ffn_norm=None,
    ffn_sublayer=r".*\.layers\.\d+",
    ffn_residual_in=_LLAMA + r"post_attention_layernorm",
    lora_targets=("q_proj", "v_proj"),  # the LoRA paper's W_q and W_v; also peft's default for these types
    # the IA3 paper's keys and values (peft's own default for llama/mistral; for gemma/qwen peft lists q_proj,
    # not the paper's keys) and the MLP's inner activation, down_proj's input
    ia3_targets=_LLAMA + r"(self_attn\.(k_proj|v_proj)|mlp\.down_proj)",
    ia3_feedforward=_LLAMA + r"mlp\.down_proj",
)

# Gemma 2 and 3: h = x + N_a(o_proj(Attn(input_layernorm(x)))), s = h + N_f(MLP(pre_feedforward_layernorm(h))),
# N_a = post_attention_layernorm, N_f = post_feedforward_layernorm. Houlsby's adapters read N_a's and N_f's outputs
# (the sublayer outputs AdapterHub's attention_adapters/output_adapters receive), the parallel adapter's delta
# joins after N_f, unnormalised (h + N_f(MLP) + s * A(h)); on o_proj/down_proj both would pass through the norms.
_gemma2 = replace(
    _llama,
    name="gemma2",
    attn_out=_LLAMA + r"post_attention_layernorm",
    ffn_out=_LLAMA + r"post_feedforward_layernorm",
    ffn_residual_in=_LLAMA + r"pre_feedforward_layernorm",
    out_is_norm=True,
)

# decoder-only LLMs: a classifier of theirs pools each row's last non-pad token, found from its input_ids
DECODER_ONLY = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")

FAMILIES: dict[str, Family] = {
    "bert": _bert,
    "roberta": _bert,  # RoBERTa keeps BERT's module names (checked on a RobertaConfig model, transformers 5)
    "xlm-roberta": _bert,
    "deberta-v2": _deberta,
    "marian": _bart,
    "mbart": _bart_pre_ln,
    "m2m_100": _bart_pre_ln,
    "t5": _t5,
    "mt5": _t5,
    "llama": _llama,
    "mistral": _llama,  # Llama's layer, module names and forward (checked on a MistralConfig model, transformers 5)
    "qwen2": _llama,  # Llama's layout; q/k/v carry biases (BitFit trains those)
    "qwen3": _llama,  # Llama's layout plus q_norm/k_norm RMSNorms inside attention (LN-tuning trains them)
    "gemma": _llama,  # Llama's layout; (1 + weight) RMSNorm, scaled embeddings, GeGLU: all inside the modules
    "gemma2": _gemma2,
    "gemma3_text": _gemma2,  # Gemma 2's layer plus q_norm/k_norm; Gemma3ForCausalLM, the text-only model
}

# Task heads are direct children of the *For<Task> model under one of these names; every method trains them
# and the counting convention leaves them out of the budget.
HEAD_NAMES = ("classifier", "classification_head", "score", "qa_outputs")
# DeBERTa's `pooler` sits beside its classifier (BERT's is inside `bert`) and feeds only it: part of the head.
# A bare encoder's own pooler (BertModel.pooler, no head beside it) is not.
HEAD_COMPANIONS = ("pooler",)


def head_names(model: nn.Module) -> list[str]:
    """The names of a model's task-head children (HEAD_NAMES, plus HEAD_COMPANIONS when a head is there)."""
    from torch import nn

    heads = [name for name in HEAD_NAMES if isinstance(getattr(model, name, None), nn.Module)]
    return heads + [name for name in HEAD_COMPANIONS if heads and isinstance(getattr(model, name, None), nn.Module)]


def family_of(model: nn.Module) -> Family:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise MethodError(f"unsupported model family {model_type!r}; supported: {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def is_fixed_table(module: nn.Module) -> bool:
    """Fixed (non-learned) position tables, e.g. Marian's sinusoidal embed_positions.

    transformers 5 marks them trainable again when a checkpoint is reloaded, so every method freezes them
    and the counting convention leaves them out.
    """
    return "Sinusoidal" in type(module).__name__


def is_norm(module: nn.Module) -> bool:
    """LayerNorm-like modules (nn.LayerNorm, T5LayerNorm, RMSNorm variants)."""
    from torch import nn

    name = type(module).__name__
    return isinstance(module, nn.LayerNorm) or name.endswith("LayerNorm") or name.endswith("RMSNorm")
