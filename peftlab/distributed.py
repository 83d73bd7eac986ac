"""Data-parallel training: one train job on several devices, started through torchrun.

A run with `train: {devices: N}` (N > 1) trains in N processes, one per GPU (backend nccl) or, without
CUDA, N CPU processes (gloo). Each process takes a disjoint 1/N slice of every micro-batch of the same
data order and DistributedDataParallel averages the gradients, so N processes train what one process
with the whole batch would (peftlab/train.py); rank 0 alone writes checkpoints and outputs.

The processes are started by PyTorch's own launcher, `python -m torch.distributed.run --standalone`
(torchrun), as a child of the job, rather than by torch.multiprocessing.spawn: spawn re-imports the
parent's __main__ module in every child, and a Snakemake `script:` is one such module that would run
the whole job again; torchrun starts fresh interpreters on `python -m peftlab.distributed`, picks a free
port on this host, kills the other workers when one fails and passes SIGTERM on to them. The same
command works on a workstation and inside a SLURM job (one task holding N GPUs: `--gpus=N`): all
processes run on the job's one node. Several nodes per job are not supported.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """A data-parallel run cannot start (too few devices) or one of its processes failed (its error)."""


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(values: list[float], device: str) -> list[float]:
    """The element-wise sum over all processes (float64); the values themselves in a single process."""
    if rank_and_world()[1] == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def any_rank(flag: bool, device: str) -> bool:
    """True on every process when it is true on one (a SIGTERM that reached only some of them)."""
    return bool(all_sum([float(flag)], device)[0])


def from_rank0(value: float, device: str) -> float:
    """Rank 0's value on every process: decisions taken from it (early stopping) are the same everywhere."""
    if rank_and_world()[1] == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, 0)
    return float(tensor.item())


def rng_states() -> list[torch.Tensor]:
    """Every process's CPU RNG state (for rank 0's checkpoint: each rank draws its own dropout masks)."""
    own = torch.get_rng_state()
    if rank_and_world()[1] == 1:
        return [own]
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, own)
    return states


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def launch(target: str, kwargs: dict, devices: int, *, device_type: str, threads: int | None = None) -> None:
    """Run `target` ("module:function") in `devices` processes under torchrun, each as
    function(**kwargs, device=<its device>) inside a process group; raise the first failing process's error.

    `kwargs` must be JSON (paths as strings). A worker that was preempted raises train.Preempted here too, so
    the job is retried rather than recorded as failed; any other failure raises DistributedError with the
    rank and the original error. `threads` are the job's CPU threads, shared among the processes.
    """
    from peftlab.train import Preempted

    threads = threads or torch.get_num_threads()
    log_file = next((h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)),
                    None)
    with tempfile.TemporaryDirectory(prefix="peftlab-ddp-") as tmp:
        spec = {"target": target, "kwargs": kwargs, "device_type": device_type, "log_file": log_file,
                "threads": max(1, threads // devices), "errors": str(Path(tmp, "errors"))}
        Path(tmp, "spec.json").write_text(json.dumps(spec))
        root = str(Path(__file__).resolve().parent.parent)  # this checkout's peftlab, as the job imports it
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": str(spec["threads"])}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
                   "-m", "peftlab.distributed", str(Path(tmp, "spec.json"))]
        logging.getLogger(__name__).info("data parallel on %d %s processes: %s", devices, device_type,
                                         " ".join(command))
        process = subprocess.Popen(command, env=env)
        main_thread = threading.current_thread() is threading.main_thread()
        terminated = False

        def on_sigterm(signum, frame):  # noqa: ARG001
            # SLURM signals every process of the job; a local kill reaches only this one: pass it on, so that
            # the workers save their checkpoint. Either way the job was interrupted, not failed.
            nonlocal terminated
            terminated = True
            process.send_signal(signal.SIGTERM)

        previous = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
        try:
            returncode = process.wait()
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
        if returncode == 0:
            return
        reports = sorted((json.loads(p.read_text()) for p in Path(tmp, "errors").glob("*.json")),
                         key=lambda r: r["time"])
    if terminated or (reports and reports[0]["type"] == "Preempted"):
        raise Preempted(reports[0]["message"] if reports else f"SIGTERM before training began (torchrun exit "
                                                              f"{returncode})")
    detail = "; ".join(f"rank {r['rank']}: {r['type']}: {r['message']}" for r in reports) or "no worker reported"
    raise DistributedError(f"data-parallel training on {devices} {device_type} processes failed "
                           f"(torchrun exit {returncode}): {detail}")


def main(spec_path: str) -> None:
    """One worker (run by torchrun, which sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous address)."""
    spec = json.loads(Path(spec_path).read_text())
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if spec["log_file"]:  # the job's log; other ranks write only warnings and errors to it
        logging.basicConfig(filename=spec["log_file"], level=logging.INFO if rank == 0 else logging.WARNING,
                            format=f"%(asctime)s %(levelname)s %(name)s[rank {rank}]: %(message)s", force=True)
    torch.set_num_threads(spec["threads"])
    try:
        if spec["device_type"] == "cuda":
            if torch.cuda.device_count() < world:
                raise DistributedError(f"training option 'devices' asks for {world} GPUs; this job sees "
                                       f"{torch.cuda.device_count()} (CUDA_VISIBLE_DEVICES="
                                       f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}): give the job {world} GPUs")
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=torch.device(device))
        else:
            device = "cpu"
            dist.init_process_group("gloo")
        module, name = spec["target"].split(":")
        getattr(importlib.import_module(module), name)(**spec["kwargs"], device=device)
    except BaseException as error:
        errors = Path(spec["errors"])
        errors.mkdir(exist_ok=True)
        (errors / f"rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "type": type(error).__name__, "message": str(error), "time": time.time()}))
        raise
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
