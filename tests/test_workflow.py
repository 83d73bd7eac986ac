"""The workflow end to end: snakemake runs config/test.yaml, then we check the DuckDB and what reruns.

The repo is copied to a temporary folder so the tests can edit code and configs the way a user
would and ask Snakemake (a dry run) which jobs that invalidates.
"""

import re
from pathlib import Path

import duckdb
import pytest
import yaml
from conftest import run_snakemake as snakemake

pytestmark = pytest.mark.workflow


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


def test_the_database_holds_every_run_with_metrics_and_latency(finished):
    con = duckdb.connect(str(finished / "results" / "results.duckdb"), read_only=True)
    runs = con.sql("SELECT method, budget, status, trainable_params, total_params FROM runs ORDER BY method").fetchall()
    assert [(r[0], r[1], r[2]) for r in runs] == [
        ("base", "none", "ok"), ("broken", "none", "failed"), ("full", "none", "ok"), ("houlsby", "0.02", "ok"),
        ("lora", "0.02", "ok")]
    by_method = {r[0]: r for r in runs if r[2] == "ok"}
    assert by_method["base"][3] == 0
    assert by_method["full"][3] == by_method["full"][4]
    for method in ("lora", "houlsby"):  # the solver's realised budget is near the 2% target
        assert 0.01 < by_method[method][3] / by_method[method][4] < 0.04
    metrics = con.sql("SELECT metric, count(*), min(signature) FROM evaluations GROUP BY metric ORDER BY 1").fetchall()
    assert [(m, n) for m, n, _ in metrics] == [("bleu", 4), ("chrf", 4), ("ter", 4)]
    assert all("version:2." in sig for _, _, sig in metrics)
    bench = con.sql("SELECT DISTINCT batch_size FROM benchmarks ORDER BY 1").fetchall()
    assert bench == [(1,), (4,)]
    comparison = con.sql("SELECT method, chrf, latency_ms_b1 FROM method_comparison WHERE method != 'broken'")
    comparison = comparison.fetchall()
    assert len(comparison) == 4 and all(c is not None and lat > 0 for _, c, lat in comparison)


def test_a_second_run_has_nothing_to_do(finished):
    assert "Nothing to be done" in snakemake(finished, "-n").stdout


def test_changing_loras_learning_rate_reruns_only_lora(finished):
    config = yaml.safe_load((finished / "config" / "test.yaml").read_text())
    config["methods"]["lora"]["train"]["lr"] = 1e-2
    jobs = planned_jobs(finished, config)
    assert sorted(rule for rule, _ in jobs) == ["aggregate", "benchmark", "evaluate", "train"]
    assert all("method=lora" in wc for rule, wc in jobs if rule != "aggregate")


def test_editing_the_lora_module_reruns_only_lora(finished):
    lora = finished / "peftlab" / "methods" / "lora"
    target = next(lora.glob("*.py")) if lora.is_dir() else lora.with_suffix(".py")
    original = target.read_text()
    target.write_text(original + "\n# an edit\n")
    try:
        jobs = planned_jobs(finished)
    finally:
        target.write_text(original)
    assert sorted(rule for rule, _ in jobs) == ["aggregate", "benchmark", "evaluate", "train"]
    assert all("method=lora" in wc for rule, wc in jobs if rule != "aggregate")


def test_editing_evaluation_code_reruns_no_training(finished):
    target = finished / "peftlab" / "evaluate.py"
    original = target.read_text()
    target.write_text(original + "\n# an edit\n")
    try:
        rules = {rule for rule, _ in planned_jobs(finished)}
    finally:
        target.write_text(original)
    assert rules == {"evaluate", "aggregate"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(epochs=3), "Additional properties are not allowed ('epochs' was unexpected)"),
        (lambda c: c["methods"].update(lora2={"method": "loraa"}), "unknown method 'loraa'"),
        (lambda c: c["grid"].update(budgets=[1e-6]), "budget"),
        (lambda c: c["methods"]["lora"]["options"].update(rnk=4), "rnk"),
    ],
    ids=["unknown-key", "unknown-method", "unreachable-budget", "unknown-option"],
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
    con = duckdb.connect(str(finished / "results" / "results.duckdb"), read_only=True)
    error, log_path, eval_status, bench_status = con.sql(
        "SELECT error, log_path, eval_status, bench_status FROM runs WHERE method = 'broken'").fetchall()[0]
    assert "fewer than one batch" in error
    assert log_path.endswith("train/en-de/broken/none/seed0.log") and (finished / log_path).exists()
    assert (eval_status, bench_status) == ("skipped", "skipped")
    assert con.sql("SELECT count(*) FROM evaluations WHERE run_id LIKE '%/broken/%'").fetchall() == [(0,)]
