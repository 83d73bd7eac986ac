"""Beam-search translation with a model family's language codes: used by evaluation (evaluate.py) and by the
forgetting measure (forgetting.py); kept in its own module so neither imports the other.

A decoder-only model (no encoder) translates a prompt (languages.prompt): the batch is padded on the left, so
that every prompt ends where generation starts; the generated part alone is decoded, cut at the first
end-of-sequence token and kept to its first line (the corpus's sentences have no line breaks: a base model that
was never taught to stop goes on past the translation, typically with another prompt)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from peftlab.data.shards import encode_prompts
from peftlab.languages import NO_LANGUAGES, Languages, configure_tokenizer, fill_prompt


def prompt_batch(tokenizer: PreTrainedTokenizerBase, languages: Languages, sources: list[str],
                 max_length: int = 256) -> dict[str, torch.Tensor]:
    """A decoder-only model's prompts, encoded as the shards encode them and padded on the left."""
    ids = [row[-max_length:] for row in encode_prompts(tokenizer, [fill_prompt(languages, s) for s in sources])]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, width - len(row):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def generated_text(tokenizer: PreTrainedTokenizerBase, out: torch.Tensor, prompt_width: int) -> list[str]:
    """The hypotheses of a decoder-only model's generate() output: the prompt (the first prompt_width columns)
    dropped, each row cut at its first eos, decoded without special tokens, its first line."""
    texts = []
    for row in out[:, prompt_width:].tolist():
        if tokenizer.eos_token_id in row:
            row = row[:row.index(tokenizer.eos_token_id)]
        text = tokenizer.decode(row, skip_special_tokens=True).strip()
        texts.append(text.split("\n", 1)[0].strip())
    return texts


@torch.no_grad()
def translate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, sources: list[str], *,
              languages: Languages = NO_LANGUAGES,
              num_beams: int = 4, batch_size: int = 32, max_new_tokens: int = 64, device: str = "cpu") -> list[str]:
    """Translate in length-sorted batches (less padding) and return hypotheses in the input order.

    `languages` is the direction as the shards were built with it: the source prefix, the tokenizer's language
    codes, and the target code forced as the first generated token (mBART-50, NLLB, M2M100); for a decoder-only
    model, the prompt."""
    causal = not model.config.is_encoder_decoder
    if causal and not languages.prompt:
        raise ValueError("a decoder-only model translates a prompt: pass languages_of(..., decoder_only=True)")
    forced_bos = None if causal else configure_tokenizer(tokenizer, languages)
    codes = {"forced_bos_token_id": forced_bos} if forced_bos is not None else {}
    if causal:  # stop at the tokenizer's eos, the one the shards end every target with
        codes = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    model.to(device).eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hypotheses: list[str] = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        ids = order[start:start + batch_size]
        if causal:
            prompts = prompt_batch(tokenizer, languages, [sources[i] for i in ids])
            batch = {k: v.to(device) for k, v in prompts.items()}
        else:
            batch = tokenizer([languages.prefix + sources[i] for i in ids], return_tensors="pt", padding=True,
                              truncation=True, max_length=256).to(device)
        out = model.generate(**batch, **codes, num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False)
        if causal:
            texts = generated_text(tokenizer, out, batch["input_ids"].shape[1])
        else:
            if forced_bos is not None:
                # Drop the decoder start and the forced code: transformers 5.23's M2M100Tokenizer keeps "__de__" in
                # text decoded with skip_special_tokens.
                if not bool((out[:, 1] == forced_bos).all()):
                    raise RuntimeError(f"generation did not start with the target code (id {forced_bos})")
                out = out[:, 2:]
            texts = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
        for i, text in zip(ids, texts, strict=True):
            hypotheses[i] = text
    return hypotheses
