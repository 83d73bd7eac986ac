"""The workflow end to end: snakemake runs config/test.yaml, then we check the DuckDB and what reruns.

The repo is copied to a temporary folder so the tests can edit code and configs the way a user
would and ask Snakemake (a dry run) which jobs that invalidates.
"""

import json
import re
import sys
from pathlib import Path

import duckdb
import pytest
import yaml
from conftest import run_snakemake as snakemake

pytestmark = pytest.mark.workflow
STUDY_LEVEL = {"aggregate", "figures", "all"}  # rerun whenever any run's records change


def planned_jobs(workdir: Path, config: dict | None = None) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run would execute."""
    args = ["-n"]
    if config is not None:
        (workdir / "config" / "changed.yaml").write_text(yaml.safe_dump(config))
        args = ["-n", "--configfile", "config/changed.yaml"]
    out = snakemake(workdir, *args).stdout
    jobs, rule = [], None
    for line in out.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line.strip()):
            rule = m.group(1)
            jobs.append((rule, ""))
        elif rule and line.strip().startswith("wildcards:"):
            jobs[-1] = (rule, line.strip().removeprefix("wildcards: "))
    return jobs


@pytest.fixture(scope="module")
def finished(local_study) -> Path:
    return local_study


def db(workdir: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(workdir / "results" / "results.duckdb"), read_only=True)


def test_translation_runs_hold_params_scores_forgetting_and_latency(finished):
    con = db(finished)
    runs = con.sql("SELECT method, budget, status, trainable_params, total_params FROM runs "
                   "WHERE task = 'en-de' ORDER BY method").fetchall()
    assert [(r[0], r[1], r[2]) for r in runs] == [
        ("base", "none", "ok"), ("broken", "none", "failed"), ("full", "none", "ok"), ("houlsby", "0.02", "ok"),
        ("lora", "0.02", "ok"), ("lora-mt", "0.02", "ok")]
    by_method = {r[0]: r for r in runs if r[2] == "ok"}
    assert by_method["base"][3] == 0
    assert by_method["full"][3] == by_method["full"][4]
    for method in ("lora", "houlsby"):  # the solver's realised budget is near the 2% target
        assert 0.01 < by_method[method][3] / by_method[method][4] < 0.04
    metrics = con.sql("SELECT metric, count(*), min(signature) FROM evaluations WHERE run_id LIKE 'test/en-de/%' "
                      "AND split = 'test' AND subset IS NULL AND layer IS NULL GROUP BY metric ORDER BY 1").fetchall()
    assert [(m, n) for m, n, _ in metrics] == [("bleu", 5), ("chrf", 5), ("ter", 5)]
    assert all("version:2." in sig for _, _, sig in metrics)
    retained = con.sql("SELECT count(DISTINCT run_id) FROM evaluations WHERE subset = 'en-fr' AND metric = 'chrf'")
    assert retained.fetchall() == [(5,)]  # forgetting: every run's quality on the pretraining pair
    cka = con.sql("SELECT min(value), max(value) FROM evaluations WHERE metric = 'cka' AND run_id LIKE '%/base/%'")
    assert all(v == pytest.approx(1.0, abs=1e-4) for v in cka.fetchall()[0])  # the base model vs itself
    bench = con.sql("SELECT DISTINCT task, batch_size FROM benchmarks ORDER BY 1, 2").fetchall()
    assert bench == [("forward", 1), ("forward", 4), ("generate", 1), ("generate", 4)]
    comparison = con.sql("SELECT method, chrf, latency_ms_b1, latency_ratio_b1, latency_merged FROM method_comparison "
                         "WHERE task = 'en-de' AND method != 'broken'").fetchall()
    assert len(comparison) == 5 and all(c is not None and lat > 0 and ratio > 0 for _, c, lat, ratio, _ in comparison)
    assert {m for m, *_, merged in comparison if merged} == {"lora", "lora-mt"}  # timed merged, as deployed


def test_classification_runs_hold_accuracy_zero_shot_and_ood_metrics(finished):
    con = db(finished)
    methods = con.sql("SELECT method FROM runs WHERE task = 'topic' AND status = 'ok' ORDER BY 1").fetchall()
    assert methods == [("base",), ("full",), ("houlsby",), ("lora",)]  # multi-task methods are MT only
    accuracy = con.sql("SELECT split, count(*) FROM evaluations WHERE metric = 'accuracy' GROUP BY 1 ORDER BY 1")
    assert accuracy.fetchall() == [("test", 4), ("test-de", 4)]
    detectors = con.sql("SELECT DISTINCT detector FROM evaluations WHERE metric = 'ood_auroc' ORDER BY 1").fetchall()
    assert detectors == [("energy",), ("mahalanobis",), ("max_logit",), ("msp",)]
    quality = con.sql("SELECT method, quality FROM run_summary WHERE task = 'topic' AND status = 'ok'").fetchall()
    assert all(0 <= q <= 1 for _, q in quality)


def test_a_multitask_run_is_trained_once_and_adopted_per_task(finished):
    record = json.loads((finished / "results/test/runs/en-de/lora-mt/0.02/seed0/train.json").read_text())
    assert record["multitask_run"] == "test/multitask/tiny-marian/lora-mt/0.02/seed0"
    assert record["run_id"] == "test/en-de/lora-mt/0.02/seed0" and record["tasks"] == ["en-de"]
    assert (finished / "results/test/multitask/tiny-marian/lora-mt/0.02/seed0/method/method.safetensors").exists()


def test_a_second_run_has_nothing_to_do(finished):
    assert "Nothing to be done" in snakemake(finished, "-n").stdout


def test_no_job_param_holds_a_path_outside_the_study(finished):
    """Params are rerun triggers: a path into the environment (the MiniLM package under .venv) would rerun
    every job of that model whenever the environment moves or Python is upgraded."""
    recorded = [json.loads(f.read_text()) for f in (finished / ".snakemake" / "metadata").iterdir()]
    params = [p for record in recorded for p in record.get("params") or []]
    assert len(params) > 100
    assert not [p for p in params if sys.prefix in str(p) or str(finished) in str(p)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(epochs=3), "Additional properties are not allowed ('epochs' was unexpected)"),
        (lambda c: c["methods"].update(lora2={"method": "loraa"}), "unknown method 'loraa'"),
        (lambda c: c["grid"].update(budgets=[1e-6]), "budget"),
        (lambda c: c["methods"]["lora"]["options"].update(rnk=4), "rnk"),
        (lambda c: c["base_models"]["minilm"].update(package="no_such_model"), "'no_such_model' is not installed"),
    ],
    ids=["unknown-key", "unknown-method", "unreachable-budget", "unknown-option", "missing-model-package"],
)
def test_bad_config_stops_before_any_job(finished, change, message):
    config = yaml.safe_load((finished / "config" / "test.yaml").read_text())
    change(config)
    (finished / "config" / "bad.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(finished, "-n", "--configfile", "config/bad.yaml", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_missing_l10n_package_stops_before_any_job(finished, tmp_path):
    # sys.modules[name] = None is how Python spells "this package is not importable".
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['django'] = None\n")
    proc = snakemake(finished, "-n", env={"PYTHONPATH": str(tmp_path)}, check=False)
    assert proc.returncode != 0
    assert "django" in (proc.stdout + proc.stderr).lower() and "pip install" in proc.stdout + proc.stderr


def test_a_failed_run_is_recorded_with_its_reason_and_does_not_stop_the_study(finished):
    con = db(finished)
    error, log_path, eval_status, bench_status = con.sql(
        "SELECT error, log_path, eval_status, bench_status FROM runs WHERE method = 'broken' AND task = 'en-de'"
    ).fetchall()[0]
    assert "fewer than one batch" in error
    assert log_path.endswith("train/en-de/broken/none/seed0.log") and (finished / log_path).exists()
    assert (eval_status, bench_status) == ("skipped", "skipped")
    assert con.sql("SELECT count(*) FROM evaluations WHERE run_id LIKE '%/broken/%'").fetchall() == [(0,)]
    assert con.sql("SELECT count(*) FROM runs WHERE method = 'broken'").fetchall() == [(2,)]  # both tasks


def test_study_tables_distance_and_significance_from_the_workflow(finished):
    con = db(finished)
    assert con.sql("SELECT task, kind, target_lang, distance FROM study_tasks WHERE study = 'test' "
                   "ORDER BY task").fetchall() == [("en-de", "translation", "de", "close"),
                                                    ("topic", "classification", None, None)]
    ok_mt = {r[0] for r in con.sql("SELECT run_id FROM runs WHERE study = 'test' AND task = 'en-de' "
                                   "AND status = 'ok' AND method <> 'full'").fetchall()}
    tested = con.sql("SELECT run_id, metric, baseline_run_id, p_value FROM mt_significance "
                     "WHERE study = 'test'").fetchall()
    assert {(r, m) for r, m, _, _ in tested} == {(r, m) for r in ok_mt for m in ("bleu", "chrf")}
    assert {b for _, _, b, _ in tested} == {"test/en-de/full/none/seed0"}
    assert all(0 < p <= 1 for *_, p in tested)
    methods = {r[0] for r in con.sql("SELECT method FROM quality_by_distance WHERE study = 'test' "
                                     "AND distance = 'close'").fetchall()}
    assert methods == {"base", "full", "houlsby", "lora", "lora-mt"}

def test_a_studys_expected_figures_reach_the_reproduction_view(finished):
    """config/studies/<study>.expected.yaml beside a study is loaded by aggregation (which alone reruns), and
    the view measures the claim from the runs; without the file the study's claims are gone again."""
    expected = finished / "config" / "studies" / "test.expected.yaml"
    with db(finished) as con:
        n_runs_before = con.execute("SELECT count(*) FROM runs WHERE study = 'test'").fetchall()[0][0]
    expected.write_text(yaml.safe_dump({"study": "test", "paper": "the test study", "claims": [
        {"id": "lora-beats-base", "claim": "LoRA adds chrF on en-de.", "metric": "chrf",
         "runs": {"task": "en-de", "method": "lora"}, "baseline": {"method": "base"}, "min": 0.0}]}))
    try:
        assert {rule for rule, _ in planned_jobs(finished)} == STUDY_LEVEL
        snakemake(finished)
        con = db(finished)
        measured, status, n_runs = con.execute("SELECT measured, status, n_runs FROM reproduction "
                                               "WHERE study = 'test' AND claim_id = 'lora-beats-base'").fetchall()[0]
        chrf = dict(con.sql("SELECT method, value FROM evaluations JOIN runs USING (run_id) WHERE task = 'en-de' "
                            "AND metric = 'chrf' AND split = 'test' AND subset IS NULL AND layer IS NULL").fetchall())
        con.close()
        assert measured == pytest.approx(chrf["lora"] - chrf["base"]) and n_runs == 1
        assert status == ("agrees" if measured >= 0 else "disagrees")
    finally:
        expected.unlink()
    snakemake(finished)
    con = db(finished)
    assert con.execute("SELECT count(*) FROM paper_claims WHERE study = 'test'").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM runs WHERE study = 'test'").fetchall()[0][0] == n_runs_before
