"""peft's tuner catalogue through the generic `peft` method: each tuner x each family (tiny random models) applies,
trains one step, saves, reloads to identical outputs and meets a budget within the solver's tolerance, or is
refused by a named MethodError before training.

The families are tiny.py's (family_tasks), so a family added there joins the table. `python
tests/test_peft_tuners.py` prints the table as markdown (tuner x family: what passed, or the refusal).
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from peftlab.methods import (
    BudgetError,
    MethodError,
    apply_method,
    count_parameters,
    load_method,
    make_method_config,
    save_method,
    solve_budget,
)
from peftlab.methods.core import PEFT_DIR, added_parameters, task_heads
from peftlab.methods.peft.config import TUNERS
from peftlab.methods.tiny import DECODER_FAMILIES, example_batch, family_tasks, tiny_model

torch.set_num_threads(1)

# The catalogue: tuner label -> (peft tuner, its config, a small size). The sizes are small (the checks do
# not depend on size) and fit d_model 32 (OFT's and BOFT's block sizes divide it).
ROWS = {
    "LoRA": ("LORA", {}, 2),
    "DoRA": ("LORA", {"use_dora": True}, 2),
    "rsLoRA": ("LORA", {"use_rslora": True}, 2),
    "PiSSA": ("LORA", {"init_lora_weights": "pissa"}, 2),
    "OLoRA": ("LORA", {"init_lora_weights": "olora"}, 2),
    "AdaLoRA": ("ADALORA", {"target_r": 2, "total_step": 10, "orth_reg_weight": 0}, 4),
    "VeRA": ("VERA", {}, 4),
    "LoHa": ("LOHA", {}, 2),
    "LoKr": ("LOKR", {}, 2),
    "OFT": ("OFT", {}, 4),
    "BOFT": ("BOFT", {}, 4),
    "FourierFT": ("FOURIERFT", {}, 10),
    "prompt tuning": ("PROMPT_TUNING", {}, 3),
    "P-tuning": ("P_TUNING", {"encoder_hidden_size": 8}, 3),
}
CELLS = [(row, f, t) for row in ROWS for f, t in family_tasks()]


def _refusal(row: str, family: str, task: str) -> str | None:
    """The cells the path refuses: peft prepends prompt-learning's virtual tokens as inputs_embeds, which
    encoder-decoder classifiers do not take (test_peft_itself_fails_where_the_path_refuses) and with which
    decoder-only classifiers cannot find the token they classify (test_peft_itself_misclassifies_...)."""
    if task != "classification" or not TUNERS[ROWS[row][0]].prompt_learning:
        return None
    if tiny_model(family, task).config.is_encoder_decoder:
        return "needs a model that takes inputs_embeds"
    return "cannot find the last token" if family in DECODER_FAMILIES else None


def _options(row: str, size: int | None = None) -> dict:
    """The row's options with a size (the row's own by default)."""
    tuner, config, default = ROWS[row]
    return {"tuner": tuner, "config": config, "size": size or default}


def _budgeted(row: str) -> dict:
    """The row's options without a size, for the budget solver to choose."""
    tuner, config, _ = ROWS[row]
    return {"tuner": tuner, "config": config}


def _logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def run_cell(row: str, family: str, task: str, tmp_path) -> str:
    """Every check of one cell; returns what passed (for the printed table). A refusal raises MethodError."""
    base = tiny_model(family, task)
    cfg = make_method_config("peft", _options(row))
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on PiSSA/OLoRA saving, AdaLoRA's total_step, ...
        model = apply_method(copy.deepcopy(base), cfg)
    # only the tuner's parameters (and the head) train; the count is peft's, head excluded
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    heads = {id(p) for h in task_heads(model) for p in h.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in added_parameters(model) if p.requires_grad} | heads
    count = count_parameters(model)
    assert count.trainable > 0 and count.total == count_parameters(base).total
    assert count.trainable + count.head == model.get_nb_trainable_parameters()[0]
    # the budget solver's meta-device count is the real one
    assert solve_budget(base, "peft", _options(row), None).trainable == count.trainable

    batch = example_batch(base)
    before = _logits(model, batch)
    model.train()
    torch.manual_seed(0)  # M2M100's layerdrop (0.05) draws in training mode: the same draw on every run
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch).loss.backward()
    opt.step()
    after = _logits(model, batch)
    assert not torch.equal(before, after), "one optimizer step left the outputs unchanged"

    sha256 = save_method(model, cfg, tmp_path)
    reloaded = load_method(tiny_model(family, task), tmp_path, sha256)
    assert torch.equal(_logits(reloaded, batch), after)
    # peft's own loader reads the run's peft-format copy without peftlab code (docs/reuse.md)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_peft = PeftModel.from_pretrained(tiny_model(family, task), Path(tmp_path) / PEFT_DIR)
    if cfg.tuner == "ADALORA":
        # peft 0.21: a loaded AdaLoRA fails on a batch with labels (AdaLoraModel.forward adds its penalty to the
        # loss and reads trainable_adapter_name, which loading for inference never sets); the layers it loaded
        # sit in the transformers model, which computes the same logits without that step
        by_peft = by_peft.get_base_model()
    torch.testing.assert_close(_logits(by_peft, batch), after, atol=1e-5, rtol=1e-5)

    # a budget between two sizes: the solver picks the closer within its 10% tolerance, and its count is real
    knobs = list(cfg.knob_range(base.config))
    larger = knobs[knobs.index(cfg.size) + 1]
    budget = solve_budget(base, "peft", _options(row, larger), None).trainable * 1.04 / count.total
    sol = solve_budget(base, "peft", _budgeted(row), budget)
    assert abs(sol.rel_error) <= 0.10
    assert sol.trainable == count_parameters(apply_method(copy.deepcopy(base), sol.config)).trainable
    with pytest.raises(BudgetError, match="out of reach"):
        solve_budget(base, "peft", _budgeted(row), 1e-7)
    return f"ok {count.trainable:,}; {budget:.2%} -> {sol.config.size} ({sol.rel_error:+.0%})"


