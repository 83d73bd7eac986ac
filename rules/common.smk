# Config validation, the grid, and the small input functions the rules share.
import functools
import re
import sys
from types import SimpleNamespace
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)  # run from a checkout without installing peftlab

from peftlab import grid
from peftlab.config_io import load_yaml
from peftlab.methods import make_method_config
from peftlab.provenance import code_fingerprint, folder_content_hash

# Snakemake reads config files with plain PyYAML, which keeps the last of two equal keys: read them again
# strictly, so a repeated key fails naming its file and line.
if workflow.is_main_process:
    for path in workflow.configfiles:
        try:
            load_yaml(path)
        except ValueError as error:
            raise WorkflowError(f"config error: {error}") from None
validate(config, schema="../config/schema.yaml")
# A cluster job parses the workflow again; the process that planned it has checked the config, and the
# budget check alone would import torch, transformers and peft in every job (10-25 s each on SLURM).
if workflow.is_main_process:
    try:
        grid.check_config(config, budget_cache=Path(".snakemake/peftlab/budget-checks.json"))
    except ValueError as error:
        raise WorkflowError(f"config error: {error}") from None


# With HF_HUB_OFFLINE set, hub models and datasets must be in the local cache. Checked when jobs are about to
# start (Snakemake runs onstart after building the DAG, never in a dry run, which needs no model or data).
onstart:
    try:
        grid.check_offline_cache(config)
    except ValueError as error:
        raise WorkflowError(f"config error: {error}") from None

STUDY = config["study"]
RUNS = grid.expand_runs(config)
THREADS = config.get("threads_per_job", 1)
# GPU jobs (pretrain_base, train, train_multitask, evaluate, benchmark) ask for one `gpu` when the command
# line limits GPUs (`--resources gpu=N`: at most N run at once, each takes its own GPU by a lock file,
# peftlab/gpu.py), and for none otherwise, so that CPU runs and clusters whose profile sets GPUs per rule
# (profiles/slurm: set-resources gpu: 1) are unchanged. A resource the command line does not name is not
# limited by Snakemake 9 either; asking for 0 also keeps the SLURM executor from requesting --gpus.
GPU_PER_JOB = 1 if getattr(workflow.global_resources.get("gpu"), "value", None) is not None else 0


def train_devices(w):
    """A train job's data-parallel processes (`train: devices`, peftlab/distributed.py); a multi-task job's
    training options are its first task's, as multitask_spec's."""
    task = getattr(w, "task", None) or grid.multitask_tasks(config, w.model, w.method)[0]
    return grid.train_config(config, w.method, task).get("devices", 1)


def train_gpus(w):
    """GPUs a train job asks for: one per device where GPUs are counted (GPU_PER_JOB) and on a cluster, where
    it becomes sbatch --gpus=N (profiles/slurm leaves train's GPUs to this rule); none on a local CPU run,
    whose devices are then CPU processes (gloo). The executor is known when jobs are created, not when this file
    is read; a dry run (-n) has the local dry-run executor, so it shows gpu=0 for train jobs on SLURM too."""
    devices = train_devices(w)
    limit = getattr(workflow.global_resources.get("gpu"), "value", None)
    if limit is not None and devices > limit:  # Snakemake would quietly cap the job at the limit
        raise WorkflowError(f"config error: run {w.method} on {getattr(w, 'task', 'multitask')} trains on {devices} "
                            f"devices (training option 'devices') but the command line allows gpu={limit}")
    return devices if GPU_PER_JOB or workflow.non_local_exec else 0


wildcard_constraints:
    study=STUDY,
    task="|".join(map(re.escape, [*config["tasks"], *grid.task_variants(config)])),
    method="|".join(map(re.escape, grid.method_variants(config))),
    model="|".join(config["base_models"]),
    budget=r"none|[0-9.e-]+",
    seed=r"\d+",


def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake compares params by their text, so reordering
    keys in a config must not rerun anything."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


@functools.cache  # thousands of jobs share a handful of code sets; the files do not change during one DAG build
def fingerprint(*paths):
    """Hash of the code a rule runs; passed through params so a code change reruns just that rule."""
    return code_fingerprint(Path(workflow.basedir, p) for p in paths)


# Task keys that only describe a task for the results views (no job computes with them): left out of the
# jobs' params, so setting them reruns aggregation alone.
DESCRIPTIVE_TASK_KEYS = {"distance"}


def task_entry(task):
    """A task's config entry; a study-axis variant (en-de~n500) shares its base task's entry."""
    entry = config["tasks"][grid.base_name(task)]
    return {k: v for k, v in entry.items() if k not in DESCRIPTIVE_TASK_KEYS}


def method_entry(method):
    return config["methods"][grid.base_name(method)]


@functools.cache
def method_code(method):
    """The registry and shared modules, plus the packages of the methods the entry runs (its own, and the base
    method a sparse adapter prunes); sorted: a cache key."""
    methods = Path(workflow.basedir, "peftlab/methods")
    entry = method_entry(method)
    names = make_method_config(entry["method"], entry.get("options", {})).code_methods()
    return (*sorted(methods.glob("*.py")), *[methods / n for n in sorted(set(names)) if (methods / n).exists()])


