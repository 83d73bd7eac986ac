"""CPU cost of the training options: tokens/s and memory with and without gradient checkpointing,
gradient accumulation and bf16 autocast, on a small Marian (full fine-tuning), through peftlab.train.train.

    PYTHONPATH=. python benchmarks/train_options_bench.py [--steps 8] [--threads 1]

Each option set runs in its own process (memory is the process's resident set, sampled after every
optimizer step, so one run must not inherit another's heap) on the same random token ids of realistic
lengths (20-60 tokens), effective batch 32 sequences, one evaluation at the end. Figures:
tokens/s = real (unpadded) source + target tokens / wall seconds of the call; memory avg/p99/max of the
per-step RSS samples; peak = ru_maxrss of the process. On CPU, RSS includes the interpreter, torch and the
model (a floor that the options do not change), so the differences, not the levels, are the options' cost.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

OPTIONS = {
    "baseline (32 x 1)": {},
    "accumulation (8 x 4)": {"batch_size": 8, "grad_accumulation": 4},
    "checkpointing (32 x 1)": {"gradient_checkpointing": True},
    "checkpointing + accumulation (8 x 4)": {"batch_size": 8, "grad_accumulation": 4, "gradient_checkpointing": True},
    "bf16 autocast (32 x 1)": {"precision": "bf16"},
}


def one(options: dict, steps: int, threads: int) -> dict:
    import torch
    from transformers import MarianConfig, MarianMTModel

    from peftlab.train import train
    from peftlab.train_config import TrainConfig

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = MarianConfig(vocab_size=4000, d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                          decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512,
                          max_position_embeddings=128, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = MarianMTModel(config)
    g = torch.Generator().manual_seed(1)

    def rows(n):
        out = []
        for i in range(n):
            src = torch.randint(2, 4000, (int(torch.randint(20, 61, (1,), generator=g)),), generator=g).tolist()
            tgt = torch.randint(2, 4000, (int(torch.randint(20, 61, (1,), generator=g)),), generator=g).tolist()
            out.append({"id": str(i), "input_ids": src + [1], "labels": tgt + [1]})
        return out

    cfg = TrainConfig(**{"batch_size": 32, "max_steps": steps, "warmup_steps": 2, "eval_interval": steps,
                         "patience": 1, **options})
    with tempfile.TemporaryDirectory() as tmp:
        result = train(model, rows(32 * steps), rows(32), cfg, pad_id=0, checkpoint_dir=Path(tmp) / "c",
                       run_key="bench")["train"]
    return {"tokens_per_s": result["tokens_per_s"], **{k: result["memory"][k] for k in ("avg_mb", "p99_mb", "max_mb")},
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "memory_source": result["memory"]["source"], "dev_loss": round(result["best_dev_score"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(OPTIONS[args.one], args.steps, args.threads)))
        return
    print(f"{'options':40s} {'tokens/s':>9s} {'RSS avg':>8s} {'p99':>8s} {'max':>8s} {'peak':>8s} {'dev loss':>9s}")
    for name in OPTIONS:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--threads",
                              str(args.threads)], check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{name:40s} {r['tokens_per_s']:9.0f} {r['avg_mb']:8.1f} {r['p99_mb']:8.1f} {r['max_mb']:8.1f} "
              f"{r['peak_rss_mb']:8.1f} {r['dev_loss']:9.4f}")
    print("memory: process RSS per optimizer step (MB); peak: ru_maxrss (MB)")


if __name__ == "__main__":
    main()
