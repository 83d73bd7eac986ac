"""Corpus sources behind one interface (l10n packages, local files, the Hugging Face hub) -> split files.

prepare_corpus writes out_dir/{train,dev,test}.jsonl and manifest.json. Translation: one {"id","src","tgt"}
per line. Classification (kind: classification): one {"id","text","label","lang"} per line (plus "text_pair"
for sentence-pair tasks such as NLI), ood.jsonl (label -1) when the task has an out-of-distribution part, and
test-<lang>.jsonl for each zero-shot evaluation language; the manifest lists the label names in id order.
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
    TEMPLATE,
    DataError,
    clean_pairs,
    normalise,
    source_key,
    split_by_source,
    to_jsonl,
    write_atomic,
)

SOURCES = ("l10n", "local", "hf")
KINDS = ("translation", "classification")
FORMATS = {".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
DEFAULT_EVAL_SIZE = 200
HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # our name -> the hub's usual name

Pairs = list[tuple[str, str]]


def check_corpus_spec(task: dict) -> None:
    """Cheap validation at DAG-construction time: no harvesting, no download, no heavy import."""
    kind = task.get("kind", "translation")
    if kind not in KINDS:
        raise DataError(f"task kind {kind!r} is not supported by the data layer yet (supported: {KINDS})")
    if kind == "classification":
        return _check_classification(task)
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
    {"l10n": _l10n_plan, "local": _check_local_content, "hf": _hf_check}[source](task)


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


def _check_local_content(task: dict) -> None:
    """Every local file decodes, has rows and the columns the task reads: the plan fails naming the file and
    line, not a job with a UnicodeDecodeError or an empty corpus. Streams the files (no pandas, no torch)."""
    corpus = task["corpus"]
    if task.get("kind") == "classification":
        cols = {**CLS_COLUMNS, **(corpus.get("columns") or {})}
        field, needed = None, [cols[k] for k in ("text", "text_pair", "label") if k in cols]
    else:
        field = corpus.get("translation_field")
        cols = corpus.get("columns") or {"source": task["source_lang"], "target": task["target_lang"]}
        needed = [cols["source"], cols["target"]]
        if field or "columns" not in corpus:  # _pair also finds the hub's {"translation": {lang: text}} layout
            field, lang_keys = field or "translation", [task["source_lang"], task["target_lang"]]
    for path, fmt in _local_files(task).values():
        if fmt == "parquet":
            _check_parquet(path, field, needed, corpus.get("translation_field"))
            continue
        rows = 0
        try:
            with open(path, encoding="utf-8", newline="") as f:
                if fmt == "tsv":
                    header = f.readline().rstrip("\r\n")
                    if not header:
                        raise DataError(f"local corpus {path} is empty (a TSV starts with a header row)")
                    _need_columns(path, 1, header.split("\t"), needed)
                    rows = sum(1 for line in f if line.strip())
                for number, line in enumerate(f if fmt == "jsonl" else [], 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"local corpus {path}, line {number}: not JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise DataError(f"local corpus {path}, line {number}: not a JSON object")
                    if field and isinstance(row.get(field), dict):
                        _need_columns(path, number, row[field], lang_keys, f"field {field!r} of ")
                    elif corpus.get("translation_field"):
                        _need_columns(path, number, row, [field])
                    else:
                        _need_columns(path, number, row, needed)
                    rows += 1
        except UnicodeDecodeError:
            raise DataError(f"local corpus {path}, line {_bad_utf8_line(path)}: not UTF-8 text") from None
        if not rows:
            raise DataError(f"local corpus {path} has {'a header and no rows' if fmt == 'tsv' else 'no rows'}")


def _bad_utf8_line(path: Path) -> int:
    """The 1-based line holding a file's first byte that is not UTF-8."""
    for number, line in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return 0


def _need_columns(path: Path, line: int, row: object, needed: list[str], where: str = "") -> None:
    missing = [c for c in needed if c not in row]
    if missing:
        raise DataError(f"local corpus {path}, line {line}: no column {missing} in {where}{sorted(row)}; "
                        "set corpus.columns (or translation_field)")


def _check_parquet(path: Path, field: str | None, needed: list[str], corpus_field: str | None) -> None:
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except Exception as e:  # pyarrow raises ArrowInvalid or OSError for a file that is not parquet
        raise DataError(f"local corpus {path}: not a parquet file ({e})") from None
    names = meta.schema.to_arrow_schema().names
    if corpus_field:
        _need_columns(path, 1, names, [corpus_field])
    elif not (field and field in names):
        _need_columns(path, 1, names, needed)
    if meta.num_rows == 0:
        raise DataError(f"local corpus {path} has no rows")


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
    if task.get("kind") == "classification":
        return _prepare_classification(task, Path(out_dir))
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


