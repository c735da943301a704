"""Evaluation data for the bench: batches of numpy inputs + labels from any dataset spec, and a fingerprint."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import DatasetError


@dataclass
class EvalData:
    """A dataset split, optionally limited to its first ``limit`` clips, served as numpy batches."""

    spec: str
    split: str
    contract: InputContract
    dataset: Any
    limit: int | None

    @property
    def num_clips(self) -> int:
        n = len(self.dataset)
        return n if self.limit is None else min(n, self.limit)

    @property
    def fingerprint(self) -> str:
        """Changes whenever the clips (dataset identity, split, contract, options, limit) change."""
        from pinlite_edge.data import dataset_fingerprint

        base = dataset_fingerprint(self.dataset)
        return hashlib.sha256(f"{base}|{self.split}|{self.num_clips}".encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "split": self.split, "num_clips": self.num_clips, "fingerprint": self.fingerprint,
                "frame_size": self.contract.frame_size}

    def batches(self, batch_size: int, workers: int = 0) -> Iterator[dict[str, Any]]:
        """Yield ``{"frames", "mfcc", "label", "offset_class", "clip_id"}`` with numpy arrays, in dataset order."""
        import torch
        from torch.utils.data import DataLoader, Subset

        ds = self.dataset if self.limit is None else Subset(self.dataset, range(self.num_clips))
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
        for batch in loader:
            yield {
                "frames": batch["frames"].numpy().astype(np.float32, copy=False),
                "mfcc": batch["mfcc"].numpy().astype(np.float32, copy=False),
                "label": batch["label"].numpy(),
                "offset_class": batch["offset_class"].numpy() if isinstance(batch.get("offset_class"), torch.Tensor)
                else None,
                "clip_id": list(batch["clip_id"]),
            }

    def first_batch(self, batch_size: int) -> dict[str, Any]:
        """The first ``batch_size`` clips (repeated if the split is smaller) for latency measurements."""
        if self.num_clips == 0:
            raise DatasetError(f"{self.spec} {self.split} split has no clips")
        batch = next(self.batches(min(batch_size, self.num_clips)))
        if batch["frames"].shape[0] < batch_size:
            reps = -(-batch_size // batch["frames"].shape[0])
            batch = {k: np.concatenate([v] * reps)[:batch_size] if isinstance(v, np.ndarray) else v
                     for k, v in batch.items()}
        return batch


def load_eval_data(spec: str, split: str, contract: InputContract, *, limit: int | None = None,
                   cache_dir: str | Path | None = None, **options: Any) -> EvalData:
    from pinlite_edge.data import build_dataset

    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be >= 1, got {limit}")
    kind = spec.split(":", 1)[0].lower()
    kwargs = dict(options)
    if kind != "synthetic" and cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    dataset = build_dataset(spec, split, contract, **kwargs)
    if len(dataset) == 0:
        raise DatasetError(f"dataset {spec!r} split {split!r} is empty")
    return EvalData(spec=spec, split=split, contract=contract, dataset=dataset, limit=limit)
