"""SparseAdapter (method `sparse`): exact sparsity, fixed masks through training and reloading, effective counts,
Large-Sparse sizing. Tiny random models; one check on the real MiniLM."""

from __future__ import annotations

import copy
import dataclasses
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
from peftlab.methods.adapter_layers import DOWN_INIT_STD
from peftlab.methods.sparse.layer import MaskedLinear
from peftlab.methods.tiny import example_batch, minilm_classifier, tiny_model
from peftlab.runs import adapt_for_run
from peftlab.train import Preempted, first_batches, train
from peftlab.train_config import TrainConfig

torch.set_num_threads(1)

SIZE = {"houlsby": 4, "pfeiffer": 4, "parallel": 4, "lora": 2}
CASES = [(base, fam, task) for base in SIZE for fam, task in [("marian", "seq2seq"), ("bert", "classification")]]
CASES += [(base, "t5", "seq2seq") for base in ("pfeiffer", "lora")]
CASES += [(base, fam, "classification") for base in SIZE for fam in ("roberta", "deberta-v2")]  # paper: RoBERTa
CASES += [(base, "llama", task) for base in SIZE for task in ("causal_lm", "classification")]  # decoder-only LLMs


def _ids(cases) -> list[str]:
    return ["-".join(c) for c in cases]


def _calibration(model, cfg, seed: int = 0):
    """SNIP's batches (random ids and labels: these tests check the mechanics, not which data is scored)."""
    n = cfg.calibration_batches()
    return [example_batch(model, batch=4, length=9, seed=seed + i) for i in range(n)] if n else None


def _sparse(base: str, family: str, task: str, **options):
    model = tiny_model(family, task)
    cfg = make_method_config("sparse", {"base": base, "size": SIZE[base], "sparsity": 0.6} | options)
    torch.manual_seed(1)
    return model, apply_method(copy.deepcopy(model), cfg, calibration=_calibration(model, cfg)), cfg


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


SAVE_CASES = CASES[:4] + [("houlsby", "llama", "causal_lm"), ("lora", "llama", "classification")]


@pytest.mark.parametrize("base,family,task", SAVE_CASES, ids=_ids(SAVE_CASES))
def test_save_load_restores_masks(base: str, family: str, task: str, tmp_path) -> None:
    _, model, cfg = _sparse(base, family, task)
    batch = example_batch(model)
    _train(model, batch, steps=2)
    sha256 = save_method(model, cfg, tmp_path)
    saved = load_file(tmp_path / "method.safetensors")
    mask_keys = {k for k in saved if k.endswith("weight_mask")}
    assert mask_keys and all(saved[k].dtype == torch.bool for k in mask_keys)
    assert set(saved) - mask_keys == set(trainable_state_dict(model))  # weight keys are the base method's
    assert json.loads((tmp_path / "method_config.json").read_text())["sparsity"] == 0.6
    torch.manual_seed(123)  # a different RNG state: the masks come from the file, not from scoring again
    reloaded = load_method(tiny_model(family, task), tmp_path, sha256)
    for a, b in zip(_masked(model), _masked(reloaded), strict=True):
        assert torch.equal(a.weight_mask, b.weight_mask)
    assert torch.equal(_logits(reloaded, batch), _logits(model, batch))
    assert count_parameters(reloaded) == count_parameters(model)


def _masks(model) -> list[torch.Tensor]:
    return [m.weight_mask.clone() for m in _masked(model)]


def _apply_snip(model, cfg, batches, seed: int = 1):
    torch.manual_seed(seed)
    return apply_method(copy.deepcopy(model), cfg, calibration=batches)


def test_snip_scores_the_batches_it_is_handed() -> None:
    model = tiny_model("marian")
    cfg = make_method_config("sparse", {"base": "pfeiffer", "size": 4, "sparsity": 0.5, "score_batches": 2})
    batches = [example_batch(model, batch=4, length=9, seed=s) for s in (3, 4)]
    first = _masks(_apply_snip(model, cfg, batches))
    assert all(torch.equal(a, b) for a, b in zip(first, _masks(_apply_snip(model, cfg, batches)), strict=True))
    other = [batches[0], example_batch(model, batch=4, length=9, seed=5)]  # one batch of the two changed
    assert any(not torch.equal(a, b) for a, b in zip(first, _masks(_apply_snip(model, cfg, other)), strict=True))
    # the init (the RNG state before apply_method) is the same in all three: only the data moved the masks
    with pytest.raises(MethodError, match="scores 2 training batch"):
        apply_method(copy.deepcopy(model), cfg)
    with pytest.raises(MethodError, match="scores 2 training batch"):
        apply_method(copy.deepcopy(model), cfg, calibration=batches[:1])
    with pytest.raises(MethodError, match="scores no data"):
        apply_method(copy.deepcopy(model), cfg.replace(scoring="magnitude"), calibration=batches)
    unlabelled = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    with pytest.raises(MethodError, match="needs labels"):
        apply_method(copy.deepcopy(model), cfg, calibration=unlabelled)


