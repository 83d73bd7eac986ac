"""Every bad input is refused when the workflow plans, before any job runs, by a message naming the key or file.

Each case edits the test study (config/test.yaml) and goes through the checks in the order rules/common.smk
applies them: the strict YAML reader (peftlab.config_io), the schema (snakemake.utils.validate, as the
Snakefile calls it), grid.check_config, and grid.check_offline_cache. The last tests run a few through
snakemake itself, so that the wiring is tested too.

`python tests/test_config_errors.py` prints the table: case, where it is caught, the message.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from peftlab import grid
from peftlab.config_io import DuplicateKeyError, load_yaml

REPO = Path(__file__).resolve().parent.parent
SCHEMA = str(REPO / "config" / "schema.yaml")
TEST_YAML = (REPO / "config" / "test.yaml").read_text()


def base_config() -> dict:
    """The test study with only the knob-less methods in its grid: planning it needs no torch (no budget
    to solve), so each case costs milliseconds. Cases that need a sized method add it."""
    config = yaml.safe_load(TEST_YAML)
    config["grid"]["methods"] = ["base", "full"]
    return config


def plan(path: Path, hub_cache: Path, datasets_cache: Path) -> tuple[str, str]:
    """('ok', '') or (where it was caught, the message), in the workflow's order."""
    try:
        config = load_yaml(path)
    except DuplicateKeyError as err:
        return "yaml loader", str(err)
    try:
        validate(config, SCHEMA)
    except Exception as err:  # snakemake's WorkflowError around jsonschema's ValidationError
        return "schema", str(err)
    try:
        grid.check_config(config)
    except ValueError as err:
        return "check_config", str(err)
    try:
        grid.check_offline_cache(config, hub_cache=hub_cache, datasets_cache=datasets_cache)
    except ValueError as err:
        return "check_offline_cache", str(err)
    return "ok", ""


# --- the cases -------------------------------------------------------------------------------------------
# (id, where it must be caught, edit, a text the message must contain). An edit changes the config dict, or
# returns the YAML text to write (duplicate keys cannot be written from a dict). `tmp` is a scratch folder.

Edit = Callable[[dict, Path], "str | None"]
CASES: list[tuple[str, str, Edit, str]] = []


def case(case_id: str, where: str, message: str) -> Callable[[Edit], Edit]:
    def register(edit: Edit) -> Edit:
        CASES.append((case_id, where, edit, message))
        return edit
    return register


def set_in(path: str, value: object) -> Edit:
    """An edit setting a dotted path (tasks.en-de.train.lr)."""
    def edit(c: dict, tmp: Path) -> None:
        *parents, key = path.split(".")
        for p in parents:
            c = c.setdefault(p, {})
        c[key] = value
    return edit


def add_lora(c: dict) -> None:
    c["grid"]["methods"].append("lora")


def write(tmp: Path, name: str, data: bytes | str) -> str:
    path = tmp / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def local_corpus(c: dict, path: str, **corpus: object) -> None:
    c["tasks"]["en-de"]["corpus"] = {"source": "local", "path": path, **corpus}


# YAML: what PyYAML silently resolves by keeping the last key
case("dup-key-task-entry", "yaml loader", "duplicate key 'target_lang'")(
    lambda c, tmp: TEST_YAML.replace("target_lang: de,", "target_lang: de, target_lang: ru,"))
case("dup-key-top-level", "yaml loader", f"line {TEST_YAML.count(chr(10)) + 1}: duplicate key 'study'")(
    lambda c, tmp: TEST_YAML + "study: other\n")
case("dup-key-task-name", "yaml loader", "duplicate key 'en-fr'")(
    lambda c, tmp: TEST_YAML.replace("\nmethods:\n", "\n  en-fr: {kind: translation, source_lang: en, target_lang: "
                                     "es, base_model: tiny-marian, corpus: {source: l10n}}\n\nmethods:\n"))

