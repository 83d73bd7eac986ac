"""What reruns after an edit: exactly the jobs the edit affects, in one invocation, and then nothing.

Each edit is applied to a copy of the finished test study (config edits through a second config file,
code edits written into the copy and restored), and Snakemake's dry run must plan exactly the expected
rules. A few edits then run for real: the study must converge in that one invocation, so that a second
dry run has nothing to do (an input marked ancient() used to hide a rebuilt base model until a second
invocation, while evaluation ran on the old weights).
"""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake as snakemake
from test_workflow import STUDY_LEVEL, planned_jobs

pytestmark = pytest.mark.workflow

RUNS = {"train", "evaluate", "benchmark"}
MT_RUNS = RUNS | {"train_multitask"}


def set_key(path: str, value) -> Callable[[dict], None]:
    """An edit of the config: set a dotted key."""

    def edit(config: dict) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


# (id, edit, rules planned, a regex every planned job's wildcards must match outside STUDY_LEVEL); an edit is a
# config change, or the path of a source file that gets a comment appended.
EDITS = [
    ("method-lr", set_key("methods.lora.train.lr", 1e-2), RUNS | STUDY_LEVEL, r"method=lora,"),
    ("method-option", set_key("methods.houlsby.options", {"activation": "relu"}), RUNS | STUDY_LEVEL,
     r"method=houlsby,"),
    ("task-train-option", set_key("tasks.topic.train.lr", 2e-3), RUNS | STUDY_LEVEL, r"task=topic,"),
    ("task-corpus-key", set_key("tasks.topic.corpus.categories", ["territory", "currency", "ui"]),
     {"prepare_corpus", "build_shards"} | RUNS | STUDY_LEVEL, r"task=topic"),
    ("max-train", set_key("tasks.topic.max_train", 150), {"prepare_corpus", "build_shards"} | RUNS | STUDY_LEVEL,
     r"task=topic"),
    ("max-length", set_key("tasks.topic.max_length", 20), {"build_shards"} | RUNS | STUDY_LEVEL, r"task=topic"),
    ("task-distance", set_key("tasks.en-de.distance", "far"), STUDY_LEVEL, None),
    # a pretraining key that keeps the architecture (a new ffn_dim would move every budget off its label)
    ("base-model-build-key", set_key("base_models.tiny-marian.build.dev_examples", 40),
     {"pretrain_base"} | MT_RUNS | STUDY_LEVEL, r"(model=tiny-marian|task=en-de)"),
    ("pretraining-steps", set_key("base_models.tiny-marian.build.train.max_steps", 120),
     {"pretrain_base"} | MT_RUNS | STUDY_LEVEL, r"(model=tiny-marian|task=en-de)"),
    ("vocabulary-size", set_key("base_models.tiny-marian.build.vocab_size", 500),
     {"build_tokenizer", "build_shards", "pretrain_base"} | MT_RUNS | STUDY_LEVEL, r"(model=tiny-marian|task=en-)"),
    ("evaluate-beam", set_key("evaluate.num_beams", 1), {"evaluate"} | STUDY_LEVEL, None),
    ("benchmark-batch-sizes", set_key("benchmark.batch_sizes", [1, 2]), {"benchmark"} | STUDY_LEVEL, None),
    ("seed-added", set_key("grid.seeds", [0, 1]), MT_RUNS | STUDY_LEVEL, r"seed=1"),
    ("method-removed", lambda c: c["grid"]["methods"].remove("houlsby"), STUDY_LEVEL, None),
    # lora-mt is LoRA too: its shared multi-task training reruns with it
    ("method-code", "peftlab/methods/lora/model.py", MT_RUNS | STUDY_LEVEL, r"method=lora(-mt)?,"),
    ("evaluation-code", "peftlab/evaluate.py", {"evaluate"} | STUDY_LEVEL, None),
    ("benchmark-code", "peftlab/bench.py", {"benchmark"} | STUDY_LEVEL, None),
    ("corpus-code", "peftlab/data/sources.py",
     {"prepare_corpus", "build_shards", "build_tokenizer", "pretrain_base"} | MT_RUNS | STUDY_LEVEL, None),
    ("shard-code", "peftlab/data/shards.py", {"build_shards", "pretrain_base"} | MT_RUNS | STUDY_LEVEL,
     None),
    ("training-code", "peftlab/train.py", {"pretrain_base"} | MT_RUNS | STUDY_LEVEL, None),
    ("aggregation-code", "peftlab/results/store.py", STUDY_LEVEL, None),
]


@pytest.fixture(scope="module")
def study(local_study, tmp_path_factory) -> Path:
    """A copy of the finished test study (its files' times and Snakemake's records kept) to edit freely."""
    dest = tmp_path_factory.mktemp("invalidation") / "repo"
    shutil.copytree(local_study, dest, symlinks=True)
    return dest