@pytest.mark.parametrize("base", ["pfeiffer", "lora"])
def test_snip_keeps_the_top_w_times_grad_of_a_hand_computation(base: str) -> None:
    """An independent SNIP: the dense base method at the documented scoring values, plain autograd of the model's
    loss on one batch, |w * dL/dw| ranked over all adapter matrices, the top (1 - s) kept."""
    model = tiny_model("bert", "classification")
    cfg = make_method_config("sparse", {"base": base, "size": SIZE[base], "sparsity": 0.7})
    batch = example_batch(model, batch=4, length=9, seed=7)
    sparse = _apply_snip(model, cfg, [batch])
    masked = dict((n, m) for n, m in sparse.named_modules() if isinstance(m, MaskedLinear))

    torch.manual_seed(1)
    dense = apply_method(copy.deepcopy(model), cfg.base_config()).eval()
    linears = {n: m for n, m in dense.named_modules() if n in masked}
    assert linears.keys() == masked.keys()
    with torch.no_grad():
        for name, linear in linears.items():
            assert torch.equal(linear.weight, masked[name].weight_init)  # the same dense init
            linear.weight.copy_(masked[name].weight_scored)
    weights = [linear.weight for linear in linears.values()]
    grads = torch.autograd.grad(dense(**batch).loss, weights)
    scores = torch.cat([(w * g).abs().flatten() for w, g in zip(weights, grads, strict=True)])
    n_kept = scores.numel() - int(0.7 * scores.numel() + 0.5)
    top = torch.sort(scores, descending=True).values
    assert top[n_kept - 1] > top[n_kept]  # no tie at the boundary: the kept set is unique
    expected = scores >= top[n_kept - 1]
    got = torch.cat([masked[name].weight_mask.flatten() for name in linears])
    assert torch.equal(got, expected)


def test_zero_initialised_matrices_are_scored_at_their_partners_init() -> None:
    model = tiny_model("bert", "classification", d_model=64)
    cfg = make_method_config("sparse", {"base": "houlsby", "size": 32, "sparsity": 0.5, "scoring": "magnitude"})
    sparse = apply_method(copy.deepcopy(model), cfg)
    ups = [m.up for m in sparse.modules() if hasattr(m, "up") and isinstance(m.up, MaskedLinear)]
    assert ups and all(not u.weight_init.any() for u in ups)
    values = torch.cat([u.weight_scored.flatten() for u in ups])
    assert values.std().item() == pytest.approx(DOWN_INIT_STD, rel=0.05)  # N(0, DOWN_INIT_STD), as the down
    downs = [m.down for m in sparse.modules() if hasattr(m, "down") and isinstance(m.down, MaskedLinear)]
    assert all(torch.equal(d.weight_scored, d.weight_init) for d in downs)  # a non-zero matrix: its own init

    cfg = make_method_config("sparse", {"base": "lora", "size": 16, "sparsity": 0.5, "scoring": "magnitude"})
    sparse = apply_method(copy.deepcopy(model), cfg)
    bs = [m for n, m in sparse.named_modules() if isinstance(m, MaskedLinear) and ".lora_B." in n]
    values = torch.cat([b.weight_scored.flatten() for b in bs])
    bound = 1 / 16**0.5  # Kaiming-uniform, a = sqrt(5), fan-in = rank: U(-1/sqrt(r), 1/sqrt(r))
    assert values.abs().max().item() <= bound and values.abs().max().item() > 0.95 * bound
    assert values.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)


