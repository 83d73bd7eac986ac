"""Inference benchmark: a run's latency relative to the un-adapted base model, measured side by side.

Absolute latencies on a shared machine follow whatever else runs there (the demo's base model once measured
17.5 ms on en-de and 79.7 ms on en-ru, in separate jobs). So a benchmark loads the base model beside the run's
model and times them interleaved in one process, on the same inputs and threads: after untimed warm-up calls of
every model, each repeat calls every model once, in an order rotated from repeat to repeat. The ratio to base is
the MEDIAN OF THE PER-REPEAT RATIOS (model time / base time of the same repeat), not the ratio of the medians:
the two calls of a repeat are neighbours in time, so load that changes slower than a repeat cancels in their
ratio, and the median ignores the repeats a burst of load hit. Each row also carries the absolute percentiles
of both models and the coefficient of variation (std / mean) of the model, the base and the ratio.

Mergeable methods (LoRA, IA3: registry `mergeable`) are timed twice in the same rounds: as trained (the
wrappers add their update on every call) and merged into the base weights (methods.merge_method), which is
what a deployment runs; `deployed` marks the merged row, and the results views use it. Before timing, the
merged model's outputs must equal the unmerged model's on the benchmark inputs (MergeMismatchError if not).

Every model generates exactly `new_tokens` tokens greedily, so a method that translates longer or shorter does
not look faster or slower than it is: only the cost per step differs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from peftlab.atomic import write_json
from peftlab.languages import NO_LANGUAGES, Languages, configure_tokenizer, languages_of
from peftlab.methods import get_method, merge_method
from peftlab.methods.core import saved_method_name
from peftlab.models import default_device, is_decoder_only, load_base, load_trained, read_jsonl, shard_labels
from peftlab.train import peak_memory_mb
from peftlab.translate import prompt_batch

log = logging.getLogger(__name__)

# Merged and unmerged outputs agree to float32 rounding; a real mismatch (a wrapper merge forgot) is far larger.
MERGE_RTOL, MERGE_ATOL = 1e-3, 1e-4


class MergeMismatchError(RuntimeError):
    """A merged model computes something else than the model it was merged from."""


@dataclass
class Variant:
    """One model timed against the base: the run's model as trained, or merged into the base weights."""

    model: torch.nn.Module
    merged: bool
    deployed: bool  # the variant a deployment would run: the merged one where the method can merge


def _stats(ms: np.ndarray) -> dict[str, float]:
    std = float(ms.std(ddof=1))
    return {"median": float(np.median(ms)), "p10": float(np.percentile(ms, 10)),
            "p90": float(np.percentile(ms, 90)), "mean": float(ms.mean()), "std": std, "cv": std / float(ms.mean())}


def interleaved_ms(models: list[torch.nn.Module], call: Callable[[torch.nn.Module], Any], *, warmup: int,
                   repeats: int, device: str) -> np.ndarray:
    """Wall milliseconds, shape (repeats, len(models)): every repeat calls every model once, starting from a
    different model each time (so no model is always first after a pause; over a multiple of len(models)
    repeats each model holds each position equally often); `warmup` untimed rounds first."""
    cuda = device.startswith("cuda")
    out = np.empty((repeats, len(models)))
    for i in range(warmup + repeats):
        for k in range(len(models)):
            j = (i + k) % len(models)
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            call(models[j])
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                out[i - warmup, j] = (time.perf_counter() - start) * 1000
    return out


def _outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor], decoder_ids: torch.Tensor | None) -> torch.Tensor:
    if decoder_ids is None:
        return model(**batch).logits
    if model.config.is_encoder_decoder:
        return model(**batch, decoder_input_ids=decoder_ids).logits
    # a decoder-only model's generate() returns prompt + generated tokens: the whole sequence is its input
    new = decoder_ids.shape[1] - batch["input_ids"].shape[1]
    mask = torch.cat([batch["attention_mask"], batch["attention_mask"].new_ones((len(decoder_ids), new))], dim=1)
    return model(input_ids=decoder_ids, attention_mask=mask).logits


