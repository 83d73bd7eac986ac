"""Training-loop throughput on CPU: peftlab.train.train against Hugging Face's Seq2SeqTrainer.

    python benchmarks/train_throughput_bench.py [--steps 300] [--batch-size 32] [--repeats 3] [--threads 1]

Same model (a tiny Marian from peftlab.models.build_marian, the demo's size), same data (en-de pairs harvested
from localisation catalogues by peftlab.data.prepare_corpus, tokenized by a unigram vocabulary from
peftlab.models.train_tokenizer into peftlab's shards), same batch size, steps, optimiser (AdamW, betas 0.9/0.98),
warm-up + cosine schedule, label smoothing 0.1 and gradient clipping, full fine-tuning, one CPU thread.
`--random-ids` uses random token ids of the same lengths instead of real text.

Throughput = real tokens processed (source tokens + target tokens, padding excluded, counted the same way for
every contender) / wall seconds of the whole call (train() or trainer.train()): the loop, data collation, the
final dev evaluation and checkpoint that peftlab always does, the Trainer's setup. Contenders alternate, each
`--repeats` times, each from the same initial weights.
- peftlab: batches of similar length (shuffled, sorted within windows of 50 batches);
- Seq2SeqTrainer: its default random batches (padding to the longest in each);
- Seq2SeqTrainer, train_sampling_strategy="group_by_length": its length-grouped sampler, the closest to
  peftlab's batching;
- the same with optim="adamw_torch": torch's default AdamW, the one peftlab uses (the Trainer's default on
  torch >= 2.8 is the fused AdamW kernel), so that the remaining difference is the loop itself.
Under load from other processes, compare the best runs as well as the medians.
"""

import argparse
import contextlib
import copy
import functools
import io
import json
import os
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from peftlab.data import build_shards, load_split, prepare_corpus
from peftlab.languages import Languages
from peftlab.models import build_marian, load_tokenizer, train_tokenizer
from peftlab.train import train
from peftlab.train_config import TrainConfig

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")


def real_tokens(rows: list[dict]) -> int:
    return sum(len(r["input_ids"]) + len(r["labels"]) for r in rows)


def make_data(work: Path, vocab_size: int, random_ids: bool) -> tuple[list[dict], list[dict], object]:
    task = {"kind": "translation", "source_lang": "en", "target_lang": "de", "corpus": {"source": "l10n"},
            "dev_size": 64, "test_size": 64}
    prepare_corpus(task, work / "corpus")
    texts = []
    for line in (work / "corpus" / "train.jsonl").read_text().splitlines():
        r = json.loads(line)
        texts += [r["src"], r["tgt"]]
    train_tokenizer(texts, work / "tokenizer", vocab_size=vocab_size, languages=["en", "de"])
    tokenizer = load_tokenizer(str(work / "tokenizer"))
    build_shards(work / "corpus", tokenizer, work / "shards", tokenizer_id="bench",
                 languages=Languages(prefix=">>de<< "), max_length=64)
    train_rows, dev_rows = load_split(work / "shards", "train"), load_split(work / "shards", "dev")
    if random_ids:
        rng = random.Random(0)
        low, high = 3 + 2, len(tokenizer) - 1  # above the special and language-tag ids

        def scramble(rows: list[dict]) -> list[dict]:
            return [{**r, "input_ids": [rng.randint(low, high) for _ in r["input_ids"]],
                     "labels": [rng.randint(low, high) for _ in r["labels"]]} for r in rows]

        train_rows, dev_rows = scramble(train_rows), scramble(dev_rows)
    return train_rows, dev_rows, tokenizer


def run_peftlab(model, train_rows, dev_rows, cfg: TrainConfig, pad_id: int, work: Path,
                fused: bool = False) -> tuple[float, int]:
    ckpt = Path(tempfile.mkdtemp(dir=work, prefix="ckpt-"))
    adamw = torch.optim.AdamW
    if fused:  # what-if: the same loop with torch's fused AdamW kernel (the Trainer's default)
        torch.optim.AdamW = functools.partial(adamw, fused=True)
    try:
        start = time.perf_counter()
        result = train(model, train_rows, dev_rows, cfg, pad_id=pad_id, checkpoint_dir=ckpt, run_key="bench")
        wall = time.perf_counter() - start
    finally:
        torch.optim.AdamW = adamw
    tokens = round(result["train"]["tokens_per_s"] * result["train"]["wall_time_s"])
    return wall, tokens