# --- classification: labelled texts -> train/dev/test, ood and zero-shot test sets -----------------------

CLS_COLUMNS = {"text": "text", "label": "label"}  # defaults; add "text_pair" for sentence pairs (NLI)
Example = dict  # {"key" (split group), "text", "pair"?, "label" (name; None = out of distribution), "lang"}


def zero_shot_languages(task: dict) -> list[str]:
    """eval_languages other than the training language, in config order: each gets a test-<lang> file."""
    return [lang for lang in dict.fromkeys(task.get("eval_languages") or []) if lang != task["language"]]


def _check_classification(task: dict) -> None:
    if not isinstance(task.get("language"), str) or not task["language"]:
        raise DataError("classification task needs 'language' (the training language, e.g. en)")
    corpus = task.get("corpus") if isinstance(task.get("corpus"), dict) else {}
    for key, value in (("eval_languages", task.get("eval_languages")), ("corpus.ood_languages",
                                                                         corpus.get("ood_languages"))):
        if value is not None and (not isinstance(value, list) or not all(isinstance(x, str) and x for x in value)):
            raise DataError(f"{key} must be a list of language codes, got {value!r}")
    for key in ("dev_size", "test_size", "max_train", "ood_size"):
        value = task.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise DataError(f"{key} must be a non-negative integer or null, got {value!r}")
    sizes = task.get("train_sizes")  # nested low-resource subsets; null in the list: the whole training split
    if sizes is not None and (not isinstance(sizes, list) or not all(
            n is None or (isinstance(n, int) and not isinstance(n, bool) and n > 0) for n in sizes)):
        raise DataError(f"train_sizes must be a list of positive integers (null: all), got {sizes!r}")
    if corpus.get("source") not in SOURCES:
        raise DataError(f"task needs a 'corpus' mapping with 'source' one of {', '.join(SOURCES)}")
    columns = corpus.get("columns")
    if columns is not None and (not isinstance(columns, dict) or set(columns) - {"text", "text_pair", "label"}):
        raise DataError(f"corpus.columns may map only 'text', 'text_pair' and 'label' to column names, got {columns!r}")
    source, zero_shot = corpus["source"], zero_shot_languages(task)
    if source == "l10n":
        _l10n_categories(task)
    elif source == "local":
        _check_local_content(task)
        if zero_shot:
            raise DataError("zero-shot eval_languages need an l10n or hf corpus (local files have one language)")
    else:
        _hf_check(task)
        if zero_shot and "{lang}" not in str(corpus.get("config")):
            raise DataError("hf eval_languages need corpus.config with a {lang} placeholder (xnli: config: '{lang}')")
    if source != "l10n" and corpus.get("ood_categories"):
        raise DataError("ood_categories are for l10n corpora; hf and local corpora name an ood_label")


def _l10n_categories(task: dict) -> tuple[list[str], list[str]]:
    """(categories, ood_categories), checked against what the installed packages provide."""
    corpus = task["corpus"]
    cats, ood = corpus.get("categories"), corpus.get("ood_categories") or []
    if not isinstance(cats, list) or len(set(cats)) < 2 or len(set(cats)) != len(cats):
        raise DataError(f"l10n classification needs corpus.categories: two or more of {list(l10n.CATEGORIES)}")
    unknown = [c for c in [*cats, *ood] if c not in l10n.CATEGORIES]
    if unknown or set(cats) & set(ood):
        both = sorted(set(cats) & set(ood))
        what = f"unknown categories {unknown}" if unknown else f"categories in both lists: {both}"
        raise DataError(f"l10n classification: {what}; choose from {list(l10n.CATEGORIES)}")
    for package in l10n.category_packages([*cats, *ood]):
        if l10n.package_dir(package) is None:
            raise DataError(f"l10n source needs the {package!r} package: pip install {l10n.PIP_NAMES[package]}")
    ood_langs = corpus.get("ood_languages") or []
    if task["language"] in ood_langs:
        raise DataError("corpus.ood_languages must not include the training language")
    for lang in [task["language"], *zero_shot_languages(task), *ood_langs]:
        if lang != "en" and l10n.locale_code("babel", lang) is None:
            raise DataError(f"l10n cannot provide {lang!r}: babel has no locale data for it")
        if "ui" in cats and lang != "en" and not any(l10n.locale_code(p, lang) for p in ("django", "sphinx")):
            raise DataError(f"l10n category 'ui' has no {lang!r} translations in Django or Sphinx")
    return cats, ood


