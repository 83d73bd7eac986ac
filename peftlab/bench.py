"""Inference benchmark: latency percentiles and throughput of generation at fixed work per batch.

Every model generates exactly `new_tokens` tokens greedily, so a method that translates longer or
shorter does not look faster or slower than it is: only the cost per step differs.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from peftlab.atomic import write_json
from peftlab.languages import NO_LANGUAGES, Languages, configure_tokenizer, languages_of
from peftlab.models import default_device, load_trained, read_jsonl, shard_labels
from peftlab.train import peak_memory_mb

log = logging.getLogger(__name__)


def _timed(call, *, warmup: int, repeats: int, device: str) -> np.ndarray:
    """Wall milliseconds of `repeats` calls after `warmup` untimed ones (CUDA synchronised around each)."""
    timings = []
    for i in range(warmup + repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            timings.append((time.perf_counter() - start) * 1000)
    return np.array(timings)


def _row(task: str, batch_size: int, seq_len: int, ms: np.ndarray, device: str, **extra) -> dict:
    median = float(np.median(ms))
    return {
        "task": task, "batch_size": batch_size, "seq_len": seq_len, **extra,
        "latency_ms_median": round(median, 3), "latency_ms_p10": round(float(np.percentile(ms, 10)), 3),
        "latency_ms_p90": round(float(np.percentile(ms, 90)), 3), "latency_ms_mean": round(float(ms.mean()), 3),
        "latency_ms_std": round(statistics.stdev(ms.tolist()), 3) if len(ms) > 1 else 0.0,
        "throughput_items_per_s": round(batch_size / (median / 1000), 2),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }


@torch.no_grad()
def benchmark_generation(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, sources: list[str], *,
                         batch_sizes: list[int], warmup: int = 2, repeats: int = 5, new_tokens: int = 16,
                         languages: Languages = NO_LANGUAGES, device: str = "cpu") -> list[dict]:
    forced_bos = configure_tokenizer(tokenizer, languages)  # generate as evaluation does (evaluate.translate)
    codes = {"forced_bos_token_id": forced_bos} if forced_bos is not None else {}
    model.to(device).eval()
    rows = []
    for batch_size in batch_sizes:
        texts = [languages.prefix + s for s in (sources * batch_size)[:batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=256).to(device)
        ms = _timed(lambda b=batch: model.generate(**b, **codes, num_beams=1, do_sample=False,
                                                   min_new_tokens=new_tokens, max_new_tokens=new_tokens),
                    warmup=warmup, repeats=repeats, device=device)
        rows.append(_row("generate", batch_size, int(batch["input_ids"].shape[1]), ms, device,
                         new_tokens=new_tokens, warmup=warmup, repeats=repeats))
    return rows


@torch.no_grad()
def benchmark_forward(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], *,
                      batch_sizes: list[int], warmup: int = 2, repeats: int = 5, device: str = "cpu") -> list[dict]:
    """Classification: one forward pass per batch of test texts."""
    model.to(device).eval()
    rows = []
    for batch_size in batch_sizes:
        batch = tokenizer((texts * batch_size)[:batch_size], return_tensors="pt", padding=True, truncation=True,
                          max_length=256).to(device)
        ms = _timed(lambda b=batch: model(**b), warmup=warmup, repeats=repeats, device=device)
        rows.append(_row("forward", batch_size, int(batch["input_ids"].shape[1]), ms, device,
                         warmup=warmup, repeats=repeats))
    return rows


def benchmark_run(run_id: str, *, model_path: str, model_spec: dict, task: dict, corpus_dir: Path, shard_dir: Path,
                  method_dir: Path, method_sha256: dict[str, str], record_path: Path, settings: dict,
                  device: str | None = None) -> dict:
    device = device or default_device()
    test = read_jsonl(corpus_dir / "test.jsonl")
    common = {"batch_sizes": settings["batch_sizes"], "warmup": settings["warmup"], "repeats": settings["repeats"],
              "device": device}
    if task["kind"] == "classification":
        labels = shard_labels(shard_dir)
        model, tokenizer = load_trained(model_path, model_spec, task, method_dir, method_sha256, len(labels))
        rows = benchmark_forward(model, tokenizer, [r["text"] for r in test], **common)
    else:
        model, tokenizer = load_trained(model_path, model_spec, task, method_dir, method_sha256)
        rows = benchmark_generation(model, tokenizer, [r["src"] for r in test], new_tokens=settings["new_tokens"],
                                    languages=languages_of(model_spec, task), **common)
    record = {"run_id": run_id, "device": device, "threads": torch.get_num_threads(), "status": "ok",
              "measurements": rows}
    write_json(record, record_path)
    for row in rows:
        log.info("%s %s batch %d: median %.1f ms (p10 %.1f, p90 %.1f), %.1f items/s", run_id, row["task"],
                 row["batch_size"], row["latency_ms_median"], row["latency_ms_p10"], row["latency_ms_p90"],
                 row["throughput_items_per_s"])
    return record
