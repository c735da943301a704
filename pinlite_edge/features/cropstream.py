"""Decoded frames -> tracked mouth crops, while decoding (the video consumer of ``prepare_file``).

Each frame is observed by the face track as it arrives (a small grey copy) and kept as YUV planes until the track
can place its crop: :meth:`FaceTrack.lookahead_frames` frames later (about ``max_gap_seconds`` + ``smooth_seconds``).
Then only the crop square is converted to RGB at the contract's size. Memory holds that many frames, not the clip.
With ``config=None`` every frame's largest centred square is used (pre-cropped data), without a lookahead.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Any

import numpy as np

from pinlite_edge.features.facecrop import ClipFaces, FaceBox, FaceCropConfig, centre_box, finish, mouth_box, new_track
from pinlite_edge.features.facetrack import FaceTrack
from pinlite_edge.features.video import sane_fps
from pinlite_edge.features.yuvframe import YuvFrame

log = logging.getLogger(__name__)

#: Crops are placed in blocks of this many frames (amortises the smoothing's per-call cost).
BLOCK = 8


class CropStream:
    """Video consumer for :func:`pinlite_edge.features.decode.decode_media`: ``start``, ``add`` per frame, then
    :meth:`finish` -> (crops uint8 ``(N, size, size, 3)`` in decoding order, :class:`ClipFaces` or None)."""

    def __init__(self, size: int, config: FaceCropConfig | None, *, max_side: int | None, source: str = "clip",
                 keep_boxes: bool = True):
        self.size = size
        self.keep_boxes = keep_boxes  # False: streaming callers that do not read the per-frame boxes
        self.config = config
        self.max_side = max_side
        self.source = source
        self.fps = 0.0
        self.crops: list[np.ndarray] = []
        #: per crop not drained: whether the tracker had the face there (True without face crop: pre-cropped data)
        self.found: list[bool] = []
        self.boxes: list[FaceBox] = []
        self._pending: deque[YuvFrame] = deque()
        self._track: FaceTrack | None = None
        self._hold = 0  # frames after the newest observed one that a box may depend on
        self.emitted = 0  # crops made so far (drained or not)

    def start(self, declared_fps: float | None) -> None:
        self.fps = sane_fps(declared_fps, source=self.source)

    def add(self, frame: Any, seconds: float, turns: int) -> None:
        self.add_yuv(YuvFrame.from_av(frame, turns, self.max_side))

    def add_yuv(self, yuv: YuvFrame) -> None:
        """The next frame, already as upright planes (:meth:`YuvFrame.from_rgb` for an app's arrays)."""
        if not self.fps:
            self.start(None)
        if self.config is None:
            box = centre_box(yuv.height, yuv.width)
            if self.keep_boxes:
                self.boxes.append(box)
            self.crops.append(yuv.crop_rgb(box, self.size))
            self.found.append(True)
            self.emitted += 1
            return
        if self._track is None:
            self._track = new_track(yuv.height, yuv.width, self.fps, self.config)
            self._hold = self._track.lookahead_frames()
        self._track.observe(len(self._track.raw), yuv.y)
        self._pending.append(yuv)
        if len(self._pending) >= self._hold + BLOCK:
            self._emit(len(self._pending) - self._hold, final=False)

    def _emit(self, count: int, *, final: bool) -> None:
        lo = self.emitted
        faces = self._track.boxes(lo, lo + count, final=final)
        present = self._track.present(lo, lo + count)
        for face, here in zip(faces, present):
            yuv = self._pending.popleft()
            box = mouth_box(face, yuv.height, yuv.width, self.config)
            if self.keep_boxes:
                self.boxes.append(box)
            self.crops.append(yuv.crop_rgb(box, self.size))
            self.found.append(bool(here))  # a detection near: the box is the face's, never the centre fallback
            self.emitted += 1

    def drain(self) -> list[tuple[np.ndarray, bool]]:
        """``(crop, face found)`` for the crops made since the last call (decoding order); they are not kept
        (streaming callers)."""
        out = list(zip(self.crops, self.found))
        self.crops, self.found = [], []
        return out

    def finish(self) -> tuple[np.ndarray, ClipFaces | None]:
        """All crops not drained; raises :class:`~pinlite_edge.errors.InputError` when ``require_face`` and no face
        was found."""
        faces = None
        if self._track is not None:
            if self._pending:
                self._emit(len(self._pending), final=True)
            faces = finish(self._track, self.boxes, self.config, self.source)
        if not self.crops:
            return np.zeros((0, self.size, self.size, 3), np.uint8), faces
        return np.stack(self.crops), faces