def _load_l10n_cls(task: dict) -> dict:
    cats, ood_cats = _l10n_categories(task)

    def pool(lang: str, categories: list[str]) -> list[Example]:
        return [
            {"key": key, "text": text, "label": None if cat in ood_cats else cat, "lang": lang}
            for key, cat, text in l10n.labelled_phrases(lang, categories)
        ]

    packages = l10n.category_packages([*cats, *ood_cats])
    return {
        "splits": {"train": pool(task["language"], [*cats, *ood_cats])},
        # other languages name the same concepts (same keys): the ones in the test split are kept
        "keyed": {lang: pool(lang, cats) for lang in zero_shot_languages(task)},
        "ood_keyed": {lang: pool(lang, cats) for lang in task["corpus"].get("ood_languages") or []},
        "given_eval": {},
        "labels": list(cats),
        "curated": True,
        "packages": l10n.package_versions(packages),
        "spec": {**task["corpus"], "packages": packages},
    }


def _label_key(value: str) -> tuple:
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def _from_rows(splits: dict[str, list[dict]], evals: dict[str, list[dict]], names: list[str] | None,
               task: dict) -> dict:
    """Rows of hub or local files -> examples: label names (ClassLabel names where the data has them),
    the ood_label's rows marked out of distribution, unlabelled rows (GLUE test sets: -1) dropped."""
    corpus = task["corpus"]
    cols = {**CLS_COLUMNS, **(corpus.get("columns") or {})}
    unlabelled = 0

    def name_of(value: object) -> str:
        if names is not None and isinstance(value, int) and 0 <= value < len(names):
            return names[value]
        return str(value)

    ood = corpus.get("ood_label")
    ood_name = None if ood is None else name_of(ood)

    def convert(rows: list[dict], lang: str, where: str) -> list[Example]:
        nonlocal unlabelled
        out = []
        for row in rows:
            try:
                text, label = row[cols["text"]], row[cols["label"]]
                pair = row[cols["text_pair"]] if "text_pair" in cols else None
            except KeyError as e:
                raise DataError(f"{where}: no column {e} (row has {sorted(row)}); set corpus.columns") from None
            if label is None or label == "" or (isinstance(label, int) and label < 0):
                unlabelled += 1
                continue
            name = name_of(label)
            ex = {"key": str(text or ""), "text": str(text or ""), "label": None if name == ood_name else name}
            out.append({**ex, "lang": lang, **({"pair": str(pair or "")} if pair is not None else {})})
        return out

    lang = task["language"]
    examples = {split: convert(rows, lang, f"{corpus['dataset'] if 'dataset' in corpus else 'local'}[{split}]")
                for split, rows in splits.items()}
    given_eval = {code: convert(rows, code, f"{code} test") for code, rows in evals.items()}
    seen = {e["label"] for part in [*examples.values(), *given_eval.values()] for e in part} - {None}
    labels = [n for n in names if n != ood_name] if names else sorted(seen, key=_label_key)
    if ood is not None and ood_name not in {*(names or []), *seen, ood_name}:
        raise DataError(f"ood_label {ood!r} is not a label of the data")
    return {"splits": examples, "keyed": {}, "ood_keyed": {}, "given_eval": given_eval, "labels": labels,
            "curated": False, "unlabelled": unlabelled}


def _load_hf_cls(task: dict) -> dict:
    import datasets

    corpus = task["corpus"]
    kwargs = {k: corpus[k] for k in ("revision", "data_files") if corpus.get(k)}

    def load(lang: str) -> datasets.DatasetDict:
        config = corpus.get("config")
        return datasets.load_dataset(corpus["dataset"], config.replace("{lang}", lang) if config else None, **kwargs)

    ds = load(task["language"])
    splits = corpus.get("splits") or {ours: theirs for ours, theirs in HF_SPLITS.items() if theirs in ds}
    for theirs in [*splits.values(), *([] if "train" in splits else ["train"])]:
        if theirs not in ds:
            raise DataError(f"hf dataset {corpus['dataset']!r} has no split {theirs!r} (has {sorted(ds)})")
    label_col = {**CLS_COLUMNS, **(corpus.get("columns") or {})}["label"]
    feature = ds[splits["train"]].features.get(label_col)
    names = list(feature.names) if hasattr(feature, "names") else None  # a ClassLabel: ids -> names
    test = splits.get("test", HF_SPLITS["test"])
    evals = {lang: list(load(lang)[test]) for lang in zero_shot_languages(task)}
    loaded = _from_rows({ours: list(ds[theirs]) for ours, theirs in splits.items()}, evals, names, task)
    return {**loaded, "packages": {"datasets": version("datasets")}, "spec": {**corpus, "splits": splits}}