def _ids(cells: list[tuple[str, str, str]]) -> list[str]:
    return [f"{row}-{f}-{t[:3]}" for row, f, t in cells]


@pytest.mark.parametrize("row,family,task", CELLS, ids=_ids(CELLS))
def test_tuner_on_family(row: str, family: str, task: str, tmp_path) -> None:
    refusal = _refusal(row, family, task)
    if refusal is None:
        run_cell(row, family, task, tmp_path)
        return
    # refused by name when applied and when the budget is solved (planning), before any training
    with pytest.raises(MethodError, match=f"peft: {ROWS[row][0]} {refusal}"):
        apply_method(tiny_model(family, task), make_method_config("peft", _options(row)))
    with pytest.raises(MethodError, match=refusal):
        solve_budget(tiny_model(family, task), "peft", _budgeted(row), 0.01)


@pytest.mark.parametrize("tuner", ["PROMPT_TUNING", "P_TUNING"])
@pytest.mark.parametrize("family", ["mbart", "t5"])
def test_peft_itself_fails_where_the_path_refuses(tuner: str, family: str) -> None:
    """The reference for the refusals: peft 0.21 itself applies prompt learning to an encoder-decoder classifier,
    then fails at the first forward (a refusal that is no longer needed fails here)."""
    from peft import PeftType, TaskType, get_peft_model
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    base = tiny_model(family, "classification")
    config = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[tuner]](task_type=TaskType.SEQ_CLS, num_virtual_tokens=3)
    model = get_peft_model(base, config)
    with pytest.raises(NotImplementedError, match="Passing input embeddings is currently not supported"):
        model(**example_batch(base))


@pytest.mark.parametrize("tuner", ["PROMPT_TUNING", "P_TUNING"])
def test_peft_itself_misclassifies_a_padded_row_of_a_decoder_only_classifier(tuner: str) -> None:
    """The reference for the decoder-only refusal: with peft's virtual tokens (inputs_embeds) a Llama classifier
    takes every row's last position, so a right-padded row gets other logits than the same row alone."""
    from peft import PeftType, TaskType, get_peft_model
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    base = tiny_model("llama", "classification")
    config = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[tuner]](task_type=TaskType.SEQ_CLS, num_virtual_tokens=3,
                                                          **({"encoder_hidden_size": 8} if tuner == "P_TUNING" else {}))
    model = get_peft_model(base, config).eval()
    long, short = [5, 6, 7, 8, 9, 2], [5, 6, 2]
    padded = torch.tensor([long, short + [0] * 3])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        together = model(input_ids=padded, attention_mask=(padded != 0).long()).logits
        alone = model(input_ids=torch.tensor([short]), attention_mask=torch.ones(1, 3, dtype=torch.long)).logits
    assert not torch.allclose(together[1], alone[0], atol=1e-4)


def test_every_tuner_has_a_row() -> None:
    assert {tuner for tuner, _, _ in ROWS.values()} == set(TUNERS)


