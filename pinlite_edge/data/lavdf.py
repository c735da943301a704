"""LAV-DF dataset: ``metadata.json`` (or ``metadata.min.json``) records + mp4 files, windowed per clip.

Labels per window: fake (1) if the window overlaps any ``fake_periods`` interval by more than
``min_overlap_seconds`` (default 0: any overlap); the manipulation comes from ``modify_video`` / ``modify_audio``
(both -> both_replace, audio only -> audio_replace, video only -> visual_replace). Fake windows have an undefined
offset (-100); real windows, including real stretches of a fake clip, are in sync (offset class 5).
LAV-DF frames are already face-centred, so ``face_crop`` is off by default.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from pinlite_edge.contract import OFFSET_IGNORE_INDEX, InputContract
from pinlite_edge.data.cache import ClipLoader
from pinlite_edge.data.sample import IN_SYNC, WindowDataset, WindowRef, canonical_split, manipulation_index
from pinlite_edge.errors import DatasetError, InputError
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S
from pinlite_edge.features.windows import window_starts
from pinlite_edge.utils.files import names_a_file_inside
from pinlite_edge.utils.hashing import sha256_file

log = logging.getLogger(__name__)

METADATA_FILES = ("metadata.json", "metadata.min.json")


def find_metadata(root: Path) -> Path:
    for name in METADATA_FILES:
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root} is not a LAV-DF folder: none of {', '.join(METADATA_FILES)} found")


def manipulation_of(record: dict[str, Any]) -> str:
    video, audio = bool(record.get("modify_video")), bool(record.get("modify_audio"))
    if video and audio:
        return "both_replace"
    if audio:
        return "audio_replace"
    if video:
        return "visual_replace"
    return "both_replace"  # n_fakes > 0 without flags: unknown modality, counted as both


#: Slack (s) between a record's ``duration`` and its fake periods' ends (timestamps rounded to frames).
PERIOD_SLACK_S = 0.1


def _check_record(meta_path: Path, n: int, rel: str, duration: float, periods: list[tuple[float, float]],
                  n_fakes: int) -> None:
    """A record whose labels cannot be derived: a fake without periods, periods outside the clip (e.g. written in
    frames or milliseconds), or a duration that is not a positive number of seconds. Its windows were labelled real."""
    where = f"{meta_path}: record {n} ({rel})"
    if not math.isfinite(duration) or duration <= 0:
        raise DatasetError(f"{where}: duration {duration!r} is not a positive number of seconds")
    if n_fakes > 0 and not periods:
        raise DatasetError(f"{where}: n_fakes is {n_fakes} but fake_periods is empty, so no window can be labelled "
                           "fake")
    if n_fakes == 0 and periods:
        raise DatasetError(f"{where}: n_fakes is 0 but it lists {len(periods)} fake period(s)")
    for a, b in periods:
        if not (math.isfinite(a) and math.isfinite(b) and 0 <= a < b <= duration + PERIOD_SLACK_S):
            raise DatasetError(f"{where}: fake period [{a:g}, {b:g}] is not a span within the clip's 0..{duration:g} "
                               "s (periods and duration are in seconds)")


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


class LavdfDataset(WindowDataset):
    kind = "lavdf"
    recorded_durations = True

    def __init__(self, root: str | Path, split: str, contract: InputContract, *, cache_dir: str | Path | None = None,
                 face_crop: bool = False, stride_seconds: float | None = None, min_overlap_seconds: float = 0.0,
                 max_clips: int | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"LAV-DF root {root} is not a folder")
        meta_path = find_metadata(root)
        try:
            records = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read LAV-DF metadata {meta_path}: {exc}") from None
        if not isinstance(records, list):
            raise DatasetError(f"{meta_path} must hold a JSON list of records")
        split = canonical_split(split)
        refs: list[WindowRef] = []
        missing: list[str] = []
        clips = 0
        seen: dict[str, int] = {}
        listed: dict[str, int] = {}  # records per split in the metadata (what provenance counts)
        for n, rec in enumerate(records):
            try:
                rel = str(rec["file"])
                rec_split = canonical_split(rec["split"])
                duration = float(rec["duration"])
                periods = [(float(a), float(b)) for a, b in rec.get("fake_periods", [])]
                n_fakes = int(rec.get("n_fakes", len(periods)))
            except (KeyError, TypeError, ValueError, DatasetError) as exc:
                raise DatasetError(f"{meta_path}: record {n} is malformed ({exc!r})") from None
            if not names_a_file_inside(rel):  # the metadata names videos inside its folder
                raise DatasetError(f"{meta_path}: record {n}: video {rel!r} is not a path inside {root} (no "
                                   "absolute paths, no '..')")
            _check_record(meta_path, n, rel, duration, periods, n_fakes)
            key = Path(rel).as_posix()
            if key in seen:  # one file under two labels, or in two splits
                raise DatasetError(f"{meta_path}: records {seen[key]} and {n} both list {rel}; list each file once")
            seen[key] = n
            listed[rec_split] = listed.get(rec_split, 0) + 1
            if split != "all" and rec_split != split:
                continue
            if max_clips is not None and clips >= max_clips:
                continue
            path = root / rel
            if not path.is_file():
                missing.append(rel)
                continue
            fake_manip = manipulation_index(manipulation_of(rec))
            try:
                starts = window_starts(duration, contract, stride_seconds, source=str(path))
            except InputError as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            clips += 1
            for s in starts:
                fake = n_fakes > 0 and any(
                    _overlap(s, s + contract.window_seconds, a, b) > min_overlap_seconds for a, b in periods)
                refs.append(WindowRef(
                    path=path, start=s, label=int(fake), manipulation=fake_manip if fake else 0,
                    offset_class=OFFSET_IGNORE_INDEX if fake else IN_SYNC, clip_id=f"{rel}@{s:.2f}"))
        if missing:
            raise DatasetError(f"{len(missing)} video(s) listed in {meta_path} are missing under {root}, "
                               f"e.g. {missing[:3]}")
        if not refs:
            raise DatasetError(f"LAV-DF {root}: no clips in split {split!r}")
        loader = ClipLoader(contract, face_crop=face_crop, cache_dir=cache_dir, timeout_s=timeout_s)
        description = {"root": str(root.resolve()), "metadata_sha256": sha256_file(meta_path),
                       "face_crop": face_crop, "stride_seconds": stride_seconds,
                       "min_overlap_seconds": min_overlap_seconds, "max_clips": max_clips,
                       "preprocessing": loader.config_hash}
        self.leave_out_hint = f"remove its record from {meta_path}"
        self.listed = listed
        super().__init__(refs, contract, loader, split, description)
        log.info("LAV-DF %s: %d clips, %d windows (%d fake)", split, clips, len(refs), sum(self.labels()))

    def provenance(self) -> dict[str, Any]:
        """Source summary: every split of the metadata (records listed), the loaded one as loaded."""
        summary = super().provenance()
        loaded = summary["splits"]
        summary["splits"] = {name: loaded.get(name) or {"clips": count, "speakers": None, "speakers_known": False}
                             for name, count in sorted(self.listed.items())}
        return summary
