"""Calibration data for quantization and the sensitivity table: a fixed subset of a dataset, as numpy arrays."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import DatasetError, ExportError

log = logging.getLogger(__name__)


@dataclass
class CalibrationSet:
    """``frames (N, T, 3, S, S)`` and ``mfcc (N, 64, 13)`` float32 arrays plus where they came from."""

    frames: np.ndarray
    mfcc: np.ndarray
    source: str
    split: str
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            yield self.frames[i:j], self.mfcc[i:j]

    def subset(self, n: int) -> "CalibrationSet":
        labels = None if self.labels is None else self.labels[:n]
        return CalibrationSet(self.frames[:n], self.mfcc[:n], self.source, self.split, labels)

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.source, "split": self.split, "size": len(self)}


def load_calibration(spec: str, contract: InputContract, size: int, split: str = "train",
                     seed: int = 0, options: dict[str, Any] | None = None) -> CalibrationSet:
    """The first ``size`` clips (a seeded, evenly spaced subset when the split is larger) of ``spec``'s split.

    ``options`` go to the dataset (e.g. ``{"sync_pairs": True, "split_file": "real_av"}`` for a folder of real clips);
    video datasets are read without training augmentation (``augment=False``) unless ``options`` says otherwise.
    """
    from pinlite_edge.data.registry import build_dataset

    try:
        opts = dict(options or {})
        if not spec.strip().lower().startswith("synthetic"):
            opts.setdefault("augment", False)  # calibrate on the clips as deployed, not on augmented ones
        dataset = build_dataset(spec, split, contract, **opts)
    except DatasetError:
        raise
    except Exception as exc:
        raise ExportError(f"cannot build calibration dataset {spec!r} (split {split!r}): {exc}") from exc
    total = len(dataset)
    if total == 0:
        raise ExportError(f"calibration dataset {spec!r} split {split!r} is empty")
    if total < size:
        log.warning("calibration set %s/%s has %d clips, fewer than the %d asked for", spec, split, total, size)
    n = min(size, total)
    rng = np.random.default_rng(seed)
    idx = np.arange(total) if n == total else np.sort(rng.choice(total, size=n, replace=False))
    frames, mfcc, labels = [], [], []
    for i in idx:
        sample = dataset[int(i)]
        frames.append(np.asarray(sample["frames"], dtype=np.float32))
        mfcc.append(np.asarray(sample["mfcc"], dtype=np.float32))
        if "label" in sample:
            labels.append(int(sample["label"]))
    cal = CalibrationSet(np.ascontiguousarray(np.stack(frames)), np.ascontiguousarray(np.stack(mfcc)), spec, split,
                         np.asarray(labels) if len(labels) == n else None)
    if cal.frames.shape[1:] != contract.frames_shape() or cal.mfcc.shape[1:] != contract.mfcc_shape():
        raise ExportError(f"calibration clips have shapes {cal.frames.shape[1:]}/{cal.mfcc.shape[1:]}, the model "
                          f"expects {contract.frames_shape()}/{contract.mfcc_shape()}")
    return cal


def concat_calibration(sets: list[CalibrationSet]) -> CalibrationSet:
    """One calibration set made of several (e.g. synthetic clips and real talking faces)."""
    if not sets:
        raise ExportError("no calibration sets to concatenate")
    labels = [s.labels for s in sets]
    return CalibrationSet(np.concatenate([s.frames for s in sets]), np.concatenate([s.mfcc for s in sets]),
                          " + ".join(s.source for s in sets), "+".join(dict.fromkeys(s.split for s in sets)),
                          None if any(lab is None for lab in labels) else np.concatenate(labels))


def from_arrays(frames: np.ndarray, mfcc: np.ndarray, source: str = "arrays") -> CalibrationSet:
    """Wrap in-memory arrays (API users, tests) as a calibration set."""
    frames = np.ascontiguousarray(np.asarray(frames, dtype=np.float32))
    mfcc = np.ascontiguousarray(np.asarray(mfcc, dtype=np.float32))
    if frames.shape[0] != mfcc.shape[0] or frames.shape[0] == 0:
        raise ExportError(f"calibration arrays must share a non-empty batch axis: {frames.shape} vs {mfcc.shape}")
    return CalibrationSet(frames, mfcc, source, "-")