def check_merge(unmerged: torch.nn.Module, merged: torch.nn.Module, batch: dict[str, torch.Tensor], *,
                decoder_ids: torch.Tensor | None = None) -> float:
    """Largest absolute logit difference of the two models on `batch` (seq2seq: along `decoder_ids`, the
    sequences the unmerged model generated); MergeMismatchError beyond float32 rounding."""
    a, b = _outputs(unmerged, batch, decoder_ids), _outputs(merged, batch, decoder_ids)
    diff = float((a - b).abs().max())
    if not torch.allclose(a, b, rtol=MERGE_RTOL, atol=MERGE_ATOL):
        raise MergeMismatchError(f"merged model's logits differ from the unmerged model's by up to {diff:.3g} "
                                 f"(allowed: rtol {MERGE_RTOL}, atol {MERGE_ATOL})")
    return diff


@torch.no_grad()
def measure_against_base(variants: list[Variant], base: torch.nn.Module, batches: dict[int, dict[str, torch.Tensor]],
                         call: Callable[[torch.nn.Module, dict[str, torch.Tensor]], Any], *, op: str, warmup: int,
                         repeats: int, device: str, **extra: Any) -> list[dict]:
    """One row per (batch size, variant): the variant's latency, the base model's latency from the same rounds,
    and their ratio (see the module docstring). `op` is generate (seq2seq; the merge check follows the
    sequences the unmerged model generates) or forward."""
    if repeats < 2:
        raise ValueError(f"repeats must be at least 2 for a spread, got {repeats}")
    models = [base, *(v.model for v in variants)]
    for m in models:
        m.to(device).eval()
    unmerged = next((v.model for v in variants if not v.merged), None)
    rows = []
    for batch_size, batch in batches.items():
        batch = {k: v.to(device) for k, v in batch.items()}
        merge_diff = None
        if any(v.merged for v in variants) and unmerged is not None:
            merged = next(v.model for v in variants if v.merged)
            merge_diff = check_merge(unmerged, merged, batch,
                                     decoder_ids=call(unmerged, batch) if op == "generate" else None)
        ms = interleaved_ms(models, lambda m, b=batch: call(m, b), warmup=warmup, repeats=repeats, device=device)
        base_lat = _stats(ms[:, 0])
        for k, v in enumerate(variants, start=1):
            lat, ratios = _stats(ms[:, k]), ms[:, k] / ms[:, 0]
            row = {"task": op, "batch_size": batch_size, "seq_len": int(batch["input_ids"].shape[1]), **extra,
                   "warmup": warmup, "repeats": repeats, "merged": v.merged, "deployed": v.deployed,
                   **{f"latency_ms_{s}": round(lat[s], 4) for s in ("median", "p10", "p90", "mean", "std")},
                   "latency_cv": round(lat["cv"], 5),
                   **{f"base_latency_ms_{s}": round(base_lat[s], 4) for s in ("median", "p10", "p90")},
                   "base_latency_cv": round(base_lat["cv"], 5),
                   "ratio_to_base": round(float(np.median(ratios)), 5),
                   "ratio_p10": round(float(np.percentile(ratios, 10)), 5),
                   "ratio_p90": round(float(np.percentile(ratios, 90)), 5),
                   "ratio_cv": round(_stats(ratios)["cv"], 5),
                   "throughput_items_per_s": round(batch_size / (lat["median"] / 1000), 2),
                   "peak_memory_mb": round(peak_memory_mb(device), 1)}
            if v.merged and merge_diff is not None:
                row["merge_max_abs_diff"] = merge_diff
            rows.append(row)
    return rows