def run_hf(model, train_rows, cfg: TrainConfig, tokenizer, work: Path, group_by_length: bool,
           optim: str | None = None) -> tuple[float, int]:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in train_rows])
    base_collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    counted = [0]

    def collator(features):
        batch = base_collator(features)
        counted[0] += int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
        return batch

    args = Seq2SeqTrainingArguments(
        output_dir=str(work / "hf"), per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, lr_scheduler_type="cosine", weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=cfg.beta2, max_grad_norm=cfg.grad_clip, label_smoothing_factor=cfg.label_smoothing,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=True, dataloader_num_workers=0, seed=cfg.seed,
        train_sampling_strategy="group_by_length" if group_by_length else "random", length_column_name="length",
        **({"optim": optim} if optim else {}),
    )
    if group_by_length:
        dataset = dataset.add_column("length", [len(r["input_ids"]) + len(r["labels"]) for r in train_rows])
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its own summary
        trainer.train()
    return time.perf_counter() - start, counted[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every contender")
    parser.add_argument("--random-ids", action="store_true", help="random token ids of the real lengths")
    parser.add_argument("--fused-what-if", action="store_true",
                        help="add peftlab's loop with torch's fused AdamW (not what peftlab does today)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="peftlab-train-bench-"))
    train_rows, dev_rows, tokenizer = make_data(work, vocab_size=4000, random_ids=args.random_ids)
    initial = build_marian(tokenizer, d_model=128, layers=2, heads=4, ffn_dim=512, seed=0)
    n_params = sum(p.numel() for p in initial.parameters())
    cfg = TrainConfig(lr=1e-3, batch_size=args.batch_size, max_steps=args.steps, warmup_steps=min(50, args.steps // 4),
                      eval_interval=10 * args.steps, patience=3, label_smoothing=0.1, beta2=0.98, grad_clip=1.0)
    contenders = {
        "peftlab.train.train": lambda m: run_peftlab(m, train_rows, dev_rows, cfg, tokenizer.pad_token_id, work),
        "Seq2SeqTrainer": lambda m: run_hf(m, train_rows, cfg, tokenizer, work, group_by_length=False),
        "Seq2SeqTrainer (group_by_length)": lambda m: run_hf(m, train_rows, cfg, tokenizer, work,
                                                              group_by_length=True),
        "Seq2SeqTrainer (group_by_length, adamw_torch)": lambda m: run_hf(m, train_rows, cfg, tokenizer, work,
                                                                           group_by_length=True, optim="adamw_torch"),
    }
    if args.fused_what_if:
        contenders["what-if: peftlab loop + fused AdamW"] = lambda m: run_peftlab(
            m, train_rows, dev_rows, cfg, tokenizer.pad_token_id, work, fused=True)
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(args.repeats):
        for j in range(len(names)):  # each round starts with the next contender: none is always first or last
            name = names[(i + j) % len(names)]
            results[name].append(contenders[name](copy.deepcopy(initial)))
    data = "random ids" if args.random_ids else "l10n en-de"
    print(f"Training throughput on CPU ({args.threads} thread(s)): tiny Marian ({n_params / 1e6:.2f}M parameters), "
          f"{data}: {len(train_rows)} training pairs, batch {args.batch_size}, {args.steps} steps, "
          f"{args.repeats} runs each")
    print(f"| {'contender':<46} | {'tokens/s (median)':>17} | {'tokens/s (best)':>15} | {'wall s (median)':>15} | "
          f"{'tokens per run':>14} |")
    print(f"|{'-' * 48}|{'-' * 19}|{'-' * 17}|{'-' * 17}|{'-' * 16}|")
    rates, best = {}, {}
    for name, runs in results.items():
        per_s = [tokens / wall for wall, tokens in runs]
        rates[name], best[name] = statistics.median(per_s), max(per_s)
        print(f"| {name:<46} | {rates[name]:>17,.0f} | {max(per_s):>15,.0f} | "
              f"{statistics.median(w for w, _ in runs):>15.2f} | {statistics.median(t for _, t in runs):>14,} |")
    ours = "peftlab.train.train"
    print()
    for name in (n for n in names if n.startswith("Seq2SeqTrainer")):
        print(f"ratio peftlab / {name}: {rates[ours] / rates[name]:.2f}x median, {best[ours] / best[name]:.2f}x best"
              "  (target: >= 1.0)")
    what_if = "what-if: peftlab loop + fused AdamW"
    if what_if in rates:
        print(f"what-if, fused AdamW in peftlab's loop: {rates[what_if] / rates[ours]:.2f}x median, "
              f"{best[what_if] / best[ours]:.2f}x best of peftlab today")


if __name__ == "__main__":
    main()
