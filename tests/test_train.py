"""The training loop: schedule, data order, early stopping, and resume-after-interruption equality."""

import json

import pytest
import torch
from transformers import MarianConfig, MarianMTModel

from peftlab.status import failure_recorded
from peftlab.train import Preempted, batch_order, evaluate_loss, get_lr, progress, train
from peftlab.train_config import TrainConfig, TrainConfigError

torch.set_num_threads(1)


def tiny_model(seed: int = 0, **options) -> MarianMTModel:
    torch.manual_seed(seed)
    config = MarianConfig(vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
                          pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **options)
    return MarianMTModel(config)


def copy_rows(n: int, seed: int = 0) -> list[dict]:
    """A copy task: the target repeats the source, so loss falls quickly and measurably."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        ids = torch.randint(2, 40, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist() + [1]
        rows.append({"id": str(i), "input_ids": ids, "labels": ids})
    return rows


CFG = dict(lr=3e-3, batch_size=8, max_steps=24, warmup_steps=4, eval_interval=6, patience=10)


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert get_lr(0, cfg) == pytest.approx(0.1)
    assert get_lr(9, cfg) == pytest.approx(1.0)
    assert get_lr(110, cfg) == pytest.approx(0.1)
    assert get_lr(60, cfg) < get_lr(20, cfg)


def test_batch_order_is_deterministic_and_covers_the_epoch():
    lengths = [i % 7 for i in range(100)]
    first, again = batch_order(lengths, 10, 0, 0), batch_order(lengths, 10, 0, 0)
    other = batch_order(lengths, 10, 0, 1)
    assert first == again and first != other
    assert sorted(i for b in first for i in b) == list(range(100))


def test_unknown_or_ill_typed_option_is_refused():
    with pytest.raises(TrainConfigError, match="unknown training option 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(TrainConfigError, match="'batch_size' must be a int"):
        TrainConfig.from_dict({"batch_size": 8.5})


def test_training_lowers_dev_loss_and_keeps_the_best_weights(tmp_path):
    model = tiny_model()
    result = train(model, copy_rows(64), copy_rows(16, seed=1), TrainConfig(**CFG), pad_id=0,
                   checkpoint_dir=tmp_path / "ckpt", run_key="a", log_path=tmp_path / "curve.jsonl")
    curve = result["curve"]
    assert [p["step"] for p in curve] == [6, 12, 18, 24]
    assert curve[-1]["dev_loss"] < curve[0]["dev_loss"]
    assert result["train"]["best_dev_score"] == min(p["dev_loss"] for p in curve)
    assert len((tmp_path / "curve.jsonl").read_text().splitlines()) == 4
    assert not (tmp_path / "ckpt").exists()  # removed once the run is complete


def test_patience_stops_the_run_early_and_keeps_the_best_weights(tmp_path):
    rows, dev = copy_rows(16), copy_rows(16, seed=1)
    # 16 training rows at a high rate: dev loss turns up after a few evaluations, long before max_steps
    cfg = dict(lr=3e-2, batch_size=8, max_steps=60, warmup_steps=2, eval_interval=3, patience=2)
    model = tiny_model()
    result = train(model, rows, dev, TrainConfig(**cfg), pad_id=0, checkpoint_dir=tmp_path / "a", run_key="k")
    losses = [p["dev_loss"] for p in result["curve"]]
    best = losses.index(min(losses))
    # the run stops at the `patience`-th evaluation in a row that does not improve on the best
    assert len(losses) == best + 1 + cfg["patience"] and losses[-1] > losses[best]
    assert result["train"]["stopped_early"] is True
    assert result["train"]["steps"] == result["curve"][-1]["step"] == len(losses) * cfg["eval_interval"] < 60
    assert result["train"]["best_step"] == result["curve"][best]["step"]
    assert result["train"]["best_dev_score"] == losses[best]
    assert evaluate_loss(model, dev, 0, cfg["batch_size"], "cpu") == losses[best]  # not the last step's weights

    at_best = tiny_model()  # the same run, stopped right after the best evaluation
    with pytest.raises(Preempted):
        train(at_best, rows, dev, TrainConfig(**cfg), pad_id=0, checkpoint_dir=tmp_path / "b", run_key="k",
              stop_after_steps=result["train"]["best_step"])
    for (name, kept), (_, expected) in zip(model.state_dict().items(), at_best.state_dict().items(), strict=True):
        assert torch.equal(kept, expected), name


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    rows, dev = copy_rows(64), copy_rows(16, seed=1)
    straight = tiny_model()
    expected = train(straight, rows, dev, TrainConfig(**CFG), pad_id=0, checkpoint_dir=tmp_path / "a", run_key="k")

    resumed = tiny_model()
    with pytest.raises(Preempted):
        train(resumed, rows, dev, TrainConfig(**CFG), pad_id=0, checkpoint_dir=tmp_path / "b", run_key="k",
              stop_after_steps=9)  # between two evaluations, so resuming must replay from step 9 exactly
    assert json.loads((tmp_path / "b" / "latest.json").read_text())["step"] == 9
    assert (tmp_path / "b" / "best.safetensors").exists()  # an interrupted run keeps what resuming needs
    fresh = tiny_model(seed=123)  # a new process: different init, the checkpoint must restore everything
    got = train(fresh, rows, dev, TrainConfig(**CFG), pad_id=0, checkpoint_dir=tmp_path / "b", run_key="k")

    assert [p["dev_loss"] for p in got["curve"]] == [p["dev_loss"] for p in expected["curve"]]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    for (name, a), (_, b) in zip(straight.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    rows, dev = copy_rows(64), copy_rows(16, seed=1)
    with pytest.raises(Preempted):
        train(tiny_model(), rows, dev, TrainConfig(**CFG), pad_id=0, checkpoint_dir=tmp_path, run_key="old",
              stop_after_steps=9)
    result = train(tiny_model(), rows, dev, TrainConfig(**CFG), pad_id=0, checkpoint_dir=tmp_path, run_key="new")
    assert result["train"]["steps"] == CFG["max_steps"] and result["curve"][0]["step"] == 6


def test_a_failed_run_drops_its_checkpoint_an_interrupted_one_keeps_it(tmp_path):
    rows, dev = copy_rows(64), copy_rows(16, seed=1)
    with pytest.raises(Preempted):
        train(tiny_model(), rows, dev, TrainConfig(**CFG), pad_id=0, checkpoint_dir=tmp_path / "ckpt", run_key="k",
              stop_after_steps=9)
    record, identity = tmp_path / "train.json", {"run_id": "s/t/m/none/seed0"}
    with pytest.raises(Preempted), failure_recorded(record, identity, checkpoint_dir=tmp_path / "ckpt"):
        raise Preempted("SIGTERM")  # an interruption is not a failure: the next attempt resumes
    assert not record.exists() and (tmp_path / "ckpt" / "latest.json").exists()
    with failure_recorded(record, identity, checkpoint_dir=tmp_path / "ckpt"):
        raise ValueError("loss is nan")
    assert json.loads(record.read_text())["status"] == "failed"
    assert not (tmp_path / "ckpt").exists()


def test_a_multitask_runs_copy_is_checked_against_the_shared_record(tmp_path):
    from peftlab.methods import MethodError, apply_method, make_method_config, save_method
    from peftlab.runs import adopt_shared_training

    cfg = make_method_config("lora", {"rank": 2})
    shared = tmp_path / "multitask"
    record = {"run_id": "s/multitask/m/lora/0.1/seed0", "status": "ok", "tasks": ["a", "b"],
              "method_sha256": save_method(apply_method(tiny_model(), cfg), cfg, shared / "method")}
    (shared / "train.json").write_text(json.dumps(record))
    run = {"run_id": "s/a/lora/0.1/seed0", "study": "s", "task": "a", "method": "lora", "budget": "0.1", "seed": 0,
           "code_fingerprint": "c"}
    out = tmp_path / "a"
    out.mkdir()
    adopted = adopt_shared_training(shared / "train.json", shared / "method", run, record_path=out / "train.json",
                                    method_dir=out / "method")
    assert adopted["method_sha256"] == record["method_sha256"] and (out / "method" / "method.safetensors").exists()
    weights = shared / "method" / "method.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit of the last tensor
    with pytest.raises(MethodError, match="method.safetensors is corrupt"):
        adopt_shared_training(shared / "train.json", shared / "method", run, record_path=out / "train.json",
                              method_dir=out / "method")


def still_model(seed: int = 0) -> MarianMTModel:
    """tiny_model without dropout: micro-batches draw other dropout masks than one big batch would."""
    return tiny_model(seed, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def test_accumulating_four_micro_batches_of_8_equals_one_batch_of_32(tmp_path):
    """The reference is the plain batch of 32. Micro-batches hold different numbers of label tokens, so
    averaging their mean losses would weight tokens unequally; weighting each by its token share does not."""
    from peftlab.data import collate
    from peftlab.train import _lengths, micro_batch_order

    rows, dev = copy_rows(96), copy_rows(16, seed=1)
    cfg = dict(lr=3e-3, max_steps=6, warmup_steps=2, eval_interval=3, patience=10)
    one = still_model()
    expected = train(one, rows, dev, TrainConfig(batch_size=32, **cfg), pad_id=0, checkpoint_dir=tmp_path / "a",
                     run_key="k")
    four = still_model()
    got = train(four, rows, dev, TrainConfig(batch_size=8, grad_accumulation=4, **cfg), pad_id=0,
                checkpoint_dir=tmp_path / "b", run_key="k")
    micro = micro_batch_order(_lengths(rows), TrainConfig(batch_size=8, grad_accumulation=4, **cfg), 0)[:4]
    tokens = [int((collate([rows[i] for i in b], 0)["labels"] != -100).sum()) for b in micro]
    assert len(set(tokens)) > 1  # unequal micro-batches: the normalisation is exercised
    assert got["train"]["steps"] == expected["train"]["steps"] == 6
    assert got["train"]["effective_batch_size"] == 32
    for a, b in zip(expected["curve"], got["curve"], strict=True):
        assert a["step"] == b["step"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["dev_loss"] == pytest.approx(a["dev_loss"], rel=1e-5)
    for (name, a), (_, b) in zip(one.state_dict().items(), four.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_autocast_trains_and_resumes_bit_identically(tmp_path):
    rows, dev = copy_rows(64), copy_rows(16, seed=1)
    bf16 = {**CFG, "precision": "bf16", "grad_accumulation": 2, "batch_size": 4}
    straight = tiny_model()
    expected = train(straight, rows, dev, TrainConfig(**bf16), pad_id=0, checkpoint_dir=tmp_path / "a", run_key="k")
    fp32 = train(tiny_model(), rows, dev, TrainConfig(**{**bf16, "precision": "fp32"}), pad_id=0,
                 checkpoint_dir=tmp_path / "c", run_key="k")
    assert expected["curve"][-1]["dev_loss"] < expected["curve"][0]["dev_loss"]  # it trains
    assert expected["curve"][0]["train_loss"] != fp32["curve"][0]["train_loss"]  # and autocast was on
    resumed = tiny_model()
    with pytest.raises(Preempted):
        train(resumed, rows, dev, TrainConfig(**bf16), pad_id=0, checkpoint_dir=tmp_path / "b", run_key="k",
              stop_after_steps=9)
    saved = json.loads((tmp_path / "b" / "latest.json").read_text())
    assert saved["step"] == 9 and saved["micro_batches"] == 18
    fresh = tiny_model(seed=123)
    got = train(fresh, rows, dev, TrainConfig(**bf16), pad_id=0, checkpoint_dir=tmp_path / "b", run_key="k")
    assert [p["dev_loss"] for p in got["curve"]] == [p["dev_loss"] for p in expected["curve"]]
    for (name, a), (_, b) in zip(straight.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tmp_path):
    """With a frozen base (LoRA), as PEFT trains: the trainable weights inside checkpointed layers get gradients."""
    from peftlab.methods import apply_method, make_method_config
    from peftlab.train import set_checkpointing

    rows = copy_rows(8)
    from peftlab.data import collate
    batch = collate(rows, 0)
    losses, grads = [], []
    for checkpointing in (False, True):
        model = apply_method(tiny_model(), make_method_config("lora", {"rank": 2}))
        model.train()
        if checkpointing:
            set_checkpointing(model, True)
        torch.manual_seed(5)  # the same dropout masks: checkpointing replays the RNG state on recomputation
        loss = torch.nn.functional.cross_entropy(model(**batch).logits.flatten(0, 1), batch["labels"].flatten(),
                                                 ignore_index=-100)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert torch.equal(losses[0], losses[1])
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        assert grads[1][name].abs().sum() > 0 or g.abs().sum() == 0, name
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
    # and through the training loop
    a, b = tiny_model(), tiny_model()
    train(a, copy_rows(64), copy_rows(16, seed=1), TrainConfig(**{**CFG, "max_steps": 6, "eval_interval": 3}),
          pad_id=0, checkpoint_dir=tmp_path / "a", run_key="k")
    rec = train(b, copy_rows(64), copy_rows(16, seed=1),
                TrainConfig(**{**CFG, "max_steps": 6, "eval_interval": 3, "gradient_checkpointing": True}),
                pad_id=0, checkpoint_dir=tmp_path / "b", run_key="k")
    assert rec["train"]["gradient_checkpointing"] and not any(
        getattr(m, "gradient_checkpointing", False) for m in b.modules())  # switched off afterwards
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6, msg=name)


def test_fp16_on_cpu_is_refused_before_any_step(tmp_path):
    from peftlab.train import PrecisionError

    with pytest.raises(PrecisionError, match="'precision': fp16 needs a CUDA device"):
        train(tiny_model(), copy_rows(64), copy_rows(16, seed=1), TrainConfig(**CFG, precision="fp16"), pad_id=0,
              checkpoint_dir=tmp_path / "ckpt", run_key="k")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(("values", "message"), [
    ({"precision": "fp8"}, "'precision' must be one of fp32, bf16, fp16"),
    ({"precision": 16}, "'precision' must be a str"),
    ({"grad_accumulation": 0}, "'grad_accumulation' must be >= 1"),
    ({"gradient_checkpointing": 1}, "'gradient_checkpointing' must be a bool"),
])
def test_new_training_options_are_checked(values, message):
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig.from_dict(values)


def test_the_record_has_per_step_memory_and_a_trainable_aware_flop_count(tmp_path):
    import resource

    model = tiny_model()
    result = train(model, copy_rows(64), copy_rows(16, seed=1), TrainConfig(**CFG), pad_id=0,
                   checkpoint_dir=tmp_path / "ckpt", run_key="k")["train"]
    memory = result["memory"]
    assert memory["source"] == "process_rss_per_step"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert 0 < memory["avg_mb"] <= memory["p99_mb"] <= memory["max_mb"] <= peak + 1
    assert result["mfu"] is None  # no GPU, no peak to divide by
    # by hand: 6 FLOPs per token for each weight of an nn.Linear (all trainable here), encoder for source
    # tokens, decoder and output projection for target tokens
    enc = sum(p.numel() for n, p in model.named_parameters()
              if n.startswith("model.encoder.layers.") and n.endswith(("proj.weight", "proj.bias", "fc1.weight",
                                                                        "fc1.bias", "fc2.weight", "fc2.bias")))
    dec = sum(p.numel() for n, p in model.named_parameters()
              if n.startswith("model.decoder.layers.") and n.endswith(("proj.weight", "proj.bias", "fc1.weight",
                                                                        "fc1.bias", "fc2.weight", "fc2.bias")))
    dec += model.lm_head.weight.numel() + model.final_logits_bias.numel() * 0  # Marian's bias is a buffer
    from peftlab.train import flops_per_token_pair
    assert flops_per_token_pair(model) == (6 * enc, 6 * dec)


def test_progress_line_gives_total_elapsed_and_eta(tmp_path, caplog):
    # 100 of 2000 steps in 12 s of this invocation: 1900 left at 0.12 s each = 228 s = 0:03:48 (by hand)
    assert progress(100, 2000, 12.0, 12.0, 100) == "step 100/2000 (5%)  elapsed 0:00:12  eta<=0:03:48"
    # a resumed run: 3725 s in all (1:02:05) but only this invocation's 50 steps in 10 s set the rate
    assert progress(1000, 2000, 3725.0, 10.0, 50) == "step 1000/2000 (50%)  elapsed 1:02:05  eta<=0:03:20"
    assert progress(6, 24, 1.0, 0.0, 0).endswith("eta<=?")
    with caplog.at_level("INFO", logger="peftlab.train"):
        train(tiny_model(), copy_rows(64), copy_rows(16, seed=1), TrainConfig(**CFG), pad_id=0,
              checkpoint_dir=tmp_path / "ckpt", run_key="a")
    lines = [r.getMessage() for r in caplog.records if r.name == "peftlab.train"]
    assert [line.split("  ")[0] for line in lines] == ["step 6/24 (25%)", "step 12/24 (50%)", "step 18/24 (75%)",
                                                       "step 24/24 (100%)"]
    assert lines[-1].split("  ")[2] == "eta<=0:00:00"


def test_training_on_cpu_uses_fused_adamw_with_the_default_loops_updates(tmp_path):
    """The fused kernel (fused_adamw) is an implementation of the same AdamW: a run trained with it ends where
    torch's default per-parameter loop takes the same model, batches and schedule (float32 rounding apart)."""
    import peftlab.train as train_module

    cfg = TrainConfig(batch_size=8, max_steps=12, warmup_steps=2, eval_interval=6, lr=3e-3, weight_decay=0.01)
    rows = copy_rows(64)
    weights, records = [], []
    for fused in (True, None):
        original = train_module.fused_adamw
        train_module.fused_adamw = lambda device, fused=fused: fused
        try:
            model = tiny_model()
            records.append(train(model, rows, rows[:16], cfg, pad_id=0, checkpoint_dir=tmp_path / f"c{fused}",
                                 run_key=f"fused{fused}"))
        finally:
            train_module.fused_adamw = original
        weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert records[0]["train"]["fused_adamw"] is True and records[1]["train"]["fused_adamw"] is False
    assert any(not torch.equal(tiny_model().state_dict()[k], weights[0][k]) for k in weights[0])  # it trained
    for name, tensor in weights[0].items():
        torch.testing.assert_close(tensor, weights[1][name], rtol=1e-4, atol=1e-5, msg=name)
