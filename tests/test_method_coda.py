"""CoDA (method `coda`): exact-k routing that never picks padding, equivalence with frozen layer + parallel adapter
when every token is routed, masks and T5 position bias cut down correctly, generate(), save/load, training.
Tiny random models throughout."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import transformers as tf

from peftlab.methods import (
    MethodError,
    apply_method,
    count_parameters,
    load_method,
    make_method_config,
    save_method,
    solve_budget,
)
from peftlab.methods.coda import layer as coda_layer
from peftlab.methods.coda.layer import CodaLayer, ParallelLayer
from peftlab.methods.tiny import DECODER_FAMILIES, example_batch, tiny_model

torch.set_num_threads(1)

FAMILIES = [("bert", "classification"), ("roberta", "classification"), ("xlm-roberta", "classification"),
            ("marian", "seq2seq"), ("mbart", "seq2seq"), ("m2m_100", "seq2seq"), ("t5", "seq2seq"), ("mt5", "seq2seq")]
IDS = [f for f, _ in FAMILIES]


def _coda(family: str, task: str, layers: int = 2, attention: str | None = None, **options):
    model = tiny_model(family, task, layers=layers)
    if attention:
        model.set_attn_implementation(attention)
    cfg = make_method_config("coda", {"bottleneck": 4} | options)
    torch.manual_seed(1)
    return model, apply_method(copy.deepcopy(model), cfg), cfg


def _randomise(model) -> None:
    """Move routers and adapters away from their initialisation (the up-projections start at zero)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (CodaLayer, ParallelLayer)):
                for p in module.method_parameters():
                    p.normal_(std=0.3)


def _padded_batch(model, length: int = 9):
    batch = example_batch(model, batch=3, length=length)
    batch["attention_mask"][1, -3:] = 0  # right padding
    batch["attention_mask"][2, -5:] = 0
    return batch


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _wrappers(model, cls) -> list:
    return [m for m in model.modules() if isinstance(m, cls)]


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize("k_ratio", [1 / 8, 1 / 4, 1 / 3, 1 / 2, 1.0])
def test_select_tokens_picks_exactly_k_and_never_padding(k_ratio: float) -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([16, 1, 9, 13, 0])
    valid = torch.arange(16)[None, :] < lengths[:, None]
    valid[3] = valid[3][torch.randperm(16, generator=gen)]  # padding anywhere, not only at the end
    scores = torch.randn(5, 16, generator=gen)
    scores[~valid] += 100.0  # padding scores highest: still never routed
    k = coda_layer.tokens_to_route(valid, k_ratio)
    idx, routed = coda_layer.select_tokens(scores, valid, k)
    assert idx.shape[1] == int(k.max())
    for b in range(5):
        n = int(valid[b].sum())
        assert int(k[b]) == min(n, max(1, math.ceil(k_ratio * n - 1e-9)))
        chosen = idx[b][routed[b]]
        assert len(chosen) == int(k[b]) and len(set(chosen.tolist())) == len(chosen)
        assert valid[b, chosen].all()
        assert chosen.tolist() == sorted(chosen.tolist())
        real = scores[b][valid[b]]
        if len(chosen):  # the k best-scored real tokens
            assert scores[b, chosen].min() >= real.topk(len(chosen)).values.min()
        assert set(idx[b].tolist()).__len__() == idx.shape[1]  # unused slots are distinct too


