"""Evaluation: beam-search translation of a test set and sacrebleu scores that carry their signatures."""

from __future__ import annotations

import torch
from sacrebleu.metrics import BLEU, CHRF, TER
from transformers import PreTrainedTokenizerBase


@torch.no_grad()
def translate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, sources: list[str], *, source_prefix: str = "",
              num_beams: int = 4, batch_size: int = 32, max_new_tokens: int = 64, device: str = "cpu") -> list[str]:
    """Translate in length-sorted batches (less padding) and return hypotheses in the input order."""
    model.to(device).eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hypotheses: list[str] = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        ids = order[start:start + batch_size]
        batch = tokenizer([source_prefix + sources[i] for i in ids], return_tensors="pt", padding=True,
                          truncation=True, max_length=256).to(device)
        out = model.generate(**batch, num_beams=num_beams, max_new_tokens=max_new_tokens, do_sample=False)
        for i, text in zip(ids, tokenizer.batch_decode(out, skip_special_tokens=True), strict=True):
            hypotheses[i] = text.strip()
    return hypotheses


def mt_scores(hypotheses: list[str], references: list[str], target_lang: str) -> list[dict]:
    """BLEU, chrF and TER as rows {metric, value, signature}; the signature says how each was computed."""
    rows = []
    for name, metric in (("bleu", BLEU(trg_lang=target_lang)), ("chrf", CHRF()), ("ter", TER())):
        score = metric.corpus_score(hypotheses, [references])
        rows.append({"metric": name, "value": round(score.score, 4), "signature": str(metric.get_signature())})
    return rows