# unknown keys at every level
case("unknown-top-level-key", "schema", "'epochs' was unexpected")(set_in("epochs", 3))
case("unknown-corpus-key", "schema", "'pakages' was unexpected")(set_in("tasks.en-de.corpus.pakages", ["django"]))
case("unknown-task-key", "schema", "'target_language' was unexpected")(set_in("tasks.en-de.target_language", "ru"))
case("unknown-model-key", "schema", "'revison' was unexpected")(set_in("base_models.minilm.revison", "main"))
case("unknown-build-key", "schema", "'layer' was unexpected")(set_in("base_models.tiny-marian.build.layer", 2))
case("unknown-method-entry-key", "schema", "'option' was unexpected")(set_in("methods.lora.option", {"alpha": 8}))
case("unknown-sweep-key", "schema", "'batch_size' was unexpected")(set_in("methods.lora.sweep", {"batch_size": [8]}))
case("unknown-grid-key", "schema", "'seed' was unexpected")(set_in("grid.seed", 1))
case("unknown-evaluate-key", "schema", "'beams' was unexpected")(set_in("evaluate.beams", 4))
case("unknown-benchmark-key", "schema", "'repeat' was unexpected")(set_in("benchmark.repeat", 3))
case("unknown-corpus-columns-key", "schema", "'src' was unexpected")(
    set_in("tasks.en-de.corpus.columns", {"src": "en", "target": "de"}))
case("unknown-hf-split", "schema", "'valid' was unexpected")(
    set_in("tasks.en-de.corpus", {"source": "hf", "dataset": "wmt16", "splits": {"train": "train", "valid": "v"}}))
case("unknown-corpus-source", "schema", "'ftp' is not one of")(set_in("tasks.en-de.corpus.source", "ftp"))
case("unknown-method-option", "check_config", "methods.lora.options: lora: unknown option 'rnk'")(
    set_in("methods.lora.options.rnk", 4))
case("unknown-train-option", "check_config", "methods.lora.train: unknown training option 'learning_rate'")(
    set_in("methods.lora.train.learning_rate", 1e-3))
case("train-option-wrong-type", "check_config", "tasks.topic.train: training option 'batch_size' must be a int")(
    set_in("tasks.topic.train.batch_size", "32"))

# names that become folders
case("study-dotdot", "schema", "On instance['study']")(set_in("study", ".."))
case("study-with-slash", "schema", "On instance['study']")(set_in("study", "a/b"))
case("study-hidden", "schema", "On instance['study']")(set_in("study", ".hidden"))
case("task-name-with-slash", "schema", "'../x' does not match")(
    lambda c, tmp: c["tasks"].update({"../x": c["tasks"]["en-de"]}))

# repeats: one run per entry
case("grid-tasks-repeated", "schema", "On instance['grid']['tasks']")(set_in("grid.tasks", ["en-de", "en-de", "topic"]))
case("grid-methods-repeated", "schema", "On instance['grid']['methods']")(set_in("grid.methods", ["base", "base"]))
case("grid-seeds-repeated", "schema", "On instance['grid']['seeds']")(set_in("grid.seeds", [0, 1, 0]))
case("grid-budgets-repeated", "schema", "On instance['grid']['budgets']")(set_in("grid.budgets", [0.02, 0.02]))
case("grid-budgets-same-name", "check_config", "grid.budgets lists '0.02' twice")(
    set_in("grid.budgets", [0.02, 0.0200000001]))  # distinct floats, one run folder (budget 0.02)
case("method-budgets-repeated", "check_config", "methods.lora.budgets lists '0.01' twice")(
    lambda c, tmp: (add_lora(c), c["methods"]["lora"].update(budgets=[0.01, 0.010000001])))
case("sweep-lr-repeated", "schema", "On instance['methods']['lora']['sweep']['lr']")(
    set_in("methods.lora.sweep", {"lr": [1e-3, 1e-3]}))
case("train-sizes-repeated", "schema", "On instance['tasks']['topic']['train_sizes']")(
    set_in("tasks.topic.train_sizes", [100, 100]))

# budgets
case("budgets-on-knobless-method", "check_config", "methods.full.budgets: method 'full' has no size knob")(
    set_in("methods.full.budgets", [0.01]))
case("sized-method-without-budgets", "check_config", "methods.lora: method 'lora' is sized by a budget")(
    lambda c, tmp: (add_lora(c), c["grid"].update(budgets=[])))

# training options: ranges, checked on every merge a run trains with
case("max-steps-0", "check_config", "train.max_steps (in the training options of method base on task en-de)")(
    set_in("train.max_steps", 0))