def test_soft_topk() -> None:
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 12, generator=gen) * 3
    valid = torch.ones(3, 12, dtype=torch.bool)
    valid[1, 8:] = False
    k = torch.tensor([3, 8, 6])
    for spread in (0.1, 1.0, 30.0):  # from nearly uniform to nearly hard
        lam = coda_layer.soft_topk(scores * spread, valid, k)
        assert ((lam >= 0) & (lam <= 1)).all()
        assert torch.equal(lam[1], valid[1].float())  # every real token routed: exactly 1, padding exactly 0
        torch.testing.assert_close(lam[[0, 2]].sum(dim=1), k[[0, 2]].float(), atol=1e-4, rtol=0)
        order = scores[0].argsort()
        assert (lam[0][order].diff() >= -1e-6).all()  # monotone in the score
    # the solution maximises s.lambda + H(lambda): a step along a feasible direction does not improve it
    s = scores[0].clone().requires_grad_(True)
    lam = coda_layer.soft_topk(s[None], valid[:1], k[:1])[0]
    free = (lam > 1e-6) & (lam < 1 - 1e-6)
    grad_objective = scores[0] - torch.log(lam.detach().clamp(min=1e-30))  # d/d lambda of s.l - sum l log l
    spread = grad_objective[free].max() - grad_objective[free].min()
    assert spread < 1e-3
    lam.sum().backward()  # differentiable in the scores
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("family,task", FAMILIES, ids=IDS)
def test_router_picks_k_real_tokens_in_the_model(family: str, task: str, monkeypatch) -> None:
    _, model, _ = _coda(family, task, k_ratio=0.25)
    calls, widths = [], []
    select = coda_layer.select_tokens

    def spy(scores, valid, k):
        idx, routed = select(scores, valid, k)
        calls.append((valid.clone(), k.clone(), idx, routed))
        return idx, routed

    monkeypatch.setattr(coda_layer, "select_tokens", spy)
    for layer in _wrappers(model, CodaLayer):
        layer.base_layer.register_forward_pre_hook(lambda m, args: widths.append(args[0].shape[1]))
    batch = _padded_batch(model, length=12)
    _logits(model, batch)
    assert len(calls) == 2 and len(widths) == 2  # each encoder layer routes once; the decoder is dense
    real = batch["attention_mask"].bool()
    for (valid, k, idx, routed), width in zip(calls, widths, strict=True):
        assert torch.equal(valid, real)
        assert k.tolist() == [math.ceil(n / 4) for n in real.sum(dim=1).tolist()]
        assert routed.sum(dim=1).tolist() == k.tolist()
        assert real.gather(1, idx)[routed].all()
        assert width == int(k.max()) < real.shape[1]


# ---------------------------------------------------------------- what the layer computes


