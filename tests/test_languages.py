"""Language codes per model family: the shards, the evaluation's generation and the plan-time check read one
table (peftlab/languages.py); tiny random mBART-50-, NLLB- and M2M100-shaped models with the real tokenizer
classes (tests/language_models.py) show the codes land where each family expects them."""

import json
import subprocess
import sys

import pytest
import sacrebleu
import yaml
from language_models import FAMILIES, build, corpus_file
from transformers import AutoTokenizer
from transformers.models.m2m_100 import tokenization_m2m_100
from transformers.models.mbart50 import tokenization_mbart50
from transformers.models.nllb import tokenization_nllb

from peftlab import grid
from peftlab.data import build_shards, load_split, prepare_corpus
from peftlab.languages import (
    M2M100_CODES,
    MBART50_CODES,
    NLLB_BY_ISO,
    NLLB_CODES,
    NO_LANGUAGES,
    LanguageError,
    configure_tokenizer,
    languages_of,
    model_family,
)
from peftlab.models import load_base, load_tokenizer
from peftlab.scoring import mt_scores
from peftlab.translate import translate

TASK = {"kind": "translation", "source_lang": "en", "target_lang": "ja", "dev_size": 5, "test_size": 5,
        "split_seed": 0}
# The first decoder tokens as the transformers docstrings and the fairseq checkpoints put them, written out.
CODES = {"mbart50": ("en_XX", "ja_XX"), "nllb": ("eng_Latn", "jpn_Jpan"), "m2m100": ("__en__", "__ja__")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    task = {**TASK, "corpus": {"source": "local", "path": str(corpus_file(root / "pairs.jsonl"))}}
    prepare_corpus(task, root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    folder = build(request.param, tmp_path_factory.mktemp(request.param) / "model")
    return request.param, {"source": "local", "path": str(folder)}


def test_code_tables_are_the_tokenizers_own():
    assert MBART50_CODES == tuple(tokenization_mbart50.FAIRSEQ_LANGUAGE_CODES)
    assert NLLB_CODES == tuple(tokenization_nllb.FAIRSEQ_LANGUAGE_CODES)
    assert M2M100_CODES == tuple(tokenization_m2m_100.FAIRSEQ_LANGUAGE_CODES["m2m100"])
    assert set(NLLB_BY_ISO.values()) <= set(NLLB_CODES)


@pytest.mark.parametrize(("model_id", "family", "target"), [
    ("facebook/mbart-large-50", "mbart50", "ru_RU"),
    ("facebook/mbart-large-50-many-to-many-mmt", "mbart50", "ru_RU"),
    ("facebook/nllb-200-distilled-600M", "nllb", "rus_Cyrl"),
    ("facebook/m2m100_418M", "m2m100", "ru"),
    ("google/mt5-base", "t5", None),
    ("Helsinki-NLP/opus-mt-en-ru", "none", None),
])
def test_family_and_codes_of_hub_models(model_id, family, target):
    spec = {"source": "hub", "id": model_id}
    langs = languages_of(spec, {"source_lang": "en", "target_lang": "ru"})
    assert (model_family(spec), langs.tgt_code) == (family, target)


def test_prefixes_of_text_families():
    task = {"source_lang": "en", "target_lang": "de"}
    assert languages_of({"source": "hub", "id": "t5-small"}, task).prefix == "translate English to German: "
    assert languages_of({"source": "build"}, task).prefix == ">>de<< "
    spec = {"source": "hub", "id": "google/mt5-base", "source_prefix": "{source_lang}2{target_lang}: "}
    assert languages_of(spec, task).prefix == "en2de: "


def test_local_model_family_comes_from_its_tokenizer_class(tiny):
    family, spec = tiny
    assert model_family(spec) == family


def test_unknown_language_is_a_named_error_at_plan_time():
    config = yaml.safe_load(open("config/studies/ustun2022-mt.yaml"))
    config["tasks"]["en-tr"]["target_lang"] = "el"  # mBART-50 has no Greek
    with pytest.raises(grid.ConfigError, match=r"tasks\.en-tr .*mbart50 has no language code for 'el'"):
        grid.check_config(config)
    en_zh = {"source_lang": "en", "target_lang": "zh"}
    spec = {"source": "hub", "id": "facebook/nllb-200-distilled-600M", "language_codes": {"zh": "zho_Hant"}}
    assert languages_of(spec, en_zh).tgt_code == "zho_Hant"
    with pytest.raises(LanguageError, match="'zh_TW', which is not a nllb code"):
        languages_of({**spec, "language_codes": {"zh": "zh_TW"}}, en_zh)
    with pytest.raises(LanguageError, match=r"family \(t5\) uses no codes"):
        languages_of({"source": "hub", "id": "google/mt5-base", "language_codes": {"zh": "zh"}}, en_zh)


def test_shards_carry_the_codes_as_the_tokenizer_documents(tiny, corpus, tmp_path):
    """Source: [source code] X </s>; labels: [target code] X </s> (mBART-50 and non-legacy NLLB and M2M100 alike),
    the same as the tokenizer gives when loaded with src_lang/tgt_lang, its documented use."""
    family, spec = tiny
    languages = languages_of(spec, TASK)
    manifest = build_shards(corpus, load_tokenizer(spec["path"]), tmp_path, tokenizer_id=family, languages=languages)
    assert manifest["languages"]["tgt_code"] == languages.tgt_code
    rows = load_split(tmp_path, "train")
    reference = AutoTokenizer.from_pretrained(spec["path"], src_lang=languages.src_code, tgt_lang=languages.tgt_code)
    pairs = {r["id"]: r for r in map(json.loads, (corpus / "train.jsonl").read_text(encoding="utf-8").splitlines())}
    expected = reference([pairs[r["id"]]["src"] for r in rows], text_target=[pairs[r["id"]]["tgt"] for r in rows],
                         truncation=True, max_length=128)
    assert [r["input_ids"] for r in rows] == expected["input_ids"]
    assert [r["labels"] for r in rows] == expected["labels"]
    src_code, tgt_code = CODES[family]
    assert {tuple(reference.convert_ids_to_tokens(r["input_ids"][:1])) for r in rows} == {(src_code,)}
    assert {tuple(reference.convert_ids_to_tokens(r["labels"][:1])) for r in rows} == {(tgt_code,)}
    assert {r["labels"][-1] for r in rows} == {reference.eos_token_id}


def test_generation_starts_with_the_target_code_the_labels_start_with(tiny, corpus, tmp_path):
    family, spec = tiny
    languages = languages_of(spec, TASK)
    build_shards(corpus, load_tokenizer(spec["path"]), tmp_path, tokenizer_id=family, languages=languages)
    first_label = load_split(tmp_path, "test")[0]["labels"][0]
    sources = [r["src"] for r in map(json.loads, (corpus / "test.jsonl").read_text(encoding="utf-8").splitlines())]
    model, tokenizer = load_base(spec["path"], spec, TASK)  # as evaluate_run loads it
    forced = configure_tokenizer(tokenizer, languages)
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    out = model.generate(**batch, forced_bos_token_id=forced, num_beams=2, max_new_tokens=4)
    assert out[:, 0].tolist() == [model.config.decoder_start_token_id] * len(sources)
    assert out[:, 1].tolist() == [first_label] * len(sources)
    assert tokenizer.convert_ids_to_tokens(first_label) == CODES[family][1]
    # Unforced, the random model starts elsewhere: the code comes from forcing, not from the weights.
    assert out[:, 1].tolist() != model.generate(**batch, num_beams=2, max_new_tokens=4)[:, 1].tolist()
    # The evaluation's own generation: hypotheses without the code's text (M2M100Tokenizer's decode keeps it).
    hypotheses = translate(model, tokenizer, sources, languages=languages, num_beams=2, max_new_tokens=4)
    assert len(hypotheses) == len(sources) and not any(CODES[family][1] in h for h in hypotheses)


def test_a_code_family_tokenizer_without_its_codes_is_a_named_error(tiny, corpus, tmp_path):
    """Before: M2M100 failed with KeyError: None, mBART-50 and NLLB tagged the target with the source language."""
    family, spec = tiny
    with pytest.raises(LanguageError, match=f"set `languages: {family}`"):
        build_shards(corpus, load_tokenizer(spec["path"]), tmp_path, tokenizer_id=family, languages=NO_LANGUAGES)


JA_HYPOTHESES = ["猫がマットの上に座った。", "今日は良い天気です。"]
JA_REFERENCES = ["猫はマットの上に座った。", "今日はいい天気ですね。"]


def test_japanese_bleu_is_scored_with_mecab():
    """sacrebleu's own call with its Japanese tokenizer is the reference; 13a sees each sentence as one word."""
    bleu = next(r for r in mt_scores(JA_HYPOTHESES, JA_REFERENCES, "ja") if r["metric"] == "bleu")
    reference = sacrebleu.corpus_bleu(JA_HYPOTHESES, [JA_REFERENCES], tokenize="ja-mecab")
    assert bleu["value"] == round(reference.score, 4)
    assert "tok:ja-mecab" in bleu["signature"]
    assert sacrebleu.corpus_bleu(JA_HYPOTHESES, [JA_REFERENCES]).score != pytest.approx(reference.score, abs=1)


def test_a_workflow_script_error_reaches_the_rule_log(tmp_path):
    """The M2M100 KeyError: None left an empty log: workflow scripts log to the file, the traceback went to stderr."""
    log = tmp_path / "job.log"
    code = ("import sys; sys.path.insert(0, 'workflow_scripts')\n"
            "from types import SimpleNamespace\n"
            "from _setup import start\n"
            f"start(SimpleNamespace(log=[{str(log)!r}], threads=1, resources=SimpleNamespace(gpu=0)))\n"
            "{}[None]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and "KeyError: None" in proc.stderr
    assert "KeyError: None" in log.read_text()