case("patience-0", "check_config", "'patience' must be >= 1")(set_in("train.patience", 0))
case("eval-interval-0", "check_config", "'eval_interval' must be between 1 and max_steps")(
    set_in("train.eval_interval", 0))
case("eval-interval-above-max-steps", "check_config", "tasks.topic.train.eval_interval")(
    set_in("tasks.topic.train.eval_interval", 500))
case("warmup-above-max-steps", "check_config", "methods.full.train.warmup_steps")(
    set_in("methods.full.train.warmup_steps", 30))
case("batch-size-0", "check_config", "methods.full.train.batch_size")(set_in("methods.full.train.batch_size", 0))
case("lr-negative", "check_config", "'lr' must be > 0")(set_in("methods.full.train.lr", -1e-3))
case("lr-nan", "check_config", "train.lr")(set_in("train.lr", math.nan))
case("lr-infinite", "check_config", "'lr' must be a finite number")(set_in("train.lr", math.inf))
case("label-smoothing-1", "check_config", "'label_smoothing' must be in [0, 1)")(set_in("train.label_smoothing", 1.0))
case("beta2-1", "check_config", "'beta2' must be in [0, 1)")(set_in("train.beta2", 1.0))
case("min-lr-ratio-2", "check_config", "'min_lr_ratio' must be in [0, 1]")(set_in("train.min_lr_ratio", 2.0))
case("grad-clip-negative", "check_config", "'grad_clip' must be >= 0")(set_in("train.grad_clip", -1.0))
case("build-train-eval-interval", "check_config", "base_models.tiny-marian.build.train: training option "
     "'eval_interval'")(set_in("base_models.tiny-marian.build.train.eval_interval", 100_000))
case("build-train-devices", "check_config", "base_models.tiny-marian.build.train: training option 'devices' must "
     "be 1 for pretraining")(set_in("base_models.tiny-marian.build.train.devices", 2))
case("devices-not-dividing-batch", "check_config", "'batch_size' must be a multiple of devices (3)")(
    set_in("train.devices", 3))
case("sharding-unknown", "check_config", "'sharding' must be one of ddp, fsdp")(set_in("train.sharding", "zero"))
case("fsdp-one-device", "check_config", "'devices' must be > 1 with sharding fsdp")(set_in("train.sharding", "fsdp"))
case("fsdp-fp16", "check_config", "'precision' must be fp32 or bf16 with sharding fsdp")(
    set_in("methods.full.train", {"sharding": "fsdp", "devices": 2, "precision": "fp16"}))
case("fsdp-not-full", "check_config", "fsdp is for method full; method base (base)")(
    set_in("train", {"sharding": "fsdp", "devices": 2}))
case("swept-lr-nan", "check_config", "methods.full.sweep.lr")(set_in("methods.full.sweep", {"lr": [math.nan]}))


# local corpora: named file and line, at plan time
@case("local-file-missing", "check_config", "does not exist")
def _(c: dict, tmp: Path) -> None:
    local_corpus(c, str(tmp / "absent.tsv"))


@case("local-file-empty", "check_config", "empty.tsv is empty")
def _(c: dict, tmp: Path) -> None:
    local_corpus(c, write(tmp, "empty.tsv", ""))


@case("local-tsv-header-only", "check_config", "header.tsv has a header and no rows")
def _(c: dict, tmp: Path) -> None:
    local_corpus(c, write(tmp, "header.tsv", "en\tde\n"))


@case("local-tsv-not-utf8", "check_config", "latin1.tsv, line 3: not UTF-8")
def _(c: dict, tmp: Path) -> None:
    local_corpus(c, write(tmp, "latin1.tsv", "en\tde\nhouse\tHaus\nstreet\tStra\xdfe\n".encode("latin-1")))


@case("local-tsv-wrong-columns", "check_config", "cols.tsv, line 1: no column ['de']")
def _(c: dict, tmp: Path) -> None:
    local_corpus(c, write(tmp, "cols.tsv", "en\tfr\nhouse\tmaison\n"))


@case("local-jsonl-bad-line", "check_config", "bad.jsonl, line 2: not JSON")
def _(c: dict, tmp: Path) -> None:
    local_corpus(c, write(tmp, "bad.jsonl", '{"en": "house", "de": "Haus"}\n{"en": "street", "de": \n'))


