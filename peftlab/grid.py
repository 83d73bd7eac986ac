"""The experiment grid: a validated config expanded into runs, checked before any compute is spent.

The JSON schema (config/schema.yaml, applied by Snakemake's `validate`) catches unknown keys and
wrong types; this module catches what a schema cannot: a method name that is not registered, a
budget a method cannot reach on the chosen base model, a corpus whose package is not installed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from peftlab.data import check_corpus_spec
from peftlab.methods import METHODS, get_method, make_method_config, solve_budget
from peftlab.models import resolve_model_path
from peftlab.train import TrainConfig

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


def method_budgets(config: dict, method: str) -> list[str]:
    entry = config["methods"][method]
    if get_method(entry["method"]).knob is None:
        return [NO_BUDGET]
    return [format_budget(b) for b in entry.get("budgets", config["grid"]["budgets"])]


def expand_runs(config: dict) -> list[Run]:
    grid = config["grid"]
    return [
        Run(config["study"], task, method, budget, seed)
        for task in grid["tasks"]
        for method in grid["methods"]
        for budget in method_budgets(config, method)
        for seed in grid["seeds"]
    ]


def train_config(config: dict, method: str) -> dict:
    """Defaults from `train:`, overridden by the method entry's own `train:`; checked by TrainConfig."""
    merged = {**config.get("train", {}), **config["methods"][method].get("train", {})}
    TrainConfig.from_dict(merged)
    return merged


def architecture_on_meta(config: dict, model_name: str, kind: str) -> torch.nn.Module | None:
    """The base model's architecture without weights, when it is knowable offline; else None."""
    from transformers import (
        AutoConfig,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        MarianConfig,
    )

    spec = config["base_models"][model_name]
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
        if kind == "translation":
            return AutoModelForSeq2SeqLM.from_config(arch)
        return AutoModelForSequenceClassification.from_config(arch)


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
        if entry["method"] not in METHODS:
            raise ConfigError(f"methods.{name}: unknown method {entry['method']!r}; registered: "
                              f"{', '.join(sorted(METHODS))}")
        make_method_config(entry["method"], entry.get("options", {}))
        train_config(config, name)
    for name, spec in config["base_models"].items():
        for key in ("pretrain_tasks", "denoise_tasks"):
            for task in spec.get("build", {}).get(key, []):
                if task not in tasks:
                    raise ConfigError(f"base_models.{name}.build.{key} names unknown task {task!r}")
    for name, task in tasks.items():
        if task["base_model"] not in config["base_models"]:
            raise ConfigError(f"tasks.{name}.base_model {task['base_model']!r} is not under base_models:")
        check_corpus_spec(task)
    check_budgets(config)


def check_budgets(config: dict) -> None:
    """Solve every (model, method, budget) once at DAG time, so an unreachable budget fails now."""
    seen = set()
    for task in config["grid"]["tasks"]:
        model_name, kind = config["tasks"][task]["base_model"], config["tasks"][task]["kind"]
        model = None
        for method in config["grid"]["methods"]:
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
                solve_budget(model, entry["method"], entry.get("options", {}), float(budget))


def run_key(*parts: object) -> str:
    """A stable fingerprint of what defines a run, for checkpoints that must not resume a different one."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def task_languages(config: dict, model_name: str) -> list[str]:
    langs = set()
    for task in config["tasks"].values():
        if task["base_model"] == model_name and task["kind"] == "translation":
            langs.update([task["source_lang"], task["target_lang"]])
    return sorted(langs)


def tasks_of_model(config: dict, model_name: str) -> list[str]:
    """Tasks whose corpora train a built model's vocabulary: its pretraining pairs and its grid tasks."""
    build = config["base_models"][model_name].get("build", {})
    grid = [t for t in config["grid"]["tasks"] if config["tasks"][t]["base_model"] == model_name]
    return sorted(set(build.get("pretrain_tasks", [])) | set(build.get("denoise_tasks", [])) | set(grid))


def study_root(config: dict) -> Path:
    return Path("results") / config["study"]
