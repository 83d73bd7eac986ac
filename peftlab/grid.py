"""The experiment grid: a validated config expanded into runs, checked before any compute is spent.

The JSON schema (config/schema.yaml, applied by Snakemake's `validate`) catches unknown keys and
wrong types; this module catches what a schema cannot: a method name that is not registered, a
budget a method cannot reach on the chosen base model, a corpus whose package is not installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from peftlab.data import check_corpus_spec
from peftlab.languages import LanguageError, built_architecture, languages_of
from peftlab.methods import DEFAULT_BUDGET_TOLERANCE, METHODS, MethodError, get_method, make_method_config
from peftlab.methods.families import FAMILIES
from peftlab.model_source import ModelError, resolve_model_path
from peftlab.train_config import TrainConfig, TrainConfigError, pretraining_config

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
NO_BUDGET = "none"
# A study name is a folder under results/: no separators, not "." or ".." (config/schema.yaml says the same)
STUDY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


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
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        MarianConfig,
    )

    if spec["source"] == "build" and built_architecture(spec) != "marian":
        from peftlab.models import decoder_config

        b = spec["build"]
        arch = decoder_config(b["architecture"], vocab_size=b["vocab_size"], d_model=b["d_model"], layers=b["layers"],
                              heads=b["heads"], ffn_dim=b["ffn_dim"], pad_token_id=0, eos_token_id=1)
    elif spec["source"] == "build":
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
        auto = AutoModelForSeq2SeqLM if arch.is_encoder_decoder else AutoModelForCausalLM  # as models.load_model
        model = (auto if kind == "translation" else AutoModelForSequenceClassification).from_config(arch)
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
    return _hub_file(spec, "config.json") is not None


def check_config(config: dict, budget_cache: Path | None = None) -> None:
    """Every semantic check that needs no weights and no network; raises ConfigError naming the problem.

    budget_cache: a JSON file of budget checks already passed (see check_budgets), so a no-op replan of a
    study whose architectures are known locally imports no torch.
    """
    grid, tasks, methods = config["grid"], config["tasks"], config["methods"]
    study = config["study"]
    if not isinstance(study, str) or not STUDY_NAME.fullmatch(study):
        raise ConfigError(f"study {study!r} must be a plain folder name (letters, digits, '_', '.', '-'; not "
                          "starting with '.'): its runs go to results/<study>/")
    for key in ("tasks", "methods", "seeds"):
        _no_repeats(f"grid.{key}", grid[key])
    _no_repeats("grid.budgets", [format_budget(b) for b in grid.get("budgets", [])])
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
        try:
            make_method_config(entry["method"], entry.get("options", {}))
        except ValueError as err:  # MethodError: name the entry, which the method does not know
            raise ConfigError(f"methods.{name}.options: {err}") from None
        _check_budgets_given(config, name, entry)
        if "budget_tolerance" in entry and get_method(entry["method"]).knob is None:
            raise ConfigError(f"methods.{name}: budget_tolerance is for methods with a size knob; "
                              f"{entry['method']!r} has none")
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
        _no_repeats(f"tasks.{name}.train_sizes", task.get("train_sizes") or [])
        try:
            check_corpus_spec(task)
        except ValueError as err:  # DataError: name the task, which the data layer does not know
            raise ConfigError(f"tasks.{name}: {err}") from None
        if task["kind"] == "translation":
            spec = config["base_models"][task["base_model"]]
            known = decoder_only(config, task["base_model"])  # None: a hub model not cached, checked by its job
            try:
                languages_of(spec, task, decoder_only=known if known is not None else "prompt_template" in spec)
            except LanguageError as err:
                raise ConfigError(f"tasks.{name} (base model {task['base_model']}): {err}") from None
    check_training(config)
    check_families(config)
    check_scorers(config)
    check_budgets(config, budget_cache)


def check_scorers(config: dict) -> None:
    """BLEU into Japanese or Korean needs a sacrebleu extra (MeCab): fail now, not after training."""
    targets = {}
    for name, task in config["tasks"].items():
        if task["kind"] == "translation":
            targets.setdefault(task["target_lang"], name)
    if not targets:
        return
    from peftlab.scoring import ScoringError, bleu_metric  # sacrebleu: only for studies that translate

    for lang, name in targets.items():
        try:
            bleu_metric(lang)
        except ScoringError as err:
            raise ConfigError(f"tasks.{name}: {err}") from None


def _no_repeats(where: str, items: list) -> None:
    seen = set()
    for item in items:
        if item in seen:
            raise ConfigError(f"{where} lists {item!r} twice (one run per entry: a repeat would train twice "
                              "and collide in the results)")
        seen.add(item)


def _check_budgets_given(config: dict, name: str, entry: dict) -> None:
    knob = get_method(entry["method"]).knob
    if knob is None:
        if "budgets" in entry:
            raise ConfigError(f"methods.{name}.budgets: method {entry['method']!r} has no size knob, so its "
                              "budgets would be ignored (it runs once per task and seed); remove them")
        return
    _no_repeats(f"methods.{name}.budgets", [format_budget(b) for b in entry.get("budgets", [])])
    if name in config["grid"]["methods"] and not method_budgets(config, name):
        raise ConfigError(f"methods.{name}: method {entry['method']!r} is sized by a budget (its {knob!r}), but "
                          f"neither methods.{name}.budgets nor grid.budgets gives one: it would have no runs")


def check_training(config: dict) -> None:
    """Each layer of training options (names, types), then every merge a run trains with (ranges): the checks
    are TrainConfig's own (validate), the ones every job applies again."""
    layers = {"train": config.get("train", {})}
    layers |= {f"tasks.{name}.train": task.get("train", {}) for name, task in config["tasks"].items()}
    layers |= {f"methods.{name}.train": entry.get("train", {}) for name, entry in config["methods"].items()}
    for where, values in layers.items():
        try:
            TrainConfig.check_keys(values)
        except TrainConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    for name, spec in config["base_models"].items():
        if spec["source"] == "build":
            try:  # pretraining reads build.train alone (runs.pretrain_base)
                pretraining_config(spec["build"].get("train", {}))
            except TrainConfigError as err:
                raise ConfigError(f"base_models.{name}.build.train: {err}") from None
    for task in config["grid"]["tasks"]:
        for method in method_variants(config):
            if not runs_on(config, base_name(method), task):
                continue
            try:
                merged = train_config(config, method, task)
            except TrainConfigError as err:  # name the layer that set the value (the last one wins)
                layers = [(f"methods.{base_name(method)}.sweep.lr", {"lr": 0} if VARIANT in method else {}),
                          (f"methods.{base_name(method)}.train", config["methods"][base_name(method)].get("train", {})),
                          (f"tasks.{task}.train", config["tasks"][task].get("train", {})),
                          ("train", config.get("train", {}))]
                where = next((f"{name}.{err.key}" if name != layers[0][0] else name
                              for name, values in layers if err.key in values), f"the default {err.key}")
                raise ConfigError(f"{where} (in the training options of method {method} on task {task}): "
                                  f"{err}") from None
            family = config["methods"][base_name(method)]["method"]
            if merged.get("sharding") == "fsdp" and family != "full":
                # FSDP here shards whole models for full fine-tuning; a method's frozen base, masks and peft
                # wrappers are not wired through its sharded state dicts
                raise ConfigError(f"training option 'sharding': fsdp is for method full; method {method} "
                                  f"({family}) on task {task} uses it: use sharding ddp")


