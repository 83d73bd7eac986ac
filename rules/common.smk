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
from peftlab.methods import make_method_config
from peftlab.provenance import code_fingerprint

validate(config, schema="../config/schema.yaml")
# A cluster job parses the workflow again; the process that planned it has checked the config, and the
# budget check alone would import torch, transformers and peft in every job (10-25 s each on SLURM).
if workflow.is_main_process:
    try:
        grid.check_config(config)
    except ValueError as error:
        raise WorkflowError(f"config error: {error}") from None

STUDY = config["study"]
RUNS = grid.expand_runs(config)
THREADS = config.get("threads_per_job", 1)


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
    """A method's own package plus the registry and shared modules beside it (sorted: a cache key)."""
    methods = Path(workflow.basedir, "peftlab/methods")
    entry = method_entry(method)
    # SparseAdapter (the only config with a `base`) runs its base method's code, e.g. LoRA's scaling: a change
    # there reruns it too
    cfg = make_method_config(entry["method"], entry.get("options", {}))
    names = sorted({entry["method"], getattr(cfg, "base", entry["method"])})
    shared = sorted(methods.glob("*.py"))
    return (*shared, *[methods / n for n in names if (methods / n).exists()])


def task_model(task):
    return task_entry(task)["base_model"]


def model_spec(model):
    return config["base_models"][model]


def is_built(model):
    return model_spec(model)["source"] == "build"


def shards_of(task):
    return f"results/{STUDY}/shards/{task_model(task)}/{grid.base_name(task)}/manifest.json"


def base_model_dir(model):
    """Inputs a job needs for its base model: the built folder, or nothing for hub/local/package models."""
    return [f"results/{STUDY}/base/{model}/model"] if is_built(model) else []


def built_dir(model):
    """A built base model's folder, else None. Jobs resolve the model's path themselves (resolve_model_path):
    a package model's path is absolute, and as a param it would rerun every job when .venv moves."""
    return f"results/{STUDY}/base/{model}/model" if is_built(model) else None


def run_dir(w):
    return f"results/{w.study}/runs/{w.task}/{w.method}/{w.budget}/seed{w.seed}"


def final_outputs():
    return [f"{run.path}/{name}.json" for run in RUNS for name in ("train", "eval", "bench")]
