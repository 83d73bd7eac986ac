"""Base models: load one from the hub or a local path, or build a tiny multilingual MarianMT here.

The offline demo cannot download an MT model (nothing on PyPI ships Marian/T5/NLLB weights), so the
pipeline trains a joint unigram vocabulary and pretrains a small Marian on a few language pairs with
target-language tags (">>fr<<"), then adapts it to held-out pairs. Cluster studies name hub ids.
A built model can also be a tiny decoder-only LM (`build.architecture: llama | qwen2`), pretrained on the same
pairs as prompts (peftlab.languages.DEFAULT_PROMPT), so the LLM path runs offline end to end.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, models, processors
from tokenizers.implementations import SentencePieceUnigramTokenizer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MarianConfig,
    MarianMTModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from peftlab.languages import built_architecture
from peftlab.methods import load_method
from peftlab.model_source import ModelError

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]


def language_tag(lang: str) -> str:
    """Marian's multilingual convention: the source starts with the target language's tag."""
    return f">>{lang}<<"


def train_tokenizer(texts: Iterable[str], out_dir: Path, *, vocab_size: int, languages: list[str]) -> None:
    """Train a joint sentencepiece unigram vocabulary and save it as a fast HF tokenizer.

    sentencepiece trains the pieces; they go into `tokenizers`' unigram pipeline, which transformers 5 loads
    without the slow MarianTokenizer and its two-file vocabulary. Not `tokenizers`' own UnigramTrainer: it
    counts words in Rust HashMaps seeded at random per map, so its EM sums and tie orders (the scores' last
    digits, the order of 535 of 600 pieces) changed from run to run, and with them shards and MT results.
    sentencepiece reads the sentences in input order and sums on a fixed number of threads.
    """
    import sentencepiece

    tags = [language_tag(lang) for lang in sorted(set(languages))]
    model = io.BytesIO()
    sentencepiece.set_random_generator_seed(0)  # only sampling uses it; all sentences are read (no sampling)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="unigram", vocab_size=vocab_size,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        user_defined_symbols=tags, character_coverage=1.0, input_sentence_size=0, shuffle_input_sentence=False,
        # The E-step merges per-thread sums in thread order: the vocabulary depends on the thread count,
        # never on scheduling, so the count is a constant rather than the machine's cores.
        num_threads=1,
        # A corpus too small for the vocabulary gets fewer pieces (as `tokenizers` did) instead of an abort.
        hard_vocab_limit=False, minloglevel=2,
    )
    trained = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(trained.id_to_piece(i), trained.get_score(i)) for i in range(trained.get_piece_size())]
    spm = SentencePieceUnigramTokenizer(vocab)  # sentencepiece's normaliser, Metaspace pre-tokenizer and decoder
    spm._tokenizer.model = models.Unigram(vocab, unk_id=trained.unk_id(), byte_fallback=False)
    # matched whole before the model and dropped by decode(skip_special_tokens=True); their ids stay as trained
    spm._tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS + tags])
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
    # init_std d_model^-0.5, not 0.02: token embeddings scaled by sqrt(d_model) then start as large as the
    # sinusoidal positions (0.02 suits d_model ~2500; at 32 the tokens were a tenth of the positions and a
    # short pretraining learned no more than to emit a bare "▁").
    config = MarianConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim, max_position_embeddings=max_positions, dropout=dropout,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        scale_embedding=True, share_encoder_decoder_embeddings=True, tie_word_embeddings=True, init_std=d_model**-0.5,
    )
    torch.manual_seed(seed)
    return MarianMTModel(config)


# build.architecture -> (config class, model class) of a built decoder-only model
DECODER_CLASSES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}


def decoder_config(architecture: str, *, vocab_size: int, d_model: int, layers: int, heads: int, ffn_dim: int,
                   pad_token_id: int, eos_token_id: int, max_positions: int = 256):
    """A tiny decoder-only config (build.architecture) in the Marian build's terms: d_model is the hidden size,
    ffn_dim the MLP's, every head its own key/value head; embeddings tied to the output layer (as Marian's, and
    Qwen2.5-0.5B's), no BOS (the built tokenizer has none), init std d_model^-0.5 (see build_marian)."""
    if architecture not in DECODER_CLASSES:
        raise ModelError(f"build.architecture {architecture!r}: a decoder-only build is one of "
                         f"{sorted(DECODER_CLASSES)}")
    config_cls, _ = DECODER_CLASSES[architecture]
    return config_cls(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, intermediate_size=ffn_dim, max_position_embeddings=max_positions,
                      pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=None,
                      tie_word_embeddings=True, initializer_range=d_model**-0.5)


