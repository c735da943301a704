"""Split files shipped with the package, and the reader of split files.

A split file is JSON: ``{"clips": [{"file": REL, "split": "train"|"dev"|"test", "speaker_group": NAME}, ...]}``
(or the bare list), ``file`` relative to the dataset root. Use it with ``folder:ROOT`` and
``--data-option split_file=PATH`` (or the shipped name, e.g. ``split_file=real_av``)::

    from pinlite_edge.data.splits import REAL_AV_SPLIT   # the speaker-disjoint split of ../shared/data/real-av
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pinlite_edge.errors import DatasetError

SPLITS_DIR = Path(__file__).resolve().parent
#: Speaker-disjoint train/dev/test split of ``../shared/data/real-av`` (dev: checkpoint selection; test: reports).
REAL_AV_SPLIT = SPLITS_DIR / "real_av.json"


def shipped_splits() -> dict[str, Path]:
    """Name -> path of every split file shipped in this package (``real_av``, ...)."""
    return {p.stem: p for p in sorted(SPLITS_DIR.glob("*.json"))}


def resolve_split_file(value: str | Path) -> Path:
    """A path to an existing split file, or the name of a shipped one (``real_av``)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    shipped = shipped_splits()
    if str(value) in shipped:
        return shipped[str(value)]
    raise DatasetError(f"split file {value} not found; give a path to a JSON split file or the name of a shipped "
                       f"one ({', '.join(shipped) or 'none'})")


@dataclass(frozen=True)
class SplitRecord:
    file: str  # relative to the dataset root, '/'-separated
    split: str  # train | dev | test
    speaker_group: str | None


def read_split_file(path: str | Path) -> dict[str, SplitRecord]:
    """``{relative file: SplitRecord}``; refuses malformed files and speaker groups that span two splits."""
    from pinlite_edge.data.sample import canonical_split

    path = resolve_split_file(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from None
    records = data.get("clips") if isinstance(data, dict) else data
    if not isinstance(records, list) or not records:
        raise DatasetError(f"split file {path} must hold a non-empty list of clips (a list, or {{\"clips\": [...]}})")
    out: dict[str, SplitRecord] = {}
    group_split: dict[str, str] = {}
    for n, rec in enumerate(records):
        if not isinstance(rec, dict) or not rec.get("file") or not rec.get("split"):
            raise DatasetError(f"split file {path}: record {n} needs 'file' and 'split' (and 'speaker_group')")
        try:
            split = canonical_split(rec["split"])
        except DatasetError as exc:
            raise DatasetError(f"split file {path}: record {n}: {exc}") from None
        if split == "all":
            raise DatasetError(f"split file {path}: record {n}: split must be train, dev or test")
        rel = Path(str(rec["file"])).as_posix()
        group = rec.get("speaker_group")
        group = str(group) if group not in (None, "") else None
        if rel in out:
            raise DatasetError(f"split file {path}: {rel} is listed twice")
        if group is not None:
            if group_split.setdefault(group, split) != split:
                raise DatasetError(f"split file {path}: speaker group {group!r} is in both {group_split[group]} and "
                                   f"{split}; a speaker must stay in one split")
        out[rel] = SplitRecord(rel, split, group)
    return out


__all__ = ["REAL_AV_SPLIT", "SPLITS_DIR", "SplitRecord", "read_split_file", "resolve_split_file", "shipped_splits"]
