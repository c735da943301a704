"""A folder of videos (searched recursively) with a labels CSV and/or SyncNet-style sync pairs.

CSV (default ``labels.csv`` in the folder): header with ``file`` (relative to the folder, may contain
sub-folders) and ``label`` (0/1, real/fake) and optional ``split`` (train/dev|val/test), ``manipulation`` (a name
from ``contract.MANIPULATIONS``), ``offset`` (frames, -5..5, for fakes whose offset is known) and
``speaker_group``. A fake without ``manipulation`` counts as ``both_replace``; fakes have an undefined offset unless
``offset`` is given; reals are in sync (offset class 5).

``augment`` (default: on for the train split, off otherwise; ``False``, ``True`` or a dict of
:class:`~pinlite_edge.data.augment.AugmentConfig` fields) changes colour, scale/position of the crop (the same for
the 16 frames of a window) and audio gain/noise of training windows.

``sync_pairs=True`` (or a dict of :class:`~pinlite_edge.data.syncpairs.SyncPairConfig` fields) adds shifted and
swapped fakes generated from the split's real videos; the CSV may then be absent, in which case every video under
the folder (recursively, e.g. ``real-av/grid/*.mpg`` and ``real-av/talking/*.mp4``) is an in-sync real.

Which split a file is in, first rule that applies:

1. ``split_file=PATH`` (or a shipped name such as ``real_av``, see :mod:`pinlite_edge.data.splits`): the file's record
   there; files the split file does not list are left out (with a warning).
2. the CSV's ``split`` column.
3. a hash of the file's speaker group (so one speaker never spans two splits) when it is known (split file, CSV
   ``speaker_group`` column, or a ``PROVENANCE.json`` list of ``{"file", "speaker_group"}`` records in the file's
   folder), else of its relative path: 80% train, 10% dev, 10% test.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pinlite_edge.contract import MANIPULATIONS, MAX_OFFSET, OFFSET_IGNORE_INDEX, InputContract
from pinlite_edge.data.augment import AugmentConfig
from pinlite_edge.data.cache import ClipLoader
from pinlite_edge.data.sample import IN_SYNC, WindowDataset, WindowRef, canonical_split, manipulation_index
from pinlite_edge.data.splits import read_split_file, resolve_split_file
from pinlite_edge.data.syncpairs import SourceClip, SyncPairConfig, sync_pair_refs
from pinlite_edge.errors import DatasetError, InputError
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S
from pinlite_edge.features.limits import check_stride
from pinlite_edge.features.probe import probe_video
from pinlite_edge.features.windows import window_starts
from pinlite_edge.utils.files import VIDEO_EXTENSIONS, names_a_file_inside
from pinlite_edge.utils.files import find_videos as walk_videos
from pinlite_edge.utils.hashing import sha256_file

log = logging.getLogger(__name__)

PROVENANCE_FILE = "PROVENANCE.json"
SPLITS = ("train", "dev", "test")
_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1, "false": 0, "true": 1}
#: Clips a training split keeps decoded in memory (random access by the sampler must not thrash the LRU).
_MAX_MEMORY_CLIPS = 256


def hash_split(name: str) -> str:
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") % 10
    return "train" if h < 8 else ("dev" if h == 8 else "test")


def read_labels(csv_path: Path) -> list[dict[str, str]]:
    """The CSV's rows, column names stripped and lower-cased (``File, Label`` works); UTF-8 with or without the BOM
    spreadsheets write."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            reader.fieldnames = [(name or "").strip().lower() for name in reader.fieldnames or []]
            rows = list(reader)
    except OSError as exc:
        raise DatasetError(f"cannot read labels CSV {csv_path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"labels CSV {csv_path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it "
                           "as 'CSV UTF-8'") from None
    except csv.Error as exc:
        raise DatasetError(f"labels CSV {csv_path} cannot be parsed: {exc}") from None
    columns = list(rows[0]) if rows else list(reader.fieldnames or [])
    if not rows or "file" not in columns or "label" not in columns:
        raise DatasetError(f"{csv_path} needs a header with at least 'file' and 'label' columns and one row; found "
                           f"columns {columns} and {len(rows)} row(s) (columns are separated by commas)")
    return rows


def find_videos(root: Path) -> list[str]:
    """Video files under ``root`` (:func:`pinlite_edge.utils.files.find_videos`), as sorted '/'-separated paths
    relative to ``root``."""
    return sorted(p.relative_to(root).as_posix() for p in walk_videos(root))


def provenance_groups(root: Path, files: list[str]) -> dict[str, str]:
    """Speaker groups from ``PROVENANCE.json`` files in the folders holding ``files`` (relative path -> group)."""
    groups: dict[str, str] = {}
    for folder in sorted({Path(f).parent for f in files}):
        prov = root / folder / PROVENANCE_FILE
        if not prov.is_file():
            continue
        try:
            records = json.loads(prov.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", prov, exc)
            continue
        for rec in records if isinstance(records, list) else []:
            if isinstance(rec, dict) and rec.get("file") and rec.get("speaker_group"):
                groups[(folder / str(rec["file"])).as_posix()] = str(rec["speaker_group"])
    return groups


@dataclass(frozen=True)
class FolderClip:
    """One file of the folder with its label and split (before windows are cut)."""

    rel: str
    row: int  # 1-based CSV row (0: no CSV)
    label: int
    split: str
    speaker_group: str | None
    manipulation: int
    offset_class: int


class FolderDataset(WindowDataset):
    kind = "folder"

    def __init__(self, root: str | Path, split: str, contract: InputContract, *, cache_dir: str | Path | None = None,
                 labels: str = "labels.csv", face_crop: bool = True, stride_seconds: float | None = None,
                 sync_pairs: bool | SyncPairConfig = False, split_file: str | None = None,
                 augment: bool | AugmentConfig | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                 train_stride_seconds: float | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"video folder {root} is not a folder")
        split = canonical_split(split)
        for name, value in (("stride_seconds", stride_seconds), ("train_stride_seconds", train_stride_seconds)):
            try:
                check_stride(value)
            except InputError as exc:  # a stride below one frame used to grow memory without end, silently
                raise DatasetError(f"folder:{root}: data option {name}: {exc}") from None
        if split == "train" and train_stride_seconds is not None:
            # dense windows for training (many distinct window/shift pairs: nothing to memorise per window) while
            # validation and test keep the coarser stride_seconds (they are held in memory and scored every epoch)
            stride_seconds = train_stride_seconds
        csv_path = root / labels
        pair_cfg = SyncPairConfig.from_value(sync_pairs, f"folder:{root}")
        aug_cfg = AugmentConfig.for_split(augment, split, f"folder:{root}")
        split_path = resolve_split_file(split_file) if split_file else None
        clips = self._list_clips(root, csv_path, pair_cfg, split_path)
        self.split_counts = _split_counts(clips)
        refs: list[WindowRef] = []
        sources: list[SourceClip] = []
        for c in clips:
            if split != "all" and c.split != split:
                continue
            path = root / c.rel
            probe = probe_video(path)
            if c.label == 0 and pair_cfg is not None:
                sources.append(SourceClip(path, c.rel, probe.duration, probe.fps, c.speaker_group))
                continue  # its windows (real + fakes) come from sync_pair_refs
            try:
                starts = window_starts(probe.duration, contract, stride_seconds, fps=probe.fps, source=str(path))
            except InputError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            refs.extend(WindowRef(path, s, c.label, c.manipulation, c.offset_class, f"{c.rel}@{s:.2f}")
                        for s in starts)
        if pair_cfg is not None:
            refs.extend(sync_pair_refs(sources, contract, pair_cfg, stride_seconds))
        if not refs:
            raise DatasetError(f"folder {root}: no usable clips in split {split!r}"
                               + (f" of split file {split_path}" if split_path else ""))
        n_clips = len({r.path for r in refs})
        loader = ClipLoader(contract, face_crop=face_crop, cache_dir=cache_dir, timeout_s=timeout_s,
                            memory_clips=min(max(4, n_clips), _MAX_MEMORY_CLIPS))
        self.split_file = str(split_path.resolve()) if split_path else None
        self.sync_pairs = pair_cfg
        description: dict[str, Any] = {
            "root": str(root.resolve()), "labels_sha256": sha256_file(csv_path) if csv_path.is_file() else None,
            "split_file": self.split_file, "split_file_sha256": sha256_file(split_path) if split_path else None,
            "face_crop": face_crop, "stride_seconds": stride_seconds, "preprocessing": loader.config_hash,
            "sync_pairs": None if pair_cfg is None else pair_cfg.to_dict()}
        super().__init__(refs, contract, loader, split, description, augment=aug_cfg)
        log.info("folder %s %s: %d clips, %d windows (%d fake)%s", root, split, n_clips, len(refs), sum(self.labels()),
                 ", augmented" if aug_cfg else "")

    @staticmethod
    def _list_clips(root: Path, csv_path: Path, pair_cfg: SyncPairConfig | None,
                    split_path: Path | None) -> list[FolderClip]:
        if csv_path.is_file():
            rows = read_labels(csv_path)
        elif pair_cfg is not None:
            rows = [{"file": rel, "label": "0"} for rel in find_videos(root)]
            if not rows:
                raise DatasetError(f"no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) under {root}")
        else:
            raise DatasetError(f"labels CSV {csv_path} not found (columns file,label[,split]); "
                               "or use sync_pairs=true on a folder of in-sync real videos")
        where = csv_path if csv_path.is_file() else root
        records = read_split_file(split_path) if split_path else None
        files = [Path((row.get("file") or "").strip()).as_posix() for row in rows]
        for n, rel in enumerate(files):  # a labels file names videos inside its folder (and reads nothing outside it)
            if not names_a_file_inside(rel):
                raise DatasetError(f"{where}: row {n + 1}: video {rel!r} is not a path inside {root} (no absolute "
                                   "paths, no '..'): the dataset is what its folder holds")
        groups = provenance_groups(root, files)
        clips: list[FolderClip] = []
        unlisted: list[str] = []
        for n, (rel, row) in enumerate(zip(files, rows)):
            if not (row.get("file") or "").strip() or not (root / rel).is_file():
                raise DatasetError(f"{where}: row {n + 1}: video {root / rel} not found")
            label = _LABELS.get(str(row["label"]).strip().lower())
            if label is None:
                raise DatasetError(f"{csv_path}: row {n + 1}: label {row['label']!r} is not 0/1/real/fake")
            group = (row.get("speaker_group") or "").strip() or groups.get(rel)
            if records is not None:
                rec = records.get(rel)
                if rec is None:
                    unlisted.append(rel)
                    continue
                group = rec.speaker_group or group
            try:
                row_split = canonical_split(row["split"]) if (row.get("split") or "").strip() else None
                manip = manipulation_index((row.get("manipulation") or "").strip() or ("both_replace" if label
                                                                                        else "real"))
            except DatasetError as exc:
                raise DatasetError(f"{csv_path}: row {n + 1}: {exc}") from None
            if records is None:
                row_split = row_split or hash_split(group if group else rel)
            else:
                row_split = rec.split
            if (manip == manipulation_index("real")) != (label == 0):
                raise DatasetError(f"{csv_path}: row {n + 1}: label {row['label']!r} contradicts manipulation "
                                   f"{MANIPULATIONS[manip]!r} (a real clip has manipulation 'real' or none)")
            clips.append(FolderClip(rel, n + 1, label, row_split, group, manip, _offset_class(row, label, csv_path, n)))
        _refuse_duplicates(clips, where)
        if csv_path.is_file():
            extra = sorted(set(find_videos(root)) - set(files))
            if extra:
                log.info("%d video(s) under %s are not in %s and are not used, e.g. %s", len(extra), root,
                         csv_path.name, extra[:3])
        if unlisted:
            log.warning("%d video(s) under %s are not in split file %s and are left out, e.g. %s", len(unlisted),
                        root, split_path, unlisted[:3])
        if records is not None and not clips:
            raise DatasetError(f"none of the videos under {root} is listed in split file {split_path} (its 'file' "
                               "entries are relative to the dataset root); point folder: at the root it describes")
        return clips

    def provenance(self) -> dict[str, Any]:
        """Source summary for :func:`pinlite_edge.data.provenance.training_data_summary`."""
        return {"kind": self.kind, "root": self._description["root"], "split_file": self.split_file,
                "real_video": True, "sync_pairs": None if self.sync_pairs is None else self.sync_pairs.to_dict(),
                "splits": self.split_counts}

    def balance_by_default(self) -> bool:
        """Sync-pair data is heavily fake-dominated: training balances its classes unless told otherwise."""
        return self.sync_pairs is not None


def _refuse_duplicates(clips: list[FolderClip], where: Path) -> None:
    """One file listed twice trained on both its labels, or leaked between splits."""
    rows: dict[str, list[FolderClip]] = {}
    for c in clips:
        rows.setdefault(c.rel, []).append(c)
    twice = {rel: cs for rel, cs in rows.items() if len(cs) > 1}
    if twice:
        rel, cs = next(iter(twice.items()))
        listed = ", ".join(f"row {c.row} ({c.split}, label {c.label})" for c in cs)
        raise DatasetError(f"{where}: {len(twice)} video(s) listed more than once, e.g. {rel}: {listed}; list each "
                           "file once (one label, one split)")


def _split_counts(clips: list[FolderClip]) -> dict[str, dict[str, Any]]:
    """Clips and speakers per split (a clip of unknown speaker counts as its own speaker)."""
    out: dict[str, dict[str, Any]] = {}
    for s in SPLITS:
        mine = [c for c in clips if c.split == s]
        out[s] = {"clips": len(mine), "speakers": len({c.speaker_group or f"file:{c.rel}" for c in mine}),
                  "speakers_known": all(c.speaker_group for c in mine)}
    return out


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
    if label == 0 and k != 0:
        raise DatasetError(f"{csv_path}: row {n + 1}: a real clip is in sync, so its offset is 0 or empty, got {k}")
    return k + MAX_OFFSET
