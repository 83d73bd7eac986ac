"""Evaluation: beam-search translation of a test set and sacrebleu scores that carry their signatures."""

from __future__ import annotations

from pathlib import Path

import torch
from sacrebleu.metrics import BLEU, CHRF, TER
from transformers import PreTrainedTokenizerBase

from peftlab.atomic import write_json, write_text
from peftlab.models import default_device, load_trained, read_jsonl, source_prefix


@torch.no_grad()
def translate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, sources: list[str], *,
              source_prefix: str = "",
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


def evaluate_run(run_id: str, *, model_path: str, model_spec: dict, task: dict, corpus_dir: Path, method_dir: Path,
                 record_path: Path, hypotheses_path: Path, settings: dict, device: str | None = None) -> dict:
    """Translate the test split with beam search and score it with sacrebleu (BLEU, chrF, TER)."""
    device = device or default_device()
    model, tokenizer = load_trained(model_path, model_spec, task, method_dir)
    test = read_jsonl(corpus_dir / "test.jsonl")
    hypotheses = translate(model, tokenizer, [r["src"] for r in test], source_prefix=source_prefix(model_spec, task),
                           num_beams=settings["num_beams"], batch_size=settings["batch_size"],
                           max_new_tokens=settings["max_new_tokens"], device=device)
    write_text("\n".join(hypotheses) + "\n", hypotheses_path)
    record = {"run_id": run_id, "split": "test", "n_examples": len(test), "status": "ok",
              "metrics": mt_scores(hypotheses, [r["tgt"] for r in test], task["target_lang"]),
              "decoding": {"num_beams": settings["num_beams"], "max_new_tokens": settings["max_new_tokens"]},
              "hypotheses_path": str(hypotheses_path), "device": device}
    write_json(record, record_path)
    return record
