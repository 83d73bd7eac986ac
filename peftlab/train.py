"""The training loop: one function a reader can hold in their head (nanoGPT's order of steps).

Set the learning rate -> evaluate and checkpoint every `eval_interval` -> forward/backward over
`grad_accumulation` micro-batches -> unscale, clip -> step -> zero_grad -> log -> stop on patience or
`max_steps`. The learning rate and the data order are pure functions of the optimizer step, so resuming
needs only the step, the trainable weights, the optimizer and GradScaler state and the RNG state; all of
it is saved as safetensors plus JSON, never pickle. Checkpoints are taken between optimizer steps only,
so no partial accumulation is ever saved (the accumulation position of a checkpoint is always 0).

Loss normalisation under accumulation: each micro-batch's mean token loss is weighted by its share of
the label tokens of the whole optimizer step (n_k / N), so the accumulated gradient is that of the mean
over all tokens of the effective batch, as one batch of batch_size x grad_accumulation would give.

Data parallel (`devices` > 1, started by peftlab/distributed.py): every process follows the same data order
and takes its own contiguous 1/devices slice of each micro-batch; a slice's loss is weighted by its share of
the label tokens of the whole step across processes, times the number of processes, so that DDP's gradient
average is again the gradient of the mean over all tokens: N processes with slices of b train what one
process with micro-batches of N x b trains. Dev loss is summed over the processes' slices of the dev set and
early stopping follows rank 0's number; rank 0 alone writes checkpoints and the curve.

Sharded (`sharding: fsdp`, full fine-tuning): torch's FSDP2 (fully_shard) splits each layer's weights, gradients
and AdamW state over the processes instead of DDP's copies; its reduce-scatter averages gradients as DDP's
all-reduce does, so the same loss weights hold. Checkpoints and best weights gather every tensor whole, one at a
time, onto rank 0's CPU: the files are those of an unsharded run, and resuming splits them again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from peftlab.atomic import write_json
from peftlab.data import collate
from peftlab.distributed import all_sum, any_rank, barrier, from_rank0, rank_and_world, rng_states
from peftlab.methods.core import mask_buffers
from peftlab.train_config import TrainConfig, TrainConfigError

log = logging.getLogger(__name__)


class Preempted(RuntimeError):
    """SIGTERM arrived (SLURM's warning before a time limit or preemption); a checkpoint was saved."""


class PrecisionError(RuntimeError):
    """The training precision (`precision`) or a 4-bit base needs something this device lacks."""


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: str) -> None:
    """Refuse, before any step, a precision the device cannot train in."""
    if precision == "fp16" and not device.startswith("cuda"):
        raise PrecisionError(f"training option 'precision': fp16 needs a CUDA device (its GradScaler is CUDA's); "
                             f"this job runs on {device!r}: use bf16 or fp32")
    if precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise PrecisionError(f"training option 'precision': bf16 is not supported by {torch.cuda.get_device_name()}; "
                             f"use fp16 or fp32")


def fused_adamw(device: str) -> bool | None:
    """AdamW's fused kernel where torch has one (CUDA, CPU); None (torch's default loop) elsewhere.

    On CPU, torch's default is one loop over the parameters: 0.57 s a step for full fine-tuning of MiniLM (22.7M
    parameters, one thread) against 0.12 s fused, which dominated the demo's longest job."""
    return True if device.split(":")[0] in ("cuda", "cpu") else None


def get_lr(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def micro_batch_order(lengths: list[int], cfg: TrainConfig, epoch: int) -> list[list[int]]:
    """One epoch's micro-batches, `grad_accumulation` per optimizer step: the effective batches of
    batch_order, each cut into micro-batches, so the examples an optimizer step sees do not depend on how
    it is split (4 x 8 and 1 x 32 train on the same 32 examples)."""
    effective = batch_order(lengths, cfg.batch_size * cfg.grad_accumulation, cfg.seed, epoch)
    return [batch[i:i + cfg.batch_size] for batch in effective for i in range(0, len(batch), cfg.batch_size)]


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: shuffled, then sorted by length within windows so padding stays small."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _lengths(rows: list[dict]) -> list[int]:
    return [len(r["input_ids"]) + len(r.get("labels", ())) for r in rows]  # classification rows: "label"


def first_batches(train_rows: list[dict], cfg: TrainConfig, pad_id: int, n: int) -> list[dict[str, torch.Tensor]]:
    """The first `n` batches `train` will take (steps 0..n-1 of the run's data order, a function of its seed):
    what a method that scores data when applied (SparseAdapter's SNIP) is handed, so it sees the run's own
    data and a resumed run, which applies the method again, scores the same batches."""
    effective = cfg.batch_size * cfg.grad_accumulation
    batches_per_epoch = len(train_rows) // effective * cfg.grad_accumulation
    if n > batches_per_epoch:
        raise ValueError(f"the method scores {n} training batches at initialisation, but {len(train_rows)} "
                         f"training examples make {batches_per_epoch} batches of {cfg.batch_size}")
    order = micro_batch_order(_lengths(train_rows), cfg, 0) if n else []
    return [collate([train_rows[i] for i in batch], pad_id) for batch in order[:n]]


def token_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                           label_smoothing=smoothing)


