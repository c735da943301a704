"""Mouth crop: a square centred on the tracked lower face, sized so the lips fill a large part of it.

Lip-sync experts (SyncNet, Wav2Lip) look at the lower half of the face; so does PIN-Lite. Per frame, the tracked
face (:mod:`pinlite_edge.features.facetrack`: Haar cascades on a small grey copy, association, gap filling, temporal
smoothing) gives a centre ``(cx, cy)`` and a side ``s`` (the Haar box: brows to chin). The crop square has side
``crop_size * s`` and is centred ``crop_centre_y * s`` below the face centre, i.e. on the mouth; it is shifted to stay
inside the frame (never padded).

A clip where no face is found anywhere: a warning, the largest centred square of each frame (``face_found=False``),
or an :class:`~pinlite_edge.errors.InputError` with ``require_face=True``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np

from pinlite_edge.errors import BackendUnavailableError, InputError, UsageError
from pinlite_edge.features.facetrack import (
    FRONTAL_CASCADE,
    PROFILE_CASCADE,
    FaceTrack,
    TrackParams,
    detect_faces,
    detection_size,
    equalised_grey,
    load_cascade,
)
from pinlite_edge.utils.checks import is_finite_number, is_whole
from pinlite_edge.utils.opencv import cv2

log = logging.getLogger(__name__)

#: where the lips move inside the mouth crop, as fractions of its side (rows, columns): the lower centre, i.e. most
#: of the lips and chin. The classical sync cue reads motion here, in the baseline (``benchmarks/sync_baseline.py``)
#: and in the model (``models.sync_features``).
MOUTH_ROI_ROWS = (0.45, 0.90)
MOUTH_ROI_COLS = (0.25, 0.75)
#: ITU-R BT.601 luma weights (R, G, B) for the grey level that motion is measured on
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class FaceCropConfig:
    """How faces are found, tracked and cropped (recorded in the feature cache key)."""

    detect_side: int = 200  # shorter side (px) of the grey image the detector sees; smallest face ~24/200 of it
    search_seconds: float = 0.4  # whole-image searches this far apart while no face is tracked (or following misses)
    follow_every: int = 4  # frames between detections near the tracked face (frames between: interpolated)
    redetect_seconds: float | None = None  # also search this often while tracking (None: only when lost)
    max_gap_seconds: float = 1.0  # misses up to this long are interpolated; a track unseen this long is dropped
    smooth_seconds: float = 0.3  # centred moving median, then mean, of this length
    crop_size: float = 0.6  # crop side / face box side
    crop_centre_y: float = 0.32  # crop centre below the face box centre, as a fraction of the face box side
    min_neighbors: int = 5  # Haar acceptance threshold for whole-image searches (following uses 2 fewer, >= 3)
    require_face: bool = False  # no face anywhere -> InputError instead of a centre crop

    def __post_init__(self) -> None:
        """:class:`UsageError` naming the field for a value that cannot work: a detection image smaller than the
        cascades' 24 px window found no face and said so, a crop_size of 0 gave 2-pixel crops, a min_neighbors of -1
        accepted every candidate as a face, a NaN raised from deep inside; a gap or smoothing of hours held the whole
        clip for the lookahead."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "require_face":
                ok, want = isinstance(value, bool), "True or False"
            elif f.name in INT_RANGES:
                lo, hi = INT_RANGES[f.name]
                ok = is_whole(value, lo, hi, numpy=True)
                want = f"an integer in {lo}..{hi}"
            else:
                lo, hi, low_open = FLOAT_RANGES[f.name]
                if value is None and f.name == "redetect_seconds":
                    continue
                ok = is_finite_number(value, numpy=True) and (lo < value if low_open else lo <= value) and value <= hi
                want = f"a finite number in {'(' if low_open else '['}{lo:g}, {hi:g}]"
            if not ok:
                raise UsageError(f"FaceCropConfig.{f.name} must be {want}, got {value!r}")


#: FaceCropConfig's integer fields: (lowest, highest)
INT_RANGES = {"detect_side": (24, 4096), "follow_every": (1, 1000), "min_neighbors": (1, 100)}
#: FaceCropConfig's number fields: (lowest, highest, lowest excluded). The lookahead (max gap + smoothing) is held in
#: memory, so both are bounded.
FLOAT_RANGES = {"search_seconds": (0.0, 60.0, True), "redetect_seconds": (0.0, 3600.0, True),
                "max_gap_seconds": (0.0, 10.0, True), "smooth_seconds": (0.0, 5.0, False),
                "crop_size": (0.0, 4.0, True), "crop_centre_y": (-2.0, 2.0, False)}


@dataclass(frozen=True)
class FaceBox:
    x: int
    y: int
    size: int  # square side in pixels
    found: bool  # False: centre crop fallback

    def crop(self, frame: np.ndarray) -> np.ndarray:
        return frame[self.y:self.y + self.size, self.x:self.x + self.size]


@dataclass
class ClipFaces:
    """Per-frame crop squares of a clip and what the tracker saw."""

    boxes: list[FaceBox]
    found: bool  # a face was detected in at least one frame
    coverage: float  # fraction of probed frames with a detection of the tracked face
    faces_in_view: int = 0  # most faces seen at once in whole-image searches (FaceTrack.faces_in_view)


