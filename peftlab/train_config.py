"""Training hyperparameters, checked; torch-free so that the workflow validates them at DAG time."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

PRECISIONS = ("fp32", "bf16", "fp16")
SHARDINGS = ("ddp", "fsdp")


class TrainConfigError(ValueError):
    """An unknown, ill-typed or out-of-range training hyperparameter (`key`: its name)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class TrainConfig:
    """Training hyperparameters; each run's record stores the resolved values."""

    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    batch_size: int = field(default=32, metadata={"help": "sequences per step"})
    max_steps: int = field(default=400, metadata={"help": "upper bound on optimizer steps"})
    warmup_steps: int = field(default=50, metadata={"help": "linear warm-up, then cosine decay to min_lr_ratio"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final learning rate as a fraction of lr"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    beta2: float = field(default=0.98, metadata={"help": "AdamW beta2 (0.98 is the Transformer-MT default)"})
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing of the training loss"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm; 0 disables clipping"})
    eval_interval: int = field(default=50, metadata={"help": "steps between dev evaluations and checkpoints"})
    patience: int = field(default=4, metadata={"help": "evaluations without dev improvement before stopping"})
    seed: int = field(default=0, metadata={"help": "seeds initialisation, data order and dropout"})
    precision: str = field(default="fp32", metadata={
        "help": "fp32; bf16 (autocast); fp16 (autocast with a GradScaler; CUDA only)"})
    grad_accumulation: int = field(default=1, metadata={
        "help": "micro-batches of batch_size per optimizer step (effective batch = batch_size x this); "
                "max_steps, warmup_steps and eval_interval count optimizer steps"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in the backward pass (HF gradient_checkpointing_enable): less memory, "
                "about a third more compute"})
    devices: int = field(default=1, metadata={
        "help": "data-parallel processes per train job: GPUs (DDP over nccl) or, without CUDA, CPU processes "
                "(gloo); each takes batch_size / devices of every micro-batch, so the effective batch, the data "
                "order and the result do not depend on it (to float rounding)"})
    sharding: str = field(default="ddp", metadata={
        "help": "with devices > 1: ddp (every process holds the whole model, gradients are averaged) or fsdp (torch's "
                "FSDP2 fully_shard: weights, gradients and optimizer state are split over the processes, for full "
                "fine-tuning of a model that does not fit one device; method full only)"})

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A checked config: unknown keys, wrong types and out-of-range values raise TrainConfigError."""
        cls.check_keys(values)
        cfg = cls(**values)
        cfg.validate()
        return cfg

    @classmethod
    def check_keys(cls, values: dict) -> None:
        """Names and types of some options (one layer of a config: its ranges are checked once merged)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise TrainConfigError(f"unknown training option {key!r}; known: {', '.join(sorted(known))}", key)
            kind = {"float": float, "int": int, "str": str, "bool": bool}[known[key].type]
            if kind in (str, bool):
                ok = isinstance(value, kind)
            else:
                ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (
                    kind is float or (math.isfinite(value) and value == int(value)))
            if not ok:
                raise TrainConfigError(f"training option {key!r} must be a {kind.__name__}, got {value!r}", key)

    def validate(self) -> None:
        """Every range a training run relies on, in one place: the workflow's plan-time check and every job
        call it (through from_dict), so a value that would crash a job or silently not train fails at once."""
        def need(ok: bool, key: str, rule: str) -> None:
            if not ok:
                raise TrainConfigError(f"training option {key!r} must be {rule}, got {getattr(self, key)!r}", key)

        for key in ("lr", "min_lr_ratio", "weight_decay", "beta2", "label_smoothing", "grad_clip"):
            need(math.isfinite(getattr(self, key)), key, "a finite number")
        need(self.lr > 0, "lr", "> 0")
        need(self.batch_size >= 1, "batch_size", ">= 1")
        need(self.max_steps >= 1, "max_steps", ">= 1 (0 would record a run that never trained)")
        need(0 <= self.warmup_steps <= self.max_steps, "warmup_steps", f"between 0 and max_steps ({self.max_steps})")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "in [0, 1]")
        need(self.weight_decay >= 0, "weight_decay", ">= 0")
        need(0 <= self.beta2 < 1, "beta2", "in [0, 1)")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "in [0, 1)")
        need(self.grad_clip >= 0, "grad_clip", ">= 0 (0 disables clipping)")
        # a run saves a checkpoint at each evaluation: none before max_steps means a kill loses everything
        need(1 <= self.eval_interval <= self.max_steps, "eval_interval", f"between 1 and max_steps ({self.max_steps})")
        need(self.patience >= 1, "patience", ">= 1 (0 would stop at the first evaluation, improving or not)")
        need(self.seed >= 0, "seed", ">= 0")
        need(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}")
        need(self.grad_accumulation >= 1, "grad_accumulation", ">= 1 (micro-batches per optimizer step)")
        need(self.devices >= 1, "devices", ">= 1 (processes per train job)")
        need(self.batch_size % self.devices == 0, "batch_size",
             f"a multiple of devices ({self.devices}): each process takes an equal slice of every micro-batch")
        need(self.sharding in SHARDINGS, "sharding", f"one of {', '.join(SHARDINGS)}")
        if self.sharding == "fsdp":
            need(self.devices > 1, "devices", "> 1 with sharding fsdp (one process has nothing to shard over)")
            # torch.amp.GradScaler does not unscale sharded gradients (FSDP1 has its own ShardedGradScaler)
            need(self.precision != "fp16", "precision", "fp32 or bf16 with sharding fsdp")


def pretraining_config(values: dict) -> TrainConfig:
    """A built base model's `build.train`: checked as any, and in one process (pretraining is not data parallel)."""
    cfg = TrainConfig.from_dict(values)
    if cfg.devices > 1:
        raise TrainConfigError(f"training option 'devices' must be 1 for pretraining a built base model (it runs in "
                               f"one process; data parallelism is for train jobs), got {cfg.devices}", "devices")
    return cfg
