"""Data-parallel training on CPU: two gloo processes under torchrun train what one process trains with the same
effective batch (same data order, each process half of every micro-batch), resume from rank 0's checkpoint, and
a run of the grid with `devices: 2` goes through runs.train_run as the workflow's script calls it.

Tolerance: the two runs differ only in float rounding. Each process computes its half-batch's gradient (other
padding widths, other summation order than the whole batch) and gloo adds the two halves; the sums agree to
float32 rounding (~1e-7 relative) and a few Adam steps, which divide by sqrt of the second moment, carry that
into the weights at ~1e-6. rtol 1e-4 / atol 1e-5 (as the accumulation test in test_train.py) is far above
that and far below what a wrong weighting gives (a plain mean of the two halves' mean losses moved the losses
by ~1e-3 here).
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


def in_two_processes(out: Path, **kwargs) -> dict:
    out.mkdir(exist_ok=True)
    launch("tests.test_distributed:train_tiny", {"out": str(out), "cfg": {**CFG, "devices": 2}, **kwargs}, 2,
           device_type="cpu", threads=2)
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
    print(f"two processes: {time.perf_counter() - started:.1f} s (torchrun and imports included)")
    assert got["train"]["devices"] == 2 and expected["train"]["devices"] == 1
    assert got["train"]["effective_batch_size"] == expected["train"]["effective_batch_size"] == 16
    assert got["train"]["model_flops"] == expected["train"]["model_flops"]  # every process's tokens counted once
    assert_same_training(expected, got, tmp_path / "one", tmp_path / "two")
    start = still_model().state_dict()
    weights = load_file(str(tmp_path / "two/weights.safetensors"))
    assert max(float((weights[k] - start[k]).abs().max()) for k in weights) > 1e-3  # it trained
    assert not (tmp_path / "two/ckpt").exists()  # rank 0 removed the finished run's checkpoint


def test_a_preempted_data_parallel_run_resumes_to_the_uninterrupted_result(tmp_path):
    straight = in_two_processes(tmp_path / "straight")
    with pytest.raises(Preempted, match="stopped at step 3"):
        in_two_processes(tmp_path / "resumed", stop_after_steps=3)
    checkpoint = load_file(str(next((tmp_path / "resumed/ckpt").glob("latest-*.safetensors"))))
    assert {"rng.torch", "rng.torch.1"} <= set(checkpoint)  # both processes' RNG states, for their dropout
    assert not torch.equal(checkpoint["rng.torch"], checkpoint["rng.torch.1"])
    resumed = in_two_processes(tmp_path / "resumed")
    assert_same_training(straight, resumed, tmp_path / "straight", tmp_path / "resumed", exact=True)


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
