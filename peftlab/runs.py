"""The training stages: pretrain a built base model, and train one run of the grid.

Each takes plain paths and dicts (what a rule hands its script) and writes its outputs atomically,
so a workflow script is only argument plumbing and every stage can be called from a test.
Evaluation and benchmarking live in evaluate.py and bench.py, so that editing them reruns no training.
"""

from __future__ import annotations

import itertools
import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import torch

from peftlab.atomic import follow_umask, make_temp_dir, replace_dir, write_json
from peftlab.data import load_split
from peftlab.data.shards import IGNORE_INDEX, subset_rows
from peftlab.distributed import launch, rank_and_world
from peftlab.methods import (
    DEFAULT_BUDGET_TOLERANCE,
    MethodConfig,
    apply_method,
    count_parameters,
    get_method,
    make_method_config,
    read_method_files,
    save_method,
    solve_budget,
)
from peftlab.models import (
    build_decoder,
    build_marian,
    default_device,
    load_base,
    load_tokenizer,
    model_identity,
    shard_labels,
)
from peftlab.provenance import package_versions, utc_now
from peftlab.train import first_batches, train
from peftlab.train_config import TrainConfig, pretraining_config


def denoising_rows(rows: list[dict], seed: int, drop: float = 0.25) -> list[dict]:
    """mBART-style monolingual rows: the target sentence, with tokens dropped, must be restored.

    The source keeps the row's target-language tag (its first token) and the closing </s>. This
    teaches the decoder a held-out language (its tag and its tokens' embeddings) without ever showing
    the held-out translation direction, as a multilingual model pretrained on monolingual text would.
    """
    rng = np.random.default_rng(seed)
    out = []
    for row in rows:
        body = row["labels"][:-1]
        kept = [t for t in body if rng.random() >= drop] or body[:1]
        out.append({"id": f"dn-{row['id']}", "input_ids": [row["input_ids"][0], *kept, row["labels"][-1]],
                    "labels": row["labels"]})
    return out


def monolingual_rows(rows: list[dict]) -> list[dict]:
    """A decoder-only model's counterpart of denoising_rows: language modelling on the target side alone (the
    row's target tokens and eos, every one a label), so it learns the language without the direction's prompt."""
    out = []
    for row in rows:
        target = [t for t in row["labels"] if t != IGNORE_INDEX]
        out.append({"id": f"lm-{row['id']}", "input_ids": target, "labels": target})
    return out


def interleave(*row_lists: list[dict]) -> list[dict]:
    """Round-robin over several lists, so a truncated prefix covers each of them."""
    return [row for rows in itertools.zip_longest(*row_lists) for row in rows if row is not None]


def pretrain_base(build: dict, tokenizer_dir: Path, shard_dirs: list[Path], out_dir: Path, *,
                  checkpoint_dir: Path, denoise_dirs: list[Path] = (), log_path: Path | None = None,
                  device: str | None = None) -> dict:
    """Pretrain the tiny multilingual Marian (or decoder-only LM: build.architecture) on the tagged (prompted)
    pretraining pairs and save it with its tokenizer.

    `shard_dirs` hold translation pairs; `denoise_dirs` hold pairs whose target side only is used,
    for denoising (see denoising_rows; monolingual_rows for a decoder-only model).
    """
    device = device or default_device()
    tokenizer = load_tokenizer(str(tokenizer_dir))
    cfg = pretraining_config(build.get("train", {}))
    dims = {k: build[k] for k in ("d_model", "layers", "heads", "ffn_dim")}
    architecture = build.get("architecture", "marian")
    if architecture == "marian":
        model, monolingual = build_marian(tokenizer, **dims, seed=cfg.seed), partial(denoising_rows, seed=cfg.seed)
    else:  # the shards of a decoder-only build are its prompts already (build_shards, decoder_only)
        model, monolingual = build_decoder(tokenizer, architecture, **dims, seed=cfg.seed), monolingual_rows
    train_rows = [row for d in shard_dirs for row in load_split(Path(d), "train")]
    train_rows += [row for d in denoise_dirs for row in monolingual(load_split(Path(d), "train"))]
    # Interleave the dev sets so early stopping watches every pretraining task, not the first.
    dev = interleave(*[load_split(Path(d), "dev") for d in shard_dirs],
                     *[monolingual(load_split(Path(d), "dev")) for d in denoise_dirs])
    result = train(model, train_rows, dev[: build.get("dev_examples", 300)], cfg,
                   pad_id=tokenizer.pad_token_id, checkpoint_dir=checkpoint_dir, log_path=log_path, device=device,
                   run_key=json.dumps(build, sort_keys=True))
    tmp = make_temp_dir(out_dir.parent)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    record = {"build": build, "versions": package_versions(), "device": device, **result}
    write_json(record, tmp / "pretrain.json")
    follow_umask(tmp)
    replace_dir(tmp, out_dir)
    return record