def _copy_rows(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        ids = torch.randint(3, 100, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist() + [2]
        rows.append({"id": str(i), "input_ids": ids, "labels": ids})
    return rows


def test_resumed_run_rebuilds_the_masks_and_matches_an_uninterrupted_run(tmp_path) -> None:
    """A run's path (runs.adapt_for_run, then train), interrupted and resumed in a fresh model with another RNG
    state, gives the masks and final weights of an uninterrupted run; the masks are SNIP on the run's first
    batches (first_batches), not on other data."""
    rows, dev = _copy_rows(64, seed=0), _copy_rows(16, seed=1)
    method = make_method_config("sparse", {"base": "pfeiffer", "size": 4, "sparsity": 0.6, "score_batches": 2})
    cfg = TrainConfig(lr=3e-3, batch_size=8, max_steps=12, warmup_steps=2, eval_interval=4, patience=10, seed=3)

    def run(folder: str, init_seed: int, **kwargs):
        torch.manual_seed(init_seed)  # a new process: another global RNG state
        model = adapt_for_run(tiny_model("marian"), method, rows, cfg, pad_id=0)
        masks = _masks(model)
        train(model, rows, dev, cfg, pad_id=0, checkpoint_dir=tmp_path / folder, run_key="k", **kwargs)
        return model, masks

    straight, straight_masks = run("a", 0)
    with pytest.raises(Preempted):
        run("b", 0, stop_after_steps=5)
    resumed, resumed_masks = run("b", 123)
    assert all(torch.equal(a, b) for a, b in zip(straight_masks, resumed_masks, strict=True))
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # the scored batches are the run's first: the same masks as SNIP handed first_batches directly
    batches = first_batches(rows, cfg, 0, 2)
    direct = _apply_snip(tiny_model("marian"), method, batches, seed=cfg.seed)
    assert all(torch.equal(a, b) for a, b in zip(straight_masks, _masks(direct), strict=True))
    other_batches = first_batches(rows, dataclasses.replace(cfg, seed=4), 0, 2)  # another seed's first batches
    other = _apply_snip(tiny_model("marian"), method, other_batches, seed=cfg.seed)
    assert any(not torch.equal(a, b) for a, b in zip(straight_masks, _masks(other), strict=True))


def test_a_resume_keeps_the_checkpoints_masks(tmp_path) -> None:
    """Should scoring on resume come out different (a GPU's last bit), the checkpoint's masks, which the saved
    weights were trained under, are restored."""
    rows, dev = _copy_rows(64, seed=0), _copy_rows(16, seed=1)
    method = make_method_config("sparse", {"base": "pfeiffer", "size": 4, "sparsity": 0.6})
    cfg = TrainConfig(lr=3e-3, batch_size=8, max_steps=8, warmup_steps=2, eval_interval=4, patience=10, seed=3)
    model = adapt_for_run(tiny_model("marian"), method, rows, cfg, pad_id=0)
    with pytest.raises(Preempted):
        train(model, rows, dev, cfg, pad_id=0, checkpoint_dir=tmp_path, run_key="k", stop_after_steps=5)
    saved = _masks(model)
    other = adapt_for_run(tiny_model("marian"), method, rows, dataclasses.replace(cfg, seed=4), pad_id=0)
    assert any(not torch.equal(a, b) for a, b in zip(saved, _masks(other), strict=True))
    train(other, rows, dev, cfg, pad_id=0, checkpoint_dir=tmp_path, run_key="k")
    assert all(torch.equal(a, b) for a, b in zip(saved, _masks(other), strict=True))


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
        real = count_parameters(apply_method(copy.deepcopy(model), solution.config,
                                             calibration=_calibration(model, solution.config)))
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
    with pytest.raises(MethodError, match="score_batches"):
        make_method_config("sparse", {"score_batches": 0})
    assert make_method_config("sparse", {"scoring": "synflow", "score_batches": 3}).calibration_batches() == 0
    assert make_method_config("sparse", {"score_batches": 3}).calibration_batches() == 3
    cfg = make_method_config("sparse", {"base": "lora", "size": 4, "base_options": {"alpha": 8}})
    assert cfg.base_config().rank == 4 and cfg.base_config().alpha == 8
    assert cfg.to_dict()["base_options"] == {"alpha": 8}


def test_minilm_snip() -> None:
    minilm = minilm_classifier().eval()
    cfg = make_method_config("sparse", {"base": "pfeiffer", "size": 16, "sparsity": 0.8})
    torch.manual_seed(0)
    batch = example_batch(minilm, batch=4, length=12)
    model = apply_method(copy.deepcopy(minilm), cfg, calibration=[batch])
    assert abs(_removed_fraction(model) - 0.8) < 1e-4
    count = count_parameters(model)
    weights = 6 * 2 * 384 * 16  # six FFN adapters, down and up
    assert count.trainable == 6 * (2 * 384 * 16 + 16 + 384) - int(0.8 * weights + 0.5)
    assert torch.equal(_logits(model, batch), _logits(minilm, batch))
