"""Face crop with OpenCV's bundled Haar cascade: one stable box per clip, enlarged to include mouth and chin.

Behaviour when no face is found in any probed frame: a warning is logged and the largest centred square is used
(``FaceBox.found`` is False), so a clip is still scored; callers that must not score faceless clips can check
``found`` or pass ``require_face=True`` to get an :class:`~pinlite_edge.errors.InputError`.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import cv2
import numpy as np

from pinlite_edge.errors import BackendUnavailableError, InputError

log = logging.getLogger(__name__)

CASCADE_FILE = "haarcascade_frontalface_default.xml"


@dataclass(frozen=True)
class FaceCropConfig:
    detect_frames: int = 5  # frames probed, evenly spaced over the clip
    scale: float = 1.5  # square side = scale * detected face width
    shift_down: float = 0.12  # centre moved down by this fraction of the face height (mouth/chin)
    min_face_fraction: float = 0.1  # smallest face side as a fraction of the frame's shorter side
    require_face: bool = False


@dataclass(frozen=True)
class FaceBox:
    x: int
    y: int
    size: int  # square side in pixels
    found: bool  # False: centre crop fallback

    def crop(self, frame: np.ndarray) -> np.ndarray:
        return frame[self.y:self.y + self.size, self.x:self.x + self.size]


_CASCADE_HINT = ("face crop needs OpenCV 4.x (pip install 'opencv-python-headless>=4.8,<5'); OpenCV 5 moved "
                 "CascadeClassifier to contrib and its wheels ship no cascade files. Or pass face_crop=False.")


def face_detector_available() -> bool:
    """True when OpenCV's Haar cascade class and its bundled frontal-face model are present."""
    try:
        _cascade()
    except BackendUnavailableError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _cascade() -> "cv2.CascadeClassifier":
    cls = getattr(cv2, "CascadeClassifier", None)
    data_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if cls is None or data_dir is None:
        raise BackendUnavailableError(f"opencv-haar (cv2 {cv2.__version__})", "cv2.CascadeClassifier is missing",
                                      _CASCADE_HINT)
    path = data_dir + CASCADE_FILE
    clf = cls(path)
    if clf.empty():
        raise BackendUnavailableError(f"opencv-haar (cv2 {cv2.__version__})", f"cannot load {path}", _CASCADE_HINT)
    return clf


def centre_box(height: int, width: int) -> FaceBox:
    side = min(height, width)
    return FaceBox(x=(width - side) // 2, y=(height - side) // 2, size=side, found=False)


def _detect_one(frame_rgb: np.ndarray, cfg: FaceCropConfig) -> tuple[int, int, int, int] | None:
    gray = cv2.equalizeHist(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY))
    min_side = max(24, int(min(gray.shape) * cfg.min_face_fraction))
    faces = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: int(f[2]) * int(f[3]))
    return int(x), int(y), int(w), int(h)


def detect_face_box(frames: np.ndarray, config: FaceCropConfig | None = None, *, source: str = "clip") -> FaceBox:
    """Median face box over a few evenly spaced frames of ``frames`` (uint8 RGB ``(N, H, W, 3)``)."""
    cfg = config or FaceCropConfig()
    n, height, width = frames.shape[:3]
    idx = np.unique(np.linspace(0, n - 1, num=min(cfg.detect_frames, n)).round().astype(int))
    boxes = [b for b in (_detect_one(frames[i], cfg) for i in idx) if b is not None]
    if not boxes:
        if cfg.require_face:
            raise InputError(f"no face found in {source} (probed {len(idx)} frames)")
        log.warning("no face found in %s (probed %d frames); using a centre crop", source, len(idx))
        return centre_box(height, width)
    x, y, w, h = np.median(np.asarray(boxes, dtype=np.float64), axis=0)
    side = int(round(min(cfg.scale * max(w, h), height, width)))
    cx = x + w / 2.0
    cy = y + h / 2.0 + cfg.shift_down * h
    x0 = int(round(min(max(cx - side / 2.0, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2.0, 0), height - side)))
    return FaceBox(x=x0, y=y0, size=side, found=True)
