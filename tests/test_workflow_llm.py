"""The LLM path end to end: snakemake runs config/test-llm.yaml (a tiny Llama and a tiny Qwen2 built from the
study's own vocabulary, config only), then the database must hold MT and classification rows for both."""

import json
from pathlib import Path

import duckdb
import pytest
from conftest import copy_repo, run_snakemake

pytestmark = pytest.mark.workflow
CONFIG = "config/test-llm.yaml"
MODELS = ("llama", "qwen")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    workdir = copy_repo(tmp_path_factory.mktemp("llm") / "repo")
    run_snakemake(workdir, configfile=CONFIG)
    return workdir


def query(workdir: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(workdir / "results" / "results.duckdb"), read_only=True) as con:
        return con.sql(sql).fetchall()


def test_every_run_finished(finished):
    runs = query(finished, "SELECT task, method, status FROM runs ORDER BY task, method")
    expected = [(f"en-de-{m}", method) for m in MODELS for method in ("base", "full", "lora")
                if (m, method) != ("qwen", "full")]
    expected += [(f"topic-{m}", method) for m in MODELS for method in ("base", "houlsby")]
    assert runs == [(*run, "ok") for run in expected]


@pytest.mark.parametrize("model", MODELS)
def test_translation_rows_have_scores_and_prompt_free_hypotheses(finished, model):
    runs = f"run_id LIKE 'test-llm/en-de-{model}/%'"
    scores = query(finished, f"SELECT run_id, metric, value FROM evaluations WHERE {runs} "
                             "AND metric IN ('bleu', 'chrf') AND subset IS NULL AND layer IS NULL")
    methods = ("base", "full", "lora") if model == "llama" else ("base", "lora")
    assert len(scores) == 2 * len(methods) and all(value is not None and value >= 0 for _, _, value in scores)
    shards = json.loads((finished / f"results/test-llm/shards/tiny-{model}/en-de-{model}/manifest.json").read_text())
    assert shards["causal"] is True
    prompt_start = shards["languages"]["prompt"].split("{source}")[0].strip()  # "Translate English to German:"
    non_empty = 0
    for method in methods:
        run = next((finished / f"results/test-llm/runs/en-de-{model}/{method}").glob("*/seed0"))
        hypotheses = (run / "test.predictions.txt").read_text().split("\n")[:-1]
        assert len(hypotheses) == 40
        assert not (prompt_start and any(prompt_start in h for h in hypotheses))  # the prompt is not decoded
        non_empty += sum(bool(h.strip()) for h in hypotheses)
        record = json.loads((run / "eval.json").read_text())
        assert record["status"] == "ok", record.get("error")
    assert non_empty > 0
    retained = query(finished, f"SELECT count(*) FROM evaluations WHERE {runs} AND subset = 'en-fr-{model}' "
                               "AND metric = 'chrf'")
    assert retained == [(len(methods),)]  # forgetting: quality on the pretraining pair, through the same prompt
    bench = query(finished, f"SELECT DISTINCT task, batch_size FROM benchmarks WHERE {runs} ORDER BY 2")
    assert bench == [("generate", 1), ("generate", 4)]


@pytest.mark.parametrize("model", MODELS)
def test_classification_rows_on_the_same_decoder(finished, model):
    accuracy = query(finished, f"SELECT count(*), min(value), max(value) FROM evaluations "
                               f"WHERE run_id LIKE 'test-llm/topic-{model}/%' AND metric = 'accuracy'")
    assert accuracy[0][0] == 2 and 0 <= accuracy[0][1] <= accuracy[0][2] <= 1
    ood = query(finished, f"SELECT DISTINCT detector FROM evaluations WHERE run_id LIKE 'test-llm/topic-{model}/%' "
                          "AND metric = 'ood_auroc' ORDER BY 1")
    assert ood == [("energy",), ("mahalanobis",), ("max_logit",), ("msp",)]
    cka = query(finished, f"SELECT min(value), max(value) FROM evaluations WHERE metric = 'cka' "
                          f"AND run_id = 'test-llm/topic-{model}/base/none/seed0'")
    assert all(v == pytest.approx(1.0, abs=1e-4) for v in cka[0])  # the base model against itself


def test_a_second_run_has_nothing_to_do(finished):
    assert "Nothing to be done" in run_snakemake(finished, "-n", configfile=CONFIG).stdout