def model_type(config: dict, model_name: str, hub_cache: str | Path | None = None) -> str | None:
    """A base model's model_type without loading it: a built model's architecture, else its config.json where that
    is on disk; None when not knowable offline (a hub model not in the local cache: its job checks instead)."""
    spec = config["base_models"][model_name]
    if spec["source"] == "build":
        return built_architecture(spec)
    found = _model_config_json(config, model_name, hub_cache)
    return None if found is None else found.get("model_type")


def decoder_only(config: dict, model_name: str) -> bool | None:
    """Whether a base model is decoder-only (translates prompts), where knowable offline as for model_type."""
    spec = config["base_models"][model_name]
    if spec["source"] == "build":
        return built_architecture(spec) != "marian"
    found = _model_config_json(config, model_name)
    return None if found is None else not found.get("is_encoder_decoder", False)


def _model_config_json(config: dict, model_name: str, hub_cache: str | Path | None = None) -> dict | None:
    spec = config["base_models"][model_name]
    if spec["source"] == "hub":
        found = _hub_file(spec, "config.json", hub_cache)
        path = Path(found) if found else None
    else:
        path = Path(resolve_model_path(spec)) / "config.json"
    if path is None or not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"base_models.{model_name}: {path} is not a readable config.json ({err})") from None
    if not isinstance(found, dict):
        raise ConfigError(f"base_models.{model_name}: {path} is not a readable config.json (not an object)")
    return found


