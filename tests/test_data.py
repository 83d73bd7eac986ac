"""Corpus sources, cleaning and the leakage-free split, on real localisation data from installed packages."""

import importlib.util
import json

import pytest

from peftlab.data import DataError, available_l10n_languages, check_corpus_spec, l10n, prepare_corpus
from peftlab.data.clean import clean_pairs, source_key, split_by_source


def task_for(corpus: dict, **overrides) -> dict:
    task = {
        "kind": "translation",
        "source_lang": "en",
        "target_lang": "de",
        "corpus": corpus,
        "dev_size": 5,
        "test_size": 5,
        "max_train": None,
        "split_seed": 0,
    }
    return {**task, **overrides}


def share(pairs, lo: str, hi: str) -> float:
    """Fraction of pairs whose target has a character in [lo, hi]."""
    return sum(any(lo <= c <= hi for c in t) for _, t in pairs) / len(pairs)


# --- harvesting -------------------------------------------------------------------------------------------


def test_languages_available():
    assert {"de", "fr", "es", "ru", "ja", "fi", "hi"} <= available_l10n_languages()


@pytest.mark.parametrize(
    "lang, lo, hi, n_min, n_max, known",
    [
        ("de", "a", "z", 2000, 6000, ("Germany", "Deutschland")),
        ("ru", "\u0400", "\u04ff", 2000, 6000, ("Germany", "Германия")),  # Cyrillic block
    ],
)
def test_harvest_real_pairs(lang, lo, hi, n_min, n_max, known):
    raw = l10n.harvest(lang, list(l10n.PACKAGES))
    pairs, counts = clean_pairs(raw)
    assert n_min <= len(pairs) <= n_max, counts
    assert known in pairs
    assert share(pairs, lo, hi) > 0.95  # the target side is in the language's script
    # every package contributes (a silently empty catalogue would shrink the corpus unnoticed)
    for package in l10n.PACKAGES:
        assert len(clean_pairs(l10n.harvest(lang, [package]))[0]) > 30, package


def test_locale_code_falls_back_to_a_regional_variant():
    assert l10n.locale_code("django", "de") == "de"
    assert l10n.locale_code("django", "zh") == "zh_Hans"
    assert l10n.locale_code("sphinx", "xx") is None


# --- cleaning and split -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pair, reason",
    [
        (("  ", "Leer"), "dropped_empty"),
        (("Delete %(name)s", "%(name)s löschen"), "dropped_template"),
        (("%s selected", "%s ausgewählt"), "dropped_template"),
        (("Page {0}", "Seite {0}"), "dropped_template"),
        (("Hello ${user}", "Hallo ${user}"), "dropped_template"),
        (("<b>Note</b>", "<b>Hinweis</b>"), "dropped_template"),
        (("Tom &amp; Jerry", "Tom &amp; Jerry und"), "dropped_template"),
        (("Radio", "radio"), "dropped_identical"),
        (("Index", "Stichwortverzeichnis mit allen Einträgen"), "dropped_length_ratio"),
    ],
)
def test_cleaning_drops_each_noise_kind(pair, reason):
    kept, counts = clean_pairs([pair, ("Save", "Speichern")])
    assert kept == [("Save", "Speichern")]
    assert counts[reason] == 1 and counts["raw"] == 2


def test_cleaning_normalises_and_dedups_but_keeps_dense_scripts():
    pairs = [
        ("Log  out\n", "Abmelden"),
        ("Log out", " Abmelden "),
        ("50% done", "50% fertig"),
        ("Delete", "削除"),
        ("Germany", "ドイツ"),
    ]
    kept, counts = clean_pairs(pairs)
    assert kept == [
        ("Log out", "Abmelden"),
        ("50% done", "50% fertig"),
        ("Delete", "削除"),
        ("Germany", "ドイツ"),
    ]
    assert counts["dropped_duplicate"] == 1


