"""GPU jobs on one machine: the lock-file GPU allocator (run on CPU with pretend slots) and QLoRA's named
error where no CUDA device is."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from peftlab.gpu import GpuBusy, claim_gpus
from peftlab.models import QuantizationError, load_base, quantization_kwargs

CLAIM = textwrap.dedent("""
    import os, sys
    from peftlab.gpu import claim_gpus
    slots = claim_gpus(int(sys.argv[3]), count=3, lock_dir=sys.argv[1], timeout_s=float(sys.argv[2]), poll_s=0.05)
    print(",".join(map(str, slots)), os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    sys.stdin.read()  # hold the slot until the test closes stdin
""")


def claimer(lock_dir, timeout_s=0.3, n=1):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PYTHONPATH"] = os.getcwd()
    return subprocess.Popen([sys.executable, "-c", CLAIM, str(lock_dir), str(timeout_s), str(n)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_jobs_get_their_own_gpus_a_job_waits_for_enough_and_a_finished_job_frees_its_gpus(tmp_path):
    first = claimer(tmp_path)
    assert first.stdout.readline().split() == ["0", "0"]
    second = claimer(tmp_path, n=2)  # a data-parallel job: two GPUs
    assert second.stdout.readline().split() == ["1,2", "1,2"]
    third = claimer(tmp_path, timeout_s=0.3, n=2)  # no slot free: it gives up with a named error
    _, err = third.communicate(timeout=30)
    assert third.returncode != 0 and "GpuBusy" in err and "2 of the 3 GPU slots" in err
    first.kill()  # a killed job's lock goes with it
    first.wait()
    fourth = claimer(tmp_path, timeout_s=0.3, n=2)  # one slot free is not enough; its partial claim is let go
    _, err = fourth.communicate(timeout=30)
    assert fourth.returncode != 0 and "GpuBusy" in err
    fifth = claimer(tmp_path)
    assert fifth.stdout.readline().split() == ["0", "0"]
    second.communicate(input="", timeout=30)
    sixth = claimer(tmp_path, n=2)
    assert sixth.stdout.readline().split() == ["1,2", "1,2"]
    for proc in (second, fifth, sixth):
        proc.communicate(input="", timeout=30)
        assert proc.returncode == 0


def test_a_job_with_its_devices_already_set_keeps_them(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # as SLURM sets it for a --gpus job
    assert claim_gpus(count=2, lock_dir=tmp_path) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and not list(tmp_path.iterdir())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert claim_gpus(count=0, lock_dir=tmp_path) is None  # no GPU: nothing to choose
    with pytest.raises(GpuBusy, match="asks for 4 GPUs; this machine has 2"):
        claim_gpus(4, count=2, lock_dir=tmp_path)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_4bit_base_on_cpu_is_refused_before_anything_loads(tmp_path):
    spec = {"source": "local", "path": str(tmp_path / "absent"), "load_in_4bit": True}
    with pytest.raises(QuantizationError, match="'load_in_4bit': a 4-bit base needs a CUDA device"):
        load_base(str(tmp_path / "absent"), spec, {"kind": "translation"}, device="cpu")
    assert quantization_kwargs({"source": "local"}, "cpu") == {}  # a full-precision base loads as before


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_a_4bit_base_without_bitsandbytes_names_the_package():
    with pytest.raises(QuantizationError, match="needs the bitsandbytes package"):
        quantization_kwargs({"load_in_4bit": True}, "cuda")