@case("local-jsonl-missing-column", "check_config", "rows.jsonl, line 3: no column ['de']")
def _(c: dict, tmp: Path) -> None:
    rows = [{"en": "a", "de": "b"}, {"en": "c", "de": "d"}, {"en": "e", "deu": "f"}]
    local_corpus(c, write(tmp, "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))


@case("local-split-mapping-without-train", "schema", "On instance['tasks']['en-de']['corpus']['path']")
def _(c: dict, tmp: Path) -> None:
    local_corpus(c, {"dev": write(tmp, "dev.tsv", "en\tde\na\tb\n")})


@case("local-parquet-no-rows", "check_config", "none.parquet has no rows")
def _(c: dict, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"en": pa.array([], pa.string()), "de": pa.array([], pa.string())}), tmp / "none.parquet")
    local_corpus(c, str(tmp / "none.parquet"))


@case("local-classification-no-label", "check_config", "texts.tsv, line 1: no column ['label']")
def _(c: dict, tmp: Path) -> None:
    c["tasks"]["topic"].update(eval_languages=["en"], corpus={"source": "local", "path": write(
        tmp, "texts.tsv", "text\tcategory\nGermany\tterritory\n")})


# model families: a BART folder (config.json only: planning reads no weights)
def bart_model(c: dict, tmp: Path) -> None:
    (tmp / "bart").mkdir()
    (tmp / "bart" / "config.json").write_text(json.dumps({"model_type": "bart"}))
    c["base_models"]["bart"] = {"source": "local", "path": str(tmp / "bart")}
    c["tasks"]["en-de"]["base_model"] = "bart"


case("lora-on-unsupported-family", "check_config", "methods.lora (lora) on task en-de: base model 'bart' is of the "
     "unsupported model family 'bart'")(lambda c, tmp: (bart_model(c, tmp), add_lora(c)))
case("bitfit-on-unsupported-family", "check_config", "methods.bitfit (bitfit) on task en-de")(
    lambda c, tmp: (bart_model(c, tmp), c["methods"].update(bitfit={"method": "bitfit"}),
                    c["grid"]["methods"].append("bitfit")))


# decoder-only models: the prompt template, and the built architecture
def llama_model(c: dict, tmp: Path) -> None:
    """en-de on a local decoder-only folder (a Llama config.json: planning reads no weights)."""
    (tmp / "llama").mkdir()
    (tmp / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    c["base_models"]["llama"] = {"source": "local", "path": str(tmp / "llama")}
    c["tasks"]["en-de"]["base_model"] = "llama"


case("prompt-unknown-placeholder", "check_config", "tasks.en-de (base model llama): prompt_template "
     "'Translate {src}: {source}' has the placeholder {src}")(
    lambda c, tmp: (llama_model(c, tmp), c["base_models"]["llama"].update(prompt_template="Translate {src}: {source}")))
case("prompt-without-source", "check_config", "has no {source}")(
    lambda c, tmp: (llama_model(c, tmp), c["base_models"]["llama"].update(prompt_template="Translate to German:")))
case("prompt-on-encoder-decoder", "check_config", "tasks.en-de (base model tiny-marian): prompt_template is for "
     "decoder-only models")(set_in("base_models.tiny-marian.prompt_template", "{source}"))
case("prompt-source-prefix-on-decoder", "check_config", "not by source_prefix")(
    lambda c, tmp: (llama_model(c, tmp), c["base_models"]["llama"].update(source_prefix=">>de<< ")))
case("build-unknown-architecture", "schema", "'gpt2' is not one of")(
    set_in("base_models.tiny-marian.build.architecture", "gpt2"))


# peft's tuners (the generic `peft` method): the tuner's name is checked without peft, its config fields by peft
# when planning solves the budget, and a tuner the model cannot take is refused then too
def add_peft(c: dict, options: dict) -> None:
    c["methods"]["tuner"] = {"method": "peft", "options": options}
    c["grid"]["methods"].append("tuner")


def t5_classifier(c: dict, tmp: Path) -> None:
    (tmp / "t5").mkdir()
    (tmp / "t5" / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 32, "d_kv": 16, "d_ff": 64,
                                                        "num_layers": 1, "num_heads": 2, "vocab_size": 100}))
    c["base_models"]["t5"] = {"source": "local", "path": str(tmp / "t5")}
    c["tasks"]["topic"]["base_model"] = "t5"


