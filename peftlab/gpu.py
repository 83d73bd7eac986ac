"""GPUs for a job on a single machine: a lock-file allocator.

Snakemake counts a `gpu` resource (`snakemake --resources gpu=N` runs at most N GPU jobs at once) but hands a
job no device id. A job started with `resources: gpu=n` therefore takes the first n free slots i of this
machine's GPUs by exclusive fcntl locks on /tmp/peftlab-gpu-<i>.lock, held until the process exits (the
kernel releases them even after a kill), and sets CUDA_VISIBLE_DEVICES=i[,j...], so that its `cuda` is GPU i.
Where CUDA_VISIBLE_DEVICES is already set (SLURM sets it for --gpus jobs, or the user did), it is left alone.
It must run before CUDA is initialised: counting GPUs through CUDA would fix the visible devices too early,
so the count comes from the driver's /proc entries (PEFTLAB_GPUS overrides it).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import IO

_held: list[IO] = []  # open lock files: closing one (or exiting) frees its GPU


class GpuBusy(RuntimeError):
    """No GPU slot became free within the wait (another workflow on this machine holds them all)."""


def gpu_count() -> int:
    """GPUs on this machine without initialising CUDA: PEFTLAB_GPUS, else the NVIDIA driver's /proc entries."""
    if "PEFTLAB_GPUS" in os.environ:
        return int(os.environ["PEFTLAB_GPUS"])
    folder = Path("/proc/driver/nvidia/gpus")
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def claim_gpus(n: int = 1, count: int | None = None, lock_dir: Path | None = None, timeout_s: float = 3600.0,
               poll_s: float = 1.0) -> list[int] | None:
    """Take `n` free GPU slots for this process and make them its only visible devices; None if there is nothing
    to choose (no GPU, or CUDA_VISIBLE_DEVICES already set). Waits up to `timeout_s` while fewer are free; a
    partial claim is let go before waiting, so two jobs each holding some never wait on each other."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    count = gpu_count() if count is None else count
    if count == 0:
        return None
    if n > count:
        raise GpuBusy(f"the job asks for {n} GPUs; this machine has {count}")
    lock_dir = Path(lock_dir or tempfile.gettempdir())
    deadline = time.monotonic() + timeout_s
    while True:
        taken: list[tuple[int, IO]] = []
        for slot in range(count):
            handle = open(lock_dir / f"peftlab-gpu-{slot}.lock", "a")  # noqa: SIM115 - held for the process's life
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            taken.append((slot, handle))
            if len(taken) == n:
                _held.extend(h for _, h in taken)
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(s) for s, _ in taken)
                return [s for s, _ in taken]
        for _, handle in taken:
            handle.close()
        if time.monotonic() >= deadline:
            raise GpuBusy(f"{n} of the {count} GPU slots ({lock_dir}/peftlab-gpu-*.lock) did not come free "
                          f"within {timeout_s:g}s")
        time.sleep(poll_s)
