"""Beam-search translation with a model family's language codes: used by evaluation (evaluate.py) and by the
forgetting measure (forgetting.py); kept in its own module so neither imports the other."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from peftlab.languages import NO_LANGUAGES, Languages, configure_tokenizer


@torch.no_grad()
def translate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, sources: list[str], *,
              languages: Languages = NO_LANGUAGES,
              num_beams: int = 4, batch_size: int = 32, max_new_tokens: int = 64, device: str = "cpu") -> list[str]:
    """Translate in length-sorted batches (less padding) and return hypotheses in the input order.

    `languages` is the direction as the shards were built with it: the source prefix, the tokenizer's language
    codes, and the target code forced as the first generated token (mBART-50, NLLB, M2M100)."""
    forced_bos = configure_tokenizer(tokenizer, languages)
    codes = {"forced_bos_token_id": forced_bos} if forced_bos is not None else {}
    model.to(device).eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hypotheses: list[str] = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        ids = order[start:start + batch_size]
        batch = tokenizer([languages.prefix + sources[i] for i in ids], return_tensors="pt", padding=True,
                          truncation=True, max_length=256).to(device)
        out = model.generate(**batch, **codes, num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False)
        if forced_bos is not None:
            # Drop the decoder start and the forced code: transformers 5.23's M2M100Tokenizer keeps "__de__" in
            # text decoded with skip_special_tokens.
            if not bool((out[:, 1] == forced_bos).all()):
                raise RuntimeError(f"generation did not start with the target code (id {forced_bos})")
            out = out[:, 2:]
        for i, text in zip(ids, tokenizer.batch_decode(out, skip_special_tokens=True), strict=True):
            hypotheses[i] = text.strip()
    return hypotheses
