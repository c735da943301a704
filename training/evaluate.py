"""Evaluation of a model on a split: loss, classification metrics, offset accuracy and EPS."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pinlite_edge.utils.progress import progress_bar
from pinlite_edge.contract import OFFSET_IGNORE_INDEX
from pinlite_edge.metrics import classification_metrics, explainability_preservation_score, softmax_fake_prob


@dataclass
class EvalResult:
    metrics: dict[str, float]
    logits: np.ndarray  # (N, 2)
    attention: np.ndarray  # (N, Q, F)
    labels: np.ndarray  # (N,)
    extra: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, progress: bool = False,
            desc: str = "eval") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run ``model`` in eval mode over ``loader``: ``(logits, offset_logits, attention, labels, offset_classes)``."""
    was_training = model.training
    model.eval()
    logits, offsets, attention, labels, offset_cls = [], [], [], [], []
    iterable: Any = loader
    if progress:
        iterable = progress_bar(loader, desc=desc, leave=False)
    try:
        for batch in iterable:
            out = model(batch["frames"].to(device, non_blocking=True), batch["mfcc"].to(device, non_blocking=True))
            logits.append(out.logits.float().cpu())
            offsets.append(out.offset_logits.float().cpu())
            attention.append(out.attention.float().cpu())
            labels.append(batch["label"])
            offset_cls.append(batch["offset_class"])
    finally:
        model.train(was_training)
    return (torch.cat(logits).numpy(), torch.cat(offsets).numpy(), torch.cat(attention).numpy(),
            torch.cat(labels).numpy(), torch.cat(offset_cls).numpy())


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, *,
             reference_attention: np.ndarray | None = None, progress: bool = False, desc: str = "eval") -> EvalResult:
    """Metrics (fractions in 0..1): loss (CE), accuracy, precision, recall, f1, auc, offset_accuracy and, with
    ``reference_attention`` (the teacher's maps for the same samples in the same order), eps / eps_std."""
    logits, offset_logits, attention, labels, offset_cls = predict(model, loader, device, progress, desc)
    t_logits = torch.from_numpy(logits)
    loss = float(F.cross_entropy(t_logits, torch.from_numpy(labels)).item())
    cm = classification_metrics(labels, softmax_fake_prob(logits))
    metrics: dict[str, float] = {"loss": loss, **{k: float(v) for k, v in cm.to_dict().items() if k != "num_samples"}}
    metrics["num_samples"] = int(labels.size)
    valid = offset_cls != OFFSET_IGNORE_INDEX
    metrics["offset_accuracy"] = float((offset_logits[valid].argmax(-1) == offset_cls[valid]).mean()) if valid.any() \
        else float("nan")
    extra: dict[str, Any] = {}
    if reference_attention is not None:
        res = explainability_preservation_score(reference_attention, attention)
        metrics["eps"] = res.mean
        metrics["eps_std"] = res.std
        metrics["eps_constant_maps"] = int(res.num_constant)
        extra["eps"] = res
    return EvalResult(metrics, logits, attention, labels, extra)
