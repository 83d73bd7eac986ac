"""Out-of-distribution detection: scores from a classifier's outputs, and how well they separate.

Every score is oriented so that HIGHER = MORE IN-DISTRIBUTION:
- msp: maximum softmax probability (Hendrycks & Gimpel, 2017);
- max_logit: the largest logit (Hendrycks et al., 2022);
- energy: logsumexp of the logits, i.e. the negative free energy at temperature 1 (Liu et al., 2020);
- mahalanobis: minus the smallest Mahalanobis distance (squared) to a class mean under one covariance shared
  by all classes, fitted on training features (Lee et al., 2018, without input preprocessing).

Detection metrics treat in-distribution as the positive class throughout:
- auroc: P(score_in > score_out), ties counting one half (the Mann-Whitney statistic);
- aupr: average precision with in-distribution positive ("AUPR-In"), the step-wise sum
  sum_k (R_k - R_{k-1}) P_k over descending thresholds (scikit-learn's average_precision_score);
- fpr95: the fraction of OOD inputs accepted at the highest threshold that still accepts at least 95% of the
  in-distribution inputs (FPR at 95% TPR). Lower is better; the other two: higher is better.
"""

from __future__ import annotations

import math

import numpy as np

DETECTORS = ("msp", "max_logit", "energy", "mahalanobis")
SIGNATURE = "pos:in|score:higher-is-in|fpr@tpr:0.95|maha:shared-cov"


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=1, keepdims=True)))[:, 0]


def fit_mahalanobis(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class_means [C, D], shared_precision [D, D]) from training features [N, D] and labels [N] in 0..C-1.

    The covariance is the within-class scatter pooled over classes, divided by N. Its pseudo-inverse serves as
    the precision, because with fewer examples than dimensions (a low-resource run: 100 examples, 384-d
    features) the covariance is singular. A class without examples gets a NaN mean and is skipped by scoring.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"need features [N, D] and N labels, got {x.shape} and {y.shape}")
    means = np.full((int(y.max()) + 1, x.shape[1]), np.nan)
    centred = np.empty_like(x)
    for c in np.unique(y):
        means[c] = x[y == c].mean(axis=0)
        centred[y == c] = x[y == c] - means[c]
    covariance = centred.T @ centred / len(x)
    return means, np.linalg.pinv(covariance, hermitian=True)


def ood_scores(logits: np.ndarray, features: np.ndarray | None = None, *, class_means: np.ndarray | None = None,
               shared_precision: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Scores [N] per detector, higher = more in-distribution; mahalanobis only when features and a fit are given."""
    z = np.asarray(logits, dtype=np.float64)
    lse = _logsumexp(z)
    scores = {"msp": np.exp(z.max(axis=1) - lse), "max_logit": z.max(axis=1), "energy": lse}
    if features is not None and class_means is not None and shared_precision is not None:
        x = np.asarray(features, dtype=np.float64)
        means = class_means[~np.isnan(class_means).any(axis=1)]
        diff = x[:, None, :] - means[None, :, :]  # [N, C, D]
        distances = np.einsum("ncd,de,nce->nc", diff, shared_precision, diff)
        scores["mahalanobis"] = -distances.min(axis=1)
    return scores


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # the last rank of each distinct value
    return (ends - (counts - 1) / 2.0)[inverse]


def detection_metrics(scores_in: np.ndarray, scores_out: np.ndarray) -> dict[str, float]:
    """{"auroc", "aupr", "fpr95"} for separating in-distribution (positive) from OOD by the score."""
    s_in, s_out = np.asarray(scores_in, dtype=np.float64), np.asarray(scores_out, dtype=np.float64)
    n_in, n_out = len(s_in), len(s_out)
    if n_in == 0 or n_out == 0:
        raise ValueError(f"need in-distribution and OOD scores, got {n_in} and {n_out}")
    ranks = _average_ranks(np.concatenate([s_in, s_out]))
    auroc = (ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out)

    # True and false positives at each distinct threshold, from the highest score down.
    scores = np.concatenate([s_in, s_out])
    order = np.argsort(-scores, kind="stable")
    positive = (np.arange(n_in + n_out) < n_in)[order]
    last = np.append(np.diff(scores[order]) != 0, True)  # the last position of each distinct score
    tp, fp = np.cumsum(positive)[last], np.cumsum(~positive)[last]
    recall = tp / n_in
    aupr = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * tp / (tp + fp)))

    # The 95%-TPR threshold: the k-th highest in-distribution score, k = ceil(0.95 * n_in).
    k = math.ceil(0.95 * n_in - 1e-9)  # tolerance: 0.95 * 20 is 19.000000000000004 in floating point
    threshold = np.sort(s_in)[::-1][k - 1]
    fpr95 = float((s_out >= threshold).mean())
    return {"auroc": float(auroc), "aupr": aupr, "fpr95": fpr95}


def detection_rows(scores_in: dict[str, np.ndarray], scores_out: dict[str, np.ndarray]) -> list[dict]:
    """Run-record rows [{"metric": "ood_auroc", "detector": "msp", "value": ...}, ...] for each detector."""
    rows = []
    for detector in DETECTORS:
        if detector in scores_in and detector in scores_out:
            for name, value in detection_metrics(scores_in[detector], scores_out[detector]).items():
                rows.append({"metric": f"ood_{name}", "detector": detector, "value": round(value, 6),
                             "n_in": len(scores_in[detector]), "n_out": len(scores_out[detector]),
                             "signature": SIGNATURE})
    return rows
