"""A folder of videos with a labels CSV, optionally expanded with SyncNet-style sync pairs.

CSV (default ``labels.csv`` in the folder): header with ``file`` and ``label`` (0/1, real/fake) and optional
``split`` (train/dev|val/test), ``manipulation`` (a name from ``contract.MANIPULATIONS``) and ``offset`` (frames,
-5..5, for fakes whose offset is known). Without a ``split`` column a file's split is fixed by a hash of its name
(80% train, 10% dev, 10% test). A fake without ``manipulation`` counts as ``both_replace``; fakes have an undefined
offset unless ``offset`` is given; reals are in sync (offset class 5).
``sync_pairs=True`` adds shifted/swapped fakes generated from the split's real videos (see ``syncpairs``); the CSV
may then be absent, in which case every video in the folder is an in-sync real.
"""
from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path
from typing import Any

from pinlite_edge.contract import MAX_OFFSET, OFFSET_IGNORE_INDEX, InputContract
from pinlite_edge.data.cache import ClipLoader
from pinlite_edge.data.sample import IN_SYNC, WindowDataset, WindowRef, canonical_split, manipulation_index
from pinlite_edge.data.syncpairs import SourceClip, SyncPairConfig, sync_pair_refs
from pinlite_edge.errors import DatasetError, InputError
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S
from pinlite_edge.features.probe import probe_video
from pinlite_edge.features.windows import window_starts
from pinlite_edge.utils.hashing import sha256_file

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mpg", ".mpeg", ".avi", ".mkv", ".mov", ".webm", ".m4v"})
_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1, "false": 0, "true": 1}


def hash_split(name: str) -> str:
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") % 10
    return "train" if h < 8 else ("dev" if h == 8 else "test")


def read_labels(csv_path: Path) -> list[dict[str, str]]:
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DatasetError(f"cannot read labels CSV {csv_path}: {exc}") from None
    if not rows or "file" not in rows[0] or "label" not in rows[0]:
        raise DatasetError(f"{csv_path} needs a header with at least 'file' and 'label' columns and one row")
    return rows


class FolderDataset(WindowDataset):
    kind = "folder"

    def __init__(self, root: str | Path, split: str, contract: InputContract, *, cache_dir: str | Path | None = None,
                 labels: str = "labels.csv", face_crop: bool = True, stride_seconds: float | None = None,
                 sync_pairs: bool | SyncPairConfig = False, timeout_s: float | None = DEFAULT_TIMEOUT_S):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"video folder {root} is not a folder")
        split = canonical_split(split)
        csv_path = root / labels
        pair_cfg = SyncPairConfig() if sync_pairs is True else (sync_pairs or None)
        if csv_path.is_file():
            rows = read_labels(csv_path)
        elif pair_cfg is not None:
            rows = [{"file": p.name, "label": "0"} for p in sorted(root.iterdir())
                    if p.suffix.lower() in VIDEO_EXTENSIONS]
            if not rows:
                raise DatasetError(f"no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) in {root}")
        else:
            raise DatasetError(f"labels CSV {csv_path} not found (columns file,label[,split]); "
                               "or use sync_pairs=True on a folder of in-sync real videos")
        refs: list[WindowRef] = []
        sources: list[SourceClip] = []
        for n, row in enumerate(rows):
            rel = (row.get("file") or "").strip()
            path = root / rel
            if not rel or not path.is_file():
                raise DatasetError(f"{csv_path if csv_path.is_file() else root}: row {n + 1}: video {path} not found")
            row_split = canonical_split(row["split"]) if (row.get("split") or "").strip() else hash_split(rel)
            if split != "all" and row_split != split:
                continue
            label = _LABELS.get(str(row["label"]).strip().lower())
            if label is None:
                raise DatasetError(f"{csv_path}: row {n + 1}: label {row['label']!r} is not 0/1/real/fake")
            manip = manipulation_index((row.get("manipulation") or "").strip() or ("both_replace" if label else "real"))
            offset = _offset_class(row, label, csv_path, n)
            probe = probe_video(path)
            if label == 0 and pair_cfg is not None:
                sources.append(SourceClip(path, rel, probe.duration, probe.fps))
                continue  # its windows (real + fakes) come from sync_pair_refs
            try:
                starts = window_starts(probe.duration, contract, stride_seconds, fps=probe.fps, source=str(path))
            except InputError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            refs.extend(WindowRef(path, s, label, manip, offset, f"{rel}@{s:.2f}") for s in starts)
        if pair_cfg is not None:
            refs.extend(sync_pair_refs(sources, contract, pair_cfg, stride_seconds))
        if not refs:
            raise DatasetError(f"folder {root}: no usable clips in split {split!r}")
        loader = ClipLoader(contract, face_crop=face_crop, cache_dir=cache_dir, timeout_s=timeout_s)
        description: dict[str, Any] = {
            "root": str(root.resolve()), "labels_sha256": sha256_file(csv_path) if csv_path.is_file() else None,
            "face_crop": face_crop, "stride_seconds": stride_seconds, "preprocessing": loader.config_hash,
            "sync_pairs": None if pair_cfg is None else {**pair_cfg.__dict__, "shifts": list(pair_cfg.shifts)}}
        super().__init__(refs, contract, loader, split, description)
        log.info("folder %s %s: %d windows (%d fake)", root, split, len(refs), sum(self.labels()))


def _offset_class(row: dict[str, str], label: int, csv_path: Path, n: int) -> int:
    raw = (row.get("offset") or "").strip()
    if not raw:
        return OFFSET_IGNORE_INDEX if label else IN_SYNC
    try:
        k = int(raw)
    except ValueError:
        raise DatasetError(f"{csv_path}: row {n + 1}: offset {raw!r} is not an integer") from None
    if abs(k) > MAX_OFFSET:
        raise DatasetError(f"{csv_path}: row {n + 1}: offset {k} outside ±{MAX_OFFSET}")
    return k + MAX_OFFSET
