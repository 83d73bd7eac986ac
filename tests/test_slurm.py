"""profiles/slurm against a real SLURM (.ci/slurm/start.sh): sbatch, partitions, account, GPUs, retries.

tests/slurm_workflow/Snakefile runs prepare_corpus (CPU) -> train (GPU, fails once) -> aggregate
(CPU) through `--profile profiles/slurm --profile profiles/slurm-ci`; the assertions read what
SLURM itself recorded (sacct), not what snakemake says it asked for.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import slurm_helpers

pytestmark = pytest.mark.slurm

SNAKEFILE = Path(__file__).parent / "slurm_workflow" / "Snakefile"
ACCOUNT = "peftlab"


@pytest.fixture(scope="module")
def first_run(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm_workflow")
    result = slurm_helpers.run_snakemake_slurm(workdir, SNAKEFILE)
    assert result.returncode == 0, result.stdout
    return workdir, result


def jobs_of(workdir: Path, rule: str) -> list[dict[str, str]]:
    return [j for j in slurm_helpers.sacct_jobs(workdir) if j["Comment"] == f"rule_{rule}"]


def test_every_job_went_through_sbatch(first_run):
    workdir, result = first_run
    assert (workdir / "results" / "aggregate.txt").exists()
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", result.stdout)
    recorded = [j["JobID"] for j in slurm_helpers.sacct_jobs(workdir)]
    # prepare_corpus, train twice (one planned failure), aggregate; `all` runs locally
    assert sorted(submitted, key=int) == recorded and len(recorded) == 4


def test_jobs_run_in_their_partition_under_the_account(first_run):
    workdir, _ = first_run
    expected = {"prepare_corpus": "cpu", "train": "gpu", "aggregate": "cpu"}
    for rule, partition in expected.items():
        jobs = jobs_of(workdir, rule)
        assert jobs, f"no sacct record for {rule}"
        assert {j["Partition"] for j in jobs} == {partition}, jobs
        assert {j["Account"] for j in jobs} == {ACCOUNT}, jobs
        assert jobs[-1]["State"] == "COMPLETED", jobs
    for job in jobs_of(workdir, "train"):
        assert "gres/gpu=1" in job["AllocTRES"], job
    for rule in ("prepare_corpus", "aggregate"):
        assert "gres/gpu" not in jobs_of(workdir, rule)[0]["AllocTRES"]


def minutes(timelimit: str) -> int:
    """SLURM's [D-]HH:MM:SS as minutes."""
    days, _, hms = timelimit.rpartition("-")
    h, m, _s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m


def test_retry_asks_slurm_for_more_memory_and_time(first_run):
    workdir, _ = first_run
    failed, retried = jobs_of(workdir, "train")
    assert (failed["State"], retried["State"]) == ("FAILED", "COMPLETED")
    mem = [int(j["ReqMem"].rstrip("M")) for j in (failed, retried)]
    runtime = [minutes(j["Timelimit"]) for j in (failed, retried)]
    # the profile's resources are linear in `attempt`: attempt 2 asks for twice attempt 1
    assert mem[1] == 2 * mem[0] and runtime[1] == 2 * runtime[0], (mem, runtime)
    # and the rule saw the same numbers SLURM enforced
    line = (workdir / "results" / "train.txt").read_text()
    assert f"mem_mb={mem[1]} " in line and f"runtime={runtime[1]} " in line, line


def test_gpu_job_gets_cuda_visible_devices(first_run):
    workdir, _ = first_run
    line = (workdir / "results" / "train.txt").read_text()
    assert "partition=gpu" in line
    visible = re.search(r"CUDA_VISIBLE_DEVICES=(\S+)", line)
    assert visible and re.fullmatch(r"\d+(,\d+)*", visible.group(1)), line
    corpus = (workdir / "results" / "corpus.txt").read_text()
    assert "partition=cpu" in corpus


def test_second_run_submits_nothing(first_run):
    workdir, _ = first_run
    before = slurm_helpers.sacct_jobs(workdir)
    again = slurm_helpers.run_snakemake_slurm(workdir, SNAKEFILE)
    assert again.returncode == 0, again.stdout
    assert "Nothing to be done" in again.stdout
    assert "submitted with SLURM jobid" not in again.stdout
    assert slurm_helpers.sacct_jobs(workdir) == before
