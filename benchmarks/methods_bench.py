"""Cost of every method: training step time and peak memory relative to full fine-tuning, inference
latency relative to the base model, on a tiny Marian (d_model 128, 2+2 layers, vocab 4000, random
weights) and the real MiniLM (all-MiniLM-L6-v2 with a 3-class head).

All on one thread:
- training: AdamW steps (forward, backward, step, zero_grad) at batch 16 x length 32;
- inference: eval mode under no_grad; Marian: greedy generation of exactly 16 tokens for 8 sentences
  of 32 tokens; MiniLM: a forward pass at 16 x 32;
- timing is round-robin: each round runs one step (or call) of every method, so load from other
  processes hits a round's methods alike; ratios are medians of per-round ratios;
- peak memory: in a fresh child process per method, the peak resident set size (Linux VmHWM, reset
  through /proc/self/clear_refs just before training) minus the resident size at that moment, i.e.
  what 3 training steps added. Neither tracemalloc (it does not see torch's tensor allocations) nor
  resource.ru_maxrss (it cannot be reset, and loading a model peaks higher than training a tiny one)
  measures that.
Sized methods run at the knob the solver picks for a 1% budget, or at their default knob when 1% is
out of reach (within 10%). "lora merged" is LoRA folded into the base weights (inference only).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/methods_bench.py

Realised budgets of every sized method (what --solver-table printed here): benchmarks/budget_table.py.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

BUDGET = 0.01
MODELS = ("tiny-marian", "minilm")


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _build(which: str):
    from peftlab.methods.tiny import minilm_classifier, tiny_model

    if which == "tiny-marian":
        return tiny_model("marian", d_model=128, layers=2, vocab=4000)
    return minilm_classifier()


def _batch(model, which: str, n: int, length: int):
    from peftlab.methods.tiny import example_batch

    return example_batch(model, batch=n, length=length, target_length=length, seed=0)


def _config(model, method: str):
    from peftlab.methods import METHODS, BudgetError, make_method_config, solve_budget

    name = method.split()[0]
    if METHODS[name].knob is None:
        return make_method_config(name, {}), "-"
    try:
        cfg = solve_budget(model, name, {}, BUDGET).config
    except BudgetError:
        cfg = make_method_config(name, {})
    knob = METHODS[name].knob
    return cfg, f"{knob}={getattr(cfg, knob)}"


def _adapt(which: str, method: str):
    from peftlab.methods import apply_method, count_parameters, merge_method

    base = _build(which)
    cfg, knob = _config(base, method)
    calibration = [_batch(base, which, 16, 32)] * cfg.calibration_batches() or None  # sparse's SNIP scores data
    model = apply_method(base, cfg, calibration=calibration)
    fraction = count_parameters(model).fraction
    if method == "lora merged":
        model = merge_method(model)
    return model, knob, fraction


def _train_step(model, opt, batch) -> None:
    model(**batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _infer(model, which: str, batch) -> None:
    if which == "tiny-marian":
        model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       num_beams=1, do_sample=False, min_new_tokens=16, max_new_tokens=16)
    else:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def _memory_child(which: str, method: str, out: mp.Queue) -> None:
    """Peak RSS added by 3 training steps, in a fresh process (freed memory stays resident otherwise)."""
    import torch

    torch.set_num_threads(1)
    model, _, _ = _adapt(which, method)
    batch = _batch(model, which, 16, 32)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    rss0 = _rss_kb("VmRSS")
    for _ in range(3):
        _train_step(model, opt, batch)
    out.put((_rss_kb("VmHWM") - rss0) / 1024)


def _peak_mb(which: str, method: str) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(which, method, queue))
    proc.start()
    mb = queue.get()
    proc.join()
    return mb


def _round_robin(fns: dict[str, object], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Time every fn once per round, for `rounds` rounds after `warmup`: load from other processes then
    hits all methods of a round alike, and per-round ratios cancel it."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def _ratio(times: dict[str, list[float]], name: str, ref: str) -> float:
    return statistics.median(t / r for t, r in zip(times[name], times[ref], strict=True))


def _median_iqr(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), q[2] - q[0]


def _bench_model(which: str, methods: list[str], rounds: int) -> list[str]:
    import torch

    adapted = {m: _adapt(which, m) for m in methods}
    models = {m: model for m, (model, _, _) in adapted.items()}
    train_batch = _batch(models["base"], which, 16, 32)
    infer_batch = _batch(models["base"], which, 8 if which == "tiny-marian" else 16, 32)
    steps = {}
    for m, model in models.items():
        params = [p for p in model.parameters() if p.requires_grad]
        if params and m != "lora merged":
            model.train()
            steps[m] = functools.partial(_train_step, model, torch.optim.AdamW(params, lr=1e-4), train_batch)
    train = _round_robin(steps, rounds, warmup=3)
    for model in models.values():
        model.eval()
    with torch.no_grad():
        infer = _round_robin({m: functools.partial(_infer, model, which, infer_batch)
                              for m, model in models.items()}, rounds, warmup=2)
    peak = {m: _peak_mb(which, m) for m in steps}
    lines = []
    for m, (_, knob, fraction) in adapted.items():
        if m in train:
            t, iqr = _median_iqr(train[m])
            cost = (f"{t:8.1f} ±{iqr:5.1f} {_ratio(train, m, 'full'):7.2f} "
                    f"{peak[m]:8.1f} {peak[m] / peak['full']:7.2f}")
        else:
            cost = f"{'-':>15} {'-':>7} {'-':>8} {'-':>7}"
        i, iqr = _median_iqr(infer[m])
        lines.append(f"{which:12} {m:12} {knob:22} {fraction:9.3%} {cost} {i:7.1f} ±{iqr:5.1f} "
                     f"{_ratio(infer, m, 'base'):7.2f}")
    return lines


def bench(rounds: int) -> None:
    import torch

    from peftlab.methods import METHODS

    torch.set_num_threads(1)
    methods = sorted(METHODS, key=lambda m: (m not in ("base", "full"), m)) + ["lora merged"]
    header = (f"{'model':12} {'method':12} {'knob':22} {'trainable':>9} {'train ms/step':>15} {'x full':>7} "
              f"{'peak MB':>8} {'x full':>7} {'infer ms':>14} {'x base':>7}")
    print(header)
    print("-" * len(header))
    for which in MODELS:
        print("\n".join(_bench_model(which, methods, rounds)) + "\n", flush=True)
    print(f"Medians over {rounds} round-robin rounds after warm-up, 1 thread; ± is the interquartile range; "
          f"ratios are medians of per-round ratios.\nPeak MB: peak RSS added by 3 training steps in a fresh "
          f"process (Linux VmHWM reset via /proc/self/clear_refs).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed round-robin rounds")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    bench(args.rounds)


if __name__ == "__main__":
    main()
