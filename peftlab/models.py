"""Base models: load one from the hub or a local path, or build a tiny multilingual MarianMT here.

The offline demo cannot download an MT model (nothing on PyPI ships Marian/T5/NLLB weights), so the
pipeline trains a joint unigram vocabulary and pretrains a small Marian on a few language pairs with
target-language tags (">>fr<<"), then adapts it to held-out pairs. Cluster studies name hub ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, processors
from tokenizers.implementations import SentencePieceUnigramTokenizer
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    MarianConfig,
    MarianMTModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from peftlab.methods import load_method
from peftlab.model_source import ModelError

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]


def language_tag(lang: str) -> str:
    """Marian's multilingual convention: the source starts with the target language's tag."""
    return f">>{lang}<<"


def train_tokenizer(texts: Iterable[str], out_dir: Path, *, vocab_size: int, languages: list[str]) -> None:
    """Train a joint sentencepiece-style unigram vocabulary and save it as a fast HF tokenizer.

    `tokenizers` trains the same unigram model as sentencepiece but yields a fast tokenizer that
    transformers 5 loads without the slow MarianTokenizer and its two-file vocabulary.
    """
    tags = [language_tag(lang) for lang in sorted(set(languages))]
    spm = SentencePieceUnigramTokenizer()
    spm.train_from_iterator(
        texts, vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + tags, unk_token="<unk>", show_progress=False
    )
    eos_id = spm.token_to_id("</s>")
    # Marian appends </s> to every source and target sequence.
    spm._tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos_id)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=spm._tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=[AddedToken(t, normalized=False) for t in tags],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)


def build_marian(tokenizer: PreTrainedTokenizerBase, *, d_model: int, layers: int, heads: int, ffn_dim: int,
                 max_positions: int = 256, dropout: float = 0.1, seed: int = 0) -> MarianMTModel:
    """A randomly initialised Marian sized for CPU pretraining, sharing one embedding matrix."""
    config = MarianConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim, max_position_embeddings=max_positions, dropout=dropout,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        scale_embedding=True, share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return MarianMTModel(config)


def load_tokenizer(path: str, spec: dict | None = None) -> PreTrainedTokenizerBase:
    spec = spec or {}
    return AutoTokenizer.from_pretrained(
        path, revision=spec.get("revision"), trust_remote_code=bool(spec.get("trust_remote_code", False))
    )


def load_model(path: str, kind: str, spec: dict | None = None, num_labels: int | None = None) -> PreTrainedModel:
    """Load a base model for a task kind; trust_remote_code only when the config asks for it."""
    spec = spec or {}
    kwargs = {"revision": spec.get("revision"), "trust_remote_code": bool(spec.get("trust_remote_code", False))}
    if kind == "translation":
        return AutoModelForSeq2SeqLM.from_pretrained(path, **kwargs)
    if kind == "classification":
        return _load_classifier(path, num_labels, kwargs)
    raise ModelError(f"unknown task kind {kind!r}")


def _load_classifier(path: str, num_labels: int | None, kwargs: dict) -> PreTrainedModel:
    """A sequence classifier whose freshly initialised head goes unreported: transformers logs a load report
    (a warning) for its missing weights on every load, one per job, which is expected and says nothing. The
    report is held back and logged as it was only when the load found anything else: missing weights in the
    encoder, unexpected or mismatched keys."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if "LOAD REPORT" not in record.getMessage():
            return True
        held.append(record)
        return False

    report_logger.addFilter(hold)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, output_loading_info=True, **kwargs)
    finally:
        report_logger.removeFilter(hold)
    # The head is everything outside the base model's submodule (e.g. `classifier.*` beside `bert.*`).
    head_only = all(not k.startswith(f"{model.base_model_prefix}.") for k in info["missing_keys"])
    if not (head_only and not info["unexpected_keys"] and not info["mismatched_keys"]):
        for record in held:
            report_logger.handle(record)
    return model


def model_identity(path: str, spec: dict) -> str:
    """A string that changes when the base model changes: hub id@revision, or the weights' config hash."""
    if spec["source"] == "hub":
        return f"{spec['id']}@{spec.get('revision') or 'main'}"
    # The config plus the weight files' names and sizes: cheap even for multi-GB checkpoints.
    folder = Path(path)
    parts = [(folder / "config.json").read_text()]
    parts += [f"{f.name}:{f.stat().st_size}" for f in sorted(folder.glob("*.safetensors"))]
    return f"{spec['source']}:{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:16]}"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base(model_path: str, model_spec: dict, task: dict,
              num_labels: int | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model and tokenizer of a task, as named by its config entry."""
    tokenizer = load_tokenizer(model_path, model_spec)
    model = load_model(model_path, task["kind"], model_spec, num_labels=num_labels)
    return model, tokenizer


def load_trained(model_path: str, model_spec: dict, task: dict, method_dir: Path, method_sha256: dict[str, str],
                 num_labels: int | None = None):
    """A run's model: the base model with the run's saved method weights applied, once they match the
    checksums its train.json recorded (`method_sha256`)."""
    model, tokenizer = load_base(model_path, model_spec, task, num_labels)
    return load_method(model, method_dir, method_sha256), tokenizer


def shard_labels(shard_dir: Path) -> list[str] | None:
    """A classification task's label names (None for translation), from its shard manifest."""
    return json.loads((Path(shard_dir) / "manifest.json").read_text()).get("labels")


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]