def test_split_by_source_no_leakage_exact_sizes_deterministic():
    # 300 sources, every third with two translations: a group must never straddle splits
    pairs = [(f"Source {i}", f"Ziel {i}") for i in range(300)] + [
        (f"source {i}", f"Ziel {i}b") for i in range(0, 300, 3)
    ]
    splits = split_by_source(pairs, {"dev": 20, "test": 30}, seed=1)
    assert (len(splits["dev"]), len(splits["test"]), sum(map(len, splits.values()))) == (20, 30, len(pairs))
    keys = {name: {source_key(s) for s, _ in part} for name, part in splits.items()}
    assert not (keys["train"] & keys["dev"] or keys["train"] & keys["test"] or keys["dev"] & keys["test"])
    assert split_by_source(pairs, {"dev": 20, "test": 30}, seed=1) == splits
    shuffled = split_by_source(pairs[::-1], {"dev": 20, "test": 30}, seed=1)  # input order does not matter
    assert all(set(shuffled[name]) == set(splits[name]) for name in splits)
    assert split_by_source(pairs, {"dev": 20, "test": 30}, seed=2)["test"] != splits["test"]
    with pytest.raises(DataError, match="test_size"):
        split_by_source(pairs[:10], {"dev": 0, "test": 30}, seed=0)


# --- prepare_corpus ---------------------------------------------------------------------------------------


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prepare_l10n_corpus_manifest_and_hash(tmp_path):
    task = task_for({"source": "l10n", "packages": ["babel", "sphinx"]}, dev_size=50, test_size=50)
    m = prepare_corpus(task, tmp_path / "a")
    assert m["packages"] == {
        "babel": l10n.package_versions(["babel"])["babel"],
        "sphinx": l10n.package_versions(["sphinx"])["sphinx"],
    }
    assert m["counts"]["dev"] == m["counts"]["test"] == 50 and m["counts"]["train"] > 1000
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == m
    rows = {split: read(tmp_path / "a" / f"{split}.jsonl") for split in ("train", "dev", "test")}
    assert set(rows["dev"][0]) == {"id", "src", "tgt"}
    assert len({r["id"] for part in rows.values() for r in part}) == sum(m["counts"].values())
    sources = {split: {source_key(r["src"]) for r in part} for split, part in rows.items()}
    assert not sources["train"] & (sources["dev"] | sources["test"])
    # rerun: identical bytes; other seed or a cap on train: another hash
    assert prepare_corpus(task, tmp_path / "b")["sha256"] == m["sha256"]
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    assert prepare_corpus({**task, "split_seed": 1}, tmp_path / "c")["sha256"] != m["sha256"]
    capped = prepare_corpus({**task, "max_train": 100}, tmp_path / "d")
    assert capped["counts"]["train"] == 100 and capped["sha256"] != m["sha256"]
    assert read(tmp_path / "d" / "train.jsonl") == rows["train"][:100]


def test_prepare_l10n_reverse_direction(tmp_path):
    task = task_for({"source": "l10n", "packages": ["sphinx"]}, source_lang="ru", target_lang="en")
    prepare_corpus(task, tmp_path / "x")
    rows = read(tmp_path / "x" / "train.jsonl")
    assert share([(r["tgt"], r["src"]) for r in rows], "\u0400", "\u04ff") > 0.9  # Russian is the source now


# --- check_corpus_spec ------------------------------------------------------------------------------------


