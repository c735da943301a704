"""Decoded frames -> tracked mouth crops, while decoding (the video consumer of ``prepare_file``).

Each frame is observed by the face track as it arrives (a small grey copy) and kept as YUV planes until the track
can place its crop: :meth:`FaceTrack.lookahead_frames` frames later (about ``max_gap_seconds`` + ``smooth_seconds``).
Then only the crop square is converted to RGB at the contract's size. Memory holds that many frames, not the clip.
The lookahead is counted in source frames, so it grows with the frame rate: where it would hold more than
:data:`PENDING_BYTES`, frames are held at a lower resolution (:meth:`CropStream.held_side`; 1080p above about 60 fps),
so a 240 fps clip costs what a 60 fps one does.
With ``config=None`` every frame's largest centred square is used (pre-cropped data), without a lookahead.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import numpy as np

from pinlite_edge.features.facecrop import ClipFaces, FaceBox, FaceCropConfig, centre_box, finish, mouth_box, new_track
from pinlite_edge.features.facetrack import FaceTrack, TrackParams
from pinlite_edge.features.limits import check_max_side
from pinlite_edge.features.video import sane_fps
from pinlite_edge.features.yuvframe import DIRECT_FORMATS, YuvFrame, bounded_size

log = logging.getLogger(__name__)

#: Crops are placed in blocks of this many frames (amortises the smoothing's per-call cost).
BLOCK = 8
#: Bytes the frames waiting for the face track's lookahead (and one block) may take. 1920x1080 4:2:0 frames of 3.1 MB:
#: 41 at 25 fps, 86 at 60 fps (267 MB), so both are held whole; at 240 fps 320 would take 1 GB, so they are held at
#: about 1030 px instead (:meth:`CropStream.held_side`).
PENDING_BYTES = 272 * 2**20
#: ... but never held smaller than this (a config with a lookahead of many seconds may then exceed PENDING_BYTES).
MIN_HELD_SIDE = 360


class CropStream:
    """Video consumer for :func:`pinlite_edge.features.decode.decode_media`: ``start``, ``add`` per frame, then
    :meth:`finish` -> (crops uint8 ``(N, size, size, 3)`` in decoding order, :class:`ClipFaces` or None)."""

    def __init__(self, size: int, config: FaceCropConfig | None, *, max_side: int | None, source: str = "clip",
                 keep_boxes: bool = True, pending_bytes: int | None = None):
        self.size = size
        self.keep_boxes = keep_boxes  # False: streaming callers that do not read the per-frame boxes
        self.config = config
        self.max_side = check_max_side(max_side)
        self.pending_bytes = PENDING_BYTES if pending_bytes is None else pending_bytes
        #: longest side of the decoded frames within ``max_side``, and the one they are held at (:meth:`held_side`;
        #: smaller at high frame rates); boxes are in pixels of the held frames. Set by the first frame
        self.bounded_side: int | None = None
        self.frame_side: int | None = None
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
        if self.frame_side is None:
            self.bounded_side = max(bounded_size(frame.width, frame.height, self.max_side))
            self.frame_side = self.held_side(frame)
        self.add_yuv(YuvFrame.from_av(frame, turns, self.frame_side))

    def held_side(self, frame: Any) -> int:
        """The longest side frames like ``frame`` (a PyAV frame) are held at: within ``max_side``, and lowered so that
        the face track's lookahead of them (plus one block) fits in ``pending_bytes`` (at least
        :data:`MIN_HELD_SIDE`). Only clips with a high frame rate and a large picture are held smaller."""
        width, height = bounded_size(frame.width, frame.height, self.max_side)
        side = max(width, height)
        if self.config is None:
            return side
        if not self.fps:
            self.start(None)
        held = TrackParams.from_config(self.config, self.fps).lookahead + BLOCK
        direct = frame.format.name in DIRECT_FORMATS and (width, height) == (frame.width, frame.height)
        per_pixel = sum(p.width * p.height for p in frame.planes[:3]) / (width * height) if direct else 1.5
        if held * width * height * per_pixel <= self.pending_bytes:
            return side
        # smaller frames are converted to 4:2:0 (YuvFrame.from_av): 1.5 bytes per pixel
        lower = max(MIN_HELD_SIDE, math.floor(side * math.sqrt(self.pending_bytes / (held * width * height * 1.5))))
        lower = max(bounded_size(frame.width, frame.height, lower))  # the side the frames will have (even)
        if lower >= side:
            return side
        log.info("%s: at %.4g fps the face track holds %d frames; they are held at %d px instead of %d to stay "
                 "within %d MB", self.source, self.fps, held, lower, side, self.pending_bytes // 2**20)
        return lower

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

    def release(self) -> None:
        """Drop the frames waiting for the face track and the crops not drained (decoding failed or was abandoned);
        the decoder's frames they view are freed with them."""
        self._pending.clear()
        self.crops, self.found = [], []

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