def require_face_detector() -> None:
    """:class:`BackendUnavailableError` unless OpenCV's Haar cascade class and its bundled frontal and profile models
    are present."""
    load_cascade(FRONTAL_CASCADE)
    load_cascade(PROFILE_CASCADE)


def face_detector_available() -> bool:
    """True when :func:`require_face_detector` passes."""
    try:
        require_face_detector()
    except BackendUnavailableError:
        return False
    return True


def centre_box(height: int, width: int) -> FaceBox:
    side = min(height, width)
    return FaceBox(x=(width - side) // 2, y=(height - side) // 2, size=side, found=False)


def mouth_box(face: np.ndarray, height: int, width: int, cfg: FaceCropConfig) -> FaceBox:
    """Crop square for a smoothed face ``[cx, cy, side]`` (NaN: no face known -> centre square)."""
    if not np.all(np.isfinite(face)):
        return centre_box(height, width)
    cx, cy, s = (float(v) for v in face)
    side = int(round(min(max(2.0, cfg.crop_size * s), height, width)))
    cy = cy + cfg.crop_centre_y * s
    x0 = int(round(min(max(cx - side / 2.0, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2.0, 0), height - side)))
    return FaceBox(x=x0, y=y0, size=side, found=True)


def new_track(height: int, width: int, fps: float, cfg: FaceCropConfig) -> FaceTrack:
    """A face track for upright frames of ``height`` x ``width`` at ``fps``."""
    return FaceTrack(TrackParams.from_config(cfg, fps), detection_size(height, width, cfg.detect_side),
                     min_neighbors=cfg.min_neighbors)


def finish(track: FaceTrack, boxes: list[FaceBox], cfg: FaceCropConfig, source: str) -> ClipFaces:
    """Warn (or raise with ``require_face``) when no face was found; the clip's face summary."""
    if not track.found:
        if cfg.require_face:
            raise InputError(f"no face found in {source} ({sum(track.probed)} frames searched)")
        log.warning("no face found in %s (%d frames searched); using a centre crop, so the lip-sync evidence is "
                    "missing and its result says no-face", source, sum(track.probed))
    if track.faces_in_view > 1:
        log.warning("%s: %d faces in view; the crop follows one of them (the tracked face), and in a genuine clip "
                    "another person's speech does not move its lips, which can look out of sync", source,
                    track.faces_in_view)
    return ClipFaces(boxes=boxes, found=track.found, coverage=track.coverage, faces_in_view=track.faces_in_view)


def track_frames(frames: np.ndarray, fps: float, config: FaceCropConfig | None = None, *,
                 source: str = "clip") -> ClipFaces:
    """Track the face over ``frames`` (uint8 RGB ``(N, H, W, 3)``) and return each frame's mouth crop square: the
    squares :func:`~pinlite_edge.features.prepare_arrays` cuts (the track runs on the luma plane of the frames'
    4:2:0 conversion, as on a decoded file's)."""
    from pinlite_edge.features.yuvframe import YuvFrame

    cfg = config or FaceCropConfig()
    n, height, width = frames.shape[:3]
    height, width = height + height % 2, width + width % 2  # the planes' even sides
    track = new_track(height, width, fps, cfg)
    for i in range(n):
        track.observe(i, lambda i=i: YuvFrame.from_rgb(frames[i]).y)
    faces = track.boxes(0, n)
    boxes = [mouth_box(f, height, width, cfg) for f in faces]
    return finish(track, boxes, cfg, source)


# ------------------------------------------------------------------------------------------- earlier single-box API
def detect_face_box(frames: np.ndarray, config: FaceCropConfig | None = None, *, source: str = "clip",
                    probes: int = 5) -> FaceBox:
    """One whole-face square (1.5x the median Haar box over ``probes`` evenly spaced frames, moved down 12% towards
    the chin) for ``frames`` (uint8 RGB ``(N, H, W, 3)``). Kept for callers of the earlier per-clip crop; the
    pipeline uses :func:`track_frames`."""
    cfg = config or FaceCropConfig()
    n, height, width = frames.shape[:3]
    size = detection_size(height, width, cfg.detect_side)
    scale = size[0] / float(width)
    idx = np.unique(np.linspace(0, n - 1, num=min(probes, n)).round().astype(int))
    boxes = []
    for i in idx:
        found = detect_faces(equalised_grey(cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY), size),
                             min_neighbors=cfg.min_neighbors)
        if found:
            boxes.append(max(found, key=lambda b: b[2] * b[3]) / scale)
    if not boxes:
        if cfg.require_face:
            raise InputError(f"no face found in {source} (probed {len(idx)} frames)")
        log.warning("no face found in %s (probed %d frames); using a centre crop", source, len(idx))
        return centre_box(height, width)
    x, y, w, h = np.median(np.asarray(boxes), axis=0)
    side = int(round(min(1.5 * max(w, h), height, width)))
    cx, cy = x + w / 2.0, y + h / 2.0 + 0.12 * h
    x0 = int(round(min(max(cx - side / 2.0, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2.0, 0), height - side)))
    return FaceBox(x=x0, y=y0, size=side, found=True)
