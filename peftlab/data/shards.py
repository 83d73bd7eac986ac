"""Tokenized parquet shards of a prepared corpus, keyed by (corpus, split, tokenizer): every run shares them.

out_dir/{split}-{i:05d}.parquet + manifest.json. Translation: id string, input_ids list<int32>, labels
list<int32>; for a decoder-only model (`causal` in the manifest) input_ids are prompt + target + eos and labels
the same ids with -100 on the prompt (Hugging Face's causal-LM convention: the loss shifts them by one), so the
loss is on the target tokens only. Classification: id, input_ids, label int32 (-1: out of distribution), plus
token_type_ids for sentence pairs, for every split file of the corpus (train, dev, test, ood, test-<lang>).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftlab.data.clean import SPLITS, DataError, read_jsonl, write_atomic
from peftlab.languages import NO_LANGUAGES, Languages, configure_tokenizer, fill_prompt

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


def encode_prompts(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """A decoder-only model's prompt ids: its BOS where the tokenizer has one (Llama, Gemma, Mistral; Qwen has
    none), then the text without the tokenizer's own special tokens (a built tokenizer appends </s> to every
    text, which would end the sequence before the translation). Shards and generation both encode with this."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return [bos + ids for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


def _tokenize_causal(tokenizer: Any, prompts: list[str], tgt: list[str], max_length: int) -> tuple[list, list, int]:
    """(input_ids, labels, number of rows truncated): prompt + target + eos, labels -100 on the prompt. A row longer
    than max_length loses its end (the end of the target first, and its eos)."""
    if tokenizer.eos_token_id is None:
        raise DataError(f"the tokenizer ({type(tokenizer).__name__}) has no eos token: a decoder-only model would not "
                        "learn where a translation ends")
    ids, labels, truncated = [], [], 0
    for b in range(0, len(prompts), BATCH):
        targets = tokenizer(tgt[b : b + BATCH], add_special_tokens=False)["input_ids"]
        for prompt, target in zip(encode_prompts(tokenizer, prompts[b : b + BATCH]), targets, strict=True):
            row = [*prompt, *target, tokenizer.eos_token_id]
            truncated += len(row) > max_length
            ids.append(row[:max_length])
            labels.append(([IGNORE_INDEX] * len(prompt) + row[len(prompt):])[:max_length])
    return ids, labels, truncated


def _tokenize_texts(tokenizer: Any, records: list[dict], max_length: int) -> tuple[dict[str, list], int]:
    """Classification columns {input_ids, [token_type_ids]} and the number of rows truncated."""
    columns: dict[str, list] = {"input_ids": []}
    pairs = "text_pair" in records[0] if records else False
    if pairs and "token_type_ids" in tokenizer.model_input_names:  # BERT marks the second segment
        columns["token_type_ids"] = []
    truncated = 0
    for b in range(0, len(records), BATCH):
        chunk = records[b : b + BATCH]
        args = ([r["text"] for r in chunk], [r["text_pair"] for r in chunk] if pairs else None)
        enc = tokenizer(*args, truncation=True, max_length=max_length)
        for name in columns:
            columns[name] += enc[name]
        at_limit = [i for i, x in enumerate(enc["input_ids"]) if len(x) == max_length]
        if at_limit:  # only rows at the limit can have been cut: count exactly
            full = tokenizer(*([a[i] for i in at_limit] if a else None for a in args))
            truncated += sum(len(x) > max_length for x in full["input_ids"])
    return columns, truncated


