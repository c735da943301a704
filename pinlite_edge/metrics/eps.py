"""Explainability Preservation Score (SPEC §4), vectorised over a batch of attention maps."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from pinlite_edge.errors import InputError, UsageError
from pinlite_edge.utils.checks import is_finite_number

TOP_FRACTION = 0.2


@dataclass(frozen=True)
class EPSResult:
    """Per-clip scores and their summary; ``num_constant`` clips had a constant map (correlation counted as 0)."""

    per_clip: np.ndarray  # (B,)
    spearman: np.ndarray  # (B,) 0 where undefined
    iou: np.ndarray  # (B,)
    num_constant: int

    @property
    def mean(self) -> float:
        return float(self.per_clip.mean()) if self.per_clip.size else float("nan")

    @property
    def std(self) -> float:
        return float(self.per_clip.std()) if self.per_clip.size else float("nan")

    def to_dict(self) -> dict[str, float | int]:
        return {"eps_mean": self.mean, "eps_std": self.std, "spearman_mean": float(self.spearman.mean()),
                "iou_mean": float(self.iou.mean()), "num_clips": int(self.per_clip.size),
                "num_constant_maps": self.num_constant}


def _as_batch(maps: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(maps, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InputError(f"{name} must have shape (B, H, W) or (H, W), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise InputError(f"{name} is empty: shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or inf")
    return a


def _resize(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if maps.shape[1:] == shape:
        return maps
    from pinlite_edge.utils.opencv import cv2

    return np.stack([cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) for m in maps])


def _row_pairs(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as arrays of one shape ``(rows, values)``, else an :class:`InputError` naming both shapes."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise InputError(f"{what} needs two (rows, values) arrays of the same shape, got {a.shape} and {b.shape}")
    return a, b


def spearman_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation of each row pair (average ranks for ties). Returns (rho, undefined_mask)."""
    a, b = _row_pairs(a, b, "spearman_rows")
    ra = rankdata(a, method="average", axis=1)
    rb = rankdata(b, method="average", axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    undefined = denom == 0
    rho = np.where(undefined, 0.0, (ra * rb).sum(axis=1) / np.where(undefined, 1.0, denom))
    return np.clip(rho, -1.0, 1.0), undefined


def top_fraction_mask(a: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Boolean mask of the ⌈fraction·N⌉ largest entries per row; ties go to the lower flat index (stable sort)."""
    if not is_finite_number(fraction, numpy=True) or not 0.0 < fraction <= 1.0:
        raise UsageError(f"fraction must be a number in (0, 1] (0.2: the top 20%), got {fraction!r}")
    n = a.shape[1]
    k = max(1, math.ceil(fraction * n - 1e-9))
    order = np.argsort(-a, axis=1, kind="stable")[:, :k]
    mask = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def top_fraction_iou(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    a, b = _row_pairs(a, b, "top_fraction_iou")
    ma, mb = top_fraction_mask(a, fraction), top_fraction_mask(b, fraction)
    inter = (ma & mb).sum(axis=1)
    union = (ma | mb).sum(axis=1)
    return inter / union


def explainability_preservation_score(teacher_maps: np.ndarray, student_maps: np.ndarray) -> EPSResult:
    """EPS = 0.5·Spearman + 0.5·IoU(top 20%) per clip, for maps of shape (B, H, W) or (H, W).

    Student maps of another spatial shape are bilinearly resized to the teacher's.
    """
    t = _as_batch(teacher_maps, "teacher attention")
    s = _as_batch(student_maps, "student attention")
    if t.shape[0] != s.shape[0]:
        raise InputError(f"batch sizes differ: teacher {t.shape[0]} vs student {s.shape[0]}")
    s = _resize(s, t.shape[1:])
    tf, sf = t.reshape(t.shape[0], -1), s.reshape(s.shape[0], -1)
    rho, undefined = spearman_rows(tf, sf)
    iou = top_fraction_iou(tf, sf)
    return EPSResult(per_clip=0.5 * rho + 0.5 * iou, spearman=rho, iou=iou, num_constant=int(undefined.sum()))


eps = explainability_preservation_score
