"""Binary classification metrics (fractions in 0..1); fake = positive class."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pinlite_edge.errors import InputError


@dataclass(frozen=True)
class ClassificationMetrics:
    accuracy: float
    precision: float
    recall: float
    f1: float
    auc: float
    num_samples: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann–Whitney U statistic (ties count half); NaN with one class only."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(labels: np.ndarray, fake_prob: np.ndarray, threshold: float = 0.5) -> ClassificationMetrics:
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    fake_prob = np.asarray(fake_prob, dtype=np.float64).reshape(-1)
    if labels.size == 0 or labels.size != fake_prob.size:
        raise InputError(f"need equally many labels and scores, got {labels.size} and {fake_prob.size}")
    if not np.isfinite(fake_prob).all():
        raise InputError("scores contain NaN or inf")
    pred = (fake_prob >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (labels == 1)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ClassificationMetrics(
        accuracy=float((pred == labels).mean()), precision=precision, recall=recall, f1=f1,
        auc=roc_auc(labels, fake_prob), num_samples=int(labels.size),
    )


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along ``axis`` (float64), computed stably (the max is subtracted before ``exp``)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_fake_prob(logits: np.ndarray) -> np.ndarray:
    """Probability of class 1 (fake) from ``(B, 2)`` logits."""
    return softmax(logits)[..., 1]
