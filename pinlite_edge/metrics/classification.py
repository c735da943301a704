"""Binary classification metrics (fractions in 0..1); fake = positive class."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from pinlite_edge.errors import InputError, UsageError
from pinlite_edge.utils.checks import is_finite_number


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


def _labels_and_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as a 1-D bool array (fake = True) and ``scores`` as 1-D float64, one per label and finite; else an
    :class:`InputError` naming what is wrong (labels of -1/+1, probabilities or one-hot rows were used as given)."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D (one 0/1 label per sample), got shape {y.shape}")
    ok = np.isin(y, (0, 1)) if y.dtype.kind in "biuf" else np.zeros(y.shape, bool)
    if not ok.all():
        raise InputError(f"labels must be 0 (real) or 1 (fake), got {np.unique(y[~ok])[:5].tolist()}")
    if y.size != s.size:
        raise InputError(f"need equally many labels and scores, got {y.size} and {s.size}")
    if not np.isfinite(s).all():
        raise InputError("scores contain NaN or inf")
    return y.astype(bool), s


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann–Whitney U statistic (ties count half); NaN with one class only.
    ``labels``: 0 (real) / 1 (fake), one per score."""
    from scipy.stats import rankdata

    labels, scores = _labels_and_scores(labels, scores)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(labels: np.ndarray, fake_prob: np.ndarray, threshold: float = 0.5) -> ClassificationMetrics:
    """Metrics of calling a sample fake when ``fake_prob >= threshold``; ``labels``: 0 (real) / 1 (fake)."""
    if not is_finite_number(threshold, numpy=True) or not 0.0 <= threshold <= 1.0:
        raise UsageError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    truth, fake_prob = _labels_and_scores(labels, fake_prob)
    if truth.size == 0:
        raise InputError("need at least one label and score, got none")
    labels = truth.astype(np.int64)
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
    """Probability of class 1 (fake) from ``(B, 2)`` logits (``(..., 2)``: one row of two logits per sample); a NaN or
    inf logit is an :class:`InputError`."""
    z = np.asarray(logits)
    if z.ndim < 2 or z.shape[-1] != 2:
        raise InputError(f"logits must have shape (B, 2) (real, fake per sample), got {z.shape}")
    z = z.astype(np.float64, copy=False)  # as softmax reads them
    bad = ~np.isfinite(z).all(axis=-1)
    if bad.any():  # a NaN or inf logit gave a NaN P(fake)
        raise InputError(f"logits must be finite, got NaN or inf in {int(bad.sum())} of {bad.size} samples")
    return softmax(z)[..., 1]
