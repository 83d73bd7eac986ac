"""SparseAdapter (method `sparse`): exact sparsity, fixed masks through training and reloading, effective counts,
Large-Sparse sizing. Tiny random models; one check on the real MiniLM."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from peftlab.methods import (
    MethodError,
    apply_method,
    count_parameters,
    load_method,
    make_method_config,
    save_method,
    solve_budget,
    trainable_state_dict,
)
from peftlab.methods.sparse.layer import MaskedLinear
from peftlab.methods.sparse.model import prune_at_init
from peftlab.methods.tiny import example_batch, minilm_classifier, tiny_model

torch.set_num_threads(1)

SIZE = {"houlsby": 4, "pfeiffer": 4, "parallel": 4, "lora": 2}
CASES = [(base, fam, task) for base in SIZE for fam, task in [("marian", "seq2seq"), ("bert", "classification")]]
CASES += [(base, "t5", "seq2seq") for base in ("pfeiffer", "lora")]


def _ids(cases) -> list[str]:
    return ["-".join(c) for c in cases]


def _sparse(base: str, family: str, task: str, **options):
    model = tiny_model(family, task)
    cfg = make_method_config("sparse", {"base": base, "size": SIZE[base], "sparsity": 0.6} | options)
    torch.manual_seed(1)
    return model, apply_method(copy.deepcopy(model), cfg), cfg


def _masked(model) -> list[MaskedLinear]:
    return [m for m in model.modules() if isinstance(m, MaskedLinear)]


def _removed_fraction(model) -> float:
    masks = [m.weight_mask for m in _masked(model)]
    return sum(int((~m).sum()) for m in masks) / sum(m.numel() for m in masks)


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _train(model, batch, steps: int = 3) -> None:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for _ in range(steps):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("base,family,task", CASES, ids=_ids(CASES))
def test_pruned_fraction_counts_and_init(base: str, family: str, task: str) -> None:
    model, sparse, cfg = _sparse(base, family, task)
    masked = _masked(sparse)
    assert masked and len(masked) % 2 == 0  # every adapter's two projections (LoRA's A and B)
    n = sum(m.weight.numel() for m in masked)
    removed = sum(int((~m.weight_mask).sum()) for m in masked)
    assert removed == int(0.6 * n + 0.5)  # exact: ranked with topk, not a threshold
    for m in masked:
        assert torch.equal(m.weight * ~m.weight_mask, torch.zeros_like(m.weight))  # pruned entries are zero
    # counts: the dense base method's parameters minus the removed entries; the denominator does not move
    dense = apply_method(copy.deepcopy(model), cfg.base_config())
    count, dense_count = count_parameters(sparse), count_parameters(dense)
    assert count.trainable == dense_count.trainable - removed
    assert count.added == count.trainable and count.total == count_parameters(model).total
    # the adapters still add exactly zero at step 0 (the up-projection starts at zero, pruned or not)
    batch = example_batch(model)
    assert torch.equal(_logits(sparse, batch), _logits(model, batch))


@pytest.mark.parametrize("scoring", ["snip", "magnitude", "random", "synflow"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_every_scoring_removes_the_requested_fraction(scoring: str, scope: str) -> None:
    _, sparse, _ = _sparse("houlsby", "bert", "classification", scoring=scoring, scope=scope, sparsity=0.8)
    masked = _masked(sparse)
    n = sum(m.weight.numel() for m in masked)
    if scope == "layer":  # each matrix rounds on its own
        for m in masked:
            assert int((~m.weight_mask).sum()) == int(0.8 * m.weight.numel() + 0.5)
    else:
        assert abs(_removed_fraction(sparse) - 0.8) <= 1 / n
    # zero-initialised up-projections get scoring values: a global ranking does not prune them all
    for down_or_up in masked:
        assert down_or_up.weight_mask.any()


def test_zero_sparsity_is_the_dense_adapter() -> None:
    model, sparse, cfg = _sparse("pfeiffer", "marian", "seq2seq", sparsity=0.0)
    dense = apply_method(copy.deepcopy(model), cfg.base_config())
    assert count_parameters(sparse) == count_parameters(dense)
    assert all(m.weight_mask.all() for m in _masked(sparse))


@pytest.mark.parametrize("base", ["houlsby", "lora"])
def test_masks_fixed_through_training(base: str) -> None:
    _, model, _ = _sparse(base, "marian", "seq2seq")
    masks = {id(m): m.weight_mask.clone() for m in _masked(model)}
    before = {id(m): m.weight.detach().clone() for m in _masked(model)}
    _train(model, example_batch(model), steps=4)
    for m in _masked(model):
        assert torch.equal(m.weight_mask, masks[id(m)])
        assert torch.equal(m.weight[~m.weight_mask], torch.zeros_like(m.weight[~m.weight_mask]))
        assert m.weight.grad is None  # set_to_none
    assert any(not torch.equal(m.weight, before[id(m)]) for m in _masked(model)), "nothing trained"


def test_only_adapter_weights_train() -> None:
    _, model, _ = _sparse("parallel", "bert", "classification")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    _train(model, example_batch(model), steps=2)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize("base,family,task", CASES[:4], ids=_ids(CASES[:4]))
def test_save_load_restores_masks(base: str, family: str, task: str, tmp_path) -> None:
    _, model, cfg = _sparse(base, family, task)
    batch = example_batch(model)
    # real-data SNIP gives masks that re-applying the method (synthetic batch, other RNG state) would not
    prune_at_init(model, cfg, batch)
    _train(model, batch, steps=2)
    sha256 = save_method(model, cfg, tmp_path)
    saved = load_file(tmp_path / "method.safetensors")
    mask_keys = {k for k in saved if k.endswith("weight_mask")}
    assert mask_keys and all(saved[k].dtype == torch.bool for k in mask_keys)
    assert set(saved) - mask_keys == set(trainable_state_dict(model))  # weight keys are the base method's
    assert json.loads((tmp_path / "method_config.json").read_text())["sparsity"] == 0.6
    torch.manual_seed(123)  # a different RNG state: apply_method alone would prune differently
    reloaded = load_method(tiny_model(family, task), tmp_path, sha256)
    for a, b in zip(_masked(model), _masked(reloaded), strict=True):
        assert torch.equal(a.weight_mask, b.weight_mask)
    assert torch.equal(_logits(reloaded, batch), _logits(model, batch))
    assert count_parameters(reloaded) == count_parameters(model)


def test_prune_at_init_uses_the_batch_and_refuses_after_training() -> None:
    _, model, cfg = _sparse("pfeiffer", "marian", "seq2seq", sparsity=0.5)
    synthetic = [m.weight_mask.clone() for m in _masked(model)]
    batch = example_batch(model, batch=4, length=9, seed=3)
    prune_at_init(model, cfg, batch)
    real = [m.weight_mask.clone() for m in _masked(model)]
    assert any(not torch.equal(a, b) for a, b in zip(synthetic, real, strict=True))
    assert abs(_removed_fraction(model) - 0.5) <= 1e-3
    prune_at_init(model, cfg, batch)  # deterministic: same init, same batch, same masks
    assert all(torch.equal(m.weight_mask, r) for m, r in zip(_masked(model), real, strict=True))
    _train(model, batch, steps=1)
    with pytest.raises(MethodError, match="before training"):
        prune_at_init(model, cfg, batch)


def test_budget_sparse_and_large_sparse() -> None:
    model = tiny_model("marian")
    budget = 0.02
    dense = solve_budget(model, "pfeiffer", {}, budget)
    plain = solve_budget(model, "sparse", {"base": "pfeiffer", "sparsity": 0.5, "large": False}, budget)
    large = solve_budget(model, "sparse", {"base": "pfeiffer", "sparsity": 0.5}, budget)  # large: true
    # SparseAdapter: the dense adapter of this budget, pruned (about half of it trains)
    assert plain.config.size == dense.config.bottleneck
    assert plain.trainable < dense.trainable and plain.rel_error < -0.4
    # Large-Sparse: a bigger bottleneck whose unpruned weights meet the budget like the dense adapter does
    assert large.config.size >= 2 * dense.config.bottleneck - 1
    assert abs(large.realised - budget) <= abs(dense.realised - budget) + 0.005
    # the solver's counts (meta device: planned masks) are what the real model counts
    torch.manual_seed(0)
    for solution in (plain, large):
        real = count_parameters(apply_method(copy.deepcopy(model), solution.config))
        assert real.trainable == solution.trainable
    with pytest.raises(MethodError, match="size"):
        solve_budget(model, "sparse", {"base": "pfeiffer", "size": 8}, budget)


def test_large_sparse_reaches_high_sparsity_budgets_on_lora() -> None:
    model = tiny_model("marian", d_model=64)
    dense = solve_budget(model, "lora", {}, 0.05)
    large = solve_budget(model, "sparse", {"base": "lora", "sparsity": 0.9, "large": True}, 0.05)
    assert large.config.size > 5 * dense.config.rank and abs(large.rel_error) < 0.05


def test_bad_options() -> None:
    with pytest.raises(MethodError, match="sparsity"):
        make_method_config("sparse", {"sparsity": 1.0})
    with pytest.raises(MethodError, match="sparsity"):
        make_method_config("sparse", {"sparsity": "0.5"})
    with pytest.raises(MethodError, match="base"):
        make_method_config("sparse", {"base": "compacter"})
    with pytest.raises(MethodError, match="size"):
        make_method_config("sparse", {"base": "lora", "base_options": {"rank": 4}})
    with pytest.raises(MethodError, match="alpah"):
        make_method_config("sparse", {"base": "lora", "base_options": {"alpah": 4}})
    with pytest.raises(MethodError, match="scoring"):
        make_method_config("sparse", {"scoring": "grasp"})
    cfg = make_method_config("sparse", {"base": "lora", "size": 4, "base_options": {"alpha": 8}})
    assert cfg.base_config().rank == 4 and cfg.base_config().alpha == 8
    assert cfg.to_dict()["base_options"] == {"alpha": 8}


def test_minilm_snip() -> None:
    minilm = minilm_classifier().eval()
    cfg = make_method_config("sparse", {"base": "pfeiffer", "size": 16, "sparsity": 0.8})
    torch.manual_seed(0)
    model = apply_method(copy.deepcopy(minilm), cfg)
    batch = example_batch(model, batch=4, length=12)
    prune_at_init(model, cfg, batch)
    assert abs(_removed_fraction(model) - 0.8) < 1e-4
    count = count_parameters(model)
    weights = 6 * 2 * 384 * 16  # six FFN adapters, down and up
    assert count.trainable == 6 * (2 * 384 * 16 + 16 + 384) - int(0.8 * weights + 0.5)
    assert torch.equal(_logits(model, batch), _logits(minilm, batch))