def adapt_for_run(model: torch.nn.Module, method_cfg: MethodConfig, train_rows: list[dict], cfg: TrainConfig, *,
                  pad_id: int) -> torch.nn.Module:
    """Apply the method as a run does: its initialisation follows the run's seed, and a method that scores data
    (SparseAdapter's SNIP) scores the first batches the run trains on. Both are fixed by the run, so a resumed
    run, which applies the method again, rebuilds the same model (its checkpoint carries the masks as well)."""
    calibration = first_batches(train_rows, cfg, pad_id, method_cfg.calibration_batches())
    torch.manual_seed(cfg.seed)
    return apply_method(model, method_cfg, calibration=calibration or None)


def train_run(run: dict, *, model_path: str, model_spec: dict, task: dict, shard_dirs: list[Path], method_dir: Path,
              record_path: Path, checkpoint_dir: Path, log_path: Path | None = None, device: str | None = None) -> dict:
    """Apply the run's method at its budget, train it, save the method weights and the run record.

    `run` holds the identity (run_id, study, task, method, method_name, budget, seed), the method's
    `options`, the `train` config, `data_manifest_sha256` and `code_fingerprint`. Several shard
    folders train one multi-task model on the union of their tasks (interleaved, so every task is
    seen from the first step; the target-language tags in the sources tell the pairs apart).
    With `devices` > 1 in the train config, this starts that many processes (peftlab/distributed.py), each of
    which calls train_run again; rank 0 writes the outputs, and the record is read back from `record_path`.
    """
    device = device or default_device()
    devices = TrainConfig.from_dict({**run["train"], "seed": run["seed"]}).devices
    if devices > 1 and rank_and_world()[1] == 1:
        paths = {"shard_dirs": [str(d) for d in shard_dirs], "method_dir": str(method_dir),
                 "record_path": str(record_path), "checkpoint_dir": str(checkpoint_dir),
                 "log_path": str(log_path) if log_path else None}
        launch("peftlab.runs:train_run", {"run": run, "model_path": model_path, "model_spec": model_spec,
                                          "task": task, **paths}, devices, device_type=device.split(":")[0])
        return json.loads(Path(record_path).read_text())
    shard_dirs, method_dir, record_path = [Path(d) for d in shard_dirs], Path(method_dir), Path(record_path)
    checkpoint_dir, log_path = Path(checkpoint_dir), Path(log_path) if log_path else None
    rank = rank_and_world()[0]
    started = utc_now()
    shard_dir = shard_dirs[0]
    labels = shard_labels(shard_dir)
    torch.manual_seed(run["seed"])  # a classification head is initialised inside from_pretrained
    model, _ = load_base(model_path, model_spec, task, num_labels=len(labels) if labels else None, device=device)
    base_total = count_parameters(model).total
    method = get_method(run["method_name"])
    tolerance = run.get("budget_tolerance", DEFAULT_BUDGET_TOLERANCE)
    if method.knob is None:
        method_cfg, rel_error = make_method_config(run["method_name"], run["options"]), None
    else:
        solution = solve_budget(model, run["method_name"], run["options"], float(run["budget"]), tolerance)
        method_cfg, rel_error = solution.config, solution.rel_error
    cfg = TrainConfig.from_dict({**run["train"], "seed": run["seed"]})
    # Nested low-resource subsets are drawn with the task's split seed, not the run's, so every
    # method and seed at one size trains on the same examples.
    train_rows = interleave(*[subset_rows(load_split(d, "train"), run.get("train_size"), task.get("split_seed", 0),
                                          stratify=labels is not None) for d in shard_dirs])
    dev_rows = interleave(*[load_split(d, "dev") for d in shard_dirs])
    model = adapt_for_run(model, method_cfg, train_rows, cfg, pad_id=model.config.pad_token_id)
    counts = count_parameters(model)
    if not any(p.requires_grad for p in model.parameters()):  # `base` on MT; on classification it trains the head
        result = {"train": {"steps": 0, "wall_time_s": 0.0}, "curve": []}
    else:
        result = train(model, train_rows, dev_rows, cfg,
                       pad_id=model.config.pad_token_id, checkpoint_dir=checkpoint_dir, log_path=log_path,
                       device=device, run_key=json.dumps([run, model_path], sort_keys=True, default=str))
    if rank > 0:  # rank 0 writes the outputs
        return result
    method_sha256 = save_method(model, method_cfg, method_dir)
    record = {
        **{k: run[k] for k in ("run_id", "study", "task", "method", "budget", "seed", "code_fingerprint",
                               "data_manifest_sha256")},
        "task_kind": task["kind"], "method_family": run["method_name"],
        "train_size": run.get("train_size"), "n_train": len(train_rows), "tasks": run.get("tasks", [run["task"]]),
        "budget_target": None if run["budget"] == "none" else float(run["budget"]),
        "status": "ok", "error": None, "log_path": str(log_path) if log_path else None,
        "base_model": run["base_model"], "base_model_id": model_identity(model_path, model_spec),
        # what peftlab.load_run needs to rebuild the model outside the workflow
        "base_model_spec": model_spec, "base_model_path": _recorded_path(model_path, model_spec),
        "task_config": task, "labels": labels,
        "method_config": json.loads((method_dir / "method_config.json").read_text()),
        "method_sha256": method_sha256,  # evaluate and benchmark refuse method files that differ
        "adapter_bytes": sum(f.stat().st_size for f in method_dir.glob("*.safetensors")),  # the weights a run ships
        "train_config": {**run["train"], "seed": run["seed"]},
        "params": {"trainable": counts.trainable, "total": base_total,
                   "realised_fraction": counts.trainable / base_total, "rel_error": rel_error,
                   "budget_tolerance": None if method.knob is None else tolerance,
                   "head": getattr(counts, "head", 0)},
        **result, "versions": package_versions(), "device": device,
        "started_at": started, "finished_at": utc_now(),
    }
    write_json(record, record_path)
    return record


