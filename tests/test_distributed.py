"""Data-parallel training on CPU: two gloo processes under torchrun train what one process trains with the same
effective batch (same data order, each process half of every micro-batch), resume from rank 0's checkpoint, and
a run of the grid with `devices: 2` goes through runs.train_run as the workflow's script calls it.

Tolerance: the two runs differ only in float rounding. Each process computes its half-batch's gradient (other
padding widths, other summation order than the whole batch) and gloo adds the two halves in its own order; a few
Adam steps carry that float32 rounding into the weights. Measured here: max |dw| 1.9e-7, max |d loss| 2.1e-7.
rtol 1e-4 / atol 1e-5 (as the accumulation test in test_train.py) is far above that and below what a wrong
weighting gives (averaging the two halves' mean losses, ignoring their token counts: max |dw| 8.0e-4).
"""

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from peftlab.distributed import DistributedError, launch, rank_and_world
from peftlab.train import Preempted, train
from peftlab.train_config import TrainConfig, TrainConfigError
from tests.test_train import copy_rows, still_model

torch.set_num_threads(1)

CFG = {"lr": 3e-3, "batch_size": 8, "grad_accumulation": 2, "max_steps": 6, "warmup_steps": 2, "eval_interval": 2,
       "patience": 10}


def train_tiny(out: str, cfg: dict, device: str, stop_after_steps: int | None = None) -> None:
    """One process's part (torchrun target): rank 0 saves the trained weights and the record."""
    model = still_model()
    result = train(model, copy_rows(96), copy_rows(20, seed=1), TrainConfig(**cfg), pad_id=0, device=device,
                   checkpoint_dir=Path(out) / "ckpt", run_key="k", stop_after_steps=stop_after_steps)
    if rank_and_world()[0] == 0:
        save_file({k: v.clone() for k, v in model.state_dict().items()}, str(Path(out) / "weights.safetensors"))
        (Path(out) / "result.json").write_text(json.dumps(result))


def in_two_processes(out: Path, sharding: str = "ddp", **kwargs) -> dict:
    out.mkdir(exist_ok=True)
    launch("tests.test_distributed:train_tiny", {"out": str(out), "cfg": {**CFG, "devices": 2, "sharding": sharding},
                                                 **kwargs}, 2, device_type="cpu", threads=2)
    return json.loads((out / "result.json").read_text())


def assert_same_training(expected: dict, got: dict, expected_dir: Path, got_dir: Path, *, exact: bool = False):
    assert [p["step"] for p in got["curve"]] == [p["step"] for p in expected["curve"]] == [2, 4, 6]
    tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-4, "atol": 1e-5}
    for a, b in zip(expected["curve"], got["curve"], strict=True):
        for key in ("train_loss", "dev_loss"):
            torch.testing.assert_close(b[key], a[key], **tol)
    one, two = load_file(str(expected_dir / "weights.safetensors")), load_file(str(got_dir / "weights.safetensors"))
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], **tol, msg=name)


def test_two_gloo_processes_train_what_one_process_does_with_the_same_effective_batch(tmp_path):
    (tmp_path / "one").mkdir()
    train_tiny(str(tmp_path / "one"), CFG, "cpu")
    expected = json.loads((tmp_path / "one/result.json").read_text())
    started = time.perf_counter()
    got = in_two_processes(tmp_path / "two")
    one, two = (load_file(str(tmp_path / d / "weights.safetensors")) for d in ("one", "two"))
    dw = max(float((one[k] - two[k]).abs().max()) for k in one)
    dloss = max(abs(a[k] - b[k]) for a, b in zip(expected["curve"], got["curve"], strict=True)
                for k in ("train_loss", "dev_loss"))
    print(f"\none process: training {expected['train']['wall_time_s']} s; two processes: training "
          f"{got['train']['wall_time_s']} s, {time.perf_counter() - started:.1f} s with torchrun and imports; "
          f"max |dw| {dw:.1e}, max |d loss| {dloss:.1e}")
    assert got["train"]["devices"] == 2 and expected["train"]["devices"] == 1
    assert got["train"]["effective_batch_size"] == expected["train"]["effective_batch_size"] == 16
    assert got["train"]["model_flops"] == expected["train"]["model_flops"]  # every process's tokens counted once
    assert_same_training(expected, got, tmp_path / "one", tmp_path / "two")
    start = still_model().state_dict()
    weights = load_file(str(tmp_path / "two/weights.safetensors"))
    assert max(float((weights[k] - start[k]).abs().max()) for k in weights) > 1e-3  # it trained
    assert not (tmp_path / "two/ckpt").exists()  # rank 0 removed the finished run's checkpoint


