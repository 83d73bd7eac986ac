"""prefix: the model side of the method (inject), imported on first use."""

import inspect

from peft import PrefixTuningConfig, TaskType, get_peft_model
from torch import nn

from ..core import task_heads
from ..registry import MethodError
from .config import PrefixConfig


def inject(model: nn.Module, cfg: PrefixConfig) -> nn.Module:
    if task_heads(model) and model.config.is_encoder_decoder:
        # peft 0.21: MBartForSequenceClassification fails (no `classifier` to wrap), T5's asks for input_ids
        name = type(model).__name__
        raise MethodError(f"prefix: peft cannot prefix-tune an encoder-decoder classifier ({name})")
    if task_heads(model):
        task = TaskType.SEQ_CLS
        # peft feeds the prefixes as past_key_values; without them (DeBERTa) it fails only at the first forward
        if "past_key_values" not in inspect.signature(model.base_model.forward).parameters:
            raise MethodError(f"prefix: {type(model.base_model).__name__} takes no past_key_values, which peft's "
                              "prefix tuning needs")
    elif model.config.is_encoder_decoder:
        task = TaskType.SEQ_2_SEQ_LM
    elif type(model).__name__.endswith("ForCausalLM"):  # decoder-only LLMs (Llama, Qwen, Gemma, Mistral)
        task = TaskType.CAUSAL_LM
    else:
        raise MethodError(f"prefix: supports seq2seq, causal LM and classification models, not {type(model).__name__}")
    peft_config = PrefixTuningConfig(task_type=task, num_virtual_tokens=cfg.num_virtual_tokens)
    return get_peft_model(model, peft_config)