def _load_local_cls(task: dict) -> dict:
    rows = {split: _read_rows(path, fmt) for split, (path, fmt) in _local_files(task).items()}
    return {**_from_rows(rows, {}, None, task), "packages": {}, "spec": dict(task["corpus"])}


CLS_LOADERS = {"l10n": _load_l10n_cls, "local": _load_local_cls, "hf": _load_hf_cls}


def _text_key(e: Example) -> str:
    return source_key(e["text"] + ("\t" + e["pair"] if "pair" in e else ""))


def _clean_examples(examples: list[Example], counts: dict[str, int], curated: bool) -> list[Example]:
    """Normalise and drop empty texts; for harvested (curated) data also template noise, duplicates and texts
    with more than one label ("Arabic" is a language and a script): a text's label must be decidable."""
    kept = []
    for e in examples:
        counts["raw"] += 1
        e = {**e, "text": normalise(e["text"]), **({"pair": normalise(e["pair"])} if "pair" in e else {})}
        if not e["text"] or e.get("pair") == "":
            counts["dropped_empty"] += 1
        elif curated and TEMPLATE.search(e["text"]):
            counts["dropped_template"] += 1
        else:
            kept.append(e)
    if not curated:  # published data stays as published
        return kept
    labels: dict[str, set] = {}
    for e in kept:
        labels.setdefault(_text_key(e), set()).add(e["label"])  # None (out of distribution) counts as a label
    out, seen = [], set()
    for e in kept:
        key = _text_key(e)
        if len(labels[key]) > 1:
            counts["dropped_ambiguous"] += 1
        elif key in seen:
            counts["dropped_duplicate"] += 1
        else:
            seen.add(key)
            out.append(e)
    return out


def _sample(items: list, size: int | None, seed: int) -> list:
    return items if size is None or size >= len(items) else random.Random(seed).sample(items, size)


def _cls_jsonl(examples: list[Example], label_id: dict[str, int]) -> str:
    lines, seen = [], {}
    for e in examples:
        label = -1 if e["label"] is None else label_id[e["label"]]
        base = hashlib.sha1(f"{e['lang']}\t{e['text']}\t{e.get('pair', '')}\t{label}".encode()).hexdigest()[:16]
        seen[base] = seen.get(base, 0) + 1  # repeats (only in published data) get -2, -3, ...
        record = {"id": base if seen[base] == 1 else f"{base}-{seen[base]}", "text": e["text"]}
        record.update({"text_pair": e["pair"]} if "pair" in e else {})
        lines.append(json.dumps({**record, "label": label, "lang": e["lang"]}, ensure_ascii=False) + "\n")
    return "".join(lines)