def task_model(task):
    return task_entry(task)["base_model"]


def model_spec(model):
    return config["base_models"][model]


def is_built(model):
    return model_spec(model)["source"] == "build"


def shards_of(task):
    return f"results/{STUDY}/shards/{task_model(task)}/{grid.base_name(task)}/manifest.json"


def base_model_input(model):
    """A built base model's manifest (sha256 of every file), or nothing for hub/local/package models.

    Jobs depend on the manifest, not on the folder, and not through ancient(): a rebuilt model reruns
    its runs in the same invocation, while touching the weights changes nothing (the manifest is
    untouched) and touching the manifest changes nothing either (Snakemake compares the checksum it
    recorded for it)."""
    return [f"results/{STUDY}/base/{model}/manifest.json"] if is_built(model) else []


@functools.cache
def model_content(model):
    """A local base model's content hash: replacing the model in its folder reruns its runs. Hub models
    are pinned by revision and package models by the package's version, so they need none."""
    spec = model_spec(model)
    if spec["source"] != "local":
        return None
    return folder_content_hash(Path(spec["path"]), Path(".snakemake/peftlab/content_hashes.json"))


# What data jobs compute with: a task's entry without its training options and the keys no data job
# reads, so that changing how a task is trained rebuilds no data (and so reruns no other runs).
NOT_DATA_KEYS = {"train", "base_model", "distance"}


def corpus_task(task):
    return {k: v for k, v in task_entry(task).items() if k not in NOT_DATA_KEYS | {"max_length"}}


def shard_task(task):
    return {k: v for k, v in task_entry(task).items() if k not in NOT_DATA_KEYS}


def tokenizer_spec(model):
    """What tokenizing with a base model depends on: its spec less the pretraining recipe (a built model's
    tokenizer is an input of its own), but with a decoder-only build's architecture (its pairs become prompts)."""
    spec = {k: v for k, v in model_spec(model).items() if k != "build"}
    architecture = model_spec(model).get("build", {}).get("architecture", "marian")
    return spec if architecture == "marian" else {**spec, "build": {"architecture": architecture}}


def built_dir(model):
    """A built base model's folder, else None. Jobs resolve the model's path themselves (resolve_model_path):
    a package model's path is absolute, and as a param it would rerun every job when .venv moves."""
    return f"results/{STUDY}/base/{model}/model" if is_built(model) else None


def run_dir(w):
    return f"results/{w.study}/runs/{w.task}/{w.method}/{w.budget}/seed{w.seed}"


def final_outputs():
    return [f"{run.path}/{name}.json" for run in RUNS for name in ("train", "eval", "bench")]


def vocabulary_corpora(w):
    return expand("results/{study}/corpora/{task}/manifest.json", study=w.study,
                  task=grid.tasks_of_model(config, w.model))


def run_spec(w):
    entry = method_entry(w.method)
    return {
        "run_id": f"{w.study}/{w.task}/{w.method}/{w.budget}/seed{w.seed}",
        "study": w.study, "task": w.task, "method": w.method, "method_name": entry["method"],
        "budget": w.budget, "seed": int(w.seed), "options": entry.get("options", {}),
        "train": grid.train_config(config, w.method, w.task), "base_model": task_model(w.task),
        "train_size": grid.train_size(w.task),
        # only where the entry sets one: the default reaches the job through the library, so adding the key
        # to every run would rerun the whole grid for a threshold that changes no computation
        **({"budget_tolerance": entry["budget_tolerance"]} if "budget_tolerance" in entry else {}),
    }


def multitask_spec(w):
    tasks = grid.multitask_tasks(config, w.model, w.method)
    return {**run_spec(SimpleNamespace(**{**vars(w), "task": tasks[0]})), "task": "multitask", "tasks": tasks,
            "run_id": f"{w.study}/multitask/{w.model}/{w.method}/{w.budget}/seed{w.seed}"}


def shared_training(w):
    """The multi-task run a task's run adopts, or nothing for a single-task method."""
    if not method_entry(w.method).get("multitask"):
        return []
    return [f"results/{w.study}/multitask/{task_model(w.task)}/{w.method}/{w.budget}/seed{w.seed}/train.json"]


def train_code(w):
    # data/shards.py: load_split and subset_rows pick the rows, collate makes the batches (SNIP scores the first)
    return fingerprint("peftlab/train.py", "peftlab/train_config.py", "peftlab/runs.py", "peftlab/distributed.py",
                       "peftlab/models.py", "peftlab/model_source.py", "peftlab/data/shards.py", *method_code(w.method))


def pretraining_pairs(w):
    """task -> (corpus dir, source language, target language) of the base model's pretraining pairs."""
    spec = model_spec(task_model(w.task))
    tasks = spec.get("build", {}).get("pretrain_tasks", []) if task_entry(w.task)["kind"] == "translation" else []
    return {t: (f"results/{STUDY}/corpora/{t}", config["tasks"][t]["source_lang"], config["tasks"][t]["target_lang"])
            for t in tasks}