def build_shards(
    corpus_dir: Path,
    tokenizer: Any,
    out_dir: Path,
    *,
    tokenizer_id: str,
    languages: Languages = NO_LANGUAGES,
    max_length: int = 128,
    shard_rows: int = 50_000,
    decoder_only: bool = False,
) -> dict:
    """Tokenize train/dev/test of a prepared corpus into parquet shards; returns the shard manifest.

    tokenizer is a transformers PreTrainedTokenizerBase. Translation: `languages` (languages.languages_of) puts
    its prefix (e.g. ">>de<< ") before every source text and sets the tokenizer's source and target language
    codes, so that labels start with the target code where the model family expects it (mBART-50, NLLB,
    M2M100). `decoder_only`: a causal LM, whose rows are its prompt (languages.prompt) followed by the target
    (_tokenize_causal). A classification corpus is tokenized as is, every split file it has.
    Files appear atomically and the manifest last, so a manifest means a complete build.
    """
    import pyarrow as pa

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    corpus_manifest = json.loads(_read(corpus_dir / "manifest.json"))
    if corpus_manifest.get("kind") == "classification":
        return _build_classification(corpus_dir, corpus_manifest, tokenizer, out_dir, tokenizer_id=tokenizer_id,
                                     max_length=max_length, shard_rows=shard_rows)
    configure_tokenizer(tokenizer, languages)
    schema = pa.schema(
        [("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    manifest = {
        "tokenizer_id": tokenizer_id,
        "corpus_sha256": corpus_manifest["sha256"],
        "max_length": max_length,
        "languages": languages.as_dict(),
        "causal": decoder_only,
        "splits": {},
    }
    if decoder_only and not languages.prompt:
        raise DataError("a decoder-only model's shards need its prompt (languages_of(..., decoder_only=True))")
    for split in SPLITS:
        records = read_jsonl(corpus_dir / f"{split}.jsonl")
        files, stats = [], {"rows": len(records), "src_tokens": 0, "tgt_tokens": 0, "truncated": 0}
        for start in range(0, max(len(records), 1), shard_rows):  # an empty split still gets one (empty) file
            chunk = records[start : start + shard_rows]
            if decoder_only:
                prompts = [fill_prompt(languages, r["src"]) for r in chunk]
                ids, labels, truncated = _tokenize_causal(tokenizer, prompts, [r["tgt"] for r in chunk], max_length)
                n_target = sum(sum(t != IGNORE_INDEX for t in row) for row in labels)
                stats["src_tokens"] += sum(map(len, ids)) - n_target
                stats["tgt_tokens"] += n_target
            else:
                src = [languages.prefix + r["src"] for r in chunk]
                ids, labels, truncated = _tokenize(tokenizer, src, [r["tgt"] for r in chunk], max_length)
                stats["src_tokens"] += sum(map(len, ids))
                stats["tgt_tokens"] += sum(map(len, labels))
            stats["truncated"] += truncated
            table = pa.table(
                {"id": [r["id"] for r in chunk], "input_ids": ids, "labels": labels}, schema=schema
            )
            files.append(_write_shard(table, out_dir / f"{split}-{len(files):05d}.parquet", len(chunk)))
        manifest["splits"][split] = {"files": files, **stats}
    return _finish(manifest, out_dir)


def _write_shard(table: Any, path: Path, rows: int) -> dict:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    write_atomic(path, data)
    return {"name": path.name, "rows": rows, "sha256": hashlib.sha256(data).hexdigest()}


def _finish(manifest: dict, out_dir: Path) -> dict:
    listed = {f["name"] for s in manifest["splits"].values() for f in s["files"]}
    for stale in out_dir.glob("*.parquet"):  # left by an earlier build with another shard_rows or splits
        if stale.name not in listed:
            stale.unlink()
    write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _build_classification(corpus_dir: Path, corpus_manifest: dict, tokenizer: Any, out_dir: Path, *,
                          tokenizer_id: str, max_length: int, shard_rows: int) -> dict:
    """Every split file the corpus manifest lists (train, dev, test, ood, test-<lang>) -> label shards."""
    import pyarrow as pa

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    manifest = {
        "kind": "classification",
        "tokenizer_id": tokenizer_id,
        "corpus_sha256": corpus_manifest["sha256"],
        "max_length": max_length,
        "labels": corpus_manifest["labels"],
        "language": corpus_manifest["language"],
        "eval_languages": corpus_manifest["eval_languages"],
        "splits": {},
    }
    for split in corpus_manifest["counts"]:
        records = read_jsonl(corpus_dir / f"{split}.jsonl")
        files, stats = [], {"rows": len(records), "tokens": 0, "truncated": 0}
        for start in range(0, max(len(records), 1), shard_rows):
            chunk = records[start : start + shard_rows]
            columns, truncated = _tokenize_texts(tokenizer, chunk, max_length)
            stats["tokens"] += sum(map(len, columns["input_ids"]))
            stats["truncated"] += truncated
            fields = [("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("label", pa.int32())]
            fields += [("token_type_ids", pa.list_(pa.int8()))] if "token_type_ids" in columns else []
            data = {"id": [r["id"] for r in chunk], **columns, "label": [r["label"] for r in chunk]}
            table = pa.table(data, schema=pa.schema(fields))
            files.append(_write_shard(table, out_dir / f"{split}-{len(files):05d}.parquet", len(chunk)))
        manifest["splits"][split] = {"files": files, **stats}
    return _finish(manifest, out_dir)


def load_split(shard_dir: Path, split: str) -> list[dict]:
    """Rows {"id", "input_ids", "labels" or "label"} of one split, each shard checked against its manifest sha256."""
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
    if "token_type_ids" in rows[0]:  # sentence pairs: the second segment's type, padded with 0
        types = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            types[i, : len(r["token_type_ids"])] = torch.tensor(r["token_type_ids"], dtype=torch.long)
        batch["token_type_ids"] = types
    if "labels" in rows[0]:  # seq2seq
        labels = torch.full((len(rows), max(len(r["labels"]) for r in rows)), IGNORE_INDEX, dtype=torch.long)
        for i, r in enumerate(rows):
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"], dtype=torch.long)
        batch["labels"] = labels
    elif "label" in rows[0]:  # classification: one class id per row (-1 for out-of-distribution rows)
        batch["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
    return batch


def _read(path: Path, binary: bool = False) -> Any:
    if not path.is_file():
        raise DataError(f"missing file {path}")
    return path.read_bytes() if binary else path.read_text(encoding="utf-8")


def subset_ids(train_ids: list[str], size: int, seed: int, *, labels: list[int] | None = None) -> list[str]:
    """The first `size` ids of a fixed seeded order: for sizes a < b the a-subset is inside the b-subset.

    The order ranks ids by a hash of (seed, id), so it depends on neither the input order nor the other ids
    (a corpus that grows keeps its old subsets' relative order). With `labels` (one per id) the order is
    stratified: each id is placed at its quantile within its class, so every prefix has roughly the class
    proportions of the whole, and prefixes still nest.
    """
    if size < 0 or size > len(train_ids):
        raise DataError(f"train size {size} is out of range: the training split has {len(train_ids)} examples")

    def rank(i: str) -> str:
        return hashlib.sha256(f"{seed}\0{i}".encode()).hexdigest()

    if labels is None:
        return sorted(train_ids, key=rank)[:size]
    by_class: dict[int, list[str]] = {}
    for i, label in zip(train_ids, labels, strict=True):
        by_class.setdefault(label, []).append(i)
    key = {}
    for ids in by_class.values():
        for position, i in enumerate(sorted(ids, key=rank)):
            key[i] = ((position + 0.5) / len(ids), rank(i))
    return sorted(train_ids, key=key.__getitem__)[:size]


def subset_rows(rows: list[dict], size: int | None, seed: int, *, stratify: bool = False) -> list[dict]:
    """A run's low-resource training rows (all rows when size is None), in the nested order of subset_ids."""
    if size is None:
        return rows
    by_id = {r["id"]: r for r in rows}
    labels = [r["label"] for r in rows] if stratify else None
    return [by_id[i] for i in subset_ids([r["id"] for r in rows], size, seed, labels=labels)]
