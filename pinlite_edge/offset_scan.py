"""Offset scan: score every window again with its audio re-aligned by a few video frames either way, and compare.

This is how SyncNet-style lip-sync models estimate an audio offset (Chung & Zisserman 2016: the offset is the shift
that makes audio and lips agree best, the confidence how much better it is than the others). The sync classifier
answers "does this audio belong to these lips *at this alignment*"; on real footage its absolute P(fake) also
depends on the speaker, the camera and the recording, which a model trained on a few dozen speakers cannot factor out.
Comparing alignments of the *same* clip cancels most of that: a genuine clip agrees best at its own alignment, a clip
whose audio was delayed agrees best when it is moved back.

For a clip, ``curve[k]`` is the window-averaged real-vs-fake logit margin (``logit_real - logit_fake``) with the audio
read ``k`` video frames later than given (``k`` in :data:`DEFAULT_SCAN_OFFSETS`; the model's own alignment is
``k = 0``). Then

- the offset estimate is ``argmax_k curve[k]`` (the delay, in frames, that re-aligns the audio; the offset head's sign
  convention: audio delayed by 5 frames gives +5);
- ``P(fake | scan) = 1 - exp(-(max_k curve[k] - curve[0]))``: 0 when the given alignment is the best one, towards 1 as
  another alignment explains the lips better (``exp(curve[0] - max)`` is the likelihood ratio of the given alignment
  to the best one under the classifier's logistic model).

Windows whose shifted audio would leave the track (the first and last ones) are scored but not averaged into the curve
when the clip has other windows; a clip too short for any complete window uses them all.

Measured on the train split of ``pinlite_edge/data/splits/real_av.json`` with the distilled quickstart student (in-sample
for the model, used to choose the grid only, never the test split): every other frame up to +-6 frames detects as
well as every frame up to +-7 (AUC of the scan P(fake) vs delay 200 ms 0.92 and 0.91) at half the model calls; the
classifier's own mean P(fake) gave 0.71 on the same clips. Results on the held-out clips:
``benchmarks/results/real_faces/``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from pinlite_edge.errors import InputError
from pinlite_edge.utils.checks import is_whole

#: every other video frame up to +-6 (+-240 ms at 25 fps): +-1 frame resolution for offsets up to +-7 frames
DEFAULT_SCAN_OFFSETS: tuple[int, ...] = (-6, -4, -2, 0, 2, 4, 6)
#: the largest shift (frames) a scan may ask for: one second at 25 fps
MAX_SCAN_FRAMES = 25
#: neighbours on each side that a window's local scan averages (:func:`local_fake_probs`): 7 windows, about 2.9 s at
#: the default stride. Chosen on benchmarks/results/localisation/ (radii 0-5 measured there)
LOCAL_SCAN_RADIUS = 3


def _is_index(value: Any, length: int) -> bool:
    """A whole number in ``0 .. length - 1`` (negative indices, which wrap, are not)."""
    return is_whole(value, 0, length - 1, numpy=True)


def check_scan_offsets(offsets: Any) -> tuple[int, ...]:
    """Validated, sorted scan offsets (frames); an empty sequence or None means "no scan" and gives ``()``."""
    if offsets is None:
        return ()
    if isinstance(offsets, (str, bytes)) or not isinstance(offsets, Iterable):
        raise InputError(f"scan_offsets must be a sequence of integers (video frames) or None, got {offsets!r}")
    values = list(offsets)
    if not values:
        return ()
    if not all(is_whole(v, numpy=True) for v in values):
        raise InputError(f"scan_offsets must be integers (video frames), got {values!r}")
    out = tuple(sorted({int(v) for v in values}))
    if len(out) != len(values):
        raise InputError(f"scan_offsets must not repeat a value, got {values!r}")
    if 0 not in out or len(out) < 3:
        raise InputError(f"scan_offsets must include 0 (the given alignment) and at least two shifts, got {values!r}")
    if max(abs(v) for v in out) > MAX_SCAN_FRAMES:
        raise InputError(f"scan_offsets must stay within +-{MAX_SCAN_FRAMES} frames, got {values!r}")
    return out


def scan_fake_prob(curve: np.ndarray, zero_index: int) -> float:
    """``1 - exp(-(max(curve) - curve[zero_index]))`` (module doc); a NaN or inf in ``curve`` is an
    :class:`InputError`."""
    curve = np.asarray(curve, np.float64)
    if curve.ndim != 1 or not _is_index(zero_index, curve.size):
        raise InputError(f"scan_fake_prob needs a 1-D curve and a zero_index inside it (0..{curve.size - 1}), got "
                         f"shape {curve.shape} and {zero_index!r}")
    if not np.isfinite(curve).all():  # a NaN gave a NaN P(fake); inf gave 1.0 or NaN
        raise InputError(f"scan_fake_prob needs a finite curve, got NaN or inf at {int((~np.isfinite(curve)).sum())} "
                         f"of its {curve.size} offsets")
    gap = float(np.max(curve) - curve[zero_index])
    return float(1.0 - math.exp(-max(gap, 0.0)))


def local_fake_probs(window_margins: np.ndarray, zero_index: int, radius: int = LOCAL_SCAN_RADIUS) -> np.ndarray:
    """Per window, :func:`scan_fake_prob` of the margins averaged over the window and ``radius`` neighbours on each
    side (fewer at the clip's ends): the verdict's statistic made local, for *where* a clip is out of sync.

    Measured (``benchmarks/results/localisation/``): on clips manipulated from their middle on, held-out speakers,
    it ranks the manipulated half's windows above the genuine half's with AUC 0.70-0.74, the windows' own classifier
    P(fake) 0.62-0.67. A hint where to look, not a located manipulation."""
    m = np.asarray(window_margins, np.float64)
    if m.ndim != 2 or not _is_index(zero_index, m.shape[1]) or not is_whole(radius, 0, numpy=True):
        raise InputError(f"local scan needs (windows, offsets) margins, a zero index inside them and a whole radius "
                         f">= 0, got {m.shape}, {zero_index!r}, {radius!r}")
    if not np.isfinite(m).all():  # one NaN turned every window's local P(fake) from it on into NaN
        raise InputError(f"local scan needs finite margins, got NaN or inf in {int((~np.isfinite(m)).sum())} of "
                         f"{m.size}")
    csum = np.vstack([np.zeros((1, m.shape[1])), np.cumsum(m, axis=0)])
    n = m.shape[0]
    lo = np.maximum(np.arange(n) - radius, 0)
    hi = np.minimum(np.arange(n) + radius + 1, n)
    curves = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    gaps = np.maximum(curves.max(axis=1) - curves[:, zero_index], 0.0)
    return 1.0 - np.exp(-gaps)


@dataclass
class ScanResult:
    """The clip's scan: offset estimate, P(fake | scan) and the curve it came from."""

    offset_frames: int
    fake_prob: float
    curve: dict[int, float]  # offset (frames) -> mean real-vs-fake logit margin over the windows used
    windows_used: int  # windows averaged into the curve
    complete_only: bool  # True: only windows whose shifted audio stayed inside the track
    #: (windows, offsets) float32 margins of every window scanned, in window order (not serialised): what a local
    #: analysis of the clip reads (benchmarks/localisation.py)
    window_margins: np.ndarray | None = field(default=None, repr=False)
    #: (windows,) bool: which windows the curve averages (:meth:`ScanCurve.used`; not serialised)
    used_mask: np.ndarray | None = field(default=None, repr=False)

    def local_fake_probs(self, radius: int = LOCAL_SCAN_RADIUS) -> np.ndarray:
        """:func:`local_fake_probs` of every window scanned (``window_margins``, shift 0 where the curve has it)."""
        if self.window_margins is None:
            raise InputError("this scan result holds no window margins")
        return local_fake_probs(self.window_margins, list(self.curve).index(0), radius)

    def to_dict(self) -> dict[str, Any]:
        return {"offset_frames": self.offset_frames, "fake_prob": self.fake_prob,
                "curve": {str(k): round(v, 5) for k, v in self.curve.items()}, "windows_used": self.windows_used,
                "complete_only": self.complete_only}


@dataclass
class ScanCurve:
    """Accumulates each window's margins (float64, one row of ``len(offsets)`` per window: 56 bytes per window with
    the default grid) and whether it is complete (its shifted audio stayed in the track) and shows the face."""

    offsets: tuple[int, ...]
    _rows: list[np.ndarray] = field(init=False)
    _complete: list[bool] = field(init=False)
    _face: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = check_scan_offsets(self.offsets)
        if not self.offsets:
            raise InputError("a scan needs offsets")
        self._rows, self._complete, self._face = [], [], []

    def add(self, margins: np.ndarray, complete: Sequence[bool], face: Sequence[bool] | None = None) -> None:
        """``margins`` (windows, offsets): ``logit_real - logit_fake`` per window and offset; ``face``: per window,
        whether the face tracker had the face in it (None: every window does)."""
        margins = np.asarray(margins, np.float64)
        if margins.ndim != 2 or margins.shape[1] != len(self.offsets) or margins.shape[0] != len(complete):
            raise InputError(f"scan margins must be (windows, {len(self.offsets)}), got {margins.shape}")
        if not np.isfinite(margins).all():
            raise InputError("scan margins contain NaN or inf")
        face = [True] * len(complete) if face is None else list(face)
        if len(face) != len(complete):
            raise InputError(f"scan face flags must be one per window ({len(complete)}), got {len(face)}")
        self._complete.extend(bool(c) for c in complete)
        self._face.extend(bool(f) for f in face)
        self._rows.append(margins)  # float64: the curve is averaged from these

    def used(self) -> np.ndarray:
        """Which windows the curve averages: those with the face, else all; of those, the complete ones when there
        are any (a clip too short for a complete window uses them all)."""
        face, complete = np.asarray(self._face, bool), np.asarray(self._complete, bool)
        pool = face if face.any() else np.ones_like(face)
        return pool & complete if (pool & complete).any() else pool

    def window_margins(self, start: int = 0) -> np.ndarray:
        """``(windows, offsets)`` float32 margins of the windows added so far from window ``start`` on, in order
        (only the batches that hold them are joined: a streaming caller reading its last few windows pays for those)."""
        if start < 0:
            raise InputError(f"start must be >= 0, got {start}")
        tail: list[np.ndarray] = []
        # index of the first window of the batch looked at, walking back from the end (all windows added so far)
        first = len(self._complete)
        for rows in reversed(self._rows):
            if first <= start:
                break
            first -= rows.shape[0]
            tail.append(rows[max(start - first, 0):])
        if not tail:
            return np.zeros((0, len(self.offsets)), np.float32)
        return np.concatenate(tail[::-1]).astype(np.float32)

    def result(self) -> ScanResult:
        if not self._complete:
            raise InputError("no window was scanned")
        used = self.used()
        rows = np.concatenate(self._rows)
        curve = rows[used].mean(axis=0)
        best = int(np.argmax(curve))
        return ScanResult(offset_frames=self.offsets[best], fake_prob=scan_fake_prob(curve, self.offsets.index(0)),
                          curve={k: float(v) for k, v in zip(self.offsets, curve)},
                          windows_used=int(used.sum()), complete_only=bool(np.asarray(self._complete)[used].all()),
                          window_margins=rows.astype(np.float32), used_mask=used)


__all__ = ["DEFAULT_SCAN_OFFSETS", "LOCAL_SCAN_RADIUS", "MAX_SCAN_FRAMES", "ScanCurve", "ScanResult",
           "check_scan_offsets", "local_fake_probs", "scan_fake_prob"]
