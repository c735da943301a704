"""Metrics: EPS (SPEC §4) and classification metrics."""
from pinlite_edge.metrics.classification import (
    ClassificationMetrics, classification_metrics, roc_auc, softmax, softmax_fake_prob,
)
from pinlite_edge.metrics.eps import EPSResult, explainability_preservation_score, spearman_rows, top_fraction_mask

__all__ = [
    "ClassificationMetrics", "EPSResult", "classification_metrics", "explainability_preservation_score", "roc_auc",
    "softmax", "softmax_fake_prob", "spearman_rows", "top_fraction_mask",
]
