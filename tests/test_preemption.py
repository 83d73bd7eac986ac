"""SIGTERM (SLURM's warning before a time limit or preemption) mid-training: save, exit, resume, same result."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

CHILD = r"""
import sys, torch
from pathlib import Path
from safetensors.torch import save_file
sys.path.insert(0, sys.argv[3])
from test_train import copy_rows, tiny_model
from peftlab.train import train
from peftlab.train_config import TrainConfig
torch.set_num_threads(1)
model = tiny_model(seed=int(sys.argv[4]))  # a resumed run starts from other weights: the checkpoint restores
cfg = TrainConfig(lr=3e-3, batch_size=8, max_steps=200, warmup_steps=10, eval_interval=10, patience=100)
train(model, copy_rows(64), copy_rows(16, seed=1), cfg, pad_id=0, checkpoint_dir=Path(sys.argv[1]), run_key="k")
save_file({k: p.detach().clone() for k, p in model.named_parameters()}, sys.argv[2])
"""


def child(ckpt: Path, out: Path, seed: int = 0) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(ckpt), str(out), str(Path(__file__).parent), str(seed)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_saves_a_checkpoint_and_the_rerun_matches_an_uninterrupted_run(tmp_path):
    straight = child(tmp_path / "a", tmp_path / "straight.safetensors")
    interrupted = child(tmp_path / "b", tmp_path / "resumed.safetensors")
    deadline = time.monotonic() + 120
    while not (tmp_path / "b" / "latest.json").exists():  # at least one checkpoint, then the signal
        assert interrupted.poll() is None and time.monotonic() < deadline, interrupted.communicate()
        time.sleep(0.05)
    interrupted.send_signal(signal.SIGTERM)
    _, err = interrupted.communicate(timeout=120)
    assert interrupted.returncode != 0 and "Preempted" in err, err[-2000:]
    assert not (tmp_path / "resumed.safetensors").exists()
    assert {p.name for p in (tmp_path / "b").iterdir()} >= {"latest.json", "best.safetensors"}  # kept to resume

    # another initialisation (as in test_train's resume test): a rerun that ignored the checkpoint would differ
    resumed = child(tmp_path / "b", tmp_path / "resumed.safetensors", seed=123)
    for proc in (resumed, straight):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    expected, got = load_file(tmp_path / "straight.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # finished: no checkpoint left
