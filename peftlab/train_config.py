"""Training hyperparameters, checked; torch-free so that the workflow validates them at DAG time."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


class TrainConfigError(ValueError):
    """An unknown or ill-typed training hyperparameter."""


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

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise TrainConfigError(f"unknown training option {key!r}; known: {', '.join(sorted(known))}")
            kind = float if known[key].type == "float" else int
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise TrainConfigError(f"training option {key!r} must be a {kind.__name__}, got {value!r}")
        return cls(**values)
