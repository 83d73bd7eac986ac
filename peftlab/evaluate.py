"""Evaluation: beam-search translation of a test set and sacrebleu scores that carry their signatures."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from sacrebleu.metrics import BLEU, CHRF, TER
from transformers import PreTrainedTokenizerBase

from peftlab.atomic import write_json, write_text
from peftlab.classify import MAX_FIT_ROWS, evaluate_classifier
from peftlab.data import load_split
from peftlab.data.shards import subset_rows
from peftlab.forgetting import representation_drift, retained_quality
from peftlab.model_source import source_prefix
from peftlab.models import default_device, load_base, load_trained, read_jsonl, shard_labels

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def _step(name: str, errors: dict[str, str]) -> Iterator[None]:
    """Run one optional evaluation step; an exception is logged and kept in errors[name] instead of raised."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - any failure of an optional step is recorded, not fatal
        log.exception("evaluation step %s failed", name)
        errors[name] = f"{type(error).__name__}: {error}"


def mt_scores(hypotheses: list[str], references: list[str], target_lang: str) -> list[dict]:
    """BLEU, chrF and TER as rows {metric, value, signature}; the signature says how each was computed."""
    rows = []
    for name, metric in (("bleu", BLEU(trg_lang=target_lang)), ("chrf", CHRF()), ("ter", TER())):
        score = metric.corpus_score(hypotheses, [references])
        rows.append({"metric": name, "value": round(score.score, 4), "signature": str(metric.get_signature())})
    return rows


def evaluate_run(run_id: str, *, model_path: str, model_spec: dict, task: dict, corpus_dir: Path, shard_dir: Path,
                 method_dir: Path, record_path: Path, predictions_path: Path, settings: dict,
                 pretraining: dict[str, tuple[Path, str, str]] | None = None, train_size: int | None = None,
                 device: str | None = None) -> dict:
    """Score a trained run on its test split(s), and measure what it forgot.

    Translation: beam search, sacrebleu BLEU/chrF/TER, and the same scores on the base model's
    pretraining pairs (`pretraining`: task -> (corpus dir, source prefix, target language)).
    Classification: accuracy and macro-F1 per test language, OOD detection (MSP, max logit, energy,
    Mahalanobis). Both: per-layer CKA between the base model's and the tuned model's representations.
    """
    device = device or default_device()
    labels = shard_labels(shard_dir)
    num_labels = len(labels) if labels else None
    model, tokenizer = load_trained(model_path, model_spec, task, method_dir, num_labels)
    model.to(device)
    if task["kind"] == "classification":
        fit_rows = subset_rows(load_split(shard_dir, "train"), train_size, task.get("split_seed", 0), stratify=True)
        metrics = evaluate_classifier(model, shard_dir, pad_id=tokenizer.pad_token_id,
                                      batch_size=settings["batch_size"], device=device,
                                      fit_rows=fit_rows[:MAX_FIT_ROWS], predictions_path=predictions_path)
        n_examples = len(load_split(shard_dir, "test"))
    else:
        test = read_jsonl(corpus_dir / "test.jsonl")
        hypotheses = translate(model, tokenizer, [r["src"] for r in test],
                               source_prefix=source_prefix(model_spec, task), num_beams=settings["num_beams"],
                               batch_size=settings["batch_size"], max_new_tokens=settings["max_new_tokens"],
                               device=device)
        write_text("\n".join(hypotheses) + "\n", predictions_path)
        metrics = mt_scores(hypotheses, [r["tgt"] for r in test], task["target_lang"])
        n_examples = len(test)
    # Forgetting comes after the headline scores and may fail on its own (a method whose hidden states cannot be
    # read, a pretraining corpus gone): the record keeps what was already measured and says which step failed.
    errors: dict[str, str] = {}
    if task["kind"] == "translation":
        with _step("retained_quality", errors):
            metrics += retained_quality(model, tokenizer, pretraining or {}, settings=settings, device=device,
                                        max_examples=settings.get("retained_examples"))
    forgetting = None
    with _step("representation_drift", errors):
        base, _ = load_base(model_path, model_spec, task, num_labels)
        cka = representation_drift(base.to(device), model, load_split(shard_dir, "test"),
                                   pad_id=tokenizer.pad_token_id)
        metrics += cka
        forgetting = {k: cka[0][k] for k in ("comparable", "note") if k in cka[0]}
    record = {"run_id": run_id, "split": "test", "n_examples": n_examples, "status": "partial" if errors else "ok",
              "error": "; ".join(f"{step}: {e}" for step, e in errors.items()) if errors else None,
              "failed_steps": errors or None, "forgetting": forgetting, "metrics": metrics,
              "decoding": {k: settings[k] for k in ("num_beams", "max_new_tokens") if task["kind"] == "translation"},
              "labels": labels, "predictions_path": str(predictions_path), "device": device}
    write_json(record, record_path)
    log.info("%s on %d test examples: %s", run_id, n_examples, ", ".join(
        f"{m['metric']}{'/' + m['subset'] if m.get('subset') else ''} {m['value']}" for m in metrics
        if m.get("layer") is None and m.get("detector") in (None, "mahalanobis")))
    return record
