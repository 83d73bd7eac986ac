"""The test study through profiles/slurm on a live SLURM: same runs and metrics as a local run, then a no-op."""

from pathlib import Path

import duckdb
import pytest
import slurm_helpers
from conftest import copy_repo

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]


@pytest.fixture(scope="module")
def slurm_study(slurm_cluster, tmp_path_factory) -> tuple[Path, str]:
    workdir = copy_repo(tmp_path_factory.mktemp("slurm_study") / "repo")
    result = slurm_helpers.run_snakemake_slurm(workdir, workdir / "Snakefile", configfile=Path("config/test.yaml"),
                                               timeout=1500)
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-6000:]
    return workdir, result.stdout


def rows(workdir: Path, sql: str) -> list[tuple]:
    return duckdb.connect(str(workdir / "results" / "results.duckdb"), read_only=True).sql(sql).fetchall()


def test_every_job_ran_as_a_slurm_job(slurm_study):
    workdir, log = slurm_study
    jobs = slurm_helpers.sacct_jobs(workdir)
    rules = {job["Comment"].split("_wildcards")[0].removeprefix("rule_") for job in jobs}
    assert {"prepare_corpus", "build_tokenizer", "build_shards", "pretrain_base", "train", "evaluate", "benchmark",
            "aggregate", "figures"} <= rules
    assert all(job["State"] == "COMPLETED" for job in jobs), [(j["JobID"], j["State"]) for j in jobs]
    train = [job for job in jobs if job["Comment"].startswith("rule_train")]
    assert train and all(job["Partition"] == "gpu" for job in train)
    assert "sbatch" in log or "Submitted" in log  # the executor reports each submission


def test_the_database_matches_a_local_run(slurm_study, local_study):
    workdir, _ = slurm_study
    runs = "SELECT run_id, status, trainable_params, total_params, steps, best_dev_score FROM runs ORDER BY run_id"
    assert rows(workdir, runs) == rows(local_study, runs)
    metrics = "SELECT run_id, metric, value, signature FROM evaluations ORDER BY run_id, metric"
    assert rows(workdir, metrics) == rows(local_study, metrics)
    assert {m for _, m, _, _ in rows(workdir, metrics)} >= {"bleu", "chrf", "ter", "accuracy", "ood_auroc", "cka"}


def test_a_second_invocation_submits_nothing(slurm_study):
    workdir, _ = slurm_study
    before = len(slurm_helpers.sacct_jobs(workdir))
    again = slurm_helpers.run_snakemake_slurm(workdir, workdir / "Snakefile", configfile=Path("config/test.yaml"))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout
    assert len(slurm_helpers.sacct_jobs(workdir)) == before
