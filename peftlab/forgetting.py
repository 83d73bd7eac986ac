"""Forgetting (He et al., 2021): how far adaptation moved a model away from its base.

- layer_cka: per-layer linear CKA between the base and the tuned model's hidden states on the same held-out
  inputs (1 = the same representation up to rotation and scale; lower = moved further).
- retained_quality: for MT, the tuned model's BLEU/chrF/TER on the base model's own pretraining pairs; the
  base run's numbers on the same test sets are the reference, so forgetting is the difference (in SQL).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from peftlab.languages import Languages

POOLS = ("token", "mean")


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al., 2019) of two representations of the same n inputs.

    Convention: x is [n_samples, p] and y is [n_samples, q] (rows are the same inputs in the same order,
    columns are features; p and q may differ). Columns are centred, then
    CKA = ||y^T x||_F^2 / (||x^T x||_F ||y^T y||_F). Invariant to rotation and isotropic scaling of either side;
    NaN when a side is constant. Note it is biased upwards when n is not much larger than the feature count.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need [n, p] and [n, q] arrays over the same n samples, got {x.shape} and {y.shape}")
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    denominator = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / denominator) if denominator > 0 else float("nan")


class _Moments:
    """Streaming linear CKA: sums of x, y, x^T x, y^T y, y^T x give the centred products exactly, so memory is
    O(features^2) per layer however many tokens pass through (float64, on the models' device)."""

    def __init__(self) -> None:
        self.n, self.sums = 0, None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.double(), y.double()
        parts = [x.sum(0), y.sum(0), x.T @ x, y.T @ y, y.T @ x]
        self.sums = parts if self.sums is None else [a + b for a, b in zip(self.sums, parts, strict=True)]
        self.n += len(x)

    def value(self) -> float:
        sx, sy, sxx, syy, syx = self.sums
        mx, my = sx / self.n, sy / self.n
        cxx = sxx - self.n * torch.outer(mx, mx)
        cyy = syy - self.n * torch.outer(my, my)
        cyx = syx - self.n * torch.outer(my, mx)
        denominator = float(torch.linalg.norm(cxx) * torch.linalg.norm(cyy))
        return float(torch.linalg.norm(cyx) ** 2) / denominator if denominator > 0 else float("nan")


def _hidden_states(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Embedding output then every layer's output, [B, T, H] each; the encoder's for encoder-decoder models. A
    decoder-only LM has no encoder: its decoder's states on the whole row (a translation row is prompt + target,
    teacher-forced), so its CKA measures how the model's reading of source and reference moved."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    if model.config.is_encoder_decoder:
        # The encoder alone: what the source side became. Methods live inside its modules, so calling it directly
        # sees them (peft's prefix tuning of seq2seq models prefixes the decoder only).
        return model.get_encoder()(**inputs, output_hidden_states=True).hidden_states
    # The model's own forward (peft's prefix tuning adds its prefix and attention mask there), with the backbone's
    # hidden states taken by hooks: asking the whole model for them breaks peft's prefix-tuned classifiers, which
    # hand the backbone's second output (the hidden-state tuple where there is no pooler, as in XLM-R) to the head.
    backbone = _backbone(model)
    captured: list[tuple[torch.Tensor, ...]] = []

    def ask(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:  # noqa: ARG001
        return args, {**kwargs, "output_hidden_states": True, "return_dict": True}

    def take(module: torch.nn.Module, args: tuple, kwargs: dict, output):  # noqa: ARG001
        captured.append(output.hidden_states)
        return type(output)(**{k: v for k, v in output.items() if k != "hidden_states"})  # as the caller asked

    hooks = [backbone.register_forward_pre_hook(ask, with_kwargs=True),
             backbone.register_forward_hook(take, with_kwargs=True)]
    try:
        model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    if len(captured) != 1:
        raise ValueError(f"{type(model).__name__}: its backbone ran {len(captured)} times in one forward, expected 1")
    return captured[0]


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer under the task head (BertModel, XLMRobertaModel, ...), through peft's wrapper if any."""
    hf_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    return hf_model.base_model


def position_shift(model: torch.nn.Module) -> int:
    """How many positions a method moves the input tokens by: peft's prefix tuning passes its prefix as past
    key/values, and prompt tuning and P-tuning prepend virtual tokens, so the model numbers the input's positions
    from their count on (0 for other methods and for encoder-decoder models, whose encoder peft does not prefix)."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is None or not peft_config.is_prompt_learning or model.config.is_encoder_decoder:
        return 0
    return int(peft_config.num_virtual_tokens)


@torch.no_grad()
def layer_cka(base_model: torch.nn.Module, tuned_model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]],
              *, pool: str = "token") -> list[float]:
    """Linear CKA between the two models' hidden states, per layer (index 0 = embeddings, i = layer i).

    pool="token" (default) compares every non-pad token (samples = tokens): the two models see the same tokens, so
    rows align exactly, there are many more samples than features (linear CKA is biased upwards when there are
    few), and per-token changes that a mean would average away still count. pool="mean" compares one vector per
    input, the mean over its non-pad tokens (what a pooled sentence representation sees).
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    models = (base_model, tuned_model)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    moments: list[_Moments] = []
    device = next(base_model.parameters()).device  # both models on one device
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            base, tuned = (_hidden_states(m, batch) for m in models)
            # peft's prompt tuning and P-tuning prepend their virtual tokens to the input: compare the input's own
            extra = tuned[0].shape[1] - base[0].shape[1]
            tuned = tuple(t[:, extra:] for t in tuned) if extra > 0 else tuned
            if len(base) != len(tuned):
                raise ValueError(f"the models have {len(base)} and {len(tuned)} hidden states")
            moments = moments or [_Moments() for _ in base]
            mask = batch["attention_mask"].bool()
            for acc, a, b in zip(moments, base, tuned, strict=True):
                acc.add(_pool(a, mask, pool), _pool(b, mask, pool))
    finally:
        for m, training in zip(models, was_training, strict=True):
            m.train(training)
    if not moments:
        raise ValueError("layer_cka needs at least one batch")
    return [acc.value() for acc in moments]


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pool: str) -> torch.Tensor:
    if pool == "token":
        return hidden[mask]
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def cka_rows(values: list[float], *, split: str, pool: str = "token", n_inputs: int | None = None,
             note: str | None = None) -> list[dict]:
    """Run-record rows [{"metric": "cka", "layer": i, "value": ...}] (layer 0 = embeddings).

    note: why these values are not comparable with other methods' (then comparable is False), else None.
    """
    return [{"metric": "cka", "layer": i, "value": round(v, 6), "split": split, "n": n_inputs,
             "signature": f"cka:linear|pool:{pool}|layer0:embeddings", "comparable": note is None,
             **({"note": note} if note else {})} for i, v in enumerate(values)]


def representation_drift(base_model: torch.nn.Module, tuned_model: torch.nn.Module, rows: list[dict], *,
                         pad_id: int, batch_size: int = 32, max_rows: int = 256, split: str = "test",
                         pool: str = "token") -> list[dict]:
    """cka rows for the first max_rows shard rows of a held-out split (both models already on their device).

    Rows of a model whose method moves the input's positions (peft's prefix tuning of an encoder) say they are
    not comparable: its embedding output already differs from the base model's before any training, and
    every layer above inherits that, so its CKA mixes the method's mechanism with what training changed.
    """
    from peftlab.data import collate

    rows = rows[:max_rows]
    batches = (collate(rows[i:i + batch_size], pad_id) for i in range(0, len(rows), batch_size))
    shift = position_shift(tuned_model)
    note = (f"{type(tuned_model.active_peft_config).__name__} moves the input's positions by {shift} (peft passes "
            "virtual tokens before it), so the input's states differ from the base model's before training") \
        if shift else None
    values = layer_cka(base_model, tuned_model, batches, pool=pool)
    return cka_rows(values, split=split, pool=pool, n_inputs=len(rows), note=note)


def retained_quality(model: torch.nn.Module, tokenizer: object, pretraining: dict[str, tuple[Path, Languages]], *,
                     settings: dict, device: str = "cpu", max_examples: int | None = None) -> list[dict]:
    """MT forgetting: BLEU/chrF/TER of the (adapted) model on each pretraining pair's test split.

    pretraining: task name -> (corpus dir, the pair's Languages on this model). Rows carry subset=<task name>;
    compare with the base run's rows for the same subsets.
    """
    from peftlab.models import read_jsonl
    from peftlab.scoring import mt_scores
    from peftlab.translate import translate

    rows = []
    for name, (corpus_dir, languages) in pretraining.items():
        test = read_jsonl(Path(corpus_dir) / "test.jsonl")[:max_examples]
        hypotheses = translate(model, tokenizer, [r["src"] for r in test], languages=languages,
                               num_beams=settings["num_beams"], batch_size=settings["batch_size"],
                               max_new_tokens=settings["max_new_tokens"], device=device)
        for row in mt_scores(hypotheses, [r["tgt"] for r in test], languages.target_lang):
            rows.append({**row, "split": "test", "subset": name, "n": len(test), "kind": "retained"})
    return rows