def build_decoder(tokenizer: PreTrainedTokenizerBase, architecture: str, *, d_model: int, layers: int, heads: int,
                  ffn_dim: int, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised decoder-only LM (decoder_config) on the built tokenizer."""
    config = decoder_config(architecture, vocab_size=len(tokenizer), d_model=d_model, layers=layers, heads=heads,
                            ffn_dim=ffn_dim, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return DECODER_CLASSES[architecture][1](config)


def load_tokenizer(path: str, spec: dict | None = None) -> PreTrainedTokenizerBase:
    spec = spec or {}
    return AutoTokenizer.from_pretrained(
        path, revision=spec.get("revision"), trust_remote_code=bool(spec.get("trust_remote_code", False))
    )


class QuantizationError(ModelError):
    """A 4-bit base (`load_in_4bit`, QLoRA) where it cannot load: no CUDA device, or no bitsandbytes."""


def quantization_kwargs(spec: dict, device: str | None = None) -> dict:
    """from_pretrained arguments for a base model entry with `load_in_4bit: true` (QLoRA's NF4 with double
    quantisation and bf16 compute), or none. Checked before any weight is read, so a job on a machine without
    CUDA fails at once with the key named."""
    if not spec.get("load_in_4bit"):
        return {}
    device = device or default_device()
    if not device.startswith("cuda"):
        raise QuantizationError(f"base model key 'load_in_4bit': a 4-bit base needs a CUDA device (bitsandbytes); "
                                f"this job runs on {device!r}. Remove load_in_4bit to train in full precision")
    try:  # imported here: a CUDA-only package, not in requirements.txt
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise QuantizationError("base model key 'load_in_4bit' needs the bitsandbytes package: "
                                "pip install bitsandbytes") from err
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    return {"quantization_config": config, "device_map": {"": device}}


def load_model(path: str, kind: str, spec: dict | None = None, num_labels: int | None = None,
               device: str | None = None) -> PreTrainedModel:
    """Load a base model for a task kind; trust_remote_code only when the config asks for it."""
    spec = spec or {}
    kwargs = {"revision": spec.get("revision"), "trust_remote_code": bool(spec.get("trust_remote_code", False)),
              **quantization_kwargs(spec, device)}
    if kind == "translation":  # a decoder-only model (Llama, Qwen, ...) translates a prompt as a causal LM
        config = AutoConfig.from_pretrained(path, revision=kwargs["revision"],
                                            trust_remote_code=kwargs["trust_remote_code"])
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        return auto.from_pretrained(path, config=config, **kwargs)
    if kind == "classification":
        return _load_classifier(path, num_labels, kwargs)
    raise ModelError(f"unknown task kind {kind!r}")


def _load_classifier(path: str, num_labels: int | None, kwargs: dict) -> PreTrainedModel:
    """A sequence classifier for `num_labels` classes from any checkpoint of the architecture: a bare encoder, a
    causal LM (its lm_head is dropped), or a fine-tuned classifier whose head has another number of labels
    (that head is re-initialised: ignore_mismatched_sizes, limited to the head below).

    transformers logs a load report (a warning) for the new head on every load, one per job, which is expected
    and says nothing; it is held back and logged as it was only when the load found anything in the base model
    itself (missing or unexpected weights). Keys outside the base model (`bert.*`, `model.*`) are heads: a
    missing head is the new one, an unexpected one is the checkpoint's other head (lm_head, BERT's MLM `cls`), a
    mismatched one had another label count. A weight of the base model with another shape raises ModelError:
    ignore_mismatched_sizes would have re-initialised it at random."""
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
            path, num_labels=num_labels, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    finally:
        report_logger.removeFilter(hold)

    def in_base(key: str) -> bool:  # the head is everything outside the base model (`classifier.*` beside `bert.*`)
        return key.startswith(f"{model.base_model_prefix}.")

    reinitialised = sorted(f"{key}: {tuple(saved)} in the checkpoint, {tuple(now)} here"
                           for key, saved, now in info["mismatched_keys"] if in_base(key))
    if reinitialised:
        raise ModelError(f"{path}: base model weights whose shapes do not fit its config: {reinitialised}")
    if any(in_base(k) for k in (*info["missing_keys"], *info["unexpected_keys"])):
        for record in held:
            report_logger.handle(record)
    return model


def pad_with_eos(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give a model and its tokenizer a padding token where they have none: the tokenizer's EOS token.

    Decoder-only LLM tokenizers (Llama, Mistral) define no pad token and their configs no pad_token_id, but
    batches need one, and *ForSequenceClassification finds the token it classifies, each sequence's last, as the
    last one that is not padding (with no pad_token_id it refuses batches of more than one). Padding with EOS is
    the usual choice (it needs no new embedding row); padding is right-padding under an attention mask, and a
    sequence that itself ends in EOS is then classified at the token before it, in training and evaluation
    alike. A pad token the tokenizer has (Qwen, Gemma) is also written into a config that lacks it."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"{type(tokenizer).__name__} has neither a pad nor an EOS token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


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


def load_base(model_path: str, model_spec: dict, task: dict, num_labels: int | None = None,
              device: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model and tokenizer of a task, as named by its config entry (`device` matters for a 4-bit base)."""
    quantization_kwargs(model_spec, device)  # a 4-bit base on a CPU fails before the tokenizer loads
    tokenizer = load_tokenizer(model_path, model_spec)
    model = load_model(model_path, task["kind"], model_spec, num_labels=num_labels, device=device)
    pad_with_eos(model, tokenizer)
    return model, tokenizer


def is_decoder_only(model: torch.nn.Module) -> bool:
    """A causal LM (no encoder): it translates prompts (peftlab.languages.languages_of(..., decoder_only=True))."""
    return not model.config.is_encoder_decoder


def spec_is_decoder_only(spec: dict, path: str | None = None) -> bool:
    """Whether a base-model spec names a decoder-only model, before its weights load: a built model by its
    build.architecture, any other by its config.json (`path`: where resolve_model_path finds it)."""
    if spec["source"] == "build":
        return built_architecture(spec) != "marian"
    config = AutoConfig.from_pretrained(path, revision=spec.get("revision"),
                                        trust_remote_code=bool(spec.get("trust_remote_code", False)))
    return not config.is_encoder_decoder


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
