"""Evaluation: a trained run's test-set scores (translation or classification) and what it forgot, in eval.json."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from peftlab.atomic import write_json, write_text
from peftlab.classify import MAX_FIT_ROWS, evaluate_classifier
from peftlab.data import load_split
from peftlab.data.shards import subset_rows
from peftlab.forgetting import representation_drift, retained_quality
from peftlab.languages import languages_of
from peftlab.models import default_device, is_decoder_only, load_base, load_trained, read_jsonl, shard_labels
from peftlab.scoring import mt_scores
from peftlab.translate import translate

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _step(name: str, errors: dict[str, str]) -> Iterator[None]:
    """Run one optional evaluation step; an exception is logged and kept in errors[name] instead of raised."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - any failure of an optional step is recorded, not fatal
        log.exception("evaluation step %s failed", name)
        errors[name] = f"{type(error).__name__}: {error}"


def evaluate_run(run_id: str, *, model_path: str, model_spec: dict, task: dict, corpus_dir: Path, shard_dir: Path,
                 method_dir: Path, method_sha256: dict[str, str], record_path: Path, predictions_path: Path,
                 settings: dict,
                 pretraining: dict[str, tuple[Path, str, str]] | None = None, train_size: int | None = None,
                 device: str | None = None) -> dict:
    """Score a trained run on its test split(s), and measure what it forgot.

    Translation: beam search, sacrebleu BLEU/chrF/TER, and the same scores on the base model's
    pretraining pairs (`pretraining`: task -> (corpus dir, source language, target language)).
    Classification: accuracy and macro-F1 per test language, OOD detection (MSP, max logit, energy,
    Mahalanobis). Both: per-layer CKA between the base model's and the tuned model's representations (an
    encoder-decoder's encoder states on the source; a decoder-only model's states on its test shard rows, prompt
    and target teacher-forced, as it has no encoder: forgetting.py).
    `method_sha256` is the run's train.json "method_sha256": method files that do not match it are refused.
    """
    device = device or default_device()
    labels = shard_labels(shard_dir)
    num_labels = len(labels) if labels else None
    model, tokenizer = load_trained(model_path, model_spec, task, method_dir, method_sha256, num_labels)
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
                               languages=languages_of(model_spec, task, decoder_only=is_decoder_only(model)),
                               num_beams=settings["num_beams"],
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
            pairs = {name: (Path(corpus), languages_of(model_spec, {"source_lang": src, "target_lang": tgt},
                                                       decoder_only=is_decoder_only(model)))
                     for name, (corpus, src, tgt) in (pretraining or {}).items()}
            metrics += retained_quality(model, tokenizer, pairs, settings=settings, device=device,
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
