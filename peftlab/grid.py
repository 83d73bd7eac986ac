"""The experiment grid: a validated config expanded into runs, checked before any compute is spent.

The JSON schema (config/schema.yaml, applied by Snakemake's `validate`) catches unknown keys and
wrong types; this module catches what a schema cannot: a method name that is not registered, a
budget a method cannot reach on the chosen base model, a corpus whose package is not installed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from peftlab.data import check_corpus_spec
from peftlab.methods import DEFAULT_BUDGET_TOLERANCE, METHODS, BudgetError, get_method, make_method_config
from peftlab.model_source import ModelError, resolve_model_path
from peftlab.train_config import TrainConfig

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
NO_BUDGET = "none"


class ConfigError(ValueError):
    """A config that would fail (or silently mislead) once jobs run."""


@dataclass(frozen=True)
class Run:
    study: str
    task: str
    method: str  # the config's method entry name (e.g. "lora" or "lora-r8")
    budget: str  # formatted fraction, or NO_BUDGET for methods without a size knob
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.study}/{self.task}/{self.method}/{self.budget}/seed{self.seed}"

    @property
    def path(self) -> str:
        return f"results/{self.study}/runs/{self.task}/{self.method}/{self.budget}/seed{self.seed}"


def format_budget(budget: float) -> str:
    return f"{budget:g}"


# Study axes beyond method and budget are name variants, not new rules or path levels:
# "en-de~n500" is task en-de trained on its nested 500-example subset, "lora~lr0.001" is method
# entry lora at learning rate 1e-3. Both keep the run path results/<study>/runs/<task>/<method>/...
VARIANT = "~"


def base_name(name: str) -> str:
    return name.split(VARIANT, 1)[0]


def task_variants(config: dict) -> list[str]:
    names = []
    for task in config["grid"]["tasks"]:
        sizes = config["tasks"][task].get("train_sizes") or [None]
        names += [task if size is None else f"{task}{VARIANT}n{size}" for size in sizes]
    return names


def method_variants(config: dict) -> list[str]:
    names = []
    for method in config["grid"]["methods"]:
        rates = config["methods"][method].get("sweep", {}).get("lr")
        names += [f"{method}{VARIANT}lr{lr:g}" for lr in rates] if rates else [method]
    return names


def train_size(task_name: str) -> int | None:
    _, _, suffix = task_name.partition(f"{VARIANT}n")
    return int(suffix) if suffix else None


def method_budgets(config: dict, method: str) -> list[str]:
    entry = config["methods"][base_name(method)]
    if get_method(entry["method"]).knob is None:
        return [NO_BUDGET]
    return [format_budget(b) for b in entry.get("budgets", config["grid"]["budgets"])]


def budget_tolerance(config: dict, method: str) -> float:
    """The largest relative miss of a budget that a method entry accepts (its `budget_tolerance`, else 10%)."""
    return config["methods"][base_name(method)].get("budget_tolerance", DEFAULT_BUDGET_TOLERANCE)


def runs_on(config: dict, method: str, task: str) -> bool:
    """Whether a method entry runs on a task: its own `tasks:` list if given; multi-task entries only
    on translation tasks (one shared seq2seq model; classification tasks would each need a head)."""
    entry = config["methods"][method]
    if entry.get("multitask") and config["tasks"][task]["kind"] != "translation":
        return False
    return task in entry.get("tasks", [task])


def expand_runs(config: dict) -> list[Run]:
    """Every run of the grid: tasks (and their size variants) x methods (and their sweeps) x budgets x seeds."""
    return [
        Run(config["study"], task, method, budget, seed)
        for task in task_variants(config)
        for method in method_variants(config)
        if runs_on(config, base_name(method), base_name(task))
        for budget in method_budgets(config, method)
        for seed in config["grid"]["seeds"]
    ]


def train_config(config: dict, method: str, task: str | None = None) -> dict:
    """Global `train:` defaults, then the task's, then the method entry's, then a swept value; checked."""
    task_train = config["tasks"][base_name(task)].get("train", {}) if task else {}
    merged = {**config.get("train", {}), **task_train, **config["methods"][base_name(method)].get("train", {})}
    _, _, lr = method.partition(f"{VARIANT}lr")
    if lr:
        merged["lr"] = float(lr)
    TrainConfig.from_dict(merged)
    return merged


def architecture_on_meta(config: dict, model_name: str, kind: str) -> torch.nn.Module | None:
    """The base model's architecture without weights, when it is knowable offline; else None."""
    spec = config["base_models"][model_name]
    if spec["source"] == "hub" and not hub_config_cached(spec):
        return None  # the train job checks the budget instead; no need to import transformers to learn this
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        MarianConfig,
    )

    if spec["source"] == "build":
        b = spec["build"]
        arch = MarianConfig(vocab_size=b["vocab_size"], d_model=b["d_model"], encoder_layers=b["layers"],
                            decoder_layers=b["layers"], encoder_attention_heads=b["heads"],
                            decoder_attention_heads=b["heads"], encoder_ffn_dim=b["ffn_dim"],
                            decoder_ffn_dim=b["ffn_dim"], pad_token_id=0, decoder_start_token_id=0)
    else:
        try:
            arch = AutoConfig.from_pretrained(resolve_model_path(spec), revision=spec.get("revision"),
                                              local_files_only=True)
        except OSError:
            return None  # a hub model not in the local cache: the train job checks the budget instead
    with torch.device("meta"):
        auto = AutoModelForSeq2SeqLM if kind == "translation" else AutoModelForSequenceClassification
        model = auto.from_config(arch)
    if spec["source"] != "build" and _config_json(spec).get("tie_word_embeddings") is False:
        from peftlab.methods.core import untie_output_layer

        untie_output_layer(model)  # (m)T5: the checkpoint has its own lm_head, as the train job will load it
    return model