def test_a_preempted_data_parallel_run_resumes_to_the_uninterrupted_result(tmp_path):
    preempt_and_resume(tmp_path, "ddp")


def preempt_and_resume(tmp_path: Path, sharding: str) -> dict:
    """An uninterrupted run and one stopped at step 3 and resumed: the same, bit for bit; the former's record."""
    straight = in_two_processes(tmp_path / "straight", sharding)
    with pytest.raises(Preempted, match="stopped at step 3"):
        in_two_processes(tmp_path / "resumed", sharding, stop_after_steps=3)
    checkpoint = load_file(str(next((tmp_path / "resumed/ckpt").glob("latest-*.safetensors"))))
    assert {"rng.torch", "rng.torch.1"} <= set(checkpoint)  # both processes' RNG states, for their dropout
    assert not torch.equal(checkpoint["rng.torch"], checkpoint["rng.torch.1"])
    if sharding == "fsdp":  # the checkpoint holds whole tensors, as an unsharded run's
        assert checkpoint["model.model.shared.weight"].shape == still_model().model.shared.weight.shape
        assert checkpoint["opt.exp_avg.model.shared.weight"].shape == checkpoint["model.model.shared.weight"].shape
    resumed = in_two_processes(tmp_path / "resumed", sharding)
    assert_same_training(straight, resumed, tmp_path / "straight", tmp_path / "resumed", exact=True)
    return straight


def test_fsdp_trains_what_one_process_does_and_resumes_exactly(tmp_path):
    """Sharded by FSDP2 (each process holds half of every weight, gradient and AdamW moment): the same tolerance as
    DDP's holds, as the two differ only in how the halves' gradients are added (reduce-scatter instead of
    all-reduce) and in the clipping norm's sum over shards (measured max |dw| 2.7e-7, max |d loss| 2.1e-7). The
    checkpoint holds whole tensors, as an unsharded run's, and resuming splits them again: bit-identical."""
    (tmp_path / "one").mkdir()
    train_tiny(str(tmp_path / "one"), CFG, "cpu")
    straight = preempt_and_resume(tmp_path, "fsdp")
    assert_same_training(json.loads((tmp_path / "one/result.json").read_text()), straight, tmp_path / "one",
                         tmp_path / "straight")
    start = still_model().state_dict()
    weights = load_file(str(tmp_path / "straight/weights.safetensors"))
    assert weights.keys() == start.keys()
    assert max(float((weights[k] - start[k]).abs().max()) for k in weights) > 1e-3  # it trained


PREEMPTED_JOB = """
import sys
from peftlab.distributed import launch
from peftlab.train import Preempted
from tests.test_distributed import CFG
try:
    launch("tests.test_distributed:train_tiny", {"out": sys.argv[1], "cfg": {**CFG, "devices": 2,
           "max_steps": 100000, "eval_interval": 5}}, 2, device_type="cpu", threads=2)
except Preempted as error:
    print("Preempted:", error)
"""


