"""Corpus sources behind one interface (l10n packages, local files, the Hugging Face hub) -> split files.

prepare_corpus writes out_dir/{train,dev,test}.jsonl, one {"id","src","tgt"} per line, and manifest.json.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import random
from importlib.metadata import version
from pathlib import Path

from peftlab.data import l10n
from peftlab.data.clean import (
    SPLITS,
    DataError,
    clean_pairs,
    normalise,
    source_key,
    split_by_source,
    to_jsonl,
    write_atomic,
)

SOURCES = ("l10n", "local", "hf")
KINDS = ("translation",)  # "classification" ({"id","text","label"} records) plugs in beside it
FORMATS = {".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
DEFAULT_EVAL_SIZE = 200
HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # our name -> the hub's usual name

Pairs = list[tuple[str, str]]


def check_corpus_spec(task: dict) -> None:
    """Cheap validation at DAG-construction time: no harvesting, no download, no heavy import."""
    kind = task.get("kind", "translation")
    if kind not in KINDS:
        raise DataError(f"task kind {kind!r} is not supported by the data layer yet (supported: {KINDS})")
    for key in ("source_lang", "target_lang"):
        if not task.get(key):
            raise DataError(f"translation task needs {key!r}")
    for key in ("dev_size", "test_size", "max_train"):
        value = task.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise DataError(f"{key} must be a non-negative integer or null, got {value!r}")
    corpus = task.get("corpus")
    if not isinstance(corpus, dict):
        raise DataError("task needs a 'corpus' mapping with a 'source' key")
    source = corpus.get("source")
    if source not in SOURCES:
        raise DataError(f"unknown corpus source {source!r}: use one of {', '.join(SOURCES)}")
    columns = corpus.get("columns")
    if columns is not None and (not isinstance(columns, dict) or set(columns) != {"source", "target"}):
        raise DataError(
            f"corpus.columns must map exactly 'source' and 'target' to column names, got {columns!r}"
        )
    {"l10n": _l10n_plan, "local": _local_files, "hf": _hf_check}[source](task)


# --- l10n: localisation data of installed packages ----------------------------------------------------


def _l10n_plan(task: dict) -> tuple[list[str], str]:
    """(packages to harvest, the non-English language)."""
    src, tgt, asked = task["source_lang"], task["target_lang"], task["corpus"].get("packages")
    if "en" not in (src, tgt) or src == tgt:
        raise DataError(
            f"l10n pairs English with another language, got source_lang={src!r} target_lang={tgt!r}"
        )
    lang = tgt if src == "en" else src
    unknown = [p for p in asked or [] if p not in l10n.PACKAGES]
    if unknown:
        raise DataError(f"unknown l10n packages {unknown}: choose from {list(l10n.PACKAGES)}")
    # babel reads every package's catalogues, so it is needed even when not harvested itself
    for package in sorted({*(asked or []), "babel"}):
        if l10n.package_dir(package) is None:
            pip = l10n.PIP_NAMES[package]
            raise DataError(f"l10n source needs the {package!r} package: pip install {pip}")
    if asked:
        lacking = [p for p in asked if l10n.locale_code(p, lang) is None]
        if lacking:
            raise DataError(f"l10n cannot provide {lang!r}: no localisation data for it in {lacking}")
        return list(asked), lang
    packages = [p for p in l10n.PACKAGES if l10n.package_dir(p) and l10n.locale_code(p, lang)]
    if not packages:
        raise DataError(f"l10n cannot provide {lang!r}: none of {list(l10n.PACKAGES)} has data for it")
    return packages, lang


def _load_l10n(task: dict) -> tuple[dict[str, Pairs], dict[str, str], dict]:
    packages, lang = _l10n_plan(task)
    pairs = l10n.harvest(lang, packages)
    if task["source_lang"] != "en":
        pairs = [(x, en) for en, x in pairs]
    return {"train": pairs}, l10n.package_versions(packages), {**task["corpus"], "packages": packages}


# --- local files and hub datasets: rows -> pairs --------------------------------------------------------


def _pair(row: dict, task: dict, where: str) -> tuple[str, str]:
    corpus = task["corpus"]
    field = corpus.get("translation_field")
    if field is None and "columns" not in corpus and isinstance(row.get("translation"), dict):
        field = "translation"  # the WMT / OPUS layout on the hub: {"translation": {"de": ..., "en": ...}}
    cols = corpus.get("columns") or {"source": task["source_lang"], "target": task["target_lang"]}
    keys = (task["source_lang"], task["target_lang"]) if field else (cols["source"], cols["target"])
    try:
        inner = row[field] if field else row
        return str(inner[keys[0]] or ""), str(inner[keys[1]] or "")
    except (KeyError, TypeError) as e:
        hint = "set corpus.columns or translation_field"
        raise DataError(f"{where}: no column {e} (row has {sorted(row)}); {hint}") from None


def _local_files(task: dict) -> dict[str, tuple[Path, str]]:
    """split -> (file, format); `path` is one file (split here) or a {train, dev, test} mapping."""
    corpus = task["corpus"]
    paths = corpus.get("path")
    if not paths:
        raise DataError("local corpus needs 'path'")
    paths = paths if isinstance(paths, dict) else {"train": paths}
    if "train" not in paths or set(paths) - set(SPLITS):
        raise DataError(f"local corpus path mapping needs 'train' and only {SPLITS}, got {sorted(paths)}")
    files = {}
    for split, path in paths.items():
        path = Path(path)
        fmt = corpus.get("format") or FORMATS.get(path.suffix)
        if fmt not in FORMATS.values():
            raise DataError(f"local corpus {path}: unknown format {fmt!r}, use tsv, jsonl or parquet")
        if not path.is_file():
            raise DataError(f"local corpus file {path} does not exist")
        files[split] = (path, fmt)
    return files


def _read_rows(path: Path, fmt: str) -> list[dict]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8", newline="") as f:
        if fmt == "tsv":  # a header row names the columns; no quoting, tabs separate
            return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        return [json.loads(line) for line in f if line.strip()]


def _load_local(task: dict) -> tuple[dict[str, Pairs], dict[str, str], dict]:
    raw = {
        split: [_pair(row, task, f"{path}") for row in _read_rows(path, fmt)]
        for split, (path, fmt) in _local_files(task).items()
    }
    return raw, {}, dict(task["corpus"])


def _hf_check(task: dict) -> None:
    corpus = task["corpus"]
    if not corpus.get("dataset"):
        raise DataError("hf corpus needs 'dataset' (a hub name such as wmt16, or a loader such as parquet)")
    if importlib.util.find_spec("datasets") is None:
        raise DataError("hf corpus source needs the 'datasets' package: pip install datasets")
    splits = corpus.get("splits") or {}
    if splits and ("train" not in splits or set(splits) - set(SPLITS)):
        raise DataError(f"hf corpus splits mapping needs 'train' and only {SPLITS}, got {sorted(splits)}")


def _load_hf(task: dict) -> tuple[dict[str, Pairs], dict[str, str], dict]:
    import datasets  # slow to import: only when a hub corpus is actually prepared

    corpus = task["corpus"]
    kwargs = {k: corpus[k] for k in ("revision", "data_files") if corpus.get(k)}
    ds = datasets.load_dataset(corpus["dataset"], corpus.get("config"), **kwargs)
    # default: the hub's train/validation/test where they exist; what is missing is split off train
    splits = corpus.get("splits") or {ours: theirs for ours, theirs in HF_SPLITS.items() if theirs in ds}
    raw = {}
    for ours, theirs in splits.items():
        if theirs not in ds:
            raise DataError(f"hf dataset {corpus['dataset']!r} has no split {theirs!r} (has {sorted(ds)})")
        raw[ours] = [_pair(row, task, f"hf {corpus['dataset']}[{theirs}]") for row in ds[theirs]]
    return raw, {"datasets": version("datasets")}, {**corpus, "splits": splits}


LOADERS = {"l10n": _load_l10n, "local": _load_local, "hf": _load_hf}


# --- the corpus: clean, split, write --------------------------------------------------------------------


def prepare_corpus(task: dict, out_dir: Path) -> dict:
    """Load the task's raw pairs, clean, split by source sentence, write the split files and manifest.

    dev_size/test_size: pairs split off the cleaned corpus (default 200). Where the source has its own
    dev/test split, that split is used instead: whole when the size is null, else a seeded sample.
    """
    check_corpus_spec(task)
    out_dir = Path(out_dir)
    seed = int(task.get("split_seed") or 0)
    raw, packages, spec = LOADERS[task["corpus"]["source"]](task)

    train, cleaning = clean_pairs(raw["train"])
    # A source's own dev/test splits (e.g. WMT newstest) are kept as published, only whitespace-normalised
    # and without empty pairs, so scores stay comparable to published ones; optionally a seeded sample.
    given: dict[str, Pairs] = {}
    for split in ("dev", "test"):
        if split in raw:
            pairs = [(normalise(s), normalise(t)) for s, t in raw[split]]
            given[split] = [(s, t) for s, t in pairs if s and t]
            cleaning["raw"] += len(pairs)
            cleaning["dropped_empty"] += len(pairs) - len(given[split])
            size = task.get(f"{split}_size")
            if size is not None and size < len(given[split]):
                given[split] = random.Random(seed).sample(given[split], size)
    # nothing held out may appear in train
    held = {source_key(s) for pairs in given.values() for s, _ in pairs}
    n_train = len(train)
    train = [p for p in train if source_key(p[0]) not in held]
    cleaning["dropped_overlap"] = n_train - len(train)

    sizes = {s: 0 if s in given else _size(task, f"{s}_size") for s in ("dev", "test")}
    splits = {**split_by_source(train, sizes, seed), **given}
    if task.get("max_train") is not None:
        splits["train"] = splits["train"][: task["max_train"]]  # train is in seeded-shuffle order
    if not splits["train"]:
        raise DataError(f"corpus for {task['source_lang']}-{task['target_lang']} has no training pairs left")

    texts = {split: to_jsonl(splits[split]) for split in SPLITS}
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(f"{split}\0{texts[split]}\0".encode())
    manifest = {
        "kind": task.get("kind", "translation"),
        "source_lang": task["source_lang"],
        "target_lang": task["target_lang"],
        "source": task["corpus"]["source"],
        "spec": spec,
        "counts": {split: len(splits[split]) for split in SPLITS},
        "cleaning": cleaning,
        "packages": packages,
        "sha256": digest.hexdigest(),
        "split_seed": seed,
        "max_train": task.get("max_train"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # no stale manifest beside half-written splits
    for split in SPLITS:
        write_atomic(out_dir / f"{split}.jsonl", texts[split])
    write_atomic(
        out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
    return manifest


def _size(task: dict, key: str) -> int:
    value = task.get(key)
    return DEFAULT_EVAL_SIZE if value is None else value