def base_config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "config" / "test.yaml").read_text())


@pytest.mark.parametrize(("edit", "rules", "wildcards"), [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_an_edit_plans_exactly_the_jobs_it_affects(study, edit, rules, wildcards):
    if isinstance(edit, str):
        target = study / edit
        original = target.read_text()
        target.write_text(original + "\n# an edit\n")
        try:
            jobs = planned_jobs(study)
        finally:
            target.write_text(original)
    else:
        config = copy.deepcopy(base_config(study))
        edit(config)
        jobs = planned_jobs(study, config)
    assert {rule for rule, _ in jobs} == rules, jobs
    if wildcards:
        stray = [(r, wc) for r, wc in jobs if r not in STUDY_LEVEL and not re.search(wildcards, wc)]
        assert not stray, stray


def test_touching_the_base_model_and_shards_reruns_nothing(study):
    """The protection ancient() gave: a file's time alone is no change (its manifest's checksum is)."""
    touched = [*study.glob("results/test/base/tiny-marian/**/*"), *study.glob("results/test/shards/**/*")]
    assert any(p.name == "manifest.json" for p in touched) and any(p.suffix == ".safetensors" for p in touched)
    for path in touched:
        os.utime(path)
    assert "Nothing to be done" in snakemake(study, "-n").stdout


def converges(workdir: Path, config: dict) -> str:
    """Run once with the config; a second dry run must have nothing to do. Returns the real run's log."""
    (workdir / "config" / "changed.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(workdir, "--configfile", "config/changed.yaml")
    assert "Nothing to be done" in snakemake(workdir, "-n", "--configfile", "config/changed.yaml").stdout
    return out.stdout + out.stderr


def test_a_deleted_database_is_rebuilt_by_a_plain_run(study):
    import duckdb

    database = study / "results" / "results.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        before = con.execute("SELECT count(*) FROM runs").fetchall()
    database.unlink()
    snakemake(study)
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == before
    assert "Nothing to be done" in snakemake(study, "-n").stdout


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/test.yaml",
                             *args], cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"snakemake ended before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_a_forced_rerun_stopped_by_sigterm_converges_on_a_plain_run(study):
    """The README's retry (--forcerun <run>/train.json) interrupted: a plain run redoes what the retry left
    undone, and the run's evaluation and benchmark are never older than its training."""
    run = study / "results/test/runs/en-de/lora/0.02/seed0"
    log = study / "logs/test/train/en-de/lora/0.02/seed0.log"
    log.unlink(missing_ok=True)
    proc = start_snakemake(study, "--forcerun", str(run.relative_to(study) / "train.json"))
    wait_for(log, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    snakemake(study)
    assert "Nothing to be done" in snakemake(study, "-n").stdout
    trained = (run / "train.json").stat().st_mtime
    assert (run / "eval.json").stat().st_mtime >= trained and (run / "bench.json").stat().st_mtime >= trained


def test_a_study_killed_during_aggregation_recovers_with_unlock_and_a_plain_run(study):
    """kill -9 leaves Snakemake's lock and an incomplete marker: the documented recovery is --unlock, then the
    same command with --rerun-incomplete (the profiles set it), and the database ends up whole."""
    import duckdb

    database = study / "results" / "results.duckdb"
    with duckdb.connect(str(database), read_only=True) as con:
        before = con.execute("SELECT count(*) FROM runs").fetchall()
    (study / "results/test/aggregate.json").unlink()
    log = study / "logs/test/aggregate.log"
    log.unlink(missing_ok=True)
    proc = start_snakemake(study)
    wait_for(log, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    snakemake(study, "--unlock")
    snakemake(study, "--rerun-incomplete")
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == before
    assert "Nothing to be done" in snakemake(study, "-n").stdout


def test_a_rebuilt_base_model_retrains_in_the_same_invocation(study):
    config = base_config(study)
    before = json.loads((study / "results/test/runs/en-de/lora/0.02/seed0/train.json").read_text())
    config["base_models"]["tiny-marian"]["build"]["train"]["max_steps"] = 120
    config["tasks"]["topic"]["train"]["lr"] = 2e-3  # and a task's training option: no data job reruns
    log = converges(study, config)
    assert "rule build_shards" not in log and "rule prepare_corpus" not in log
    after = json.loads((study / "results/test/runs/en-de/lora/0.02/seed0/train.json").read_text())
    assert after["finished_at"] != before["finished_at"]
    pretrained = json.loads((study / "results/test/base/tiny-marian/model/pretrain.json").read_text())
    assert pretrained["build"]["train"]["max_steps"] == 120
