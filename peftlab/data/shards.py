"""Tokenized parquet shards of a prepared corpus, keyed by (corpus, split, tokenizer): every run shares them.

out_dir/{split}-{i:05d}.parquet (id string, input_ids list<int32>, labels list<int32>) + manifest.json.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftlab.data.clean import SPLITS, DataError, read_jsonl, write_atomic

if TYPE_CHECKING:
    import torch

BATCH = 1000  # sentences per tokenizer call: fast tokenizers parallelise within a batch
IGNORE_INDEX = -100  # label padding that the loss skips


def _tokenize(tokenizer: Any, src: list[str], tgt: list[str], max_length: int) -> tuple[list, list, int]:
    """(input_ids, labels, number of rows truncated), in batches of BATCH."""
    ids, labels, truncated = [], [], 0
    for b in range(0, len(src), BATCH):
        s, t = src[b : b + BATCH], tgt[b : b + BATCH]
        enc = tokenizer(s, text_target=t, truncation=True, max_length=max_length)
        ids += enc["input_ids"]
        labels += enc["labels"]
        # Only rows at the limit can have been cut: re-tokenize just those, untruncated, to count exactly.
        lengths = [max(len(x), len(y)) for x, y in zip(enc["input_ids"], enc["labels"], strict=True)]
        at_limit = [i for i, n in enumerate(lengths) if n == max_length]
        if at_limit:
            full = tokenizer([s[i] for i in at_limit], text_target=[t[i] for i in at_limit])
            full_lengths = zip(map(len, full["input_ids"]), map(len, full["labels"]), strict=True)
            truncated += sum(max(n) > max_length for n in full_lengths)
    return ids, labels, truncated


def build_shards(
    corpus_dir: Path,
    tokenizer: Any,
    out_dir: Path,
    *,
    tokenizer_id: str,
    source_prefix: str = "",
    max_length: int = 128,
    shard_rows: int = 50_000,
) -> dict:
    """Tokenize train/dev/test of a prepared corpus into parquet shards; returns the shard manifest.

    tokenizer is a transformers PreTrainedTokenizerBase; source_prefix (e.g. ">>de<< ") goes before every
    source text. Files appear atomically and the manifest last, so a manifest means a complete build.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    corpus_manifest = json.loads(_read(corpus_dir / "manifest.json"))
    schema = pa.schema(
        [("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    manifest = {
        "tokenizer_id": tokenizer_id,
        "corpus_sha256": corpus_manifest["sha256"],
        "max_length": max_length,
        "source_prefix": source_prefix,
        "splits": {},
    }
    for split in SPLITS:
        records = read_jsonl(corpus_dir / f"{split}.jsonl")
        files, stats = [], {"rows": len(records), "src_tokens": 0, "tgt_tokens": 0, "truncated": 0}
        for start in range(0, max(len(records), 1), shard_rows):  # an empty split still gets one (empty) file
            chunk = records[start : start + shard_rows]
            src = [source_prefix + r["src"] for r in chunk]
            ids, labels, truncated = _tokenize(tokenizer, src, [r["tgt"] for r in chunk], max_length)
            stats["src_tokens"] += sum(map(len, ids))
            stats["tgt_tokens"] += sum(map(len, labels))
            stats["truncated"] += truncated
            table = pa.table(
                {"id": [r["id"] for r in chunk], "input_ids": ids, "labels": labels}, schema=schema
            )
            buf = io.BytesIO()
            pq.write_table(table, buf)
            data, name = buf.getvalue(), f"{split}-{len(files):05d}.parquet"
            write_atomic(out_dir / name, data)
            files.append({"name": name, "rows": len(chunk), "sha256": hashlib.sha256(data).hexdigest()})
        manifest["splits"][split] = {"files": files, **stats}
    listed = {f["name"] for s in manifest["splits"].values() for f in s["files"]}
    for stale in out_dir.glob("*.parquet"):  # left by an earlier build with another shard_rows
        if stale.name not in listed:
            stale.unlink()
    write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def load_split(shard_dir: Path, split: str) -> list[dict]:
    """Rows {"id", "input_ids", "labels"} of one split, each shard checked against its manifest sha256."""
    import pyarrow.parquet as pq

    shard_dir = Path(shard_dir)
    manifest = json.loads(_read(shard_dir / "manifest.json"))
    if split not in manifest["splits"]:
        raise DataError(
            f"{shard_dir}/manifest.json has no split {split!r} (has {sorted(manifest['splits'])})"
        )
    rows = []
    for entry in manifest["splits"][split]["files"]:
        path = shard_dir / entry["name"]
        data = _read(path, binary=True)
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DataError(f"shard {path} is corrupt (sha256 differs from the manifest): rebuild the shards")
        rows += pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: input_ids with pad_id, attention_mask 1/0, labels with -100 (or class ids as is)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"], dtype=torch.long)
        attention_mask[i, : len(r["input_ids"])] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "labels" in rows[0]:  # seq2seq
        labels = torch.full((len(rows), max(len(r["labels"]) for r in rows)), IGNORE_INDEX, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"], dtype=torch.long)
        batch["labels"] = labels
    elif "label" in rows[0]:  # classification shards (later): one class id per row
        batch["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
    return batch


def _read(path: Path, binary: bool = False) -> Any:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    return path.read_bytes() if binary else path.read_text(encoding="utf-8")