def test_pissa_initialises_from_the_real_weights() -> None:
    """PiSSA (Meng et al. 2024): A = sqrt(S_r) V_r^T, B = U_r sqrt(S_r) from the SVD of the real weight, and the
    frozen weight becomes the residual W - B A, so the adapted model starts from the base model's outputs."""
    base = tiny_model("marian")
    weight = base.model.encoder.layers[0].self_attn.q_proj.weight.detach().clone()
    model = apply_method(copy.deepcopy(base), make_method_config("peft", _options("PiSSA", 3)))
    layer = model.base_model.model.model.encoder.layers[0].self_attn.q_proj
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    a, b, scale = layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.scaling["default"]
    # peft divides S by LoRA's scale, so that scale * B A is the top-3 part; singular vectors' signs are free
    torch.testing.assert_close(a.abs(), ((s[:3] / scale).sqrt()[:, None] * vh[:3]).abs())
    torch.testing.assert_close(scale * b @ a, (u[:, :3] * s[:3]) @ vh[:3])
    torch.testing.assert_close(layer.get_base_layer().weight + scale * b @ a, weight)
    batch = example_batch(base)
    torch.testing.assert_close(_logits(model, batch), _logits(base, batch), atol=1e-5, rtol=1e-5)


def test_bad_tuner_options_are_named() -> None:
    with pytest.raises(MethodError, match=r"unknown tuner 'LORAX'; supported: \['ADALORA'"):
        make_method_config("peft", {"tuner": "LORAX"})
    with pytest.raises(MethodError, match="'r' cannot be given in 'config': the option 'size'"):
        make_method_config("peft", {"tuner": "LORA", "config": {"r": 4}})
    with pytest.raises(MethodError, match="'task_type' cannot be given in 'config': peftlab sets it"):
        make_method_config("peft", {"tuner": "VERA", "config": {"task_type": "SEQ_CLS"}})
    with pytest.raises(MethodError, match="size"):
        make_method_config("peft", {"size": "8"})
    model = tiny_model("marian")
    # peft's own field list and checks, when the method is applied (and when planning solves its budget)
    with pytest.raises(MethodError, match=r"LoraConfig has no field 'use_droa'; its fields: \[.*'use_dora'"):
        apply_method(model, make_method_config("peft", {"config": {"use_droa": True}}))
    with pytest.raises(MethodError, match="total_step"):
        apply_method(model, make_method_config("peft", {"tuner": "ADALORA", "config": {"orth_reg_weight": 0}}))
    with pytest.raises(MethodError, match="ADALORA needs config {orth_reg_weight: 0}"):
        make_method_config("peft", {"tuner": "ADALORA", "config": {"total_step": 10}})
    with pytest.raises(MethodError, match="Target modules.*not found"):
        solve_budget(model, "peft", {"config": {"target_modules": ["query"]}}, 0.01)


def test_default_targets_are_the_familys_and_can_be_overridden() -> None:
    model = apply_method(tiny_model("t5"), make_method_config("peft", {"tuner": "LOHA"}))
    assert model.peft_config["default"].target_modules == {"q", "v"}  # families.py's t5 entry
    model = apply_method(tiny_model("t5"), make_method_config("peft", {"tuner": "LOHA", "config": {
        "target_modules": ["o"]}}))
    assert model.peft_config["default"].target_modules == {"o"}


def test_adalora_reallocates_ranks_while_training(tmp_path) -> None:
    """peftlab.train calls AdaLoRA's update_and_allocate every step: by the end, Marian's 6 adapted matrices keep
    target_r x 6 singular values in all (peft's final budget) out of 4 x 6, the others are masked to zero (without
    the calls, all 24 train away from their zero initialisation)."""
    from peftlab.train import train
    from peftlab.train_config import TrainConfig

    config = {"target_r": 1, "total_step": 12, "tinit": 2, "tfinal": 4, "deltaT": 1, "orth_reg_weight": 0}
    model = apply_method(tiny_model("marian"), make_method_config("peft", {"tuner": "ADALORA", "config": config,
                                                                           "size": 4}))
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i in range(48):
        ids = torch.randint(3, 100, (6,), generator=gen).tolist() + [2]
        rows.append({"id": str(i), "input_ids": ids, "labels": ids})
    cfg = TrainConfig(lr=1e-2, batch_size=8, max_steps=12, warmup_steps=2, eval_interval=12, patience=2)
    train(model, rows[:40], rows[40:], cfg, pad_id=0, checkpoint_dir=tmp_path, run_key="k")
    kept = [int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n]
    assert len(kept) == 6 and sum(kept) == 6 * 1  # marian: q and v of the encoder, decoder and cross-attention
    assert model.peft_config["default"].rank_pattern is not None


def test_the_documented_study_entries_are_valid() -> None:
    """docs/extending.md's example entries pass the schema and planning's checks, and peft takes their configs."""
    import re
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    from peftlab import grid

    repo = Path(__file__).resolve().parent.parent
    text = (repo / "docs" / "extending.md").read_text().split("## A peft tuner")[1]
    entries = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))["methods"]
    assert {"dora", "pissa", "vera", "adalora"} <= set(entries)
    config = yaml.safe_load((repo / "config" / "test.yaml").read_text())
    config["methods"] |= entries
    validate(config, str(repo / "config" / "schema.yaml"))
    grid.check_config(config)  # the entries are not in the grid: no budget to solve here
    for entry in entries.values():
        for family, task in (("marian", "seq2seq"), ("bert", "classification")):
            assert solve_budget(tiny_model(family, task), "peft", entry["options"], None).trainable > 0


