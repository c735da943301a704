"""Face tracking over a clip with OpenCV's bundled Haar cascades (frontal + profile), online and with a lookahead.

The detector runs on a small grey copy of each frame (luma, shorter side ``FaceCropConfig.detect_side`` px):

* **search** (whole image, frontal cascade, then both profiles): at the first frame, every ``search_seconds`` while no
  face is tracked or following it has missed for that long, and every ``redetect_seconds`` (if set) while tracking;
* **follow** (every ``follow_every`` frames while tracking): only a region around the last face (``FOLLOW_MARGIN``
  of its side on each side), rescaled so the face is ~``FOLLOW_FACE_PX[0]`` px and searched at sizes
  ``FOLLOW_SIZES`` of it, so it costs a small fraction of a search (Haar cost grows with pixels x scales); when that
  misses, again at ``FOLLOW_FACE_PX[1]`` px (dearer, but the cascades find turned or blurred faces far more often
  at that size: on the hard real clips 0.3-0.7 of the frames -> 0.7-1.0), then with the region turned by
  +-``FOLLOW_TILT`` degrees (leaning heads).

Association keeps ONE face: the candidate that overlaps the last tracked box most (IoU >= ``MIN_IOU``); a new face is
only taken (the largest candidate of a search) when the track has had no detection for ``max_gap_seconds``, and only
once a detection near it on the next frame confirms it (Haar false positives are mostly lone ones). Frames without a
detection are filled by linear interpolation between detections at most ``max_gap_seconds`` apart, otherwise the
nearest detection is held. Centre and size are then smoothed with a centred moving median followed by a centred moving
mean (``smooth_seconds`` each), so the crop does not jitter from frame to frame.

Other faces are counted, not followed: in every search, and every ``CENSUS_SECONDS`` in between with a cheaper pass
(frontal cascade only, coarser scale steps: ~17 ms on a 720p frame against ~40 ms for a search, one core), the whole
image is searched and its faces counted. :attr:`FaceTrack.faces_in_view` is the most faces seen at once in two such
searches (one lone false positive does not count). More than one means the verdict follows one of several people: in
a two-person interview the other one's speech does not move the tracked lips.

Everything a frame's box depends on lies at most :meth:`FaceTrack.lookahead_frames` frames ahead, so a streaming
decoder can emit each frame's crop that many frames after it was decoded (bounded memory), and gets the same boxes
as a pass over the whole clip (except frames before a first detection more than that far into the clip: they get no
box, i.e. the centre crop, where a whole-clip pass would hold the first detection).
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from pinlite_edge.errors import BackendUnavailableError
from pinlite_edge.utils.opencv import cv2

log = logging.getLogger(__name__)

FRONTAL_CASCADE = "haarcascade_frontalface_default.xml"
PROFILE_CASCADE = "haarcascade_profileface.xml"
#: Smallest face (pixels of the grey detection image) the cascades are trained for.
MIN_DETECT_PX = 24
#: In follow mode the region is rescaled so the tracked face is about this many pixels wide (first try, retries).
FOLLOW_FACE_PX = (32, 64)
#: Retries of a missed follow also turn the region by +- this many degrees (leaning heads).
FOLLOW_TILT = 15.0
#: Follow mode searches this far around the last face box (fraction of its side, each side)...
FOLLOW_MARGIN = 0.5
#: ... for faces of these sizes relative to it.
FOLLOW_SIZES = (0.88, 1.15)
#: A candidate continues the track when its IoU with the last tracked box is at least this.
MIN_IOU = 0.25
#: Whole-image face counts (the census behind ``faces_in_view``) at least this far apart; they do not move the track.
#: None: no census, only the searches the track needs count faces.
CENSUS_SECONDS: float | None = 8.0
#: The census's scale step (searches use 1.1): it counts faces, it does not place a crop.
CENSUS_SCALE_FACTOR = 1.3

#: how to get the face detector back (OpenCV 4.x's wheels ship CascadeClassifier and its cascade files)
CASCADE_INSTALL_HINT = ("face crop needs OpenCV 4.x (pip install 'opencv-python-headless>=4.8,<5'); OpenCV 5 moved "
                        "CascadeClassifier to contrib and its wheels ship no cascade files")
_CASCADE_HINT = CASCADE_INSTALL_HINT + ". Or pass face_crop=False."


_PER_THREAD = threading.local()


def load_cascade(name: str) -> "cv2.CascadeClassifier":
    """One of OpenCV's bundled cascade files, loaded once per thread: a ``CascadeClassifier`` keeps scratch state
    while detecting, so one shared by threads gives different faces from one used by a single thread.
    :class:`BackendUnavailableError` when missing."""
    cache = getattr(_PER_THREAD, "cascades", None)
    if cache is None:
        cache = _PER_THREAD.cascades = {}
    if name not in cache:
        cache[name] = _load_cascade(name)
    return cache[name]


def _load_cascade(name: str) -> "cv2.CascadeClassifier":
    cls = getattr(cv2, "CascadeClassifier", None)
    data_dir = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if cls is None or data_dir is None:
        raise BackendUnavailableError(f"opencv-haar (cv2 {cv2.__version__})", "cv2.CascadeClassifier is missing",
                                      _CASCADE_HINT)
    path = data_dir + name
    # read by Python and handed to OpenCV as text: OpenCV never sees a file name (one that is not valid UTF-8, e.g. a
    # virtual environment in such a folder, can crash its C++ side)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        storage = cv2.FileStorage(text, cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
        clf = cls()
        loaded = clf.read(storage.getFirstTopLevelNode())
    except (OSError, UnicodeDecodeError, cv2.error) as exc:
        raise BackendUnavailableError(f"opencv-haar (cv2 {cv2.__version__})", f"cannot load {path!r} ({exc})",
                                      _CASCADE_HINT) from None
    if not loaded or clf.empty():
        raise BackendUnavailableError(f"opencv-haar (cv2 {cv2.__version__})", f"cannot load {path!r}", _CASCADE_HINT)
    return clf


def detection_size(height: int, width: int, detect_side: int) -> tuple[int, int]:
    """(width, height) of the grey detection image: shorter side ``detect_side`` (never upscaled)."""
    scale = min(1.0, detect_side / float(min(height, width)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _as_boxes(found: object) -> list[np.ndarray]:
    return [np.asarray(b, dtype=np.float64) for b in (found if len(found) else [])]  # type: ignore[arg-type]


def detect_faces(gray: np.ndarray, *, min_px: int = MIN_DETECT_PX, max_px: int | None = None,
                 min_neighbors: int = 5, scale_factor: float = 1.1, profiles: bool = True) -> list[np.ndarray]:
    """Face boxes ``[x, y, w, h]`` in ``gray`` (uint8, equalised): frontal cascade; if none, both profiles (unless
    ``profiles=False``)."""
    min_px = max(MIN_DETECT_PX, int(min_px))
    if min(gray.shape) < min_px:
        return []
    kw = dict(scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_px, min_px))
    if max_px is not None:
        kw["maxSize"] = (int(max_px), int(max_px))
    boxes = _as_boxes(load_cascade(FRONTAL_CASCADE).detectMultiScale(gray, **kw))
    if boxes or not profiles:
        return boxes
    profile = load_cascade(PROFILE_CASCADE)
    boxes = _as_boxes(profile.detectMultiScale(gray, **kw))
    flipped = _as_boxes(profile.detectMultiScale(np.ascontiguousarray(gray[:, ::-1]), **kw))
    w = gray.shape[1]
    boxes += [np.array([w - b[0] - b[2], b[1], b[2], b[3]]) for b in flipped]
    return boxes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``[x, y, w, h]`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def downscale(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 plane (any strides, e.g. a rotated view) -> ``size`` = (width, height) by area averaging; large factors
    first take every k-th pixel so that INTER_AREA averages the last 2-4x (cheap on HD frames)."""
    h, w = plane.shape[:2]
    step = max(1, int(min(w / size[0], h / size[1]) // 2))
    if step > 1:
        plane = plane[::step, ::step]
    plane = np.ascontiguousarray(plane)
    if (plane.shape[1], plane.shape[0]) == size:
        return plane
    return cv2.resize(plane, size, interpolation=cv2.INTER_AREA)


def equalised_grey(luma: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Luma (or grey) plane -> the equalised grey detection image of ``size`` = (width, height)."""
    return cv2.equalizeHist(downscale(luma, size))


@dataclass(frozen=True)
class TrackParams:
    """Frame-count parameters of one clip (from :class:`FaceCropConfig` and its frame rate)."""

    search_every: int
    follow_every: int
    redetect_every: int | None
    max_gap: int
    smooth_radius: int
    census_every: int | None = 200  # None: no census between searches

    @property
    def lookahead(self) -> int:
        """Frames after frame ``i`` that must be observed before its box is final (:meth:`FaceTrack.boxes` reads the
        smoothing's two centred windows, then the next detection within ``max_gap`` for interpolation)."""
        return 2 * self.smooth_radius + self.max_gap

    @classmethod
    def from_config(cls, cfg: "object", fps: float) -> "TrackParams":
        frames = lambda s: max(1, int(round(s * fps)))  # noqa: E731
        return cls(search_every=frames(cfg.search_seconds), follow_every=max(1, int(cfg.follow_every)),
                   redetect_every=None if cfg.redetect_seconds is None else frames(cfg.redetect_seconds),
                   max_gap=frames(cfg.max_gap_seconds),
                   smooth_radius=max(0, int(round(cfg.smooth_seconds * fps / 2.0))),
                   census_every=None if CENSUS_SECONDS is None else frames(CENSUS_SECONDS))


class FaceTrack:
    """Online face track over a clip's frames; boxes ``[x, y, w, h]`` in pixels of the (upright) frames observed.

    ``detect_size``: (width, height) of the grey image whole-frame searches run on. Feed frames in order with
    :meth:`observe` (it decides whether to run the detector on that frame); ask for the smoothed boxes of frames up
    to ``i`` with :meth:`boxes` once frame ``i + lookahead_frames()`` has been observed, or at the end.
    """

    def __init__(self, params: TrackParams, detect_size: tuple[int, int], *, min_neighbors: int = 5):
        self.params = params
        self.detect_size = detect_size
        self.min_neighbors = min_neighbors
        self.raw: list[np.ndarray | None] = []  # chosen detection per frame (source pixels), None: no detection
        self.probed: list[bool] = []  # the detector ran on this frame
        self._last: np.ndarray | None = None  # last chosen detection
        self._last_index = -10**9
        self._last_search = -10**9
        self._prev: list[int] = []  # index of the last detection at or before each frame, -1: none
        self._next: list[int] = []  # index of the first detection at or after each frame, -1: none yet
        self._pending: tuple[int, np.ndarray] | None = None  # a new face waiting for its confirmation
        self._last_census = -10**9
        self._census: list[int] = []  # faces found by each whole-image search

    # ---------------------------------------------------------------- detection
    def lookahead_frames(self) -> int:
        """How many frames after frame ``i`` must be observed before its box is final (:attr:`TrackParams.lookahead`)."""
        return self.params.lookahead

    def _tracking(self, i: int) -> bool:
        return self._last is not None and i - self._last_index <= self.params.max_gap

    def wants(self, i: int) -> str | None:
        """'search', 'follow', 'confirm' or None: what the detector should do on frame ``i``."""
        p = self.params
        if self._pending is not None and i == self._pending[0] + 1:
            return "confirm"
        if self._tracking(i):
            since_search = i - self._last_search
            periodic = p.redetect_every is not None and since_search >= p.redetect_every
            if periodic or (i - self._last_index > p.search_every and since_search >= p.search_every):
                return "search"  # periodic re-check, or following has missed for a while
            return "follow" if (i - self._last_index) % p.follow_every == 0 else None
        return "search" if i - self._last_search >= p.search_every else None

    def observe(self, i: int, luma: np.ndarray | Callable[[], np.ndarray]) -> None:
        """Frame ``i`` (consecutive from 0): ``luma`` is its full-size grey (or luma) plane, a view is fine, or a
        function returning it (called only when the detector runs on this frame)."""
        if i != len(self.raw):
            raise ValueError(f"frames must be observed in order: expected {len(self.raw)}, got {i}")
        mode = self.wants(i)
        cands: list[np.ndarray] = []
        if mode is not None and callable(luma):
            luma = luma()
        if mode == "search":
            self._last_search = i
            cands = self._whole_image(luma)
        elif mode is not None:  # follow the track, or confirm a new face: near that box only
            cands = self._near(luma, self._last if mode == "follow" else self._pending[1])
        census = self.params.census_every
        if mode != "search" and census is not None and i - self._last_census >= census:
            self._whole_image(luma() if callable(luma) else luma, census=True)  # counted only
        det = self._associate(i, cands, mode) if mode else None
        self.raw.append(None)
        self.probed.append(mode is not None)
        self._prev.append(self._prev[-1] if self._prev else -1)
        self._next.append(-1)
        if det is not None:
            self._record(i, det)

    def _whole_image(self, luma: np.ndarray, *, census: bool = False) -> list[np.ndarray]:
        """Faces in the whole image (source pixels), counted for :attr:`faces_in_view`; ``census``: the cheaper pass
        that only counts (module doc)."""
        self._last_census = len(self.raw)
        scale = self.detect_size[0] / float(luma.shape[1])
        cheap = {"scale_factor": CENSUS_SCALE_FACTOR, "profiles": False} if census else {}
        found = [c / scale for c in detect_faces(equalised_grey(luma, self.detect_size),
                                                 min_neighbors=self.min_neighbors, **cheap)]
        self._census.append(len(found))
        return found

    def _record(self, j: int, box: np.ndarray) -> None:
        """A detection of the tracked face at frame ``j`` (the newest frame, or the one just before it)."""
        self.raw[j] = box
        for k in range(j, len(self.raw)):
            self._prev[k] = j
        k = j
        while k >= 0 and self._next[k] == -1:
            self._next[k] = j
            k -= 1

    def _near(self, luma: np.ndarray, box: np.ndarray) -> list[np.ndarray]:
        """Candidates around ``box``: cheap first (small face), then larger and tilted +-FOLLOW_TILT degrees (heads
        lean; the cascades only find upright faces), stopping at the first attempt that finds ``box``'s face."""
        for face_px, angle in ((FOLLOW_FACE_PX[0], 0.0), (FOLLOW_FACE_PX[1], 0.0), (FOLLOW_FACE_PX[1], FOLLOW_TILT),
                               (FOLLOW_FACE_PX[1], -FOLLOW_TILT)):
            cands = self._follow(luma, box, face_px, angle)
            if any(iou(c, box) >= MIN_IOU for c in cands):
                return cands
        return []

    def _follow(self, luma: np.ndarray, box: np.ndarray, face_px: int, angle: float = 0.0) -> list[np.ndarray]:
        """Faces in the region around ``box`` (see the module doc), ``angle`` degrees counter-clockwise turned."""
        x, y, w, h = box
        side = max(w, h)
        m = FOLLOW_MARGIN * side
        x0, y0 = int(max(0, x - m)), int(max(0, y - m))
        x1, y1 = int(min(luma.shape[1], x + w + m)), int(min(luma.shape[0], y + h + m))
        k = min(1.0, face_px / side)
        size = (round((x1 - x0) * k), round((y1 - y0) * k))
        if min(size) < MIN_DETECT_PX:
            return []
        roi = cv2.equalizeHist(downscale(luma[y0:y1, x0:x1], size))
        k = size[0] / float(x1 - x0)
        turn = None
        if angle:
            turn = cv2.getRotationMatrix2D((roi.shape[1] / 2.0, roi.shape[0] / 2.0), angle, 1.0)
            roi = cv2.warpAffine(roi, turn, (roi.shape[1], roi.shape[0]), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
            turn = cv2.invertAffineTransform(turn)
        found = detect_faces(roi, min_px=int(FOLLOW_SIZES[0] * side * k),
                             max_px=int(math.ceil(FOLLOW_SIZES[1] * side * k)) + 1,
                             min_neighbors=max(3, self.min_neighbors - 2))
        out = []
        for bx, by, bw, bh in found:
            cx, cy = bx + bw / 2.0, by + bh / 2.0
            if turn is not None:  # the box centre back in the unturned region (the box itself stays upright)
                cx, cy = turn @ np.array([cx, cy, 1.0])
            out.append(np.array([(cx - bw / 2.0) / k + x0, (cy - bh / 2.0) / k + y0, bw / k, bh / k]))
        return out

    def _associate(self, i: int, cands: list[np.ndarray], mode: str) -> np.ndarray | None:
        """The tracked face among ``cands``. A new face (none tracked) is the largest candidate of a search, taken
        only once the next frame confirms it (a lone Haar false positive would otherwise become the track)."""
        if mode == "confirm":
            j, box = self._pending
            self._pending = None
            best = max(cands, key=lambda c: iou(c, box)) if cands else None
            if best is None or iou(best, box) < MIN_IOU:
                return None
            self._record(j, box)
        elif not cands:
            return None
        elif self._tracking(i):
            best = max(cands, key=lambda c: iou(c, self._last))
            if iou(best, self._last) < MIN_IOU:
                return None  # another face or a false positive: keep following ours
        else:
            self._pending = (i, max(cands, key=lambda c: c[2] * c[3]))
            return None
        self._last, self._last_index = best, i
        return best

    # ---------------------------------------------------------------- boxes
    @property
    def found(self) -> bool:
        return self._last is not None

    @property
    def faces_in_view(self) -> int:
        """The most faces seen at once in at least two whole-image searches (the only search when there was one);
        at least 1 when the track found a face (the cheaper census can miss a close-up face the tracker holds)."""
        counts = sorted(self._census)
        seen = counts[-2] if len(counts) >= 2 else (counts[0] if counts else 0)
        return max(seen, 1) if self.found else seen

    @property
    def coverage(self) -> float:
        """Fraction of the frames the detector ran on where it found the tracked face (not interpolation)."""
        n = sum(self.probed)
        return sum(r is not None for r in self.raw) / n if n else 0.0

    def _filled(self, j: int) -> np.ndarray:
        """``[x, y, w, h]`` at ``j``: its detection, else interpolated between detections at most ``max_gap`` apart,
        else the nearest known detection held; NaN when no detection is known yet."""
        prev, nxt = self._prev[j], self._next[j]
        if prev == j:
            return self.raw[j]
        if prev >= 0 and nxt >= 0 and nxt - prev <= self.params.max_gap:
            t = (j - prev) / (nxt - prev)
            return (1 - t) * self.raw[prev] + t * self.raw[nxt]
        if prev >= 0:
            return self.raw[prev]
        if nxt >= 0:
            return self.raw[nxt]
        return np.full(4, np.nan)

    def present(self, lo: int, hi: int) -> np.ndarray:
        """Per frame ``lo..hi-1``: the face was there as far as the track knows: detected there, between two
        detections at most ``max_gap`` apart (what the track interpolates over), or within ``search_every`` frames
        of a detection (how often the detector looks while it has no face). Elsewhere :meth:`boxes` holds the
        nearest detection, so a clip's lead-in without a face gets the later face's crop: a window there shows no
        face. Final once :meth:`boxes` of the same frames is."""
        p = self.params
        out = np.zeros(max(0, hi - lo), bool)
        for k, j in enumerate(range(lo, hi)):
            prev, nxt = self._prev[j], self._next[j]
            bridged = prev >= 0 and nxt >= 0 and nxt - prev <= p.max_gap
            near = (prev >= 0 and j - prev <= p.search_every) or (nxt >= 0 and nxt - j <= p.search_every)
            out[k] = bridged or near
        return out

    def boxes(self, lo: int, hi: int, *, final: bool = True) -> np.ndarray:
        """Smoothed ``[cx, cy, side]`` (source pixels) of frames ``lo..hi-1``: NaN rows where no face is known.

        ``final``: the clip has ended (windows at its end are truncated, not waiting for more frames).
        """
        r = self.params.smooth_radius
        n = len(self.raw)
        if not final and hi + self.lookahead_frames() > n:
            raise ValueError(f"boxes up to frame {hi} need {self.lookahead_frames()} frames after it, only {n} "
                             "observed")
        a, b = max(0, lo - 2 * r), min(n, hi + 2 * r)
        f = np.stack([self._filled(j) for j in range(a, b)])
        c = np.stack([f[:, 0] + f[:, 2] / 2, f[:, 1] + f[:, 3] / 2, np.maximum(f[:, 2], f[:, 3])], axis=1)
        if r:
            c = _nan_reduce(np.nanmedian, _windows(c, r))
            c = _nan_reduce(np.nanmean, _windows(c, r))
        return c[lo - a:hi - a]


def _nan_reduce(reduce: Any, w: np.ndarray) -> np.ndarray:
    """``reduce(w, axis=-1)`` of a NaN-aware numpy reduction, NaN where a window holds no number (no face known),
    without the RuntimeWarning numpy gives there. Not ``warnings.catch_warnings``: it swaps process-wide state, which
    is not thread-safe, and ``Detector`` scores clips from several threads."""
    out = np.full(w.shape[:-1], np.nan)
    known = np.isfinite(w).any(axis=-1)
    if known.any():
        out[known] = reduce(w[known], axis=-1)
    return out


def _windows(x: np.ndarray, r: int) -> np.ndarray:
    """Centred windows of ``2r+1`` rows of ``x`` (m, k) -> (m, k, 2r+1), NaN-padded at both ends.

    Callers compute on a range with ``2r`` rows of context on each side, so padding only truncates windows at the
    clip's real ends (where NaN-aware statistics use the frames that exist).
    """
    pad = np.full((r, x.shape[1]), np.nan)
    return np.lib.stride_tricks.sliding_window_view(np.concatenate([pad, x, pad]), 2 * r + 1, axis=0)
