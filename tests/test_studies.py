"""The paper-scale studies under config/studies/: each validates, expands, keeps its budgets reachable on the real
architectures, names only runs it has in its expected figures, and dry-runs with snakemake without the hub.

The dry runs (one snakemake process per study, a few at a time, in a copy of the repository) take from ~10 s (a
few hundred jobs) to ~35 s (4,000 jobs) each; they are marked `workflow` like the other snakemake tests.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import transformers as tf
import yaml
from conftest import copy_repo

from peftlab import grid
from peftlab.methods import get_method, solve_budget
from peftlab.methods.core import untie_output_layer
from peftlab.results import read_expectations

REPO = Path(__file__).resolve().parent.parent
STUDIES = sorted(p for p in (REPO / "config" / "studies").glob("*.yaml") if not p.name.endswith(".expected.yaml"))
IDS = [p.stem for p in STUDIES]
# Paper-scale studies: hub models and data, with the paper's figures beside them (<study>.expected.yaml).
PAPER = [p for p in STUDIES if p.with_name(f"{p.stem}.expected.yaml").exists()]
PAPER_IDS = [p.stem for p in PAPER]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

# The hub checkpoints the studies name, as their config.json describes them (shapes only: counted on the meta
# device). A study naming a model not listed here fails test_every_hub_model_has_a_known_architecture.
ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "google-bert/bert-base-uncased": ("bert", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                                                   num_attention_heads=12, intermediate_size=3072)),
    "google-bert/bert-large-uncased": ("bert", dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=24,
                                                    num_attention_heads=16, intermediate_size=4096)),
    "FacebookAI/roberta-base": ("roberta", dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                                                num_attention_heads=12, intermediate_size=3072,
                                                max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)),
    "FacebookAI/xlm-roberta-base": ("xlm-roberta", dict(vocab_size=250002, hidden_size=768, num_hidden_layers=12,
                                                        num_attention_heads=12, intermediate_size=3072,
                                                        max_position_embeddings=514, type_vocab_size=1,
                                                        pad_token_id=1)),
    "FacebookAI/xlm-roberta-large": ("xlm-roberta", dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24,
                                                         num_attention_heads=16, intermediate_size=4096,
                                                         max_position_embeddings=514, type_vocab_size=1,
                                                         pad_token_id=1)),
    # IndicBERT v2 is BERT-base shaped with a ~250k multilingual vocabulary
    "ai4bharat/IndicBERTv2-MLM-only": ("bert", dict(vocab_size=250000, hidden_size=768, num_hidden_layers=12,
                                                    num_attention_heads=12, intermediate_size=3072)),
    "facebook/mbart-large-50": ("mbart", dict(vocab_size=250054, d_model=1024, encoder_layers=12, decoder_layers=12,
                                              encoder_attention_heads=16, decoder_attention_heads=16,
                                              encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                                              max_position_embeddings=1024)),
    "google/mt5-base": ("mt5", dict(vocab_size=250112, d_model=768, d_kv=64, d_ff=2048, num_layers=12,
                                    num_decoder_layers=12, num_heads=12, feed_forward_proj="gated-gelu",
                                    tie_word_embeddings=False)),
    "google/mt5-large": ("mt5", dict(vocab_size=250112, d_model=1024, d_kv=64, d_ff=2816, num_layers=24,
                                     num_decoder_layers=24, num_heads=16, feed_forward_proj="gated-gelu",
                                     tie_word_embeddings=False)),
    # decoder-only (translation loads them as causal LMs): grouped-query attention, tied embeddings
    "Qwen/Qwen2.5-0.5B": ("qwen2", dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                        num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                                        max_position_embeddings=32768, tie_word_embeddings=True)),
    "Qwen/Qwen2.5-1.5B": ("qwen2", dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                        num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                                        max_position_embeddings=131072, tie_word_embeddings=True)),
}

# run_metrics' vocabulary (peftlab/results/schema.py): what an expected-figures claim may compare.
EVAL_METRICS = {"bleu", "chrf", "ter", "accuracy", "macro_f1", "ood_auroc", "ood_aupr", "ood_fpr95"}
RUN_METRICS = {"cka_mean", "wall_time_s", "time_per_step_s", "tokens_per_s", "time_to_best_s",
               "train_peak_memory_mb", "steps", "trainable_params", "realised_fraction", "latency_ms_b1",
               "latency_ms_b16", "latency_ratio_b1", "latency_ratio_b16"}
METRICS = EVAL_METRICS | {f"{m}_vs_full" for m in EVAL_METRICS} | RUN_METRICS


def load(path: Path) -> dict:
    from snakemake.utils import validate

    config = yaml.safe_load(path.read_text())
    validate(config, str(REPO / "config" / "schema.yaml"))  # fills the schema's defaults, as the Snakefile does
    return config


@pytest.fixture(scope="module", params=PAPER, ids=PAPER_IDS)
def study(request) -> tuple[Path, dict]:
    return request.param, load(request.param)


def missing_local_models(config: dict) -> list[str]:
    """Local base-model folders a study needs that are not there (a demo-scale study reusing the demo's model)."""
    return [spec["path"] for spec in config["base_models"].values()
            if spec["source"] == "local" and not (REPO / spec["path"] / "config.json").exists()]


def test_there_are_the_seed_studies():
    assert {"houlsby2019-glue", "ustun2022-mt", "adapter-efficiency", "cho-ood", "he2021-adapters",
            "sparse-adapter", "coda"} <= set(PAPER_IDS)


def test_config_is_valid_and_named_after_its_file(study):
    path, config = study
    assert config["study"] == path.stem  # aggregate finds config/studies/<study>.expected.yaml by this name
    grid.check_config(config)  # hub models are not cached here: budgets are checked below instead
    for name, spec in config["base_models"].items():
        assert spec["source"] == "hub" and spec.get("id"), f"{name}: studies load their models from the hub"
    for name, task in config["tasks"].items():
        assert task["corpus"]["source"] == "hf" and task["corpus"].get("dataset"), name
    assert grid.expand_runs(config)


def test_planning_a_study_imports_no_torch(tmp_path):
    """Snakemake plans a study's thousands of jobs in one process: checking and expanding the grid must not
    import torch, transformers or peft (about 8 s of a dry run) while no model's architecture is on disk."""
    path = REPO / "config" / "studies" / "ustun2022-mt.yaml"
    code = (
        "import sys, yaml\n"
        "from snakemake.utils import validate\n"
        "from peftlab import grid\n"
        f"config = yaml.safe_load(open({str(path)!r}))\n"
        f"validate(config, {str(REPO / 'config' / 'schema.yaml')!r})\n"
        "grid.check_config(config)\n"
        "assert grid.expand_runs(config)\n"
        "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))\n"
    )
    env = {**os.environ, **OFFLINE, "HF_HUB_CACHE": str(tmp_path)}  # an empty cache: nothing is known
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_replan_reuses_passed_budget_checks(tmp_path):
    """A built or packaged model's architecture is known at plan time, so the budget check imports torch; a
    replan of the same study (a no-op rerun) reads the checks that passed instead and imports none, while a
    budget that fails is solved (and fails) on every plan."""
    cache = tmp_path / "budget-checks.json"
    config = load(REPO / "config" / "test.yaml")
    unreachable = copy.deepcopy(config)
    unreachable["grid"]["budgets"] = [0.9]  # no method entry of the test grid reaches 90% of the model
    with pytest.raises(ValueError, match="budget"):
        grid.check_config(unreachable, budget_cache=cache)
    grid.check_config(config, budget_cache=cache)  # solved here (torch is imported by this module anyway)
    code = (
        "import sys, yaml\n"
        "from pathlib import Path\n"
        "from snakemake.utils import validate\n"
        "from peftlab import grid\n"
        f"config = yaml.safe_load(open({str(REPO / 'config' / 'test.yaml')!r}))\n"
        f"validate(config, {str(REPO / 'config' / 'schema.yaml')!r})\n"
        f"grid.check_config(config, budget_cache=Path({str(cache)!r}))\n"
        "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **OFFLINE}, cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    with pytest.raises(ValueError, match="budget"):
        grid.check_config(unreachable, budget_cache=cache)  # a failure is never remembered as passed


def test_every_hub_model_has_a_known_architecture(study):
    _, config = study
    assert {spec["id"] for spec in config["base_models"].values()} <= set(ARCHITECTURES)


_META: dict[tuple[str, str], torch.nn.Module] = {}


def meta_model(hub_id: str, kind: str) -> torch.nn.Module:
    if (hub_id, kind) not in _META:
        model_type, kwargs = ARCHITECTURES[hub_id]
        config = tf.AutoConfig.for_model(model_type, **kwargs)
        seq2seq = tf.AutoModelForSeq2SeqLM if config.is_encoder_decoder else tf.AutoModelForCausalLM
        auto = seq2seq if kind == "translation" else tf.AutoModelForSequenceClassification
        with torch.device("meta"):
            _META[hub_id, kind] = auto.from_config(config)
        if kwargs.get("tie_word_embeddings") is False:  # as the checkpoint loads (mT5's own lm_head)
            untie_output_layer(_META[hub_id, kind])
    return _META[hub_id, kind]


def test_budgets_hold_their_labels_on_the_real_architectures(study):
    """What grid.check_budgets does at DAG time where the hub models are cached: every sized entry's every budget
    solves within the entry's budget_tolerance (10% unless the entry says otherwise) on the real architecture.
    Plain SparseAdapter (large: false) is matched as its dense adapter, then trains (1 - sparsity) of it."""
    _, config = study
    seen = set()
    for task in config["grid"]["tasks"]:
        entry = config["tasks"][task]
        hub_id = config["base_models"][entry["base_model"]]["id"]
        model = meta_model(hub_id, entry["kind"])
        for name in config["grid"]["methods"]:
            method = config["methods"][name]
            if get_method(method["method"]).knob is None or not grid.runs_on(config, name, task):
                continue
            for budget in grid.method_budgets(config, name):
                key = (hub_id, entry["kind"], name, budget)
                if key in seen:
                    continue
                seen.add(key)
                tolerance = grid.budget_tolerance(config, name)
                # raises BudgetError past the tolerance, naming the budgets the entry could ask for instead
                sol = solve_budget(model, method["method"], method.get("options", {}), float(budget), tolerance)
                if not (method["method"] == "sparse" and not sol.config.large):  # pruned after sizing, on purpose
                    assert abs(sol.rel_error) <= tolerance, f"{name} @ {budget} on {hub_id}: {sol.rel_error:+.1%}"


def test_houlsby_budgets_are_the_papers_adapter_sizes():
    config = load(REPO / "config" / "studies" / "houlsby2019-glue.yaml")
    model = meta_model("google-bert/bert-large-uncased", "classification")
    sizes = [solve_budget(model, "houlsby", {}, b).config.bottleneck for b in config["methods"]["houlsby"]["budgets"]]
    assert sizes == [8, 64, 256]


def test_he2021_adapter_is_bottleneck_64_on_roberta_base():
    """The budget stands for the bottleneck its comment names, on the paper's monolingual model."""
    config = load(REPO / "config" / "studies" / "he2021-adapters.yaml")
    model = meta_model("FacebookAI/roberta-base", "classification")
    (budget,) = config["methods"]["houlsby"]["budgets"]
    assert solve_budget(model, "houlsby", {}, budget).config.bottleneck == 64


def expected_file(path: Path) -> Path:
    return path.with_name(f"{path.stem}.expected.yaml")


def test_expected_figures_name_runs_of_the_study(study):
    """Every claim parses, compares a metric the database has, and each of its selections matches planned runs
    (a typo in a pattern would otherwise leave the claim 'not measured' forever)."""
    path, config = study
    check_claims_name_runs(expected_file(path), config)


def test_demo_expected_figures_name_runs_of_the_demo():
    """The demo (config/config.yaml) has its seed-paper claims too (`make demo` prints them)."""
    config = load(REPO / "config" / "config.yaml")
    check_claims_name_runs(REPO / "config" / "studies" / f"{config['study']}.expected.yaml", config)


def check_claims_name_runs(expected: Path, config: dict) -> None:
    claims = read_expectations(expected, config["study"])
    claims = claims.astype(object).where(claims.notna(), None)  # missing values as None, not NaN
    runs = grid.expand_runs(config)
    has_zero_shot = any(len(config["tasks"][grid.base_name(r.task)].get("eval_languages") or []) > 1 for r in runs)
    retained = {task for spec in config["base_models"].values()
                for task in (spec.get("build") or {}).get("pretrain_tasks", [])}  # evaluate's retained pairs
    for claim in claims.itertuples():
        if claim.metric is None:
            continue
        assert claim.metric in METRICS, f"{claim.claim_id}: unknown metric {claim.metric}"
        if claim.subset is not None:
            assert has_zero_shot or set(claim.subset.split(",")) <= retained, \
                f"{claim.claim_id}: a subset claim in a study without zero-shot test sets or retained pairs"
        sides = [("runs", claim.runs_task_re, claim.runs_method_re, claim.runs_budget_re)]
        if claim.statistic != "value":
            sides.append(("baseline", claim.baseline_task_re or claim.runs_task_re, claim.baseline_method_re,
                          claim.baseline_budget_re))
        for side, task_re, method_re, budget_re in sides:
            matched = [r for r in runs if re.fullmatch(task_re, r.task) and re.fullmatch(method_re, r.method)
                       and re.fullmatch(budget_re, r.budget)]
            assert matched, f"{claim.claim_id}: its {side} match no run of the grid"


# --- run counts, by hand -----------------------------------------------------------------------------------
# Runs per study counted from its YAML by the documented rules (tasks and their train_sizes variants x method
# entries, a knob-less method once, a sized one per budget (its own `budgets:` or the grid's), an lr sweep per
# rate x seeds), not by grid.expand_runs: a change to a study or to the rules has to update these by hand.
RUNS_BY_HAND = {
    "sparse-coda-demo": 1 * 6 * 1 * 1,  # en-de x 6 sized entries x budget 0.01 x seed 0
    "adapter-efficiency": 3 * (1 + 5 * 1) * 3,  # 3 tasks x (full + 5 sized, one budget each) x 3 seeds
    "cho-ood": 4 * (1 + 4 * 2) * 3,  # 4 tasks x (full + 4 sized x 2 budgets) x 3 seeds
    "coda": 6 * (1 + 3 * 2) * 3,  # 6 tasks x (full + 3 sized x 2 budgets) x 3 seeds
    "he2021-adapters": 11 * (5 + 5 * 1) * 3,  # 6 tasks + 5 with train_sizes [1000] x (full, houlsby) x 5 rates
    "houlsby2019-glue": 7 * (1 + 4 + 3 * 3 + 1) * 3,  # base + full x 4 rates + houlsby 3 budgets x 3 rates + lntuning
    "llm-mt": 6 * (3 + 3 * 2 + 1) * 3,  # 6 tasks x (base, full, ia3 + lora, dora, houlsby x 2 budgets + vera) x 3
}


def test_the_grid_expands_by_the_documented_rules():
    """A config exercising every rule at once, counted by hand."""
    config = {
        "study": "s",
        "tasks": {"en-de": {"kind": "translation", "train_sizes": [100, 1000]}, "en-fr": {"kind": "translation"},
                  "sst2": {"kind": "classification"}},
        "methods": {"full": {"method": "full"},  # no size knob: once, whatever the budgets
                    "lora": {"method": "lora", "sweep": {"lr": [1e-3, 1e-4]}},  # per rate and budget
                    "houlsby": {"method": "houlsby", "budgets": [0.05], "tasks": ["sst2"]},  # its own budget, task
                    "shared": {"method": "lora", "multitask": True}},  # translation tasks only
        "grid": {"tasks": ["en-de", "en-fr", "sst2"], "methods": ["full", "lora", "houlsby", "shared"],
                 "budgets": [0.01, 0.1], "seeds": [0, 1]},
    }
    runs = {r.run_id for r in grid.expand_runs(config)}
    # 4 task variants (en-de~n100, en-de~n1000, en-fr, sst2); per seed: full 4 + lora 4 x 2 rates x 2 budgets
    # + houlsby 1 + shared 3 translation variants x 2 budgets = 4 + 16 + 1 + 6 = 27
    assert len(runs) == 27 * 2
    assert {"s/en-de~n100/full/none/seed1", "s/en-fr/lora~lr0.0001/0.1/seed0", "s/sst2/houlsby/0.05/seed1",
            "s/en-de~n1000/shared/0.01/seed0"} <= runs
    assert not {r for r in runs if "/sst2/shared/" in r or "/en-de/" in r or ("houlsby" in r and "sst2" not in r)}


@pytest.mark.parametrize("name", sorted(RUNS_BY_HAND))
def test_a_studys_run_count_matches_a_hand_count(name):
    assert len(grid.expand_runs(load(REPO / "config" / "studies" / f"{name}.yaml"))) == RUNS_BY_HAND[name]


# --- dry runs -----------------------------------------------------------------------------------------------

def dry_run(workdir: Path, path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "host", "reason",
           "--configfile", str(path.relative_to(REPO))]
    env = {**os.environ, **OFFLINE}
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[str, Future]:
    """All studies' dry runs, a few at a time, in a copy of the repository (no results there)."""
    workdir = copy_repo(tmp_path_factory.mktemp("studies") / "repo")
    for path in STUDIES:  # local base models (outside the copy: results/ is not copied) are linked in
        for spec in load(path)["base_models"].values():
            if spec["source"] == "local" and (REPO / spec["path"]).exists() and not (workdir / spec["path"]).exists():
                (workdir / spec["path"]).parent.mkdir(parents=True, exist_ok=True)
                (workdir / spec["path"]).symlink_to(REPO / spec["path"])
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        # largest first, so that a long one does not start last
        order = sorted((p for p in STUDIES if not missing_local_models(load(p))),
                       key=lambda p: -len(grid.expand_runs(load(p))))
        yield {path.stem: pool.submit(dry_run, workdir, path) for path in order}


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:", 1)[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.workflow
@pytest.mark.parametrize("path", STUDIES, ids=IDS)
def test_study_dry_runs_without_the_hub(dry_runs, path):
    missing = missing_local_models(load(path))
    if missing:
        pytest.skip(f"needs the local base model(s) {missing} (make demo builds them)")
    proc = dry_runs[path.stem].result()
    assert proc.returncode == 0, f"snakemake -n failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    counts = job_counts(proc.stdout)
    # the hand count where there is one, so that the jobs are not checked against the code that plans them
    n_runs = RUNS_BY_HAND.get(path.stem) or len(grid.expand_runs(load(path)))
    assert counts["train"] == counts["evaluate"] == counts["benchmark"] == n_runs
    assert counts["aggregate"] == 1 and counts["total"] > 3 * n_runs
