"""Where each supported model family gets its adapters, LoRA and IA3 (one table, keyed by model_type).

Patterns are regular expressions matched in full against a module's qualified name (as in
`model.named_modules()`), so that the same table works for the bare model, the *ForSequenceClassification
and the *ForConditionalGeneration classes, and for the full-size hub checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .registry import MethodError

if TYPE_CHECKING:  # the table is read when a grid is planned, which must not import torch
    from torch import nn


@dataclass(frozen=True)
class Family:
    name: str
    attn_out: str  # self-attention output projection (Houlsby's first adapter)
    cross_attn_out: str | None  # decoder cross-attention output projection (optional adapters)
    ffn_in: str  # first FFN projection: its input is the FFN's input (parallel adapters read it)
    ffn_out: str  # last FFN projection (Houlsby's second adapter, Pfeiffer's only one)
    lora_targets: tuple[str, ...]  # peft target_modules (name suffixes): the LoRA paper's W_q and W_v
    ia3_targets: str  # keys, values and the FFN's second projection (IA3 paper)
    ia3_feedforward: str  # IA3 scales these layers' input (the FFN's inner activation), not their output


_BERT = r".*\.layer\.\d+\."
_BART = r".*\.layers\.\d+\."  # Marian, mBART and M2M100/NLLB share BART's layer layout
_T5 = r".*\.block\.\d+\.layer\.\d+\."

_bert = Family(
    name="bert",
    attn_out=_BERT + r"attention\.output\.dense",
    cross_attn_out=None,
    ffn_in=_BERT + r"intermediate\.dense",
    ffn_out=_BERT + r"output\.dense",
    lora_targets=("query", "value"),
    # peft's default for BERT is the suffix "output.dense", which also catches attention.output.dense
    ia3_targets=_BERT + r"(attention\.self\.(key|value)|output\.dense)",
    ia3_feedforward=_BERT + r"output\.dense",
)
_bart = Family(
    name="bart",
    attn_out=_BART + r"self_attn\.out_proj",
    cross_attn_out=_BART + r"encoder_attn\.out_proj",
    ffn_in=_BART + r"fc1",
    ffn_out=_BART + r"fc2",
    lora_targets=("q_proj", "v_proj"),  # peft has no default for marian/mbart/m2m_100
    ia3_targets=_BART + r"((self_attn|encoder_attn)\.(k_proj|v_proj)|fc2)",
    ia3_feedforward=_BART + r"fc2",
)
_t5 = Family(
    name="t5",
    attn_out=_T5 + r"SelfAttention\.o",
    cross_attn_out=_T5 + r"EncDecAttention\.o",
    ffn_in=_T5 + r"DenseReluDense\.(wi|wi_0)",  # mT5's gated FFN: wi_0 and wi_1 read the same input
    ffn_out=_T5 + r"DenseReluDense\.wo",
    lora_targets=("q", "v"),
    ia3_targets=_T5 + r"((SelfAttention|EncDecAttention)\.(k|v)|DenseReluDense\.wo)",
    ia3_feedforward=_T5 + r"DenseReluDense\.wo",
)

FAMILIES: dict[str, Family] = {
    "bert": _bert,
    "xlm-roberta": _bert,
    "marian": _bart,
    "mbart": _bart,
    "m2m_100": _bart,
    "t5": _t5,
    "mt5": _t5,
}

# Task heads are direct children of the *For<Task> model under one of these names; every method trains them
# and the counting convention leaves them out of the budget.
HEAD_NAMES = ("classifier", "classification_head", "score", "qa_outputs")


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
