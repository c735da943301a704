"""Frozen-teacher outputs (logits + attention), computed ONCE per (teacher weights, dataset split).

Caching is only valid because training samples are deterministic and un-augmented: sample ``i`` of a split is the
same tensor in every epoch. Augmented training splits (real-video train splits by default, ``Split.augmented``) are
not cached: ``distill.distillation_objective`` runs the teacher on every batch for them. Entries live on disk as
safetensors files named by ``sha256(teacher weights sha256, dataset fingerprint)``, so a second run (or an ablation)
reuses them, and in memory in ``TEACHER_OUTPUT_CACHE`` (least recently used entries dropped beyond 1 GB).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from pinlite_edge.checkpoint import load_checkpoint, read_record, save_hashed, verify_hashed
from pinlite_edge.errors import CheckpointError
from pinlite_edge.models import AVSyncDetector
from pinlite_edge.utils.hashing import sha256_file

from pinlite_edge.training.data import Split, make_loader
from pinlite_edge.training.evaluate import predict
from pinlite_edge.training.memory_cache import ByteBudgetLRU

log = logging.getLogger(__name__)


def _outputs_bytes(out: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in out.values())


#: One teacher's outputs on one split by cache key; ``TEACHER_OUTPUT_CACHE.clear()`` frees them.
TEACHER_OUTPUT_CACHE: ByteBudgetLRU[str, dict[str, torch.Tensor]] = ByteBudgetLRU(
    "teacher outputs", 10**9, _outputs_bytes)


@dataclass
class TeacherTargets:
    """``logits (K, N, 2)`` per teacher (softmax-averaged at the loss's temperature) and ``attention (N, Q, F)``
    averaged over the K teachers, indexed by sample position in the split."""

    logits: torch.Tensor
    attention: torch.Tensor

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        idx = index.cpu()
        return self.logits[:, idx].to(device), self.attention[idx].to(device)


def teacher_hash(path: str | Path) -> str:
    """The weights' sha256 (from the record when present, else hashed)."""
    try:
        sha = read_record(path).get("weights_sha256")
    except CheckpointError:
        sha = None
    return str(sha or sha256_file(path))


def load_teachers(paths: Sequence[str | Path], device: torch.device) -> list[AVSyncDetector]:
    models = []
    for p in paths:
        model, _ = load_checkpoint(p, map_location=device)
        for param in model.parameters():
            param.requires_grad_(False)
        models.append(model.eval())
    return models


def _outputs(path: str | Path, split: Split, device: torch.device, batch_size: int, cache_dir: Path | None,
             model: AVSyncDetector | None) -> dict[str, torch.Tensor]:
    key = hashlib.sha256(f"{teacher_hash(path)}:{split.fingerprint}".encode()).hexdigest()[:32]
    cached = TEACHER_OUTPUT_CACHE.get(key)
    if cached is not None:
        return cached
    file = cache_dir / f"teacher-{key}.safetensors" if cache_dir is not None else None
    if file is not None and file.is_file():
        try:
            if not verify_hashed(file):
                raise CheckpointError("it carries no sha256 (written by an older version)")
            out = load_file(str(file))
            if out["logits"].shape[0] != len(split):
                raise CheckpointError(f"{out['logits'].shape[0]} rows for a split of {len(split)}")
            if not all(torch.isfinite(t).all() for t in out.values()):
                raise CheckpointError("it holds NaN or inf")
            log.info("teacher outputs for %s / %s split from cache %s", path, split.name, file)
            TEACHER_OUTPUT_CACHE.put(key, out)
            return out
        except (CheckpointError, SafetensorError, OSError, KeyError) as exc:
            log.warning("teacher cache %s not used (%s); recomputing", file, exc)
    if model is None:
        model = load_teachers([path], device)[0]
    logits, _, attention, _, _ = predict(model, make_loader(split, batch_size), device, desc=f"teacher {split.name}")
    out = {"logits": torch.from_numpy(logits).float(), "attention": torch.from_numpy(attention).float()}
    if file is not None:
        save_hashed(file, out, {"teacher": str(path), "dataset_fingerprint": split.fingerprint})
    TEACHER_OUTPUT_CACHE.put(key, out)
    return out


def teacher_targets(paths: Sequence[str | Path], split: Split, device: torch.device, *, batch_size: int = 32,
                    cache_dir: str | Path | None = None,
                    models: Sequence[AVSyncDetector] | None = None) -> TeacherTargets:
    """Outputs of every teacher on every sample of ``split`` (cached), stacked for the distillation loss."""
    if not paths:
        raise CheckpointError("distillation needs at least one --teacher checkpoint")
    cache = Path(cache_dir) if cache_dir is not None else None
    outs = [_outputs(p, split, device, batch_size, cache, models[i] if models else None) for i, p in enumerate(paths)]
    shapes = {tuple(o["attention"].shape[1:]) for o in outs}
    if len(shapes) != 1:
        raise CheckpointError(f"ensemble teachers produce attention maps of different shapes {sorted(shapes)}")
    return TeacherTargets(torch.stack([o["logits"] for o in outs]),
                          torch.stack([o["attention"] for o in outs]).mean(dim=0))
