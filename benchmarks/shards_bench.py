"""Shard building throughput: peftlab.data.build_shards against a plain `datasets.map` tokenization.

    python benchmarks/shards_bench.py [--pairs 200000] [--repeats 3]

The corpus: the en-de pairs that peftlab.data.prepare_corpus harvests from localisation catalogues (l10n),
repeated with fresh ids to `--pairs` training pairs (plus 2,000 dev and 2,000 test), written as the
prepared-corpus files build_shards reads. One tokenizer for all: a unigram vocabulary trained by
peftlab.models.train_tokenizer on that corpus, ">>de<< " before every source, max_length 128.

Contenders, alternating (each round starting with the next one), each `--repeats` times, all from the same
jsonl files:
- build_shards: read the splits, tokenize in batches of 1000, count truncated rows exactly, write parquet
  shards (50,000 rows each) with their sha256 and the manifest;
- datasets.map: Dataset.from_json per split, map(tokenizer(..., text_target=...), batched, 1000 per batch),
  to_parquet per split (the cache files datasets writes go to a fresh folder; no cache reuse);
- datasets.map without to_parquet: the same, leaving the tokenized data in datasets' own cache files;
- tokenizer only: the same tokenizer calls on in-memory lists, no reading or writing (the floor).
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from peftlab.data import build_shards, prepare_corpus
from peftlab.data.clean import read_jsonl
from peftlab.languages import Languages
from peftlab.models import load_tokenizer, train_tokenizer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # the same for every contender
warnings.filterwarnings("ignore")
PREFIX, MAX_LENGTH, BATCH = ">>de<< ", 128, 1000


def make_corpus(work: Path, pairs: int) -> Path:
    task = {"kind": "translation", "source_lang": "en", "target_lang": "de", "corpus": {"source": "l10n"},
            "dev_size": 200, "test_size": 200}
    prepare_corpus(task, work / "harvest")
    base = read_jsonl(work / "harvest" / "train.jsonl")
    corpus = work / "corpus"
    corpus.mkdir()
    sizes = {"train": pairs, "dev": 2000, "test": 2000}
    for split, n in sizes.items():
        with open(corpus / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(n):
                r = base[i % len(base)]
                f.write(json.dumps({"id": f"{split}-{i}", "src": r["src"], "tgt": r["tgt"]}, ensure_ascii=False) + "\n")
    (corpus / "manifest.json").write_text(json.dumps({"kind": "translation", "sha256": "bench", "counts": sizes}))
    return corpus


def run_build_shards(corpus: Path, tokenizer, out: Path) -> None:
    build_shards(corpus, tokenizer, out, tokenizer_id="bench", languages=Languages(prefix=PREFIX),
                 max_length=MAX_LENGTH)


def run_datasets(corpus: Path, tokenizer, out: Path, write: bool) -> None:
    from datasets import Dataset

    def tokenize(batch: dict) -> dict:
        enc = tokenizer([PREFIX + s for s in batch["src"]], text_target=batch["tgt"], truncation=True,
                        max_length=MAX_LENGTH)
        return {"input_ids": enc["input_ids"], "labels": enc["labels"]}

    out.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        ds = Dataset.from_json(str(corpus / f"{split}.jsonl"), cache_dir=str(out / "cache"))
        ds = ds.map(tokenize, batched=True, batch_size=BATCH, remove_columns=["src", "tgt"],
                    load_from_cache_file=False)
        if write:
            ds.to_parquet(str(out / f"{split}.parquet"))


def run_tokenizer_only(records: dict[str, list[dict]], tokenizer) -> None:
    for rows in records.values():
        for b in range(0, len(rows), BATCH):
            chunk = rows[b:b + BATCH]
            tokenizer([PREFIX + r["src"] for r in chunk], text_target=[r["tgt"] for r in chunk], truncation=True,
                      max_length=MAX_LENGTH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200_000, help="training pairs (dev and test: 2,000 each)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import datasets

    datasets.disable_progress_bars()
    work = Path(tempfile.mkdtemp(prefix="peftlab-shards-bench-"))
    try:
        corpus = make_corpus(work, args.pairs)
        texts = [t for r in read_jsonl(corpus / "train.jsonl")[:20000] for t in (r["src"], r["tgt"])]
        train_tokenizer(texts, work / "tokenizer", vocab_size=4000, languages=["en", "de"])
        tokenizer = load_tokenizer(str(work / "tokenizer"))
        records = {s: read_jsonl(corpus / f"{s}.jsonl") for s in ("train", "dev", "test")}
        rows = sum(map(len, records.values()))
        contenders = {
            "build_shards (jsonl -> parquet shards + manifest)": lambda out: run_build_shards(corpus, tokenizer, out),
            "datasets.map + to_parquet": lambda out: run_datasets(corpus, tokenizer, out, write=True),
            "datasets.map (arrow cache only)": lambda out: run_datasets(corpus, tokenizer, out, write=False),
            "tokenizer calls only (in memory)": lambda out: run_tokenizer_only(records, tokenizer),
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for i in range(args.repeats):
            for j in range(len(names)):  # each round starts with the next contender: none is always last
                name = names[(i + j) % len(names)]
                run = contenders[name]
                out = work / f"out-{i}-{j}"
                start = time.perf_counter()
                run(out)
                times[name].append(time.perf_counter() - start)
                shutil.rmtree(out, ignore_errors=True)
        print(f"Shard building: {rows:,} en-de pairs (train {len(records['train']):,}), unigram vocabulary of "
              f"{len(tokenizer)}, max_length {MAX_LENGTH}, {args.repeats} runs each")
        print(f"| {'contender':<50} | {'median s':>8} | {'min s':>7} | {'pairs/s (median)':>16} |")
        print(f"|{'-' * 52}|{'-' * 10}|{'-' * 9}|{'-' * 18}|")
        med = {name: statistics.median(t) for name, t in times.items()}
        for name, t in times.items():
            print(f"| {name:<50} | {med[name]:>8.2f} | {min(t):>7.2f} | {rows / med[name]:>16,.0f} |")
        ours = med["build_shards (jsonl -> parquet shards + manifest)"]
        print()
        print(f"ratio build_shards / datasets.map + to_parquet (throughput): "
              f"{med['datasets.map + to_parquet'] / ours:.2f}x  (>1: build_shards is faster)")
        print(f"ratio build_shards / datasets.map alone (throughput): "
              f"{med['datasets.map (arrow cache only)'] / ours:.2f}x")
        fastest = {name: min(t) for name, t in times.items()}
        outside = 1 - fastest["tokenizer calls only (in memory)"] / fastest[names[0]]
        print(f"share of build_shards spent outside the tokenizer (fastest runs): {outside:.0%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
