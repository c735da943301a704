"""The shared sample format (docs/architecture.md) and the window-indexed dataset base used by real-video datasets."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from pinlite_edge.contract import MANIPULATIONS, MAX_OFFSET, OFFSET_IGNORE_INDEX, InputContract
from pinlite_edge.errors import DatasetError, DecodeError
from pinlite_edge.features.windows import Window, audio_segment, window_at
from pinlite_edge.utils.hashing import json_sha256

if TYPE_CHECKING:
    from pinlite_edge.data.augment import AugmentConfig

#: offset_class of an in-sync window (offset 0).
IN_SYNC = MAX_OFFSET

#: Accepted spellings of split names -> canonical name (LAV-DF calls its validation split "dev").
SPLIT_ALIASES = {"val": "dev", "valid": "dev", "validation": "dev", "dev": "dev", "train": "train", "test": "test",
                 "all": "all"}


def canonical_split(split: str) -> str:
    try:
        return SPLIT_ALIASES[str(split).strip().lower()]
    except KeyError:
        raise DatasetError(f"unknown split {split!r}; use one of train, dev (val), test, all") from None


def manipulation_index(name: str) -> int:
    try:
        return MANIPULATIONS.index(name)
    except ValueError:
        raise DatasetError(f"unknown manipulation {name!r}; choose one of {MANIPULATIONS}") from None


def make_sample(window: Window, label: int, manipulation: int, offset_class: int, clip_id: str) -> dict[str, Any]:
    """A sample dict: frames (T,3,S,S) float32, mfcc (64,13) float32, label/manipulation/offset_class int64, clip_id."""
    return {
        "frames": torch.from_numpy(window.frames),
        "mfcc": torch.from_numpy(window.mfcc),
        "label": torch.tensor(int(label), dtype=torch.int64),
        "manipulation": torch.tensor(int(manipulation), dtype=torch.int64),
        "offset_class": torch.tensor(int(offset_class), dtype=torch.int64),
        "clip_id": clip_id,
    }


#: a window's clip id (``<clip>@<start>``) and the optional ``#<fake>`` suffix of a sync-pair fake made from it
_WINDOW_ID = re.compile(r"(.*?@\d+\.\d+)(#.*)?$", re.DOTALL)


def pair_key(clip_id: str) -> str:
    """The in-sync window a sample was made from: a sync-pair fake (``clip@1.20#shift+3``, ``clip@1.20#swap0:other``)
    and its real window (``clip@1.20``) share it (a ``#`` inside the clip's own name is kept); any other sample's
    key is its whole clip id, so it pairs with nothing."""
    m = _WINDOW_ID.match(clip_id)
    return m.group(1) if m else clip_id


def ref_kind(ref: "WindowRef") -> str:
    """The sampler's kind of a window: ``real``, ``near_shift`` (audio shifted within ±5 frames, offset known),
    ``far_shift`` (shifted further, offset undefined), ``swap`` (audio of another clip) or the manipulation's name."""
    if ref.label == 0:
        return "real"
    if ref.rewrite:
        return "rewrite"
    if ref.audio_path is not None:
        return "swap"
    if ref.audio_shift_frames:
        return "near_shift" if ref.offset_class != OFFSET_IGNORE_INDEX else "far_shift"
    return MANIPULATIONS[ref.manipulation]


@dataclass(frozen=True)
class WindowRef:
    """One sample of a real-video dataset, resolved lazily (decoding happens in ``__getitem__``).

    ``audio_shift_frames`` k > 0 delays the audio by k video frames (the window's audio is taken from
    ``start - k / fps``); ``audio_path`` takes the audio from another clip instead (audio swap), and with ``rewrite``
    the frames too are rewritten to follow that audio (:mod:`pinlite_edge.data.lip_rewrite`).
    """

    path: Path
    start: float
    label: int
    manipulation: int
    offset_class: int
    clip_id: str
    audio_shift_frames: int = 0
    audio_path: Path | None = None
    rewrite: bool = False


class WindowDataset(Dataset):
    """Base of the file-backed datasets: an index of :class:`WindowRef` plus a (cached) clip loader."""

    kind = "windows"
    #: how to leave a clip out of this dataset (said when a clip cannot be used)
    leave_out_hint = "move this file out of the folder (or leave it out of the split file)"
    #: window times come from durations a metadata file records and label windows by time (LAV-DF's fake periods):
    #: a window past the decoded end is then an error; probed durations (a container's, which can exceed what
    #: decodes) only clamp the window into the clip
    recorded_durations = False

    def __init__(self, refs: list[WindowRef], contract: InputContract, loader: "Any", split: str,
                 description: dict[str, Any], augment: "AugmentConfig | None" = None):
        self.refs = refs
        self.contract = contract
        self.loader = loader
        self.split = split
        self._description = description
        self.augment = augment
        self._epoch, self._seed = 0, 0

    def set_augment(self, augment: "AugmentConfig | None") -> None:
        """Turn augmentation on (a config) or off (None) (see :mod:`pinlite_edge.data.augment`)."""
        self.augment = augment

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """The epoch and seed augmentation draws from (set by the training loop before each epoch)."""
        self._epoch, self._seed = int(epoch), int(seed)

    def __len__(self) -> int:
        return len(self.refs)

    def _load(self, path: Any) -> Any:
        """The prepared clip; a file that cannot be decoded says how to go on (a training set decodes in full)."""
        try:
            return self.loader.load(path)
        except DecodeError as exc:
            raise DatasetError(f"{exc}; every clip of a training set must decode: {self.leave_out_hint} and start "
                               "the run again") from None

    def __getitem__(self, i: int) -> dict[str, Any]:
        ref = self.refs[i]
        clip = self._load(ref.path)
        win = self.contract.window_seconds
        if self.recorded_durations and ref.start > clip.duration - win / 2:  # not rounding: the record is wrong
            raise DatasetError(f"{ref.clip_id}: a window at {ref.start:.2f} s, but {ref.path} decodes to "
                               f"{clip.duration:.2f} s: its recorded duration is wrong (its windows would repeat the "
                               f"clip's end under the labels of times it does not have); correct it or "
                               f"{self.leave_out_hint}")
        # Metadata durations can differ slightly from what decodes: keep the window inside the clip.
        start = max(0.0, min(ref.start, clip.duration - win))
        signal, a_start = clip.audio, start
        if ref.rewrite:
            if ref.audio_path is None:
                raise DatasetError(f"{ref.clip_id}: a rewrite fake needs the clip whose audio it follows")
            clip = self.loader.rewritten(ref.path, ref.audio_path)  # frames follow the driving audio it carries
            signal = clip.audio
        elif ref.audio_path is not None:
            other = self._load(ref.audio_path)
            signal, a_start = other.audio, max(0.0, min(start, other.audio_seconds - win))
        elif ref.audio_shift_frames:
            a_start = start - ref.audio_shift_frames / clip.fps
        if self.augment is None:
            window = window_at(clip, self.contract, start, audio=signal, audio_start_seconds=a_start)
        else:
            from pinlite_edge.data.augment import augment_audio, augment_frames, augmentation_rng, draw

            aug = draw(self.augment, augmentation_rng(self.augment.seed + self._seed, self._epoch, i))
            segment = audio_segment(signal, int(round(a_start * clip.sample_rate)), self.contract.window_samples)
            window = window_at(clip, self.contract, start, audio=augment_audio(segment, aug), audio_start_seconds=0.0)
            window.frames = augment_frames(window.frames, aug, self.contract)
        return make_sample(window, ref.label, ref.manipulation, ref.offset_class, ref.clip_id)

    def labels(self) -> list[int]:
        return [r.label for r in self.refs]

    def strata(self) -> tuple[list[int], list[str]]:
        """``(labels, kinds)`` of every sample without decoding (what the balancing sampler draws from)."""
        return [r.label for r in self.refs], [ref_kind(r) for r in self.refs]

    def pair_keys(self) -> list[str]:
        """:func:`pair_key` of every sample without decoding (what the pairing sampler groups by)."""
        return [pair_key(r.clip_id) for r in self.refs]

    def balance_by_default(self) -> bool:
        """Whether training balances this dataset's classes by default (``--balance auto``)."""
        return False

    def provenance(self) -> dict[str, Any]:
        """Source summary for :func:`pinlite_edge.data.provenance.training_data_summary` (subclasses add more)."""
        root = self._description.get("root")
        return {"kind": self.kind, "root": root, "split_file": None, "real_video": True, "sync_pairs": None,
                "splits": {self.split: {"clips": len({r.path for r in self.refs}), "speakers": None,
                                        "speakers_known": False}}}

    def describe(self) -> dict[str, Any]:
        """What :func:`pinlite_edge.data.dataset_fingerprint` hashes: source, split, contract, options, index."""
        index = hashlib.sha256("\n".join(
            f"{r.clip_id},{r.label},{r.manipulation},{r.offset_class}" for r in self.refs).encode()).hexdigest()
        desc = {"kind": self.kind, "split": self.split, "contract": self.contract.to_dict(), "num_samples": len(self),
                "index_sha256": index, **self._description}
        if self.augment is not None:  # un-augmented datasets keep the fingerprints they had before augmentation
            desc["augment"] = self.augment.to_dict()
        return desc

    #: description entries that say where the data lies, not what it is: left out of the fingerprint (their
    #: contents are in it: the files' stamp, the label / split files' sha256), so an installed package's copy of a
    #: shipped split file, or a dataset folder moved elsewhere, keeps its fingerprint
    LOCATION_KEYS = ("root", "split_file")

    def fingerprint(self) -> str:
        desc = {k: v for k, v in self.describe().items() if k not in self.LOCATION_KEYS}
        desc["files"] = self._files_stamp()
        return json_sha256(desc)

    def _files_stamp(self) -> str:
        """sha256 over every video's name, size and modification time (of the file a symlink points to): a video
        replaced under the same name changes the fingerprint (teacher-output caches and resumes are keyed by it).
        Names only: the index (in :meth:`describe`) holds each clip's path within the dataset, and where the dataset
        lies is not what it is."""
        lines = []
        for p in {Path(p) for r in self.refs for p in (r.path, r.audio_path) if p is not None}:
            try:
                st = p.stat()
                lines.append(f"{p.name},{st.st_size},{st.st_mtime_ns}")
            except OSError:
                lines.append(f"{p.name},missing")
        return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


__all__ = ["IN_SYNC", "OFFSET_IGNORE_INDEX", "WindowDataset", "WindowRef", "canonical_split", "make_sample",
           "manipulation_index", "ref_kind"]