def test_a_run_trains_and_reloads_through_the_workflows_code(tmp_path) -> None:
    """A PiSSA run as a study's train job makes it (runs.train_run: budget solved on the loaded model, PiSSA's SVD
    of its real weights, training, saving), reloaded by peftlab.load_run and by peft itself to the same outputs."""
    from language_models import build, corpus_file
    from transformers import AutoModelForSeq2SeqLM

    import peftlab
    from peftlab.data import build_shards, prepare_corpus
    from peftlab.languages import languages_of
    from peftlab.models import load_tokenizer
    from peftlab.runs import train_run
    from peftlab.translate import translate

    spec = {"source": "local", "path": str(build("m2m100", tmp_path / "model"))}
    task = {"kind": "translation", "source_lang": "en", "target_lang": "ja", "dev_size": 5, "test_size": 5,
            "split_seed": 0, "corpus": {"source": "local", "path": str(corpus_file(tmp_path / "pairs.jsonl"))}}
    prepare_corpus(task, tmp_path / "corpus")
    build_shards(tmp_path / "corpus", load_tokenizer(spec["path"]), tmp_path / "shards", tokenizer_id="m2m100",
                 languages=languages_of(spec, task))
    options = {"tuner": "LORA", "config": {"init_lora_weights": "pissa", "lora_alpha": 16}}
    base = AutoModelForSeq2SeqLM.from_pretrained(spec["path"])
    budget = solve_budget(base, "peft", options | {"size": 3}, None).realised
    run = {"run_id": "t/mt/pissa/b/seed0", "study": "t", "task": "mt", "method": "pissa", "method_name": "peft",
           "budget": f"{budget:.6g}", "seed": 0, "options": options, "base_model": "tiny", "code_fingerprint": "t",
           "data_manifest_sha256": None,
           "train": {"lr": 0.02, "batch_size": 4, "max_steps": 4, "warmup_steps": 1, "eval_interval": 2, "patience": 4}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record = train_run(run, model_path=spec["path"], model_spec=spec, task=task, shard_dirs=[tmp_path / "shards"],
                           method_dir=tmp_path / "run/method", record_path=tmp_path / "run/train.json",
                           checkpoint_dir=tmp_path / "ckpt")
        loaded = peftlab.load_run(tmp_path / "run")
        by_peft = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(spec["path"]),
                                            tmp_path / "run/method/peft").eval()
    assert record["method_config"]["size"] == 3 and record["method_config"]["config"]["init_lora_weights"] == "pissa"
    assert record["params"]["trainable"] == solve_budget(base, "peft", options | {"size": 3}, None).trainable
    batch = example_batch(loaded.model)
    torch.testing.assert_close(_logits(loaded.model, batch), _logits(by_peft, batch), atol=1e-5, rtol=1e-5)
    sources = ["Save the file", "Open a new window"]
    assert translate(loaded.model, loaded.tokenizer, sources, languages=loaded.languages, num_beams=2,
                     max_new_tokens=8) == translate(by_peft, loaded.tokenizer, sources, languages=loaded.languages,
                                                    num_beams=2, max_new_tokens=8)


def main() -> None:
    """Print the table: one row per tuner, one column per family, each cell what passed or the refusal."""
    import tempfile

    columns = family_tasks()
    refusals: dict[str, list[str]] = {}
    print("ok N; B -> S (E): applies with N trainable parameters (head excluded; = peft's count minus the head), one "
          "step changes the outputs, peftlab and peft reload identical outputs; a budget B is met by size S, E off "
          "(within the 10% tolerance), and an unreachable one is refused by a BudgetError.\n")
    print("| tuner | " + " | ".join(f"{f} ({t[:3]})" for f, t in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for row in ROWS:
        cells = []
        for family, task in columns:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    cells.append(run_cell(row, family, task, tmp))
            except MethodError as err:
                refusals.setdefault(str(err), []).append(f"{row} on {family} ({task})")
                cells.append(f"refused [{list(refusals).index(str(err)) + 1}]")
            except AssertionError as err:
                cells.append(f"FAILS: {err}")
        print(f"| {row} | " + " | ".join(cells) + " |")
        sys.stdout.flush()
    print()
    for i, (message, where) in enumerate(refusals.items(), 1):
        print(f"[{i}] MethodError: {message} ({', '.join(where)})")


if __name__ == "__main__":
    main()
