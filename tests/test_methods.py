"""The method test table: every (method, family) pair meets the same generic checks (peft's TEST_CASES).

Tiny random models keep the whole table to seconds on one core; the real MiniLM checks the same on real
weights.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch
import transformers as tf
from peft import IA3Config, LoraConfig, get_peft_model

from peftlab.methods import (
    METHODS,
    MethodError,
    UnknownMethodError,
    apply_method,
    count_parameters,
    get_method,
    load_method,
    make_method_config,
    merge_method,
    save_method,
    trainable_state_dict,
)
from peftlab.methods.core import added_parameters, task_heads
from peftlab.methods.families import FAMILIES
from peftlab.methods.tiny import (
    CLASSIFIER_FAMILIES,
    DECODER_FAMILIES,
    SEQ2SEQ_FAMILIES,
    example_batch,
    minilm_classifier,
    tiny_model,
)

torch.set_num_threads(1)

FAMILY_TASKS = [(f, "seq2seq") for f in SEQ2SEQ_FAMILIES]
FAMILY_TASKS += [(f, "causal_lm") for f in DECODER_FAMILIES]
FAMILY_TASKS += [(f, "classification") for f in CLASSIFIER_FAMILIES]
OPTIONS = {  # small knobs: the checks do not depend on size
    "base": {},
    "full": {},
    "lora": {"rank": 2},
    "houlsby": {"bottleneck": 4},
    "bitfit": {},
    "lntuning": {},
    "ia3": {},
    "prefix": {"num_virtual_tokens": 3},
    "pfeiffer": {"bottleneck": 4},
    "parallel": {"bottleneck": 4},
    "compacter": {"bottleneck": 8, "phm_dim": 4},
}
UNSUPPORTED = {  # (method, family, task) that must raise MethodError
    ("bitfit", "t5", "seq2seq"),  # T5 and mT5 have no bias terms
    ("bitfit", "mt5", "seq2seq"),
    ("bitfit", "t5", "classification"),
    ("bitfit", "mt5", "classification"),
    ("prefix", "mbart", "classification"),  # peft cannot prefix-tune encoder-decoder classifiers
    ("prefix", "t5", "classification"),
    ("prefix", "mt5", "classification"),
    ("prefix", "deberta-v2", "classification"),  # DeBERTa's encoder takes no past_key_values
    # Llama, Mistral, Qwen3 and Gemma have no bias terms (Qwen2's q/k/v projections have)
    *{("bitfit", f, t) for f in ("llama", "mistral", "qwen3", "gemma") for t in ("causal_lm", "classification")},
}
ALL = [(m, f, t) for m in OPTIONS for f, t in FAMILY_TASKS]
CASES = [c for c in ALL if c not in UNSUPPORTED]
ZERO_CASES = [c for c in CASES if c[0] != "prefix"]  # prefix tuning starts from random virtual tokens
LORA_TARGETS = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "deberta-v2": ("query_proj", "value_proj"),
    "xlm-roberta": ("query", "value"),
    "t5": ("q", "v"),
    "mt5": ("q", "v"),
}
KV = ("key", "value", "k_proj", "v_proj", "k", "v", "key_proj", "value_proj")


def _ids(cases: list[tuple[str, str, str]]) -> list[str]:
    return [f"{m}-{f}-{t[:3]}" for m, f, t in cases]


def _adapted(method: str, family: str, task: str):
    base = tiny_model(family, task)
    cfg = make_method_config(method, OPTIONS[method])
    torch.manual_seed(1)
    return base, apply_method(copy.deepcopy(base), cfg), cfg


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _train(model, batch, steps: int = 3) -> None:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        model(**batch).loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is None or p.requires_grad, f"frozen {name} received a gradient"
        opt.step()
        opt.zero_grad(set_to_none=True)


def _tied_aliases(model, names: set[str]) -> set[str]:
    """state_dict() lists a tied tensor under every name; named_parameters() under the first only."""
    params = dict(model.named_parameters(remove_duplicate=False))
    ids = {id(params[n]) for n in names}
    return {n for n, p in params.items() if id(p) in ids}


# ---------------------------------------------------------------- registry and options


def test_registry_has_every_method() -> None:
    assert set(OPTIONS) <= set(METHODS)
    knobs = {name: spec.knob for name, spec in METHODS.items()}
    assert knobs["lora"] == "rank" and knobs["prefix"] == "num_virtual_tokens"
    assert knobs["houlsby"] == knobs["pfeiffer"] == knobs["parallel"] == knobs["compacter"] == "bottleneck"
    assert all(knobs[m] is None for m in ("base", "full", "bitfit", "lntuning", "ia3"))


def test_unknown_method_lists_registered_names() -> None:
    with pytest.raises(UnknownMethodError, match="lora"):
        get_method("lorax")
    with pytest.raises(MethodError):
        make_method_config("lorax", {})


def test_unknown_or_bad_options() -> None:
    with pytest.raises(MethodError, match=r"'rnak'.*alpha.*rank"):
        make_method_config("lora", {"rnak": 4})
    with pytest.raises(MethodError, match="rank"):
        make_method_config("lora", {"rank": "8"})  # a YAML string is not silently accepted
    with pytest.raises(MethodError, match="bottleneck"):
        make_method_config("houlsby", {"bottleneck": 0})
    with pytest.raises(MethodError, match="multiple of phm_dim"):
        make_method_config("compacter", {"bottleneck": 6, "phm_dim": 4})
    with pytest.raises(MethodError, match="both"):
        make_method_config("ia3", {"target_modules": ["k_proj"]})
    cfg = make_method_config("lora", {"target_modules": ["q_proj"]})
    assert cfg.target_modules == ("q_proj",) and cfg.to_dict()["target_modules"] == ["q_proj"]


def test_unsupported_family_is_named() -> None:
    config = tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100)
    with pytest.raises(MethodError, match="gpt2"):
        apply_method(tf.GPT2LMHeadModel(config), make_method_config("lora", {}))


def test_applying_twice_is_refused() -> None:
    _, model, cfg = _adapted("lora", "marian", "seq2seq")
    with pytest.raises(MethodError, match="already"):
        apply_method(model, cfg)


@pytest.mark.parametrize("method,family,task", sorted(UNSUPPORTED), ids=_ids(sorted(UNSUPPORTED)))
def test_unsupported_pairs_raise(method: str, family: str, task: str) -> None:
    with pytest.raises(MethodError, match=method):
        apply_method(tiny_model(family, task), make_method_config(method, OPTIONS[method]))


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize("method,family,task", CASES, ids=_ids(CASES))
def test_only_method_params_train(method: str, family: str, task: str) -> None:
    _, model, _ = _adapted(method, family, task)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    added = {id(p) for p in added_parameters(model)}
    heads = {id(p) for h in task_heads(model) for p in h.parameters() if p.requires_grad}
    if method in ("base", "full", "bitfit", "lntuning"):
        assert added == set()
    else:  # methods that add parameters train exactly those (and the head)
        assert trainable == added | heads
    if method == "base":
        assert trainable == heads
    if not trainable:
        return
    batch = example_batch(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    _train(model, batch)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable_names = {names[i] for i in trainable}
    assert changed, "nothing trained"
    assert changed <= _tied_aliases(model, trainable_names), "a frozen tensor changed"


@pytest.mark.parametrize("method,family,task", ZERO_CASES, ids=_ids(ZERO_CASES))
def test_outputs_at_init_equal_base(method: str, family: str, task: str) -> None:
    base, model, _ = _adapted(method, family, task)
    batch = example_batch(base)
    assert torch.equal(_logits(model, batch), _logits(base, batch))


@pytest.mark.parametrize("method,family,task", CASES, ids=_ids(CASES))
def test_save_load_reproduces_outputs(method: str, family: str, task: str, tmp_path) -> None:
    _, model, cfg = _adapted(method, family, task)
    batch = example_batch(model)
    if any(p.requires_grad for p in model.parameters()):
        _train(model, batch, steps=2)
    sha256 = save_method(model, cfg, tmp_path)
    saved = json.loads((tmp_path / "method_config.json").read_text())
    assert saved["method"] == method and list(saved) == sorted(saved)
    assert (tmp_path / "method.safetensors").exists()
    fresh = tiny_model(family, task)  # same seed: the same base weights, a different object
    reloaded = load_method(fresh, tmp_path, sha256)
    assert torch.equal(_logits(reloaded, batch), _logits(model, batch))
    assert set(trainable_state_dict(reloaded)) == set(trainable_state_dict(model))


@pytest.mark.parametrize("method,family,task", CASES, ids=_ids(CASES))
def test_counts_match_formulas(method: str, family: str, task: str) -> None:
    base, model, cfg = _adapted(method, family, task)
    before, after = count_parameters(base), count_parameters(model)
    assert after.total == before.total  # the budget denominator does not move
    assert after.head == before.head
    assert after.trainable == _expected_trainable(method, base, cfg)
    # the naive count agrees once the head is added (tied tensors are one Parameter: counted once)
    assert after.trainable + after.head == sum(p.numel() for p in model.parameters() if p.requires_grad)


def _layers(config) -> int:
    """Transformer layers: encoder + decoder."""
    if config.model_type in ("t5", "mt5"):
        return config.num_layers + config.num_decoder_layers
    if config.is_encoder_decoder:
        return config.encoder_layers + config.decoder_layers
    return config.num_hidden_layers


def _backbone(base) -> list[tuple[str, torch.nn.Module]]:
    """Modules outside the task head, by qualified name."""
    heads = ("classifier", "classification_head", "pooler", "score")  # DeBERTa's pooler: beside its classifier
    return [(n, m) for n, m in base.named_modules() if n.split(".")[0] not in heads]


def _expected_trainable(method: str, base, cfg) -> int:
    """The published formulas, computed from the model's shapes without the library's own tables."""
    d, layers = base.config.hidden_size, _layers(base.config)
    bottleneck = 2 * d * getattr(cfg, "bottleneck", 0) + getattr(cfg, "bottleneck", 0) + d  # 2dr + r + d
    linears = [(n, m) for n, m in _backbone(base) if isinstance(m, torch.nn.Linear)]
    if method == "base":
        return 0
    if method == "full":
        return count_parameters(base).total
    if method == "houlsby":  # two adapters per layer (Houlsby et al. 2019)
        return layers * 2 * bottleneck
    if method in ("pfeiffer", "parallel"):  # one adapter per layer
        return layers * bottleneck
    if method == "compacter":  # two PHM adapters per layer, 2k(d + r) + r + d each, n^3 shared rules
        r, k, n = cfg.bottleneck, cfg.phm_rank, cfg.phm_dim
        return layers * 2 * (2 * k * (d + r) + r + d) + n**3
    if method == "lora":  # rank * (in + out) per adapted matrix (Hu et al. 2021)
        targets = LORA_TARGETS.get(base.config.model_type, ("q_proj", "v_proj"))
        adapted = [m for n, m in linears if n.split(".")[-1] in targets]
        return sum(cfg.rank * (m.in_features + m.out_features) for m in adapted)
    if method == "ia3":  # a vector per key and value (output size) and per FFN inner activation (input size)
        kv = sum(m.out_features for n, m in linears if n.split(".")[-1] in KV)
        ffn_out = r"(\bfc2|\bwo|layer\.\d+\.output\.dense|\bdown_proj)$"
        ffn = sum(m.in_features for n, m in linears if re.search(ffn_out, n))
        return kv + ffn
    if method == "prefix":  # length x layers x 2 (key, value) x key/value width, layers as peft counts them
        config = base.config  # grouped-query attention (Llama, Qwen, Gemma, Mistral): fewer key/value heads
        kv = config.num_key_value_heads * config.head_dim if hasattr(config, "num_key_value_heads") else d
        return cfg.num_virtual_tokens * config.num_hidden_layers * 2 * kv
    if method == "bitfit":
        return sum(p.numel() for n, m in _backbone(base) for pn, p in m.named_parameters(recurse=False)
                   if pn == "bias" and "Sinusoidal" not in type(m).__name__)
    if method == "lntuning":
        return sum(p.numel() for _, m in _backbone(base) if type(m).__name__.endswith(("LayerNorm", "RMSNorm"))
                   for p in m.parameters())
    raise AssertionError(method)


@pytest.mark.parametrize("family,task", [c for c in FAMILY_TASKS if c not in {("t5", "classification")}])
@pytest.mark.parametrize("method", ["lora", "ia3", "prefix"])
def test_peft_counts_agree(method: str, family: str, task: str) -> None:
    if (method, family, task) in UNSUPPORTED:
        pytest.skip("unsupported pair")
    base, model, cfg = _adapted(method, family, task)
    count = count_parameters(model)
    if method == "prefix":  # apply_method returned peft's own PeftModel
        assert model.get_nb_trainable_parameters()[0] == count.trainable + count.head
        return
    fam = FAMILIES[family]
    if method == "lora":
        peft_config = LoraConfig(r=cfg.rank, target_modules=list(fam.lora_targets))
    else:
        peft_config = IA3Config(target_modules=fam.ia3_targets, feedforward_modules=fam.ia3_feedforward)
    peft_model = get_peft_model(copy.deepcopy(base), peft_config)
    peft_trainable, peft_all = peft_model.get_nb_trainable_parameters()
    assert count.trainable == peft_trainable
    # peft counts every unique parameter: fixed tables and the head too
    fixed = sum(p.numel() for m in base.modules() if "Sinusoidal" in type(m).__name__ for p in m.parameters())
    assert peft_all == count.total + count.added + count.head + fixed


@pytest.mark.parametrize("family,task", FAMILY_TASKS)
@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merge_matches_unmerged(method: str, family: str, task: str) -> None:
    _, model, _ = _adapted(method, family, task)
    with torch.no_grad():  # move the adapters away from their identity initialisation
        for p in added_parameters(model):
            p.add_(torch.randn_like(p) * 0.5)
    batch = example_batch(model)
    unmerged = _logits(model, batch)
    merged = merge_method(model)
    assert not added_parameters(merged)
    torch.testing.assert_close(_logits(merged, batch), unmerged, rtol=1e-4, atol=1e-5)


def test_merge_refuses_adapters() -> None:
    _, model, _ = _adapted("houlsby", "marian", "seq2seq")
    with pytest.raises(MethodError, match="merge"):
        merge_method(model)


@pytest.mark.parametrize("method", ["lora", "houlsby", "pfeiffer", "prefix", "parallel", "compacter"])
@pytest.mark.parametrize("family", ["marian", "mbart", "t5"])  # mBART: pfeiffer wraps whole pre-LN layers
def test_generate_works_after_apply(method: str, family: str) -> None:
    _, model, _ = _adapted(method, family, "seq2seq")
    batch = example_batch(model)
    model.eval()
    out = model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=3
    )
    assert out.shape[0] == 2


@pytest.mark.parametrize("method", ["lora", "ia3", "houlsby", "pfeiffer", "prefix", "parallel", "compacter"])
@pytest.mark.parametrize("family", ["llama", "gemma"])  # pfeiffer wraps whole decoder layers (KV cache inside)
def test_causal_lm_generates_after_apply(method: str, family: str) -> None:
    base, model, _ = _adapted(method, family, "causal_lm")
    batch = example_batch(model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    base.eval(), model.eval()
    out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)
    if method != "prefix":  # at init the adapted model is the base model: the same greedy continuation
        assert torch.equal(out, base.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False))
    with torch.no_grad():  # trained-looking weights: decoding with the KV cache equals recomputing every step
        for p in added_parameters(model):
            p.add_(torch.randn_like(p))
        seq, mask = inputs["input_ids"], inputs["attention_mask"]
        for _ in range(3):  # greedy by hand, the whole sequence each step (min_new_tokens: EOS is barred)
            logits = model(input_ids=seq, attention_mask=mask).logits[:, -1]
            logits[:, model.config.eos_token_id] = -float("inf")
            seq, mask = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1), torch.cat([mask, mask[:, :1]], 1)
    assert torch.equal(model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False), seq)


def _wrapped(model, cls: str) -> list[str]:
    return sorted(n for n, m in model.named_modules() if type(m).__name__ == cls)


def test_attach_points() -> None:
    _, model, _ = _adapted("houlsby", "marian", "seq2seq")
    assert _wrapped(model, "AdapterWrapper") == [
        "model.decoder.layers.0.fc2",
        "model.decoder.layers.0.self_attn.out_proj",
        "model.encoder.layers.0.fc2",
        "model.encoder.layers.0.self_attn.out_proj",
    ]
    # Pfeiffer (AdapterHub seq_bn): inside the FFN's LayerNorm (post-LN) or around the sublayer that returns
    # the FFN's residual sum (pre-LN)
    _, model, _ = _adapted("pfeiffer", "bert", "classification")
    assert _wrapped(model, "PostNormAdapter") == ["bert.encoder.layer.0.output.LayerNorm"]
    _, model, _ = _adapted("pfeiffer", "marian", "seq2seq")
    assert _wrapped(model, "PostNormAdapter") == [
        "model.decoder.layers.0.final_layer_norm", "model.encoder.layers.0.final_layer_norm"
    ]
    for family, names in [("mbart", ["model.decoder.layers.0", "model.encoder.layers.0"]),
                          ("m2m_100", ["model.decoder.layers.0", "model.encoder.layers.0"]),
                          ("mt5", ["decoder.block.0.layer.2", "encoder.block.0.layer.1"])]:
        _, model, _ = _adapted("pfeiffer", family, "seq2seq")
        assert _wrapped(model, "SublayerOutputAdapter") == names, family
    _, model, _ = _adapted("parallel", "mt5", "seq2seq")
    assert _wrapped(model, "FFNInputTap") == [  # pre-LN: the FFN sublayer's input is its LayerNorm's
        "decoder.block.0.layer.2.layer_norm",
        "encoder.block.0.layer.1.layer_norm",
    ]
    assert _wrapped(model, "ParallelAdapterWrapper") == [
        "decoder.block.0.layer.2.DenseReluDense.wo",
        "encoder.block.0.layer.1.DenseReluDense.wo",
    ]
    # decoder-only LLMs (pre-norm): Houlsby on o_proj and down_proj, Pfeiffer around the whole decoder layer (it
    # returns s = h + MLP(norm(h))), the parallel adapter reads h where the MLP's RMSNorm does
    for family in DECODER_FAMILIES:
        _, model, _ = _adapted("houlsby", family, "causal_lm")
        assert _wrapped(model, "AdapterWrapper") == ["model.layers.0.mlp.down_proj", "model.layers.0.self_attn.o_proj"]
        _, model, _ = _adapted("pfeiffer", family, "classification")
        assert _wrapped(model, "SublayerOutputAdapter") == ["model.layers.0"]
        _, model, _ = _adapted("parallel", family, "causal_lm")
        assert _wrapped(model, "FFNInputTap") == ["model.layers.0.post_attention_layernorm"]
        assert _wrapped(model, "ParallelAdapterWrapper") == ["model.layers.0.mlp.down_proj"]
    cfg = make_method_config("houlsby", {"bottleneck": 2, "cross_attention": True})
    wrapped = _wrapped(apply_method(tiny_model("marian"), cfg), "AdapterWrapper")
    assert any(n.endswith("encoder_attn.out_proj") for n in wrapped)
    with pytest.raises(MethodError, match="cross_attention"):
        apply_method(tiny_model("bert", "classification"), cfg)
    with pytest.raises(MethodError, match="cross_attention"):  # a decoder-only LLM has no cross-attention
        apply_method(tiny_model("llama", "causal_lm"), cfg)


def test_parallel_adapter_reads_the_ffn_input_and_survives_deepcopy() -> None:
    _, model, _ = _adapted("parallel", "marian", "seq2seq")
    batch = example_batch(model)
    with torch.no_grad():
        for p in added_parameters(model):
            p.normal_()
    expected = _logits(model, batch)
    clone = copy.deepcopy(model)
    tap = clone.get_submodule("model.encoder.layers.0.fc1")
    assert tap.target is clone.get_submodule("model.encoder.layers.0.fc2")
    assert torch.equal(_logits(clone, batch), expected)


def test_compacter_rules_are_shared() -> None:
    _, model, cfg = _adapted("compacter", "marian", "seq2seq")
    rules = {id(m.rule) for m in model.modules() if type(m).__name__ == "PHMLinear"}
    assert len(rules) == 1
    assert sum(k.endswith(".rule") for k in trainable_state_dict(model)) == 1


def test_fixed_position_tables_stay_frozen_and_uncounted() -> None:
    base = tiny_model("marian")
    for p in base.parameters():  # what transformers 5 does on reload
        p.requires_grad_(True)
    model = apply_method(base, make_method_config("full", {}))
    tables = [p for n, p in model.named_parameters() if "embed_positions" in n]
    assert tables and not any(p.requires_grad for p in tables)
    count = count_parameters(model)
    assert count.total == sum(p.numel() for n, p in model.named_parameters() if "embed_positions" not in n)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_rejects_mismatched_weights(tmp_path) -> None:
    _, model, cfg = _adapted("houlsby", "marian", "seq2seq")
    sha256 = save_method(model, cfg, tmp_path)
    config_file = tmp_path / "method_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(config | {"cross_attention": True}))
    with pytest.raises(MethodError, match="missing"):  # recorded as written, the keys still have to fit
        load_method(tiny_model("marian"), tmp_path, sha256 | {config_file.name: _sha256(config_file)})
    config_file.write_text(json.dumps(config | {"bottleneck": 5}))
    with pytest.raises(MethodError, match="shape"):
        load_method(tiny_model("marian"), tmp_path, sha256 | {config_file.name: _sha256(config_file)})


def test_a_corrupted_method_file_is_refused(tmp_path) -> None:
    """Flipped bits in the weights still parse as safetensors (and would evaluate as another model): the
    checksum recorded at save time is what refuses them, naming the file and both hashes."""
    _, model, cfg = _adapted("lora", "marian", "seq2seq")
    _train(model, example_batch(model), steps=1)
    sha256 = save_method(model, cfg, tmp_path)
    weights, config_file = tmp_path / "method.safetensors", tmp_path / "method_config.json"
    assert {k: v for k, v in sha256.items() if "/" not in k} == {weights.name: _sha256(weights),
                                                                config_file.name: _sha256(config_file)}
    assert {k: _sha256(tmp_path / k) for k in sha256 if k.startswith("peft/")} == {  # peft's copy of a LoRA
        k: v for k, v in sha256.items() if k.startswith("peft/")}
    original = weights.read_bytes()
    data = bytearray(original)
    for i in range(len(data) - 64, len(data), 4):  # tensor bytes at the end of the file, not the header
        data[i] ^= 0x40
    weights.write_bytes(bytes(data))
    flipped, saved = safetensors.torch.load_file(weights), safetensors.torch.load(original)  # still parses
    assert set(flipped) == set(saved) and any(not torch.equal(flipped[k], saved[k]) for k in saved)
    with pytest.raises(MethodError) as error:
        load_method(tiny_model("marian"), tmp_path, sha256)
    message = str(error.value)
    assert str(weights) in message and sha256[weights.name] in message and _sha256(weights) in message
    weights.write_bytes(original)
    config_file.write_text(config_file.read_text().replace('"rank": ', '"rank": 1'))
    with pytest.raises(MethodError, match=f"{config_file}.*{_sha256(config_file)}.*{sha256[config_file.name]}"):
        load_method(tiny_model("marian"), tmp_path, sha256)
    with pytest.raises(MethodError, match="no sha256 recorded"):
        load_method(tiny_model("marian"), tmp_path, {})


# ---------------------------------------------------------------- the real MiniLM


@pytest.fixture(scope="module")
def minilm():
    return minilm_classifier().eval()


@pytest.mark.parametrize("method", ["lora", "houlsby", "compacter"])
def test_minilm_init_counts_and_roundtrip(minilm, method: str, tmp_path) -> None:
    options = {"lora": {"rank": 4}, "houlsby": {"bottleneck": 8}, "compacter": {"bottleneck": 8}}[method]
    cfg = make_method_config(method, options)
    model = apply_method(copy.deepcopy(minilm), cfg)
    batch = example_batch(model, length=12)
    assert torch.equal(_logits(model, batch), _logits(minilm, batch))
    count = count_parameters(model)
    assert count.total == count_parameters(minilm).total
    assert count.trainable == _expected_trainable(method, minilm, cfg)
    assert count.head == 384 * 3 + 3
    _train(model, batch, steps=1)
    sha256 = save_method(model, cfg, tmp_path)
    reloaded = load_method(copy.deepcopy(minilm), tmp_path, sha256)
    assert torch.equal(_logits(reloaded, batch), _logits(model, batch))


@pytest.mark.parametrize("family", ["marian", "t5", "bert"])
@pytest.mark.parametrize("scaling,alpha,scale", [
    # hand computation at rank 4: alpha / sqrt(r), alpha / r, and alpha itself (peft's lora_alpha = alpha * r)
    ("rslora", 6.0, 6.0 / 2), ("fixed_alpha", 6.0, 6.0 / 4), ("alpha_per_rank", 6.0, 6.0),
    (None, None, 16.0 / 2),  # the default: rsLoRA with alpha 16
    ("alpha_per_rank", None, 2.0),
])
def test_lora_scale_and_dropout_reach_peft(family: str, scaling: str | None, alpha: float | None, scale: float,
                                           tmp_path) -> None:
    from peft.tuners.lora import LoraLayer

    options = {"rank": 4, "dropout": 0.3} | ({"scaling": scaling} if scaling else {}) | (
        {"alpha": alpha} if alpha else {})
    cfg = make_method_config("lora", options)
    assert cfg.derived()["scale"] == pytest.approx(scale)
    model = apply_method(tiny_model(family, "classification" if family == "bert" else "seq2seq"), cfg)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert layers
    for layer in layers:
        assert layer.scaling["default"] == pytest.approx(scale)
        assert isinstance(layer.lora_dropout["default"], torch.nn.Dropout)
        assert layer.lora_dropout["default"].p == 0.3
    # the forward pass adds scale * B A x, by hand (eval: no dropout)
    layer = layers[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
    layer.eval()
    x = torch.randn(3, layer.in_features)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    torch.testing.assert_close(layer(x), layer.get_base_layer()(x) + scale * x @ a.T @ b.T)
    # the run records the resolved scaling and the effective scale; loading checks them
    sha256 = save_method(model, cfg, tmp_path)
    saved = json.loads((tmp_path / "method_config.json").read_text())
    assert saved["scaling"] == (scaling or "rslora") and saved["alpha"] == cfg.alpha
    assert saved["derived"]["scale"] == pytest.approx(scale)
    load_method(tiny_model(family, "classification" if family == "bert" else "seq2seq"), tmp_path, sha256)
    saved["derived"]["scale"] = 99.0
    config_file = tmp_path / "method_config.json"
    config_file.write_text(json.dumps(saved))
    with pytest.raises(MethodError, match="derived values"):  # checksums that match the edit: the scale check
        load_method(tiny_model(family, "classification" if family == "bert" else "seq2seq"), tmp_path,
                    sha256 | {config_file.name: _sha256(config_file)})


def test_lora_rejects_unknown_scaling() -> None:
    with pytest.raises(MethodError, match="'scaling' must be one of"):
        make_method_config("lora", {"scaling": "rs"})
