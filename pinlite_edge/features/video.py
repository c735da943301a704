"""Video frame decoding with OpenCV: RGB uint8 frames plus a sane frame rate."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pinlite_edge.errors import DecodeError
from pinlite_edge.features.audio import check_file
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S, Deadline

log = logging.getLogger(__name__)

#: Frame rate used when a container reports none or nonsense (LAV-DF and GRID are 25 fps).
FALLBACK_FPS = 25.0
#: Frames larger than this (longest side, pixels) are downscaled while decoding to bound memory on long HD clips.
DEFAULT_MAX_SIDE = 640


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 (N, H, W, 3) RGB
    fps: float


def sane_fps(fps: float | None, source: str = "video") -> float:
    """Return ``fps`` if it is a plausible frame rate (1..240), else :data:`FALLBACK_FPS` with a warning."""
    if fps is None or not math.isfinite(fps) or not (1.0 <= fps <= 240.0):
        log.warning("%s reports an implausible frame rate (%r); assuming %.0f fps", source, fps, FALLBACK_FPS)
        return FALLBACK_FPS
    return float(fps)


def decode_video(
    path: str | Path, *, timeout_s: float | None = DEFAULT_TIMEOUT_S, max_side: int | None = DEFAULT_MAX_SIDE,
    deadline: Deadline | None = None,
) -> DecodedVideo:
    """Decode all frames of ``path`` with OpenCV as RGB uint8 ``(N, H, W, 3)``.

    Frames whose longest side exceeds ``max_side`` are downscaled (aspect kept); ``None`` keeps full size.
    Raises :class:`DecodeError` naming the file if it cannot be opened, has no frames, or exceeds the time limit.
    Truncation is not detected here (OpenCV stops quietly); :func:`pinlite_edge.features.audio.decode_audio`
    does that for files featurised with :func:`pinlite_edge.features.featurise_file`.
    """
    path = check_file(path)
    deadline = deadline or Deadline(path, timeout_s)
    params: list[int] = []
    remaining = deadline.remaining()
    if remaining is not None:
        ms = int(max(1.0, remaining) * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    try:
        if not cap.isOpened():
            raise DecodeError(path, "OpenCV cannot open it as a video (not a video, or unsupported/corrupt container)")
        fps = sane_fps(cap.get(cv2.CAP_PROP_FPS), source=str(path))
        frames: list[np.ndarray] = []
        stamps_ms: list[float] = []
        while True:
            deadline.check()
            ok, bgr = cap.read()
            if not ok:
                break
            stamps_ms.append(float(cap.get(cv2.CAP_PROP_POS_MSEC)))
            if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
                raise DecodeError(path, f"unexpected frame layout {None if bgr is None else bgr.shape}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if max_side is not None and max(rgb.shape[:2]) > max_side:
                scale = max_side / max(rgb.shape[:2])
                size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            frames.append(rgb)
    finally:
        cap.release()
    if not frames:
        raise DecodeError(path, "no video frames could be decoded")
    order = constant_rate_order(np.asarray(stamps_ms), fps, source=str(path))
    if order is not None:
        frames = [frames[i] for i in order]
    return DecodedVideo(frames=np.stack(frames), fps=fps)


def constant_rate_order(stamps_ms: np.ndarray, fps: float, source: str = "video") -> np.ndarray | None:
    """For a variable-frame-rate stream, the frame shown at each tick of a constant ``fps`` grid; else None.

    Frames are placed by their presentation timestamps (the last frame shown at or before each tick), so the
    clip keeps its real duration and audio stays aligned. Unusable timestamps (missing, non-monotonic) -> None.
    """
    if stamps_ms.size < 3:
        return None
    gaps = np.diff(stamps_ms)
    if (gaps <= 0).any():
        return None
    median = float(np.median(gaps))
    if gaps.max() <= 1.5 * median and gaps.min() >= 0.5 * median:
        return None  # constant rate (within jitter)
    step = 1000.0 / fps
    ticks = stamps_ms[0] + np.arange(0.0, stamps_ms[-1] - stamps_ms[0] + median, step)
    order = np.clip(np.searchsorted(stamps_ms, ticks + 1e-6, side="right") - 1, 0, stamps_ms.size - 1)
    log.warning("%s has a variable frame rate (frame gaps %.0f..%.0f ms); frames resampled by timestamp to %.3g fps",
                source, gaps.min(), gaps.max(), fps)
    return order
