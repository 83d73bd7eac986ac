"""Data layer: a corpus source -> cleaned, leakage-free train/dev/test -> tokenized parquet shards.

check_corpus_spec(task)              cheap validation when the DAG is built
prepare_corpus(task, out_dir)        {train,dev,test}.jsonl + manifest.json
build_shards(corpus_dir, tok, out)   {split}-{i:05d}.parquet + manifest.json
load_split(shard_dir, split)         rows, each shard verified against its sha256
collate(rows, pad_id)                padded tensors for a batch
"""

from peftlab.data.clean import DataError
from peftlab.data.l10n import available_l10n_languages
from peftlab.data.shards import build_shards, collate, load_split
from peftlab.data.sources import check_corpus_spec, prepare_corpus

__all__ = [
    "DataError",
    "available_l10n_languages",
    "build_shards",
    "check_corpus_spec",
    "collate",
    "load_split",
    "prepare_corpus",
]