def test_sigterm_to_the_job_checkpoints_every_process_and_raises_preempted(tmp_path):
    """A local kill reaches the job's process only: it passes SIGTERM on to torchrun and its workers."""
    import os
    import signal
    import subprocess
    import sys

    job = subprocess.Popen([sys.executable, "-c", PREEMPTED_JOB, str(tmp_path)], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    deadline = time.monotonic() + 300
    while not (tmp_path / "ckpt/latest.json").exists():  # training has begun: its first checkpoint
        assert job.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    job.send_signal(signal.SIGTERM)
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 0 and out.startswith("Preempted: stopped at step"), out
    step = json.loads((tmp_path / "ckpt/latest.json").read_text())["step"]
    assert f"stopped at step {step};" in out and step >= 5


def test_a_failing_process_fails_the_run_with_its_error(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(DistributedError, match=r"rank \d: ValueError: training option 'devices' is 1 but train\(\) "
                                               r"runs in 2 process"):
        launch("tests.test_distributed:train_tiny", {"out": str(tmp_path / "out"), "cfg": CFG}, 2,
               device_type="cpu", threads=2)


@pytest.mark.parametrize(("values", "message"), [
    ({"devices": 0}, "'devices' must be >= 1"),
    ({"devices": 3, "batch_size": 8}, "'batch_size' must be a multiple of devices \\(3\\)"),
])
def test_devices_is_checked(values, message):
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize(("method", "sharding"), [("lora", "ddp"), ("full", "fsdp")])
def test_a_run_of_the_grid_with_two_devices_trains_as_with_one(tmp_path, method, sharding):
    """runs.train_run, as workflow_scripts/train.py calls it: `devices: 2` starts two processes, rank 0 writes the
    record and the method files, and they hold what one process trains (a tiny M2M100 without dropout).

    The losses agree to rtol 1e-4. The LoRA weights agree only to atol 1e-2 (half the lr): LoRA's B starts at 0,
    so A's first gradients are near zero and Adam's first updates are about +-lr whatever their size; float
    rounding can flip such an element. One process with 2 micro-batches of 2 differs from one batch of 4 as much
    (max |dw| 4.0e-3, two processes: 3.4e-3). The exact comparison is the full fine-tuning test above.

    Full fine-tuning sharded by FSDP: the weights agree to atol 1e-5 (measured max 2.0e-6), except the attention
    key biases (atol 1e-2, as LoRA's A): softmax ignores a shift shared by all keys, so their exact gradient is 0
    and Adam scales float noise up (measured 2.3e-5). The run's files are those of an unsharded run (same names)."""
    from language_models import build, corpus_file

    from peftlab.data import build_shards, prepare_corpus
    from peftlab.languages import languages_of
    from peftlab.models import load_tokenizer
    from peftlab.runs import train_run

    model_dir = build("m2m100", tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    still = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}
    if sharding == "fsdp":  # LayerDrop (M2M100's default 0.05) would skip other layers in each process
        still |= {"encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0}
    (model_dir / "config.json").write_text(json.dumps(config | still))
    spec = {"source": "local", "path": str(model_dir)}
    task = {"kind": "translation", "source_lang": "en", "target_lang": "ja", "dev_size": 6, "test_size": 4,
            "split_seed": 0, "corpus": {"source": "local", "path": str(corpus_file(tmp_path / "pairs.jsonl"))}}
    prepare_corpus(task, tmp_path / "corpus")
    build_shards(tmp_path / "corpus", load_tokenizer(spec["path"]), tmp_path / "shards", tokenizer_id="m2m100",
                 languages=languages_of(spec, task))
    records = {}
    for devices in (1, 2):
        train = {"lr": 0.02, "batch_size": 4, "max_steps": 4, "warmup_steps": 1, "eval_interval": 2, "devices": devices}
        if devices > 1:
            train["sharding"] = sharding
        budget = "0.045" if method == "lora" else "none"
        run = {"run_id": f"t/mt/{method}/{budget}/seed0", "study": "t", "task": "mt", "method": method,
               "method_name": method, "budget": budget, "seed": 0, "options": {}, "train": train, "base_model": "tiny",
               "data_manifest_sha256": None, "code_fingerprint": "test"}
        out = tmp_path / f"devices{devices}"
        records[devices] = train_run(run, model_path=spec["path"], model_spec=spec, task=task,
                                     shard_dirs=[tmp_path / "shards"], method_dir=out / "method",
                                     record_path=out / "train.json", checkpoint_dir=out / "ckpt", device="cpu")
        assert records[devices] == json.loads((out / "train.json").read_text())
    one, two = records[1], records[2]
    assert (one["status"], two["status"]) == ("ok", "ok")
    assert (one["train"]["devices"], two["train"]["devices"]) == (1, 2)
    assert one["params"] == two["params"] and one["adapter_bytes"] == two["adapter_bytes"]
    for a, b in zip(one["curve"], two["curve"], strict=True):
        torch.testing.assert_close(b["dev_loss"], a["dev_loss"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b["train_loss"], a["train_loss"], rtol=1e-4, atol=1e-5)
    files = sorted(p.relative_to(tmp_path / "devices1") for p in (tmp_path / "devices1").rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(tmp_path / "devices2")
                                     for p in (tmp_path / "devices2").rglob("*.safetensors"))
    for name in files:
        a, b = load_file(str(tmp_path / "devices1" / name)), load_file(str(tmp_path / "devices2" / name))
        for key in a:
            atol = 1e-5 if method == "full" and not key.endswith("k_proj.bias") else 1e-2
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=atol, msg=f"{name}: {key}")