def _reference(base, coda, cfg):
    """The base model with each wrapped layer's adapter added in parallel: frozen layer + parallel adapter."""
    ref = copy.deepcopy(base)
    wrapped = {n: m for n, m in coda.named_modules() if isinstance(m, (CodaLayer, ParallelLayer))}
    for name, wrapper in wrapped.items():
        def hook(module, args, kwargs, output, adapter=wrapper.adapter):
            x = args[0] if args else kwargs["hidden_states"]
            delta = cfg.scaling * adapter(x)
            return (output[0] + delta, *output[1:]) if isinstance(output, tuple) else output + delta

        ref.get_submodule(name).register_forward_hook(hook, with_kwargs=True)
    return ref


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family,task", FAMILIES, ids=IDS)
def test_full_k_is_frozen_layer_plus_parallel_adapter(family: str, task: str, attention: str) -> None:
    base, model, cfg = _coda(family, task, attention=attention, k_ratio=1.0, scaling=2.0)
    batch = example_batch(base, batch=2, length=8)
    assert torch.equal(_logits(model, batch), _logits(base, batch))  # the adapters start at zero
    _randomise(model)
    ref = _reference(base, model, cfg)
    assert torch.equal(_logits(model, batch), _logits(ref, batch))  # no padding: bit for bit
    padded = _padded_batch(base)  # padding skips the layer in CoDA; nothing real attends to it
    torch.testing.assert_close(_logits(model, padded), _logits(ref, padded), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("family,task,block", [("bert", "classification", 1), ("marian", "seq2seq", 0),
                                               ("t5", "seq2seq", 0), ("t5", "seq2seq", 1)])
def test_routed_tokens_see_only_each_other_at_their_own_positions(
    family: str, task: str, block: int, attention: str, monkeypatch
) -> None:
    """A routed token's new state is the frozen layer's output for it when every unrouted token is masked out
    of attention: the mask is cut down correctly and T5's relative positions are the original ones."""
    base, model, cfg = _coda(family, task, attention=attention, k_ratio=0.4, gate="sigmoid")
    _randomise(model)
    layer = _wrappers(model, CodaLayer)[block]
    routing = []
    select = coda_layer.select_tokens
    monkeypatch.setattr(coda_layer, "select_tokens", lambda s, v, k: routing.append(select(s, v, k)) or routing[-1])
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 10, base.config.hidden_size, generator=gen)
    real = torch.ones(3, 10, dtype=torch.bool)
    real[1, 7:] = real[2, 4:] = False
    dtype = x.dtype
    keys = real[:, None, None, :].expand(3, 1, 10, 10)
    mask = keys if attention == "sdpa" else torch.zeros(3, 1, 10, 10).masked_fill(~keys, torch.finfo(dtype).min)
    bias = None
    if family == "t5":
        bias = layer._t5_bias(10, x.device) if block else None  # blocks after the first get the stack's bias
    layer.eval()
    with torch.no_grad():
        out = layer(x, mask, bias) if family == "t5" else layer(x, mask)
        out = out[0] if isinstance(out, tuple) else out
        idx, routed = routing[-1]
        chosen = torch.zeros(3, 10, dtype=torch.bool)
        chosen.scatter_(1, idx, routed)
        only = chosen[:, None, None, :].expand(3, 1, 10, 10)
        ref_mask = only if attention == "sdpa" else torch.zeros(3, 1, 10, 10).masked_fill(~only, torch.finfo(dtype).min)
        if family == "t5":
            full = layer.base_layer(x, ref_mask, bias)[0]
        else:
            full = layer.base_layer(x, ref_mask)
        lam = layer.gates(layer.router(x).squeeze(-1), real, coda_layer.tokens_to_route(real, 0.4))[..., None]
        parallel = cfg.scaling * layer.adapter(x)
    expected = torch.where(chosen[..., None], x + lam * (full - x), x) + parallel
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[~chosen], (x + parallel)[~chosen])  # unrouted tokens skip the layer exactly


@pytest.mark.parametrize("family,task", [("bert", "classification"), ("marian", "seq2seq")])
def test_output_hidden_states_are_the_wrappers_outputs(family: str, task: str) -> None:
    """transformers records hidden states with hooks on the layer classes, i.e. on the frozen layer inside a
    wrapper, which sees the routed tokens only (and no decoder adapter): the wrappers put their own outputs in."""
    _, model, _ = _coda(family, task, k_ratio=0.5)
    _randomise(model)
    outputs = {CodaLayer: [], ParallelLayer: []}
    for cls, found in outputs.items():
        for layer in _wrappers(model, cls):
            layer.register_forward_hook(lambda m, a, o, found=found: found.append(o[0] if isinstance(o, tuple) else o))
    batch = _padded_batch(model)
    model.eval()
    with torch.no_grad():
        result = model(**batch, output_hidden_states=True)
    encoder = result.hidden_states if family == "bert" else result.encoder_hidden_states
    assert len(encoder) == 3 and all(s.shape == (3, 9, model.config.hidden_size) for s in encoder)
    assert torch.equal(encoder[1], outputs[CodaLayer][0]) and torch.equal(encoder[2], outputs[CodaLayer][1])
    if family != "bert":
        assert torch.equal(result.decoder_hidden_states[1], outputs[ParallelLayer][0])


# ---------------------------------------------------------------- method-level checks