def _generate(new_tokens: int, codes: dict[str, int]) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], Any]:
    def call(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.generate(**batch, **codes, num_beams=1, do_sample=False, min_new_tokens=new_tokens,
                              max_new_tokens=new_tokens)
    return call


def benchmark_generation(variants: list[Variant], base: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                         sources: list[str], *, batch_sizes: list[int], warmup: int = 2, repeats: int = 5,
                         new_tokens: int = 16, languages: Languages = NO_LANGUAGES, device: str = "cpu") -> list[dict]:
    """Greedy generation of exactly `new_tokens` tokens for the first `batch_size` test sources, with the
    language codes and prefix evaluation uses (peftlab.translate.translate); a decoder-only model's prompts,
    left-padded (its timing includes reading the prompt, as a deployment's would)."""
    if languages.prompt:
        codes = {"pad_token_id": tokenizer.pad_token_id}
        batches = {bs: prompt_batch(tokenizer, languages, (sources * bs)[:bs]) for bs in batch_sizes}
        return measure_against_base(variants, base, batches, _generate(new_tokens, codes), op="generate",
                                    warmup=warmup, repeats=repeats, device=device, new_tokens=new_tokens)
    forced_bos = configure_tokenizer(tokenizer, languages)
    codes = {"forced_bos_token_id": forced_bos} if forced_bos is not None else {}
    batches = {bs: dict(tokenizer([languages.prefix + s for s in (sources * bs)[:bs]], return_tensors="pt",
                                  padding=True, truncation=True, max_length=256)) for bs in batch_sizes}
    return measure_against_base(variants, base, batches, _generate(new_tokens, codes), op="generate", warmup=warmup,
                                repeats=repeats, device=device, new_tokens=new_tokens)


def benchmark_forward(variants: list[Variant], base: torch.nn.Module, tokenizer: PreTrainedTokenizerBase,
                      texts: list[str], *, batch_sizes: list[int], warmup: int = 2, repeats: int = 5,
                      device: str = "cpu") -> list[dict]:
    """Classification: one forward pass per batch of test texts."""
    batches = {bs: dict(tokenizer((texts * bs)[:bs], return_tensors="pt", padding=True, truncation=True,
                                  max_length=256)) for bs in batch_sizes}
    return measure_against_base(variants, base, batches, lambda m, b: m(**b), op="forward", warmup=warmup,
                                repeats=repeats, device=device)


def run_variants(load: Callable[[], torch.nn.Module], method_dir: Path) -> list[Variant]:
    """The run's model as trained, plus a merged copy (the deployed one) when its method can merge."""
    trained = load()
    if not get_method(saved_method_name(method_dir)).mergeable:
        return [Variant(trained, merged=False, deployed=True)]
    return [Variant(trained, merged=False, deployed=False), Variant(merge_method(load()), merged=True, deployed=True)]


def benchmark_run(run_id: str, *, model_path: str, model_spec: dict, task: dict, corpus_dir: Path, shard_dir: Path,
                  method_dir: Path, method_sha256: dict[str, str], record_path: Path, settings: dict,
                  device: str | None = None) -> dict:
    device = device or default_device()
    test = read_jsonl(corpus_dir / "test.jsonl")
    common = {"batch_sizes": settings["batch_sizes"], "warmup": settings["warmup"], "repeats": settings["repeats"],
              "device": device}
    num_labels = len(shard_labels(shard_dir)) if task["kind"] == "classification" else None
    base, tokenizer = load_base(model_path, model_spec, task, num_labels)
    variants = run_variants(lambda: load_trained(model_path, model_spec, task, method_dir, method_sha256,
                                                       num_labels)[0], method_dir)
    if task["kind"] == "classification":
        rows = benchmark_forward(variants, base, tokenizer, [r["text"] for r in test], **common)
    else:
        languages = languages_of(model_spec, task, decoder_only=is_decoder_only(base))
        rows = benchmark_generation(variants, base, tokenizer, [r["src"] for r in test],
                                    new_tokens=settings["new_tokens"], languages=languages, **common)
    record = {"run_id": run_id, "device": device, "threads": torch.get_num_threads(), "status": "ok",
              "measurements": rows}
    write_json(record, record_path)
    for row in rows:
        log.info("%s %s batch %d%s: %.2f x base (cv %.1f%%), median %.2f ms (cv %.1f%%), base %.2f ms (cv %.1f%%)",
                 run_id, row["task"], row["batch_size"], " merged" if row["merged"] else "", row["ratio_to_base"],
                 100 * row["ratio_cv"], row["latency_ms_median"], 100 * row["latency_cv"],
                 row["base_latency_ms_median"], 100 * row["base_latency_cv"])
    return record