def _prepare_classification(task: dict, out_dir: Path) -> dict:
    """Labelled texts -> {train,dev,test}.jsonl, ood.jsonl, test-<lang>.jsonl and the manifest.

    No leakage: examples are split by group (l10n: the concept, so "Germany" and "Deutschland" stay on one
    side; otherwise the text, or the premise of a pair), and no held-out text (any language) is in train.
    The OOD part is the source's out-of-distribution examples of the test split (l10n: ood_categories, and
    the test concepts named in ood_languages), sampled to ood_size (default: test_size).
    """
    seed = int(task.get("split_seed") or 0)
    src = CLS_LOADERS[task["corpus"]["source"]](task)
    counts = dict.fromkeys(["raw", "dropped_empty", "dropped_template", "dropped_duplicate", "dropped_ambiguous",
                            "dropped_overlap", "dropped_ood_unused", "dropped_untranslated"], 0)
    counts["dropped_unlabelled"] = src.get("unlabelled", 0)
    splits = {name: _clean_examples(part, counts, src["curated"]) for name, part in src["splits"].items()}

    ood_from = "test" if "test" in splits else "train"  # OOD examples come with the test split
    ood = [e for e in splits[ood_from] if e["label"] is None]
    for name, part in splits.items():
        splits[name] = [e for e in part if e["label"] is not None]
        if name != ood_from:
            counts["dropped_ood_unused"] += len(part) - len(splits[name])
    given = {name: _sample(splits[name], task.get(f"{name}_size"), seed) for name in ("dev", "test") if name in splits}
    held = {_text_key(e) for part in given.values() for e in part}
    train = [e for e in splits["train"] if _text_key(e) not in held]
    counts["dropped_overlap"] += len(splits["train"]) - len(train)
    sizes = {s: 0 if s in given else _size(task, f"{s}_size") for s in ("dev", "test")}
    parts = split_by_source([(e["key"], e) for e in train], sizes, seed)  # grouped by e["key"]
    out = {name: [e for _, e in part] for name, part in parts.items()}
    out.update(given)
    if task.get("max_train") is not None:
        out["train"] = out["train"][: task["max_train"]]  # train is in seeded-shuffle order
    if not out["train"]:
        raise DataError(f"classification corpus for {task['language']!r} has no training examples left")
    train_texts = {_text_key(e) for e in out["train"]}
    test_order = {e["key"]: i for i, e in enumerate(out["test"])}
    test_text = {e["key"]: _text_key(e) for e in out["test"]}

    def unseen(part: list[Example]) -> list[Example]:  # nothing in a test set may be a training text
        kept = [e for e in part if _text_key(e) not in train_texts]
        counts["dropped_overlap"] += len(part) - len(kept)
        return kept

    def test_concepts(pool: list[Example]) -> list[Example]:  # l10n: the test split's concepts, in its order
        kept = [e for e in _clean_examples(pool, dict.fromkeys(counts, 0), True) if e["key"] in test_text]
        # a name spelt as in the training language ("Hiligaynon") tests nothing cross-lingual
        translated = [e for e in kept if _text_key(e) != test_text[e["key"]]]
        counts["dropped_untranslated"] += len(kept) - len(translated)
        return sorted(translated, key=lambda e: test_order[e["key"]])

    for pool in src["ood_keyed"].values():
        ood += [{**e, "label": None} for e in test_concepts(pool)]
    ood = _sample(unseen(ood), task.get("ood_size", task.get("test_size", DEFAULT_EVAL_SIZE)), seed)
    declares_ood = bool(task["corpus"].get("ood_categories") or task["corpus"].get("ood_languages")) or (
        task["corpus"].get("ood_label") is not None)
    if declares_ood and not ood:
        raise DataError("the task declares an out-of-distribution part, but no OOD examples are left")
    zero = {lang: unseen(test_concepts(pool)) for lang, pool in src["keyed"].items()}
    for lang, part in src["given_eval"].items():  # published per-language test sets (XNLI): parallel samples
        kept = [e for e in _clean_examples(part, dict.fromkeys(counts, 0), False) if e["label"] is not None]
        zero[lang] = _sample(kept, task.get("test_size"), seed)

    files = {name: out[name] for name in SPLITS} | ({"ood": ood} if ood else {})
    files |= {f"test-{lang}": part for lang, part in zero.items()}
    labels = src["labels"]
    label_id = {name: i for i, name in enumerate(labels)}
    texts = {name: _cls_jsonl(part, label_id) for name, part in files.items()}
    digest = hashlib.sha256(f"labels\0{json.dumps(labels)}\0".encode())
    for name in sorted(texts):
        digest.update(f"{name}\0{texts[name]}\0".encode())
    manifest = {
        "kind": "classification",
        "language": task["language"],
        "eval_languages": [task["language"], *zero],
        "labels": labels,
        "source": task["corpus"]["source"],
        "spec": src["spec"],
        "counts": {name: len(part) for name, part in files.items()},
        "label_counts": {name: {n: sum(e["label"] == n for e in part) for n in labels}
                         for name, part in files.items() if name != "ood"},
        "cleaning": counts,
        "packages": src["packages"],
        "sha256": digest.hexdigest(),
        "split_seed": seed,
        "max_train": task.get("max_train"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # no stale manifest beside half-written splits
    for stale in out_dir.glob("*.jsonl"):  # e.g. a test-<lang> file of an earlier eval_languages
        if stale.stem not in texts:
            stale.unlink()
    for name, text in texts.items():
        write_atomic(out_dir / f"{name}.jsonl", text)
    write_atomic(
        out_dir / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
    return manifest