def test_check_corpus_spec_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="unknown corpus source 'ftp'"):
        check_corpus_spec(task_for({"source": "ftp"}))
    with pytest.raises(DataError, match="'dataset'"):
        check_corpus_spec(task_for({"source": "hf"}))
    with pytest.raises(DataError, match="does not exist"):
        check_corpus_spec(task_for({"source": "local", "path": str(tmp_path / "nope.tsv")}))
    (tmp_path / "x.xml").write_text("")
    with pytest.raises(DataError, match="unknown format"):
        check_corpus_spec(task_for({"source": "local", "path": str(tmp_path / "x.xml")}))
    with pytest.raises(DataError, match="cannot provide 'xx'"):
        check_corpus_spec(task_for({"source": "l10n"}, target_lang="xx"))
    with pytest.raises(DataError, match="English"):
        check_corpus_spec(task_for({"source": "l10n"}, source_lang="de", target_lang="fr"))
    with pytest.raises(DataError, match="corpus.columns"):
        check_corpus_spec(task_for({"source": "hf", "dataset": "wmt16", "columns": {"src": "en"}}))
    with pytest.raises(DataError, match="kind"):
        check_corpus_spec(task_for({"source": "l10n"}, kind="speech"))

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "django" else real(name, *a)
    )
    with pytest.raises(DataError, match="pip install Django"):
        check_corpus_spec(task_for({"source": "l10n", "packages": ["babel", "django"]}))
    check_corpus_spec(task_for({"source": "l10n"}))  # default packages: whatever is installed


# --- local and hf sources ---------------------------------------------------------------------------------


PAIRS = [(f"Sentence number {i}", f"Satz Nummer {i}") for i in range(40)]


def test_local_tsv_and_jsonl(tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_text("english\tgerman\n" + "".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"english": s, "german": t}) + "\n" for s, t in PAIRS), encoding="utf-8"
    )
    manifests = []
    for path in (tsv, jsonl):
        corpus = {"source": "local", "path": str(path), "columns": {"source": "english", "target": "german"}}
        manifests.append(prepare_corpus(task_for(corpus), tmp_path / path.suffix[1:]))
        assert manifests[-1]["counts"] == {"train": 30, "dev": 5, "test": 5}
        assert read(tmp_path / path.suffix[1:] / "dev.jsonl")[0]["tgt"].startswith("Satz Nummer")
    assert manifests[0]["sha256"] == manifests[1]["sha256"]  # same pairs, same corpus


def test_local_given_splits_are_kept_and_do_not_leak(tmp_path):
    files = {}
    for split, part in {"train": PAIRS, "dev": PAIRS[:3], "test": PAIRS[3:10]}.items():
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps({"en": s, "de": t}) + "\n" for s, t in part))
    corpus = {"source": "local", "path": {k: str(v) for k, v in files.items()}}
    m = prepare_corpus(task_for(corpus, dev_size=None, test_size=None), tmp_path / "out")
    assert m["counts"] == {"train": 30, "dev": 3, "test": 7} and m["cleaning"]["dropped_overlap"] == 10


def test_hf_source_read_by_datasets_from_a_local_repository(tmp_path, local_hub):
    parts = {"train": PAIRS[:30], "validation": PAIRS[30:34], "test": PAIRS[34:]}
    other = {split: {"src_text": ["x"] * len(p), "tgt_text": ["y"] * len(p)} for split, p in parts.items()}
    tables = {"de-en": {split: {"src_text": [s for s, _ in part], "tgt_text": [t for _, t in part]}
                        for split, part in parts.items()}, "fr-en": other}  # a second config, not to be read
    corpus = {
        "source": "hf",
        "dataset": local_hub("wmt16", tables),
        "config": "de-en",
        "splits": {"train": "train", "dev": "validation", "test": "test"},
        "columns": {"source": "src_text", "target": "tgt_text"},
    }
    m = prepare_corpus(task_for(corpus, dev_size=None, test_size=None), tmp_path / "hf")
    assert m["counts"] == {"train": 30, "dev": 4, "test": 6} and "datasets" in m["packages"]
    assert [(r["src"], r["tgt"]) for r in read(tmp_path / "hf" / "test.jsonl")] == PAIRS[34:]

    # the WMT layout {"translation": {"en": .., "de": ..}}, no splits mapping: dev/test are split off train
    wmt = local_hub("wmt", {None: {"train": {"translation": [{"en": s, "de": t} for s, t in PAIRS]}}})
    m = prepare_corpus(task_for({"source": "hf", "dataset": wmt}), tmp_path / "wmt")
    assert m["counts"] == {"train": 30, "dev": 5, "test": 5}