def check_families(config: dict) -> None:
    """Methods that attach to named modules need the base model's family in the table (families.py)."""
    types: dict[str, str | None] = {}
    for task in config["grid"]["tasks"]:
        model = config["tasks"][task]["base_model"]
        if model not in types:
            types[model] = model_type(config, model)
        if types[model] is None or types[model] in FAMILIES:
            continue
        for method in config["grid"]["methods"]:
            entry = config["methods"][method]
            if runs_on(config, method, task) and get_method(entry["method"]).needs_family:
                free = sorted(n for n, m in METHODS.items() if not m.needs_family)
                raise ConfigError(
                    f"methods.{method} ({entry['method']}) on task {task}: base model {model!r} is of the "
                    f"unsupported model family {types[model]!r}; supported: {', '.join(sorted(FAMILIES))} "
                    f"(only {', '.join(free)} accept any family)")


HF_TRUE = {"1", "ON", "YES", "TRUE"}  # how huggingface_hub reads its boolean variables


def check_offline_cache(config: dict, hub_cache: str | Path | None = None,
                        datasets_cache: str | Path | None = None) -> None:
    """With HF_HUB_OFFLINE set, every hub model and dataset the grid uses must be in the local cache, or each
    job would fail after its retries. No network: only the cache folders are read."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() not in HF_TRUE:
        return
    models = {config["tasks"][t]["base_model"] for t in config["grid"]["tasks"]}
    tasks = set(config["grid"]["tasks"])
    for model in models:
        build = config["base_models"][model].get("build", {})
        tasks |= {*build.get("pretrain_tasks", []), *build.get("denoise_tasks", [])}
    missing = [f"base_models.{m} ({config['base_models'][m]['id']})" for m in sorted(models)
               if config["base_models"][m]["source"] == "hub"
               and not _hub_file(config["base_models"][m], "config.json", hub_cache)]
    for task in sorted(tasks):
        corpus = config["tasks"][task]["corpus"]
        if corpus["source"] == "hf" and not _dataset_cached(corpus["dataset"], hub_cache, datasets_cache):
            missing.append(f"tasks.{task}.corpus.dataset ({corpus['dataset']})")
    if missing:
        raise ConfigError(f"HF_HUB_OFFLINE is set, and these are not in the local Hugging Face cache: "
                          f"{'; '.join(missing)}. Download them where the hub is reachable (hf download ...), "
                          "or unset HF_HUB_OFFLINE")


def _hub_file(spec: dict, filename: str, cache_dir: str | Path | None = None) -> str | None:
    from huggingface_hub import try_to_load_from_cache  # imports no torch

    found = try_to_load_from_cache(spec["id"], filename, cache_dir=cache_dir, revision=spec.get("revision"))
    return found if isinstance(found, str) else None


def _dataset_cached(dataset: str, hub_cache: str | Path | None, datasets_cache: str | Path | None) -> bool:
    """A hub dataset in the hub cache (a snapshot) or in datasets' own cache; a packaged loader (parquet, json,
    ...) or a local folder needs no cache."""
    import importlib.util

    from huggingface_hub import constants

    spec = importlib.util.find_spec("datasets")  # finds the package without importing it
    loaders = Path(spec.submodule_search_locations[0]) / "packaged_modules" if spec else None
    if Path(dataset).exists() or (loaders is not None and (loaders / dataset).is_dir()):
        return True
    snapshots = Path(hub_cache or constants.HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir() and any(snapshots.iterdir()):
        return True
    home = Path(os.environ.get("HF_HOME", Path("~/.cache/huggingface").expanduser()))
    processed = Path(datasets_cache or os.environ.get("HF_DATASETS_CACHE", home / "datasets"))
    return (processed / dataset.replace("/", "___")).is_dir()


def check_budgets(config: dict, cache: Path | None = None) -> None:
    """Solve every (model, method, budget) once at DAG time, so a budget that is unreachable, or reachable only
    further off than the entry's budget_tolerance, fails now (the train job solves it again the same way).

    `cache` remembers the checks that passed, keyed by everything the solution depends on (the architecture's
    spec or config.json, the task kind, the method and its options, the budget and its tolerance, the methods'
    code and the torch/transformers/peft versions): solving needs torch (seconds to import), a replan of the
    same study then needs none. Failures are never cached, so a bad budget fails on every plan.
    """
    import hashlib

    passed = _read_budget_cache(cache)
    seen, solved = set(), set()
    for task in config["grid"]["tasks"]:
        model_name, kind = config["tasks"][task]["base_model"], config["tasks"][task]["kind"]
        model, arch_key = None, _architecture_key(config, model_name, kind) if cache is not None else None
        for method in config["grid"]["methods"]:
            if not runs_on(config, method, task):
                continue
            entry = config["methods"][method]
            for budget in method_budgets(config, method):
                key = (model_name, method, budget)
                if budget == NO_BUDGET or key in seen:
                    continue
                seen.add(key)
                check_key = None if arch_key is None else hashlib.sha256(json.dumps(
                    [arch_key, entry["method"], entry.get("options", {}), float(budget),
                     budget_tolerance(config, method)],
                    sort_keys=True, default=str).encode()).hexdigest()
                if check_key is not None and check_key in passed:
                    solved.add(check_key)
                    continue
                model = model if model is not None else architecture_on_meta(config, model_name, kind)
                if model is None:
                    log.info("budget of %s on %s is checked when its job starts (model not cached)", method, model_name)
                    break
                from peftlab.methods import solve_budget  # torch: only once some architecture is known

                try:
                    solve_budget(model, entry["method"], entry.get("options", {}), float(budget),
                                 budget_tolerance(config, method))
                except MethodError as err:  # a BudgetError, or the method refusing the model (a peft tuner's checks)
                    raise ConfigError(f"methods.{method} on base model {model_name} (task {task}): {err}") from None
                if check_key is not None:
                    solved.add(check_key)
    if cache is not None and solved - passed:
        from peftlab.atomic import write_json

        write_json({"passed": sorted(passed | solved)}, cache)


def _read_budget_cache(cache: Path | None) -> set[str]:
    if cache is None or not cache.exists():
        return set()
    try:
        return set(json.loads(cache.read_text()).get("passed", []))
    except (ValueError, AttributeError):
        return set()  # a damaged cache only costs a re-solve


def _architecture_key(config: dict, model_name: str, kind: str) -> str | None:
    """What a base model's meta architecture depends on, read without torch; None: not knowable offline."""
    import importlib.metadata

    from peftlab.provenance import code_fingerprint

    spec = config["base_models"][model_name]
    if spec["source"] == "build":
        arch = json.dumps(spec["build"], sort_keys=True)
    else:
        try:
            found = (_hub_file(spec, "config.json") if spec["source"] == "hub"
                     else str(Path(resolve_model_path(spec)) / "config.json"))
        except ModelError:
            return None  # architecture_on_meta names the problem
        if found is None or not Path(found).exists():
            return None
        arch = Path(found).read_text(encoding="utf-8")
    versions = [importlib.metadata.version(p) for p in ("torch", "transformers", "peft")]
    code = code_fingerprint([Path(__file__).parent / "methods", Path(__file__)])
    return json.dumps([spec["source"], arch, kind, versions, code])


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