def is_causal_batch(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> bool:
    """A decoder-only LM's batch: token labels (2-D, class labels are 1-D) on a model without an encoder."""
    return batch["labels"].dim() == 2 and not model.config.is_encoder_decoder


def logits_and_labels(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                      forward: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and the labels they predict. A seq2seq model or a classifier takes the labels (seq2seq builds
    its decoder input from them) and its logits line up with them. A causal LM's labels are its input ids with
    -100 on the prompt (Hugging Face's convention): position t predicts label t + 1, so both are shifted here,
    and the labels are not passed in (the model would compute a second, unused loss over the whole vocabulary).
    `forward` runs the batch when it is not the model itself (DistributedDataParallel's wrapper of it)."""
    forward = forward or model
    if not is_causal_batch(model, batch):
        return forward(**batch).logits, batch["labels"]
    logits = forward(**{k: v for k, v in batch.items() if k != "labels"}).logits
    # peft's prompt tuning and P-tuning prepend their virtual tokens to the input, and their logits with them
    logits = logits[:, logits.shape[1] - batch["labels"].shape[1]:]
    return logits[:, :-1], predicted_labels(model, batch)


def predicted_labels(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The labels the loss counts (logits_and_labels): a causal LM's first label has no logit before it."""
    return batch["labels"][:, 1:] if is_causal_batch(model, batch) else batch["labels"]


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, rows: list[dict], pad_id: int, batch_size: int, device: str) -> float:
    """Mean per-token cross-entropy on a fixed split (no smoothing), for early stopping. Under data
    parallelism each process evaluates its contiguous share of the rows and the sums are added up."""
    rank, world = rank_and_world()
    share = math.ceil(len(rows) / world)
    mine = rows[rank * share:(rank + 1) * share]
    # an FSDP forward gathers each layer's weights with all processes: each runs as many forwards as the others
    # (a process whose share ran out runs a stand-in batch that counts for nothing)
    stop = share if isinstance(model, FSDPModule) else len(mine)
    model.eval()
    total, count = 0.0, 0
    for start in range(0, stop, batch_size):
        chunk = mine[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk or rows[:1], pad_id).items()}
        logits, labels = logits_and_labels(model, batch)
        n = int((labels != -100).sum()) if chunk else 0
        total += float(token_loss(logits, labels)) * n
        count += n
    model.train()
    if world > 1:
        total, count = all_sum([total, count], device)
    return total / max(count, 1)


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def step_memory_mb(device: str) -> float:
    """Memory of the step just taken: CUDA's peak allocation since the last reset (the caller resets it per
    step), or on CPU the process's resident set now (/proc/self/statm; there is no per-step CPU peak)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the process's peak so far is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_summary(samples: list[float], device: str) -> dict:
    """Average, maximum and 99th percentile of the per-step samples (as peft's method comparison records)."""
    source = "cuda_max_memory_allocated_per_step" if device.startswith("cuda") else "process_rss_per_step"
    if not samples:
        return {"source": source, "avg_mb": None, "max_mb": None, "p99_mb": None}
    values = np.asarray(samples)
    return {"source": source, "avg_mb": round(float(values.mean()), 1), "max_mb": round(float(values.max()), 1),
            "p99_mb": round(float(np.percentile(values, 99)), 1)}


# Dense peak tensor throughput per GPU (FLOP/s) from the vendors' data sheets: (bf16/fp16, tf32).
# Matched on torch.cuda.get_device_name(); a GPU not listed gets no MFU rather than a guessed one.
PEAK_FLOPS = {
    "H200": (989e12, 494e12), "H100 SXM": (989e12, 494e12), "H100 PCIe": (756e12, 378e12),
    "H100 NVL": (835e12, 418e12), "H100": (989e12, 494e12), "A100": (312e12, 156e12), "L40S": (362e12, 183e12),
    "A10G": (70e12, 35e12), "A10": (125e12, 62.5e12), "L4": (121e12, 60e12), "RTX 4090": (165e12, 82.6e12),
    "RTX 3090": (71e12, 35.6e12), "V100": (125e12, None), "T4": (65e12, None),
}


def peak_flops(device_name: str, precision: str) -> float | None:
    """The GPU's dense peak for this precision (fp32 runs use TF32 tensor cores), None if not in PEAK_FLOPS."""
    for name, (half, tf32) in PEAK_FLOPS.items():  # longest names first within a family (H100 SXM before H100)
        if name in device_name:
            return half if precision in AUTOCAST_DTYPES else tf32
    return None


def flops_per_token_pair(model: torch.nn.Module) -> tuple[float, float]:
    """Model FLOPs per source token and per target token of one training step (forward and backward).

    The 6N rule made trainable-aware: a parameter costs 2 FLOPs per token forward, 2 backward for the
    activation gradient (needed through frozen layers too) and 2 for its weight gradient only when it is
    trained: 4 * N + 2 * N_trainable, which is 6N when all of N trains. N counts weights that multiply
    (nn.Linear, the output projection included), not embedding lookups or norms; attention's
    sequence-length-squared FLOPs and recomputation under gradient checkpointing are not counted (MFU,
    not hardware utilisation). In an encoder-decoder a source token goes through the encoder, a target
    token through the decoder; other models send every token through everything (first element)."""
    encoder = model.get_encoder() if hasattr(model, "get_encoder") and getattr(model.config, "is_encoder_decoder",
                                                                                 False) else None
    in_encoder = {id(m) for m in encoder.modules()} if encoder is not None else set()
    costs = [0.0, 0.0]
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            part = 0 if encoder is None or id(module) in in_encoder else 1
            for p in module.parameters(recurse=False):
                costs[part] += (4 + 2 * p.requires_grad) * p.numel()
    # method modules (adapters, LoRA) are nn.Linear too; their trainable weights count like any other
    return costs[0], costs[1] if encoder is not None else 0.0  # a classifier's label is no token


def set_checkpointing(model: torch.nn.Module, on: bool) -> None:
    """Hugging Face's activation (gradient) checkpointing, non-reentrant: it computes gradients for the
    trainable weights inside a checkpointed block even when the block's inputs (frozen embeddings) do not
    require grad, as PEFT needs. transformers 5 renamed gradient_* to activation_checkpointing_*."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    # FSDP2 leaves the root's weights gathered after a forward, as plain tensors that the next reshard drops:
    # its sharded parameters are the ones to read, load and optimize
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def shard(model: torch.nn.Module, device: str) -> None:
    """FSDP2 in place, as Hugging Face's layer-wise wrapping: each block of the model's layer stacks (the elements
    of its nn.ModuleLists) is one unit, the rest (embeddings, tied output projection, norms) the root's; fully_shard
    moves each process's shards onto `device`."""
    mesh = init_device_mesh(device.split(":")[0], (rank_and_world()[1],))
    for stack in [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]:
        for block in stack:
            fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _gathered(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """The tensors whole on rank 0's CPU ({} on the other ranks). FSDP's shards are gathered one tensor at a time,
    so no device holds the whole model; collective: every process calls it with the same names in the same order."""
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        if rank == 0:
            out[name] = tensor.detach().cpu()
    return out


def _like(param: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A saved whole tensor split as its FSDP-sharded parameter is (weights, AdamW moments); else as it is."""
    if isinstance(param, DTensor) and value.shape == param.shape:
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value


def unshard_to_cpu(model: torch.nn.Module) -> None:
    """Replace the model's FSDP-sharded parameters by whole ones on the CPU (collective), tied weights still tied,
    so that it is saved as an unsharded model is; it stays FSDP-hooked, for saving rather than for forwards."""
    _trainable(model)  # resharded: the FSDP state dict hooks find nothing left to reshard
    whole: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if id(p) not in whole:
                whole[id(p)] = torch.nn.Parameter(_gathered({name: p}, 0)[name], requires_grad=p.requires_grad)
            module._parameters[name] = whole[id(p)]
        for name, b in list(module.named_buffers(recurse=False)):
            module._buffers[name] = b.cpu()


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


class Checkpointer:
    """Latest state for resuming and best weights for the result, in one folder outside the rule's outputs.

    `run_key` fingerprints everything that defines the run; a checkpoint with another key (say the
    learning rate changed) is ignored rather than resumed.
    """

    def __init__(self, folder: Path, run_key: str, rank: int = 0):
        """Every process calls save and save_best (FSDP gathers shards from all); rank 0 writes."""
        self.folder, self.run_key, self.rank = folder, run_key, rank
        folder.mkdir(parents=True, exist_ok=True)

    def save_best(self, model: torch.nn.Module) -> None:
        weights = _gathered(dict(_trainable(model)), self.rank)
        if self.rank == 0:
            _atomic_save_tensors(weights, self.folder / "best.safetensors")

    def load_best(self, model: torch.nn.Module) -> None:
        best = load_file(str(self.folder / "best.safetensors"))
        params = _trainable(model)
        with torch.no_grad():
            for name, value in best.items():
                params[name].copy_(_like(params[name], value))

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
             scaler: torch.amp.GradScaler | None = None, rng: list[torch.Tensor] | None = None) -> None:
        """`rng`: every process's CPU RNG state under data parallelism (rank 0's first), else this process's."""
        params = _trainable(model)
        tensors = {f"model.{n}": p for n, p in params.items()}
        tensors |= {f"mask.{n}": b for n, b in mask_buffers(model).items()}
        for name, p in params.items():
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"opt.{key}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
        tensors = _gathered(tensors, self.rank)
        if self.rank > 0:
            return
        rng = rng or [torch.get_rng_state()]
        tensors["rng.torch"] = rng[0]
        tensors |= {f"rng.torch.{rank}": value for rank, value in enumerate(rng[1:], start=1)}
        step = state["step"]
        _atomic_save_tensors(tensors, self.folder / f"latest-{step}.safetensors")
        # The JSON is written last and names its tensor file, so a crash between the two leaves the
        # previous consistent pair in place.
        # the GradScaler's state is a few numbers (scale, growth tracker): JSON, with the loop's state
        scaler_state = scaler.state_dict() if scaler is not None and scaler.is_enabled() else {}
        write_json({**state, "run_key": self.run_key, "tensors": f"latest-{step}.safetensors",
                    "scaler": scaler_state},
                           self.folder / "latest.json")
        for old in self.folder.glob("latest-*.safetensors"):
            if old.name != f"latest-{step}.safetensors":
                old.unlink()

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None = None, rank: int = 0) -> dict | None:
        meta_path = self.folder / "latest.json"
        if not meta_path.exists():
            return None
        state = json.loads(meta_path.read_text())
        if state.get("run_key") != self.run_key:
            log.warning("ignoring checkpoint in %s: it belongs to a different configuration", self.folder)
            return None
        tensors = load_file(str(self.folder / state["tensors"]))
        params = _trainable(model)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(_like(p, tensors[f"model.{name}"]))
            # The trained weights belong to the masks they were trained under. Applying the method again
            # rebuilds the same masks (it is seeded and scores the run's first batches); should a scoring
            # differ in the last bit (GPU kernels), the checkpoint's masks still win.
            for name, mask in mask_buffers(model).items():
                if f"mask.{name}" not in tensors:
                    raise ValueError(f"{self.folder / state['tensors']} has no mask {name!r} for this model")
                saved = tensors[f"mask.{name}"].to(mask.device)
                if not torch.equal(mask, saved):
                    log.warning("mask %s rebuilt on resume differs from the checkpoint's; using the checkpoint's", name)
                    mask.copy_(saved)
        for name, p in params.items():
            opt_state = {key: _like(p, tensors[f"opt.{key}.{name}"]) for key in ("step", "exp_avg", "exp_avg_sq")
                         if f"opt.{key}.{name}" in tensors}
            if opt_state:
                optimizer.state[p] = opt_state
        torch.set_rng_state(tensors["rng.torch" if rank == 0 else f"rng.torch.{rank}"])
        scaler_state = state.pop("scaler", {})
        if scaler is not None and scaler_state:
            scaler.load_state_dict(scaler_state)
        return state

    def discard(self) -> None:
        """Remove the checkpoint once the run has finished: the best weights are in the model and its
        outputs, and nothing resumes a finished run (they were 91 of a test study's 95 MB)."""
        discard_checkpoints(self.folder)


def discard_checkpoints(folder: Path) -> None:
    """Remove what Checkpointer wrote in `folder`, and the folder once it is empty (only our files: the
    folder is the caller's)."""
    folder = Path(folder)
    for path in [*folder.glob("latest-*.safetensors"), folder / "latest.json", folder / "best.safetensors",
                 *folder.glob("*.tmp")]:
        path.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def progress(step: int, max_steps: int, elapsed_s: float, call_s: float, call_steps: int) -> str:
    """"step 100/2000 (5%)  elapsed 0:00:12  eta<=0:03:48" for the job log. The rate is this invocation's
    (`call_steps` steps, including dev evaluations, in `call_s` seconds: a resumed run's earlier steps ran
    elsewhere); the ETA is to max_steps, an upper bound when early stopping ends the run sooner."""
    eta = _clock((max_steps - step) * call_s / call_steps) if call_steps else "?"
    return f"step {step}/{max_steps} ({100 * step // max_steps}%)  elapsed {_clock(elapsed_s)}  eta<={eta}"


def train(model: torch.nn.Module, train_rows: list[dict], dev_rows: list[dict], cfg: TrainConfig, *,
          pad_id: int, checkpoint_dir: Path, run_key: str, log_path: Path | None = None,
          device: str = "cpu", stop_after_steps: int | None = None) -> dict:
    """Train the model's trainable parameters in place; on return the model holds the best dev weights (under
    `sharding: fsdp` whole, on the CPU, for saving: unshard_to_cpu).

    Returns the training record (`train` section) and the curve. `checkpoint_dir` holds what resuming
    needs while the run is unfinished; it is removed when training completes. `stop_after_steps`
    simulates an interruption after that many optimizer steps of this invocation (used by the resume test).
    On CUDA, TF32 matmuls are used; on CUDA and CPU, the fused AdamW kernel (both recorded in the result).
    """
    effective = cfg.batch_size * cfg.grad_accumulation
    if len(train_rows) < effective:
        raise ValueError(f"{len(train_rows)} training examples are fewer than one batch of {effective} "
                         f"(batch_size {cfg.batch_size} x grad_accumulation {cfg.grad_accumulation})")
    check_precision(cfg.precision, device)  # before any step: a job on the wrong device fails at once
    rank, world = rank_and_world()
    if world != cfg.devices:
        raise ValueError(f"training option 'devices' is {cfg.devices} but train() runs in {world} process(es); "
                         f"runs.train_run starts the processes (peftlab/distributed.py)")
    sharded = cfg.sharding == "fsdp"  # method full only (grid.check_training)
    config = model.config.to_dict() if hasattr(model, "config") else {}
    layerdrop = {k: v for k, v in config.items() if k.endswith("layerdrop") and v}
    if sharded and layerdrop:
        # each process draws its own LayerDrop decisions; FSDP needs every process to run the same layers (each
        # gathers a layer's weights with the others), or the collectives mismatch
        raise TrainConfigError(f"training option 'sharding': fsdp needs every process to run every layer, but the "
                               f"model skips layers at random in training ({layerdrop}): use sharding ddp", "sharding")
    local = cfg.batch_size // world  # each process's slice of a micro-batch (validate: batch_size % devices == 0)
    cuda = device.startswith("cuda")
    torch.manual_seed(cfg.seed + rank)  # each process its own dropout masks; a single process is unchanged
    if not getattr(model, "is_quantized", False) and not sharded:  # a 4-bit base is placed by from_pretrained
        model.to(device)
    model.train()
    if cfg.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ValueError(f"training option 'gradient_checkpointing': {type(model).__name__} does not support it")
        set_checkpointing(model, True)
    if sharded:  # before the optimizer is built: fully_shard replaces the parameters by sharded ones
        shard(model, device)
    params = list(_trainable(model).values())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay,
                                  fused=fused_adamw(device))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    autocast_dtype = AUTOCAST_DTYPES.get(cfg.precision)
    tf32_before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    ckpt = Checkpointer(checkpoint_dir, run_key, rank)
    state = ckpt.restore(model, optimizer, scaler, rank) or {
        "step": 0, "best_dev": None, "best_step": 0, "bad_evals": 0, "curve": [], "elapsed_s": 0.0,
        "tokens": 0, "time_to_best_s": 0.0, "window_loss": 0.0, "window_n": 0, "micro_batches": 0,
        "memory_mb": [], "model_flops": 0.0,
    }
    state.setdefault("micro_batches", state["step"])  # a checkpoint from before accumulation existed
    state.setdefault("memory_mb", [])
    state.setdefault("model_flops", 0.0)
    if state["micro_batches"] != state["step"] * cfg.grad_accumulation:
        raise ValueError(f"checkpoint in {checkpoint_dir} is mid-accumulation ({state['micro_batches']} micro-batches "
                         f"at optimizer step {state['step']}); it cannot be resumed exactly")
    src_flops, tgt_flops = flops_per_token_pair(model)
    # find_unused_parameters: a method may hold trainable weights that a forward pass leaves out; DDP would hang
    net = model if world == 1 or sharded else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[torch.device(device)] if cuda else None, find_unused_parameters=True)

    def save_checkpoint(elapsed_s: float) -> None:  # every process calls it (its RNG state is gathered)
        ckpt.save(model, optimizer, {**state, "elapsed_s": elapsed_s}, scaler, rng_states())

    # AdaLoRA (peft) re-allocates its ranks from each step's gradients: after the optimizer step, before zero_grad
    allocate = getattr(getattr(model, "base_model", None), "update_and_allocate", None)
    if state["step"]:
        log.info("resuming from step %d (best dev loss %s)", state["step"], state["best_dev"])

    preempted = False

    def on_sigterm(signum, frame):  # noqa: ARG001
        nonlocal preempted
        preempted = True

    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
    lengths = _lengths(train_rows)
    batches_per_epoch = len(train_rows) // effective * cfg.grad_accumulation  # micro-batches
    epoch_cache: dict[int, list[list[int]]] = {}
    log_file = open(log_path, "a") if log_path and rank == 0 else None  # noqa: SIM115
    started, steps_this_call = time.perf_counter(), 0
    elapsed_before = state["elapsed_s"]
    stopped_early = False
    try:
        while True:
            step = state["step"]
            elapsed = elapsed_before + time.perf_counter() - started
            evaluated = bool(state["curve"]) and state["curve"][-1]["step"] == step  # resumed right after one
            if step % cfg.eval_interval == 0 and step > 0 and not evaluated:
                dev_loss = from_rank0(evaluate_loss(model, dev_rows, pad_id, cfg.batch_size, device), device)
                point = {"step": step, "train_loss": state["window_loss"] / max(state["window_n"], 1),
                         "dev_loss": dev_loss, "lr": get_lr(step - 1, cfg), "elapsed_s": round(elapsed, 3)}
                state["curve"].append(point)
                state.update(window_loss=0.0, window_n=0)
                if state["best_dev"] is None or dev_loss < state["best_dev"]:
                    state.update(best_dev=dev_loss, best_step=step, bad_evals=0, time_to_best_s=elapsed)
                    ckpt.save_best(model)
                else:
                    state["bad_evals"] += 1
                log.info("%s  train %.4f  dev %.4f  best %.4f@%d", progress(
                    step, cfg.max_steps, elapsed, time.perf_counter() - started, steps_this_call),
                    point["train_loss"], dev_loss, state["best_dev"], state["best_step"])
                if log_file:
                    log_file.write(json.dumps(point) + "\n")
                    log_file.flush()
                save_checkpoint(elapsed)
                if state["bad_evals"] >= cfg.patience:
                    stopped_early = True
                    break
            if step >= cfg.max_steps:
                break
            if any_rank(preempted or (stop_after_steps is not None and steps_this_call >= stop_after_steps), device):
                save_checkpoint(elapsed)
                barrier()  # no process exits (and has the others killed) before rank 0 has written it
                raise Preempted(f"stopped at step {step}; checkpoint saved in {checkpoint_dir}")

            for group in optimizer.param_groups:
                group["lr"] = get_lr(step, cfg)
            micro = []
            for k in range(cfg.grad_accumulation):
                epoch, index = divmod(step * cfg.grad_accumulation + k, batches_per_epoch)
                if epoch not in epoch_cache:
                    epoch_cache = {epoch: micro_batch_order(lengths, cfg, epoch)}
                rows = epoch_cache[epoch][index][rank * local:(rank + 1) * local]
                micro.append(collate([train_rows[i] for i in rows], pad_id))
            label_tokens = [int((predicted_labels(model, b) != -100).sum()) for b in micro]
            # the whole step's token counts, over all processes (the loss weights and the throughput need them)
            counts = all_sum([*label_tokens, *(int(b["attention_mask"].sum()) for b in micro)], device)
            step_labels, step_sources = counts[:len(micro)], counts[len(micro):]
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            step_loss = 0.0
            for k, (batch, n) in enumerate(zip(micro, label_tokens, strict=True)):
                batch = {key: v.to(device) for key, v in batch.items()}
                # gradients are all-reduced once per optimizer step, on its last micro-batch
                last = k == len(micro) - 1
                if sharded:  # FSDP's no_sync: gradients stay whole and local until the last micro-batch
                    model.set_requires_gradient_sync(last)
                with nullcontext() if world == 1 or last or sharded else net.no_sync():
                    with torch.autocast(device.split(":")[0], dtype=autocast_dtype,
                                        enabled=autocast_dtype is not None):
                        logits, labels = logits_and_labels(model, batch, forward=net)
                    # the slice's share of the step's label tokens (1.0 in one process without accumulation:
                    # bit-identical), times the processes whose gradients DDP averages
                    loss = token_loss(logits.float(), labels, cfg.label_smoothing) * (n * world / sum(step_labels))
                    scaler.scale(loss).backward()
                step_loss += float(loss.detach())
                # a causal LM's target tokens are part of its input: counted once, through the whole model
                src, tgt = step_sources[k], 0 if is_causal_batch(model, batch) else step_labels[k]
                state["tokens"] += int(src + tgt)
                state["model_flops"] += src_flops * src + tgt_flops * tgt
            step_loss = all_sum([step_loss], device)[0] / world  # the step's loss over all its tokens
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if allocate is not None:
                allocate(step)
            optimizer.zero_grad(set_to_none=True)
            state["memory_mb"].append(round(step_memory_mb(device), 2))
            state["window_loss"] += step_loss
            state["window_n"] += 1
            state["micro_batches"] += cfg.grad_accumulation
            state["step"] = step + 1
            steps_this_call += 1
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if log_file:
            log_file.close()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
        if cfg.gradient_checkpointing:
            set_checkpointing(model, False)

    elapsed = elapsed_before + time.perf_counter() - started
    peak = peak_flops(torch.cuda.get_device_name(device), cfg.precision) if cuda else None
    # model FLOPs over wall time, evaluations included (as peft's suite times a whole run); see flops_per_token_pair
    mfu = round(state["model_flops"] / elapsed / (peak * world), 4) if peak and elapsed > 0 else None
    if state["best_dev"] is None:  # max_steps below eval_interval: the final weights are the best we have
        state.update(best_dev=from_rank0(evaluate_loss(model, dev_rows, pad_id, cfg.batch_size, device), device),
                     best_step=state["step"])
        ckpt.save_best(model)
    barrier()  # rank 0's best weights are on disk
    ckpt.load_best(model)
    barrier()  # and every process has read them
    if sharded:
        unshard_to_cpu(model)
    if rank == 0:
        ckpt.discard()
    return {
        "train": {
            "steps": state["step"], "wall_time_s": round(elapsed, 3),
            "time_per_step_s": round(elapsed / max(state["step"], 1), 5),
            "tokens_per_s": round(state["tokens"] / max(elapsed, 1e-9), 1),
            # on CUDA the peak counter is reset every step: the run's peak is the largest step's or the last
            "peak_memory_mb": round(max([peak_memory_mb(device), *(state["memory_mb"] if cuda else [])]), 1),
            "best_dev_score": state["best_dev"],
            "dev_metric": "dev_loss", "best_step": state["best_step"],
            "time_to_best_s": round(state["time_to_best_s"], 3), "stopped_early": stopped_early,
            "memory": memory_summary(state["memory_mb"], device),
            "precision": cfg.precision, "grad_accumulation": cfg.grad_accumulation,
            "effective_batch_size": effective, "gradient_checkpointing": cfg.gradient_checkpointing,
            "tf32": cuda, "fused_adamw": bool(fused_adamw(device)), "devices": world,
            "model_flops": state["model_flops"], "mfu": mfu,
        },
        "curve": state["curve"],
    }