case("peft-unknown-tuner", "check_config", "methods.tuner.options: peft: unknown tuner 'DORA'; supported: [")(
    lambda c, tmp: add_peft(c, {"tuner": "DORA"}))
case("peft-knob-in-config", "check_config", "methods.tuner.options: peft: LORA config field 'r' cannot be given in "
     "'config': the option 'size' (or the budget) sets it")(lambda c, tmp: add_peft(c, {"config": {"r": 4}}))
case("peft-unknown-tuner-option", "check_config", "methods.tuner on base model tiny-marian (task en-de): peft: "
     "LoraConfig has no field 'use_droa'")(lambda c, tmp: add_peft(c, {"config": {"use_droa": True}}))
case("peft-adalora-penalty", "check_config", "methods.tuner.options: peft: ADALORA needs config {orth_reg_weight: 0}")(
    lambda c, tmp: add_peft(c, {"tuner": "ADALORA"}))
case("peft-bad-tuner-value", "check_config", "methods.tuner on base model tiny-marian (task en-de): peft: ADALORA "
     "config {'orth_reg_weight': 0}: AdaLoRA does not work when `total_step` is None")(
    lambda c, tmp: add_peft(c, {"tuner": "ADALORA", "config": {"orth_reg_weight": 0}}))
case("peft-tuner-unsupported-by-family", "check_config", "methods.tuner on base model t5 (task topic): peft: "
     "PROMPT_TUNING needs a model that takes inputs_embeds; T5ForSequenceClassification does not")(
    lambda c, tmp: (t5_classifier(c, tmp), add_peft(c, {"tuner": "PROMPT_TUNING"})))


# HF_HUB_OFFLINE: what the local cache lacks is named before any job retries the hub
def hub_model(c: dict, tmp: Path) -> None:
    c["base_models"]["hubm"] = {"source": "hub", "id": "acme/not-downloaded"}
    c["tasks"]["topic"]["base_model"] = "hubm"


case("offline-hub-model-not-cached", "check_offline_cache", "base_models.hubm (acme/not-downloaded)")(hub_model)
case("offline-hub-dataset-not-cached", "check_offline_cache", "tasks.topic.corpus.dataset (acme/no-such-data)")(
    lambda c, tmp: c["tasks"]["topic"].update(eval_languages=["en"], corpus={
        "source": "hf", "dataset": "acme/no-such-data", "columns": {"text": "text", "label": "label"}}))
case("unknown-method", "check_config", "methods.lora2: unknown method 'loraa'")(
    lambda c, tmp: c["methods"].update(lora2={"method": "loraa"}))
case("grid-names-unknown-task", "check_config", "grid.tasks names 'en-ru'")(set_in("grid.tasks", ["en-de", "en-ru"]))


