"""evaluate_run on a tiny built Marian: a failing forgetting step leaves the headline scores recorded."""

import json

import pytest
import torch

from peftlab.data import build_shards, prepare_corpus
from peftlab.evaluate import evaluate_run
from peftlab.languages import languages_of
from peftlab.methods import apply_method, make_method_config, save_method
from peftlab.models import build_marian, load_tokenizer, train_tokenizer
from peftlab.scoring import mt_scores

torch.set_num_threads(1)
SETTINGS = {"num_beams": 1, "batch_size": 8, "max_new_tokens": 4, "retained_examples": 4}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(model dir, corpus dir, shard dir, method dir, task) of a LoRA run on a 6-pair en-de test set."""
    root = tmp_path_factory.mktemp("run")
    corpus = root / "corpus"
    task = {"kind": "translation", "source_lang": "en", "target_lang": "de", "dev_size": 6, "test_size": 6,
            "max_train": 40, "corpus": {"source": "l10n", "packages": ["sphinx"]}}
    prepare_corpus(task, corpus)
    pairs = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    train_tokenizer((t for p in pairs for t in (p["src"], p["tgt"])), root / "model", vocab_size=120,
                    languages=["en", "de"])
    tokenizer = load_tokenizer(str(root / "model"))
    build_marian(tokenizer, d_model=16, layers=1, heads=2, ffn_dim=32).save_pretrained(root / "model")
    build_shards(corpus, tokenizer, root / "shards", tokenizer_id="tiny",
                 languages=languages_of({"source": "build"}, task))
    cfg = make_method_config("lora", {"rank": 2})
    model = apply_method(build_marian(tokenizer, d_model=16, layers=1, heads=2, ffn_dim=32), cfg)
    sha256 = save_method(model, cfg, root / "method")
    return root / "model", corpus, root / "shards", root / "method", task, sha256


def evaluate(run, tmp_path, pretraining):
    model_dir, corpus, shards, method, task, sha256 = run
    return evaluate_run("t/en-de/lora/0.02/seed0", model_path=str(model_dir), model_spec={"source": "build"},
                        task=task, corpus_dir=corpus, shard_dir=shards, method_dir=method, method_sha256=sha256,
                        record_path=tmp_path / "eval.json", predictions_path=tmp_path / "pred.txt",
                        settings=SETTINGS, pretraining=pretraining)


def test_a_failed_forgetting_step_keeps_the_scores_already_measured(run, tmp_path):
    record = evaluate(run, tmp_path, {"en-fr": (tmp_path / "no-such-corpus", "en", "fr")})
    assert json.loads((tmp_path / "eval.json").read_text()) == record
    assert record["status"] == "partial"
    assert set(record["failed_steps"]) == {"retained_quality"}
    assert record["failed_steps"]["retained_quality"].startswith("FileNotFoundError")
    assert record["error"].startswith("retained_quality: FileNotFoundError")
    # the headline scores are those of the hypotheses written, and the later CKA step still ran
    hypotheses = (tmp_path / "pred.txt").read_text().split("\n")[:-1]
    references = [json.loads(line)["tgt"] for line in (run[1] / "test.jsonl").read_text().splitlines()]
    headline = [m for m in record["metrics"] if m["metric"] in ("bleu", "chrf", "ter")]
    assert headline == mt_scores(hypotheses, references, "de")
    assert [m["layer"] for m in record["metrics"] if m["metric"] == "cka"] == [0, 1]
    assert record["forgetting"] == {"comparable": True}


def test_an_evaluation_without_failures_is_ok(run, tmp_path):
    record = evaluate(run, tmp_path, {})
    assert record["status"] == "ok" and record["error"] is None and record["failed_steps"] is None