@pytest.mark.parametrize("family", ["marian", "t5", "mbart"])
def test_generate_works(family: str) -> None:
    _, model, _ = _coda(family, "seq2seq", k_ratio=0.5)
    _randomise(model)
    batch = _padded_batch(model)
    model.eval()
    out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4)
    assert out.shape[0] == 3
    beams = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=3,
                           num_beams=2)
    assert beams.shape[0] == 3


@pytest.mark.parametrize("gate", ["soft_topk", "sigmoid"])
@pytest.mark.parametrize("family,task", [("bert", "classification"), ("t5", "seq2seq")])
def test_only_coda_params_train_and_the_router_learns(family: str, task: str, gate: str) -> None:
    base, model, _ = _coda(family, task, k_ratio=0.5, gate=gate)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    heads = {n for n in trainable if n.startswith(("classifier", "classification_head"))}
    assert trainable - heads and all(".router." in n or ".adapter." in n for n in trainable - heads)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    batch = _padded_batch(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(**batch).loss.backward()
        routers = [layer.router.weight.grad for layer in _wrappers(model, CodaLayer)]
        assert all(g is not None and torch.isfinite(g).all() for g in routers)
        # every encoder token reaches a seq2seq loss through cross-attention; a classifier pools [CLS] only, and
        # a layer whose routed tokens cannot reach [CLS] rightly gets no gradient
        if task == "seq2seq":
            assert all(g.abs().sum() > 0 for g in routers)
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize("family,task", [("bert", "classification"), ("marian", "seq2seq"), ("t5", "seq2seq")])
def test_save_load_round_trip(family: str, task: str, tmp_path) -> None:
    _, model, cfg = _coda(family, task, k_ratio=0.25)
    batch = _padded_batch(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sha256 = save_method(model, cfg, tmp_path)
    reloaded = load_method(tiny_model(family, task, layers=2), tmp_path, sha256)
    assert torch.equal(_logits(reloaded, batch), _logits(model, batch))


@pytest.mark.parametrize("family,task", FAMILIES, ids=IDS)
def test_counts(family: str, task: str) -> None:
    base, model, cfg = _coda(family, task)
    d, r = base.config.hidden_size, cfg.bottleneck
    adapter = 2 * d * r + r + d
    decoder = 2 if base.config.is_encoder_decoder else 0
    count = count_parameters(model)
    assert count.trainable == 2 * (adapter + d + 1) + decoder * adapter
    assert count.total == count_parameters(base).total
    _, encoder_only, _ = _coda(family, task, decoder_adapters=False)
    assert count_parameters(encoder_only).trainable == 2 * (adapter + d + 1)
    assert not _wrappers(encoder_only, ParallelLayer)


def test_budget_and_gradient_checkpointing() -> None:
    model = tiny_model("marian", d_model=64, layers=2, vocab=2000)
    solution = solve_budget(model, "coda", {"k_ratio": 0.5}, 0.05)
    assert abs(solution.rel_error) < 0.05
    coda = apply_method(model, solution.config)
    coda.activation_checkpointing_enable()
    coda.train()
    coda(**_padded_batch(coda)).loss.backward()
    assert all(layer.router.weight.grad is not None for layer in _wrappers(coda, CodaLayer))


def test_bad_options_and_unsupported_models() -> None:
    for options in ({"k_ratio": 0}, {"k_ratio": 1.5}, {"router_temperature": 0}, {"gate": "hard"}):
        with pytest.raises(MethodError):
            make_method_config("coda", options)
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100))
    with pytest.raises(MethodError, match="gpt2"):
        apply_method(gpt2, make_method_config("coda", {}))
    with pytest.raises(MethodError, match="deberta-v2"):
        apply_method(tiny_model("deberta-v2", "classification"), make_method_config("coda", {}))
    for family in DECODER_FAMILIES:  # token routing needs an encoder
        for task in ("causal_lm", "classification"):
            with pytest.raises(MethodError, match=f"coda: {family} is a decoder-only model"):
                apply_method(tiny_model(family, task), make_method_config("coda", {}))
