"""Tiny random mBART-50-, NLLB- and M2M100-shaped models whose tokenizers are the real transformers classes with
the real language codes, built offline: a vocabulary trained here (sentencepiece; `tokenizers` BPE for NLLB,
whose transformers 5 tokenizer takes BPE merges that sentencepiece does not expose), saved like a hub folder."""

import io
import json
from pathlib import Path

import sentencepiece as spm
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    M2M100Config,
    M2M100ForConditionalGeneration,
    M2M100Tokenizer,
    MBart50Tokenizer,
    MBartConfig,
    MBartForConditionalGeneration,
    NllbTokenizer,
)

FAMILIES = ("mbart50", "nllb", "m2m100")
PAIRS = [(f"File number {i} could not be opened.", f"ファイル{i}番を開けませんでした。") for i in range(40)]
TEXTS = [text for pair in PAIRS for text in pair]
SIZES = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
         "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "max_position_embeddings": 128}
# fairseq's special ids, as the real checkpoints have them; generation starts from </s>
SPECIAL = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2,
           "forced_eos_token_id": 2}


def _sentencepiece() -> bytes:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_writer=buf, vocab_size=150,
                                   model_type="unigram", hard_vocab_limit=False, character_coverage=1.0,
                                   minloglevel=2)
    return buf.getvalue()


def _tokenizer(family: str, work: Path):
    proto = _sentencepiece()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    if family == "mbart50":  # built from the unigram pieces; adds the 52 codes and <mask>
        return MBart50Tokenizer(vocab=[(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())])
    if family == "nllb":  # adds the 202 codes as special tokens
        bpe = Tokenizer(models.BPE(unk_token="<unk>"))
        bpe.pre_tokenizer = pre_tokenizers.Metaspace()
        bpe.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=200, show_progress=False,
                                                           special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
        model = json.loads(bpe.to_str())["model"]
        return NllbTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])
    # M2M100: fairseq's dictionary (vocab.json) over the sentencepiece model; codes get ids after it
    (work / "sentencepiece.bpe.model").write_bytes(proto)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(3, sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    (work / "vocab.json").write_text(json.dumps(vocab))
    return M2M100Tokenizer(vocab_file=str(work / "vocab.json"), spm_file=str(work / "sentencepiece.bpe.model"))


def build(family: str, folder: Path) -> Path:
    """Save a tiny random model of the family and its tokenizer (no src_lang/tgt_lang saved) to folder."""
    work = folder.parent / f"{folder.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(family, work)
    # M2M100's codes and its 8 "madeup words" come after its dictionary, outside get_vocab()
    extra = list(getattr(tokenizer, "lang_code_to_id", {}).values()) if family == "m2m100" else []
    vocab_size = max([*tokenizer.get_vocab().values(), *extra]) + 1 + (8 if family == "m2m100" else 0)
    torch.manual_seed(0)
    if family == "mbart50":
        model = MBartForConditionalGeneration(MBartConfig(vocab_size=vocab_size, **SIZES, **SPECIAL))
    else:
        model = M2M100ForConditionalGeneration(M2M100Config(vocab_size=vocab_size, **SIZES, **SPECIAL))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def corpus_file(path: Path) -> Path:
    """English-Japanese pairs as a local jsonl corpus."""
    path.write_text("".join(json.dumps({"en": en, "ja": ja}, ensure_ascii=False) + "\n" for en, ja in PAIRS),
                    encoding="utf-8")
    return path