def run_case(case_id: str, tmp: Path) -> tuple[str, str]:
    _, _, edit, _ = next(c for c in CASES if c[0] == case_id)
    config = base_config()
    text = edit(config, tmp)
    path = tmp / "study.yaml"
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(config))
    env = {"HF_HUB_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return plan(path, hub_cache=tmp / "hub-cache", datasets_cache=tmp / "datasets-cache")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_there_are_many_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 45


@pytest.mark.parametrize(("case_id", "where", "message"), [(c[0], c[1], c[3]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_refused_at_plan_time_by_name(case_id, where, message, tmp_path):
    caught, text = run_case(case_id, tmp_path)
    assert (caught, message in text) == (where, True), text


def test_the_unedited_base_plans(tmp_path):
    assert run_case("unknown-top-level-key", tmp_path) != ("ok", "")  # the harness reports failures ...
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    assert plan(path, tmp_path, tmp_path) == ("ok", "")  # ... and passes the base (HF_HUB_OFFLINE unset or set)


def test_good_local_corpora_plan(tmp_path):
    """The other side of the local-file cases: each format, with its columns, passes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from peftlab.data import check_corpus_spec

    task = {"kind": "translation", "source_lang": "en", "target_lang": "de"}
    pq.write_table(pa.table({"en": ["house"], "de": ["Haus"]}), tmp_path / "ok.parquet")
    files = [write(tmp_path, "ok.tsv", "en\tde\nhouse\tHaus\n"), str(tmp_path / "ok.parquet"),
             write(tmp_path, "ok.jsonl", '{"en": "house", "de": "Haus"}\n\n'),
             write(tmp_path, "wmt.jsonl", '{"translation": {"en": "house", "de": "Haus"}}\n')]
    for path in files:
        check_corpus_spec({**task, "corpus": {"source": "local", "path": path}})
    check_corpus_spec({"kind": "classification", "language": "en", "corpus": {
        "source": "local", "path": write(tmp_path, "cls.tsv", "text\tlabel\nGermany\tterritory\n")}})


def test_the_strict_reader_reads_as_pyyaml_does(tmp_path):
    """Reference: PyYAML's own SafeLoader. A merge key (<<: *anchor) overridden in place is not a repeat."""
    merged = tmp_path / "merged.yaml"
    merged.write_text("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  b: 3\n")
    for path in [merged, *(REPO / "config").glob("*.yaml"), *(REPO / "config" / "studies").glob("*.yaml")]:
        assert load_yaml(path) == yaml.safe_load(path.read_text()), path


def test_the_study_name_check_does_not_rely_on_the_schema():
    config = base_config()
    validate(config, SCHEMA)
    for name in ("..", ".", "a/b", "../results"):
        with pytest.raises(grid.ConfigError, match="study"):
            grid.check_config({**config, "study": name})


def test_full_and_base_accept_any_family(tmp_path):
    """Planning passes full and base on BART (no attach points), and apply_method trains every weight of it."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    from peftlab.methods import apply_method, count_parameters, make_method_config

    config = base_config()
    bart_model(config, tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    assert plan(path, tmp_path, tmp_path) == ("ok", "")
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                                    encoder_attention_heads=2, decoder_attention_heads=2,
                                                    encoder_ffn_dim=32, decoder_ffn_dim=32))
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    model = apply_method(model, make_method_config("full"))
    assert count_parameters(model).trainable == n - sum(
        p.numel() for m in model.modules() if "Sinusoidal" in type(m).__name__ for p in m.parameters())


# --- through snakemake: the checks are wired into planning ---------------------------------------------------

@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from conftest import copy_repo

    return copy_repo(tmp_path_factory.mktemp("bad-configs") / "repo")


def snakemake(workdir: Path, text: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    (workdir / "config" / "bad.yaml").write_text(text)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config/bad.yaml", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300)


@pytest.mark.workflow
@pytest.mark.parametrize("case_id", ["dup-key-task-entry", "unknown-corpus-key", "max-steps-0"])
def test_snakemake_dry_run_stops_naming_the_problem(workdir, case_id, tmp_path):
    _, _, edit, message = next(c for c in CASES if c[0] == case_id)
    config = base_config()
    text = edit(config, tmp_path)
    proc = snakemake(workdir, text if isinstance(text, str) else yaml.safe_dump(config), "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out and "Job stats" not in out, out[-3000:]
    if case_id == "dup-key-task-entry":
        line = 1 + next(i for i, text in enumerate(TEST_YAML.splitlines()) if "target_lang: de," in text)
        assert f"config/bad.yaml, line {line}" in out


@pytest.mark.workflow
def test_snakemake_stops_before_the_first_job_when_offline_and_not_cached(workdir, tmp_path):
    """A dry run shows the plan (it needs no model); a real run stops before its first job."""
    config = base_config()
    hub_model(config, tmp_path)
    config["grid"]["tasks"] = ["topic"]
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    dry = snakemake(workdir, yaml.safe_dump(config), "-n", env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    proc = snakemake(workdir, yaml.safe_dump(config), env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "base_models.hubm (acme/not-downloaded)" in out, out[-3000:]
    assert "Finished job" not in out and not (workdir / "results" / "test").exists()


if __name__ == "__main__":  # the table for the notes: case | caught by | message
    import tempfile

    print("| case | caught by | message |\n|---|---|---|")
    for case_id, _, _, _ in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            where, text = run_case(case_id, Path(tmp))
        text = text.replace(tmp, "<tmp>").removeprefix("Error validating config file.\n")
        first = " ".join(text.split("\n\nFailed validating")[0].split())
        at = f" (at {text.split('On instance')[1].split(':')[0] or 'top level'})" if "On instance" in text else ""
        print(f"| {case_id} | {where} | {first[:200].replace('|', '/')}{at} |")
    print(f"\n{len(CASES)} cases")