def _recorded_path(model_path: str, model_spec: dict) -> str:
    """A local or built base model's folder as an absolute path, so load_run finds it from any working folder."""
    return model_path if model_spec["source"] == "hub" else str(Path(model_path).resolve())


def adopt_shared_training(shared_record: Path, shared_method_dir: Path, run: dict, *, record_path: Path,
                          method_dir: Path, task: dict | None = None) -> dict:
    """One task's view of a multi-task run: the shared model's weights, the shared record under this run's identity.

    The model was trained once on the union of the tasks; each task's run directory holds a copy so
    that evaluation and benchmarking treat it like any other run. `task` (this task's config entry) replaces
    the shared record's, so load_run translates this task's direction.
    """
    record = json.loads(Path(shared_record).read_text())
    tmp = make_temp_dir(Path(method_dir).parent)
    shutil.copytree(shared_method_dir, tmp, dirs_exist_ok=True)
    read_method_files(tmp, record.get("method_sha256") or {})  # the copy is the shared run's, bit for bit
    follow_umask(tmp)  # copytree copies the shared files' modes
    replace_dir(tmp, Path(method_dir))
    identity = {k: run[k] for k in ("run_id", "study", "task", "method", "budget", "seed", "code_fingerprint")}
    record = {**record, **identity, "multitask_run": record["run_id"], "multitask_tasks": record.get("tasks")}
    if task is not None:
        record["task_config"] = task
    write_json(record, record_path)
    return record
