"""Classification evaluation: accuracy and macro-F1 per test split (zero-shot languages included), and OOD
detection (peftlab.ood) with the in-distribution test split against the ood split.

Features for Mahalanobis are what the classification head sees (BERT: the pooled [CLS] vector; RoBERTa: the
<s> token's hidden state; BART: the final </s> state; a decoder-only LLM: its last non-pad token's), captured by
a hook on the head, so they are right for every architecture and every method (peft's wrapped heads included).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from peftlab.atomic import write_text
from peftlab.data import collate, load_split
from peftlab.ood import detection_rows, fit_mahalanobis, ood_scores

MAX_FIT_ROWS = 5000  # training rows whose features fit the Mahalanobis detector (train is in seeded order)


def _head(model: torch.nn.Module) -> torch.nn.Module | None:
    from peftlab.methods.core import task_heads

    heads = task_heads(model)
    return heads[0] if heads else None


@torch.no_grad()
def predict(model: torch.nn.Module, rows: list[dict], *, pad_id: int, batch_size: int = 64,
            device: str = "cpu") -> tuple[np.ndarray, np.ndarray | None]:
    """(logits [N, C], head-input features [N, D] or None), in the order of rows; batches sorted by length."""
    model.to(device).eval()
    captured: list[torch.Tensor] = []
    current: dict[str, torch.Tensor] = {}

    def grab(module: torch.nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:  # noqa: ARG001
        x = args[0] if args else next(v for v in kwargs.values() if torch.is_tensor(v))
        if x.dim() == 3 and output.dim() == 3:
            # a decoder-only classifier (Llama, Qwen, ...: `score`) scores every position, then keeps the last
            # non-pad token's: the features are that token's, found by transformers' own rule
            ids = current["input_ids"].to(x.device)
            last = (torch.arange(ids.shape[-1], device=x.device) * (ids != pad_id)).argmax(-1)
            captured.append(x[torch.arange(len(x), device=x.device), last])
        else:
            captured.append(x[:, 0] if x.dim() == 3 else x)  # a head given the whole sequence reads its first token

    head = _head(model)
    hook = head.register_forward_hook(grab, with_kwargs=True) if head is not None else None
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    logits, features = [], []
    try:
        for start in range(0, len(order), batch_size):
            batch = collate([rows[i] for i in order[start:start + batch_size]], pad_id)
            batch.pop("labels", None)
            captured.clear()
            current["input_ids"] = batch["input_ids"]
            logits.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
            if captured:
                features.append(captured[-1].float().cpu())
    finally:
        if hook is not None:
            hook.remove()
    inverse = np.argsort(order)
    z = torch.cat(logits).numpy()[inverse] if logits else np.zeros((0, 0))
    f = torch.cat(features).numpy()[inverse] if features and len(features) == len(logits) else None
    return z, f


def accuracy_macro_f1(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Accuracy, and macro-F1 over the classes that occur in labels or predictions (scikit-learn's default)."""
    y, p = np.asarray(labels), np.asarray(predictions)
    f1 = []
    for c in np.union1d(y, p):
        tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
        f1.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(y == p)) if len(y) else float("nan"),
            "macro_f1": float(np.mean(f1)) if f1 else float("nan")}


def _subset(split: str, manifest: dict) -> str | None:
    """The zero-shot language of a test-<lang> split; None for the training language's own test split,
    so headline accuracy reads like BLEU (split 'test', no subset)."""
    return split.split("-", 1)[1] if split.startswith("test-") else None


def evaluate_classifier(model: torch.nn.Module, shard_dir: Path, splits: list[str] | None = None, *, pad_id: int,
                        batch_size: int = 64, device: str = "cpu", ood_split: str | None = "ood",
                        fit_rows: list[dict] | None = None, predictions_path: Path | None = None) -> list[dict]:
    """Metric rows for a classification run.

    splits: the labelled test splits (default: test and every test-<lang>); each gives accuracy and macro_f1 rows
    with subset = its language. When the shards have `ood_split`, the test split is the in-distribution side and
    each detector gives ood_auroc/ood_aupr/ood_fpr95 rows; Mahalanobis is fitted on fit_rows (default: the first
    MAX_FIT_ROWS training rows; pass a low-resource run's own subset). predictions_path: one JSON line per
    example (split, id, label, prediction, OOD scores).
    """
    shard_dir = Path(shard_dir)
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    available = list(manifest["splits"])
    splits = splits or [s for s in available if s == "test" or s.startswith("test-")]
    do_ood = ood_split is not None and ood_split in available and "test" in available
    fit = None
    if do_ood:
        fit_rows = fit_rows if fit_rows is not None else load_split(shard_dir, "train")[:MAX_FIT_ROWS]
        _, train_features = predict(model, fit_rows, pad_id=pad_id, batch_size=batch_size, device=device)
        if train_features is not None:
            fit = fit_mahalanobis(train_features, np.array([r["label"] for r in fit_rows]))
    rows, predictions, scores = [], [], {}
    for split in dict.fromkeys([*splits, *(["test", ood_split] if do_ood else [])]):
        data = load_split(shard_dir, split)
        logits, features = predict(model, data, pad_id=pad_id, batch_size=batch_size, device=device)
        labels, preds = np.array([r["label"] for r in data]), logits.argmax(axis=1)
        scores[split] = ood_scores(logits, features, class_means=fit[0] if fit else None,
                                   shared_precision=fit[1] if fit else None)
        if split in splits:
            for metric, value in accuracy_macro_f1(labels, preds).items():
                rows.append({"metric": metric, "split": split, "subset": _subset(split, manifest),
                             "value": round(value, 6), "n": len(data)})
        if predictions_path is not None:
            for i, r in enumerate(data):
                predictions.append({"split": split, "id": r["id"], "label": int(labels[i]), "prediction": int(preds[i]),
                                    **{k: round(float(v[i]), 6) for k, v in scores[split].items()}})
    if do_ood:
        rows += [{**row, "split": ood_split, "subset": manifest.get("language", "")}
                 for row in detection_rows(scores["test"], scores[ood_split])]
    if predictions_path is not None:
        write_text("".join(json.dumps(p) + "\n" for p in predictions), Path(predictions_path))
    return rows
