"""Synthetic run records in the shape train/eval/benchmark jobs write, for tests and benchmarks.

The numbers follow a simple deterministic model (quality grows with the budget, full fine-tuning is
best, adapters add latency, merged LoRA/IA3 run at the base model's speed) so that expected view contents
can be computed from the records.
"""

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

KNOBLESS = frozenset({"full", "bitfit", "ia3"})  # methods with no size knob run once, budget "none"
TOTAL_PARAMS = 1_500_000
_GAP_PER_DECADE = {"lora": 1.0, "adapter": 0.8, "sparse-adapter": 0.9, "prefix": 2.0, "coda": 1.1}
MERGEABLE = frozenset({"lora", "ia3"})
_LATENCY_OVERHEAD_MS = {"full": 0.0, "bitfit": 0.0, "ia3": 0.2, "lora": 0.5, "prefix": 1.5, "coda": -4.0}


def synthetic_records(study: str, task: str, method: str, budget: str, seed: int,
                      *, failed: bool = False) -> dict[str, dict[str, Any]]:
    """{file name: record} for one run; a failed run has only train.json."""
    run_id = f"{study}/{task}/{method}/{budget}/seed{seed}"
    target = None if budget == "none" else float(budget)
    frac = 1.0 if method == "full" else (target if target is not None else 0.001)
    rel_error = 0.0 if method == "full" else -0.05
    trainable = round(TOTAL_PARAMS * frac * (1 + rel_error))
    translation = "-" in task
    noise = 0.2 * (seed % 3 - 1)
    gap = _GAP_PER_DECADE.get(method, 1.5) * -math.log10(frac)
    quality = 40.0 + sum(map(ord, task)) % 7 + 8.0 - gap + noise
    steps = 300
    train = {
        "run_id": run_id, "study": study, "task": task,
        "task_kind": "translation" if translation else "classification",
        "method": method, "method_family": method.removeprefix("sparse-"), "budget": budget,
        "budget_target": target, "seed": seed, "status": "failed" if failed else "ok",
        "error": "RuntimeError: CUDA out of memory at step 120" if failed else None,
        "log_path": f"logs/train/{run_id}.log", "base_model": "tiny-marian", "base_model_id": "build-1a2b3c",
        "data_manifest_sha256": "ab" * 32, "code_fingerprint": f"{method}-f00d",
        "method_config": {"r": 8} if method == "lora" else {},
        "train_config": {"lr": 0.001, "max_steps": steps},
        "params": {"trainable": trainable, "total": TOTAL_PARAMS + (0 if method == "full" else trainable),
                   "realised_fraction": trainable / TOTAL_PARAMS, "rel_error": rel_error, "head": 0},
        "train": {"steps": 120 if failed else steps, "wall_time_s": 60.0 + 30 * frac + seed,
                  "time_per_step_s": 0.2, "tokens_per_s": 5000.0 - 1000 * frac,
                  "peak_memory_mb": 300 + 200 * frac,
                  "memory": {"source": "cuda_max_memory_allocated_per_step", "avg_mb": 250 + 150 * frac + seed,
                             "p99_mb": 290 + 190 * frac + seed, "max_mb": 300 + 200 * frac},
                  "model_flops": 4.0e12 * (1 + frac) + seed, "mfu": None if seed == 0 else 0.3 + 0.1 * frac,
                  "precision": "bf16", "devices": 1 + seed,
                  "best_dev_score": 2.0 + gap / 10, "dev_metric": "dev_loss", "best_step": 250,
                  "time_to_best_s": 50.0 + 10 * frac + seed, "stopped_early": not failed},
        "curve": [{"step": s, "train_loss": 4.0 - s / 100, "dev_loss": 3.9 - s / 110, "lr": 0.001,
                   "elapsed_s": s * 0.2} for s in range(50, (120 if failed else steps) + 1, 50)],
        "versions": {"peftlab": "0.1.0", "torch": "2.9.0", "transformers": "5.23.0", "peft": "0.21.2",
                     "git": "abc123"},
        "adapter_bytes": 4 * trainable,
        "device": "cpu", "started_at": "2026-11-23T03:00:00Z", "finished_at": "2026-11-23T03:01:00+00:00",
    }
    if failed:
        return {"train.json": train}
    if translation:
        sig = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
        metrics = [{"metric": "bleu", "value": 0.45 * quality, "signature": sig},
                   {"metric": "chrf", "value": quality, "signature": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0"},
                   {"metric": "ter", "value": 100.0 - quality, "signature": "nrefs:1|case:lc|tok:tercom"}]
    else:
        metrics = [{"metric": "accuracy", "value": quality / 100, "signature": "accuracy|peftlab:0.1.0"},
                   {"metric": "macro_f1", "value": quality / 110, "signature": "macro_f1|peftlab:0.1.0"}]
    metrics += [{"metric": "cka", "value": 1.0 - gap / 20 - layer / 10, "layer": layer,
                 "signature": "cka|linear"} for layer in (0, 1)]
    evaluation = {"run_id": run_id, "split": "test", "n_examples": 200, "status": "ok", "metrics": metrics,
                  "hypotheses_path": f"results/{run_id}/hyp.txt"}
    base_ms = 10.0 + 0.1 * seed  # the un-adapted base model, timed beside the run's model
    # a method's overhead is a fixed fraction of the base model's time: the ratio to base does not depend on the seed
    overhead = _LATENCY_OVERHEAD_MS.get(method, 1.0 + 20 * frac)
    # LoRA and IA3 are timed as trained and merged into the base weights (then as fast as the base model).
    variants = [(False, method not in MERGEABLE, overhead)] + ([(True, True, 0.0)] if method in MERGEABLE else [])
    bench = {"run_id": run_id, "device": "cpu", "threads": 1, "status": "ok", "measurements": [
        {"batch_size": bs, "seq_len": 32, "new_tokens": 16, "task": task_, "warmup": 3, "repeats": 10,
         "merged": merged, "deployed": deployed,
         "latency_ms_median": lat, "latency_ms_p10": 0.9 * lat, "latency_ms_p90": 1.2 * lat,
         "latency_ms_mean": 1.02 * lat, "latency_ms_std": 0.05 * lat, "latency_cv": 0.05 / 1.02,
         "base_latency_ms_median": b, "base_latency_ms_p10": 0.9 * b, "base_latency_ms_p90": 1.2 * b,
         "base_latency_cv": 0.04, "ratio_to_base": lat / b, "ratio_p10": 0.97 * lat / b, "ratio_p90": 1.03 * lat / b,
         "ratio_cv": 0.01 + 0.001 * seed,
         "throughput_items_per_s": 1000 * bs / lat, "peak_memory_mb": 100.0 + bs}
        for merged, deployed, extra_ms in variants for bs in (1, 16)
        for task_, scale in (("generate", bs**0.6), ("forward", bs**0.6 / 4))
        for b, lat in [(base_ms * scale, base_ms * (1 + extra_ms / 10.0) * scale)]]}
    return {"train.json": train, "eval.json": evaluation, "bench.json": bench}


def write_synthetic_grid(root: Path | str, *, study: str, tasks: Iterable[str], methods: Iterable[str],
                         budgets: Iterable[str], seeds: Iterable[int],
                         failed: Iterable[str] = ()) -> list[Path]:
    """Write records for the grid under root/<study>/runs/...; `failed` holds run_ids that fail."""
    failed, budgets, seeds, methods = set(failed), list(budgets), list(seeds), list(methods)
    dirs = []
    for task in tasks:
        for method in methods:
            for budget in ["none"] if method in KNOBLESS else budgets:
                for seed in seeds:
                    run_dir = Path(root, study, "runs", task, method, budget, f"seed{seed}")
                    run_dir.mkdir(parents=True, exist_ok=True)
                    run_id = f"{study}/{task}/{method}/{budget}/seed{seed}"
                    for name, rec in synthetic_records(study, task, method, budget, seed,
                                                       failed=run_id in failed).items():
                        (run_dir / name).write_text(json.dumps(rec))
                    dirs.append(run_dir)
    return dirs
