"""Use a trained run outside the workflow: `peftlab.load_run(run_dir)` rebuilds its model from train.json.

    run = peftlab.load_run("results/demo/runs/mt_en_de/lora/0.01/seed0")
    translate(run.model, run.tokenizer, ["Save the file"], languages=run.languages)   # peftlab.translate
    run.model(**run.tokenizer(["Delete"], return_tensors="pt")).logits                # a classification run

The method files are verified against the sha256s the run recorded, and the base model against the identity
it trained on, as evaluation does. LoRA, IA3 and prefix runs also load without peftlab:
PeftModel.from_pretrained(base, run_dir / "method" / "peft") (see docs/reuse.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from peftlab.languages import NO_LANGUAGES, Languages, languages_of
from peftlab.methods import get_method, merge_method
from peftlab.models import is_decoder_only, load_trained, model_identity

# train.json keys load_run reads; runs trained before load_run existed lack the first four
RECORD_KEYS = ("base_model_spec", "base_model_path", "task_config", "labels", "method_sha256", "method_family")


class RunError(ValueError):
    """A run directory that cannot be loaded: no train.json, a failed run, a record without what loading needs."""


@dataclass
class TrainedRun:
    """A run's model, ready for inference (eval mode, on the CPU).

    languages: the translation direction as the run's shards were built (prefix, language codes): pass it to
        peftlab.translate.translate; NO_LANGUAGES for classification.
    labels: a classifier's label names in logit order (also in model.config.id2label); None for translation.
    merged: the method was folded into the base weights (LoRA, IA3): the model is a plain transformers model.
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    languages: Languages
    labels: list[str] | None
    record: dict
    merged: bool


def load_run(run_dir: str | os.PathLike, *, merge: bool = True, base_model_path: str | None = None) -> TrainedRun:
    """The model (and tokenizer) of the run in `run_dir` (the folder holding train.json and method/).

    merge: fold LoRA and IA3 into the base weights (merge_method): the same outputs without the adapters'
        overhead. Other methods cannot be merged and keep their modules; prefix tuning returns peft's PeftModel.
    base_model_path: where the base model is now, when its folder moved since training (a local or built
        model: train.json records the absolute path it trained from). It must be the same model: its identity
        is checked against the run's base_model_id.
    """
    run_dir = Path(run_dir)
    path = run_dir / "train.json"
    if not path.is_file():
        raise RunError(f"{path} does not exist: pass a run directory, results/<study>/runs/<task>/<method>/"
                       "<budget>/seed<seed>")
    record = json.loads(path.read_text())
    if record.get("status") != "ok":
        raise RunError(f"{path}: the run has status {record.get('status')!r} ({record.get('error')}): no model to load")
    if missing := [key for key in RECORD_KEYS if key not in record]:
        raise RunError(f"{path} has no {', '.join(missing)}: it was trained by an older peftlab; retrain it "
                       f"(snakemake --forcerun {path})")
    spec, task, labels = record["base_model_spec"], record["task_config"], record["labels"]
    model_path = base_model_path or record["base_model_path"]
    if spec["source"] != "hub" and not Path(model_path).is_dir():
        raise RunError(f"the base model folder {model_path} ({path}: base_model_path) does not exist; "
                       "pass load_run(..., base_model_path=<where it is now>)")
    if (identity := model_identity(model_path, spec)) != record["base_model_id"]:
        raise RunError(f"the base model at {model_path} is {identity}, but {path} was trained on "
                       f"{record['base_model_id']}: the method's weights only fit the model they were trained on")
    model, tokenizer = load_trained(model_path, spec, task, run_dir / "method", record["method_sha256"],
                                    len(labels) if labels else None)
    merged = merge and get_method(record["method_family"]).mergeable
    if merged:
        model = merge_method(model)
    if labels:
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {name: i for i, name in enumerate(labels)}
    translation = task["kind"] == "translation"
    languages = languages_of(spec, task, decoder_only=is_decoder_only(model)) if translation else NO_LANGUAGES
    return TrainedRun(model=model.eval(), tokenizer=tokenizer, languages=languages, labels=labels, record=record,
                      merged=merged)