def _config_json(spec: dict) -> dict:
    """A local, package or cached hub model's config.json as written (AutoConfig overrides some keys)."""
    import json

    if spec["source"] == "hub":
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(spec["id"], "config.json", revision=spec.get("revision"))
    else:
        path = Path(resolve_model_path(spec)) / "config.json"
    return json.loads(Path(path).read_text())


def hub_config_cached(spec: dict) -> bool:
    """Whether a hub model's config.json is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec["id"], "config.json", revision=spec.get("revision"))
    return isinstance(found, str)


def check_config(config: dict) -> None:
    """Every semantic check that needs no data and no weights; raises ConfigError naming the problem."""
    grid, tasks, methods = config["grid"], config["tasks"], config["methods"]
    for task in grid["tasks"]:
        if task not in tasks:
            raise ConfigError(f"grid.tasks names {task!r}, which is not under tasks: ({', '.join(tasks)})")
    for method in grid["methods"]:
        if method not in methods:
            raise ConfigError(f"grid.methods names {method!r}, which is not under methods: ({', '.join(methods)})")
    for name, entry in methods.items():
        for task in entry.get("tasks", []):
            if task not in grid["tasks"]:
                raise ConfigError(f"methods.{name}.tasks names {task!r}, which is not in grid.tasks")
        if entry["method"] not in METHODS:
            raise ConfigError(f"methods.{name}: unknown method {entry['method']!r}; registered: "
                              f"{', '.join(sorted(METHODS))}")
        make_method_config(entry["method"], entry.get("options", {}))
        if "budget_tolerance" in entry and get_method(entry["method"]).knob is None:
            raise ConfigError(f"methods.{name}: budget_tolerance is for methods with a size knob; "
                              f"{entry['method']!r} has none")
        train_config(config, name)
        if entry.get("multitask") and any(config["tasks"][t].get("train_sizes") for t in config["grid"]["tasks"]):
            raise ConfigError(f"methods.{name}: a multitask method cannot be combined with train_sizes "
                              "(the shared model would be trained on which subset?)")
        if VARIANT in name:
            raise ConfigError(f"methods.{name}: '{VARIANT}' is reserved for study axes (e.g. lora{VARIANT}lr0.001)")
    for name, spec in config["base_models"].items():
        if spec["source"] != "build":  # a missing package or local folder fails now, not in every job
            try:
                resolve_model_path(spec)
            except ModelError as err:
                raise ConfigError(f"base_models.{name}: {err}") from None
        for key in ("pretrain_tasks", "denoise_tasks"):
            for task in spec.get("build", {}).get(key, []):
                if task not in tasks:
                    raise ConfigError(f"base_models.{name}.build.{key} names unknown task {task!r}")
    for name, task in tasks.items():
        if VARIANT in name:
            raise ConfigError(f"tasks.{name}: '{VARIANT}' is reserved for study axes (e.g. en-de{VARIANT}n500)")
        if task["base_model"] not in config["base_models"]:
            raise ConfigError(f"tasks.{name}.base_model {task['base_model']!r} is not under base_models:")
        check_corpus_spec(task)
    check_budgets(config)


def check_budgets(config: dict) -> None:
    """Solve every (model, method, budget) once at DAG time, so a budget that is unreachable, or reachable only
    further off than the entry's budget_tolerance, fails now (the train job solves it again the same way)."""
    seen = set()
    for task in config["grid"]["tasks"]:
        model_name, kind = config["tasks"][task]["base_model"], config["tasks"][task]["kind"]
        model = None
        for method in config["grid"]["methods"]:
            if not runs_on(config, method, task):
                continue
            entry = config["methods"][method]
            for budget in method_budgets(config, method):
                key = (model_name, method, budget)
                if budget == NO_BUDGET or key in seen:
                    continue
                seen.add(key)
                model = model if model is not None else architecture_on_meta(config, model_name, kind)
                if model is None:
                    log.info("budget of %s on %s is checked when its job starts (model not cached)", method, model_name)
                    break
                from peftlab.methods import solve_budget  # torch: only once some architecture is known

                try:
                    solve_budget(model, entry["method"], entry.get("options", {}), float(budget),
                                 budget_tolerance(config, method))
                except BudgetError as err:
                    raise ConfigError(f"methods.{method} on base model {model_name} (task {task}): {err}") from None


def run_key(*parts: object) -> str:
    """A stable fingerprint of what defines a run, for checkpoints that must not resume a different one."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tasks_of_model(config: dict, model_name: str) -> list[str]:
    """Tasks whose corpora train a built model's vocabulary: its pretraining pairs and its grid tasks."""
    build = config["base_models"][model_name].get("build", {})
    grid = [t for t in config["grid"]["tasks"] if config["tasks"][t]["base_model"] == model_name]
    return sorted(set(build.get("pretrain_tasks", [])) | set(build.get("denoise_tasks", [])) | set(grid))


def task_languages(config: dict, model_name: str) -> list[str]:
    """Languages whose tags a built model's vocabulary holds."""
    langs = set()
    for task in config["tasks"].values():
        if task["base_model"] == model_name and task["kind"] == "translation":
            langs.update([task["source_lang"], task["target_lang"]])
    return sorted(langs)


def study_root(config: dict) -> Path:
    return Path("results") / config["study"]


def multitask_tasks(config: dict, model_name: str, method: str) -> list[str]:
    """The grid's translation tasks on one base model that a multi-task method entry trains on together."""
    return [t for t in config["grid"]["tasks"]
            if config["tasks"][t]["base_model"] == model_name and runs_on(config, base_name(method), t)]
