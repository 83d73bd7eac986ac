"""Inference benchmark: latency percentiles and throughput of generation at fixed work per batch.

Every model generates exactly `new_tokens` tokens greedily, so a method that translates longer or
shorter does not look faster or slower than it is: only the cost per step differs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from peftlab.atomic import write_json
from peftlab.models import default_device, load_trained, read_jsonl, source_prefix
from peftlab.train import peak_memory_mb


@torch.no_grad()
def benchmark_generation(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, sources: list[str], *,
                         batch_sizes: list[int], warmup: int = 2, repeats: int = 5, new_tokens: int = 16,
                         source_prefix: str = "", device: str = "cpu") -> list[dict]:
    model.to(device).eval()
    rows = []
    for batch_size in batch_sizes:
        texts = [source_prefix + s for s in (sources * batch_size)[:batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=256).to(device)
        timings = []
        for i in range(warmup + repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.generate(**batch, num_beams=1, do_sample=False,
                           min_new_tokens=new_tokens, max_new_tokens=new_tokens)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= warmup:
                timings.append((time.perf_counter() - start) * 1000)
        ms = np.array(timings)
        rows.append({
            "task": "generate", "batch_size": batch_size, "seq_len": int(batch["input_ids"].shape[1]),
            "new_tokens": new_tokens, "warmup": warmup, "repeats": repeats,
            "latency_ms_median": round(float(np.median(ms)), 3),
            "latency_ms_p10": round(float(np.percentile(ms, 10)), 3),
            "latency_ms_p90": round(float(np.percentile(ms, 90)), 3), "latency_ms_mean": round(float(ms.mean()), 3),
            "latency_ms_std": round(statistics.stdev(timings), 3) if len(timings) > 1 else 0.0,
            "throughput_items_per_s": round(batch_size / (float(np.median(ms)) / 1000), 2),
            "peak_memory_mb": round(peak_memory_mb(device), 1),
        })
    return rows


def benchmark_run(run_id: str, *, model_path: str, model_spec: dict, task: dict, corpus_dir: Path, method_dir: Path,
                  record_path: Path, settings: dict, device: str | None = None) -> dict:
    device = device or default_device()
    model, tokenizer = load_trained(model_path, model_spec, task, method_dir)
    sources = [r["src"] for r in read_jsonl(corpus_dir / "test.jsonl")]
    rows = benchmark_generation(model, tokenizer, sources, batch_sizes=settings["batch_sizes"],
                                warmup=settings["warmup"], repeats=settings["repeats"],
                                new_tokens=settings["new_tokens"], source_prefix=source_prefix(model_spec, task),
                                device=device)
    record = {"run_id": run_id, "device": device, "threads": torch.get_num_threads(), "status": "ok",
              "measurements": rows}
    write_json(record, record_path)
    return record
