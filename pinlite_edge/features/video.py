"""Whole-frame video decoding with PyAV (RGB uint8 frames plus a sane frame rate) and frame-rate helpers."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

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


def plausible_fps(fps: float | None) -> bool:
    """Whether a container's declared frame rate can be believed: a finite number within 1..240."""
    return fps is not None and math.isfinite(fps) and 1.0 <= fps <= 240.0


def sane_fps(fps: float | None, source: str = "video") -> float:
    """Return ``fps`` if :func:`plausible_fps`, else :data:`FALLBACK_FPS` with a warning. A declared rate that cannot
    be believed says nothing about the frames either, so the decoders then place every frame by its timestamp on the
    fallback grid (a 30 fps stream declared as 1000 fps keeps its duration and its sync with the audio)."""
    if not plausible_fps(fps):
        log.warning("%s reports an implausible frame rate (%r); frames placed by their timestamps at %.0f fps",
                    source, fps, FALLBACK_FPS)
        return FALLBACK_FPS
    return float(fps)


class _RgbFrames:
    """Video consumer collecting whole upright RGB frames (bounded by ``max_side``)."""

    def __init__(self, max_side: int | None):
        self.max_side = max_side
        self.frames: list[np.ndarray] = []
        self.declared_fps: float | None = None

    def start(self, declared_fps: float | None) -> None:
        self.declared_fps = declared_fps

    def add(self, frame: object, seconds: float, turns: int) -> None:
        from pinlite_edge.features.yuvframe import rgb_frame

        self.frames.append(rgb_frame(frame, turns, self.max_side))


def decode_video(
    path: str | Path, *, timeout_s: float | None = DEFAULT_TIMEOUT_S, max_side: int | None = DEFAULT_MAX_SIDE,
    deadline: Deadline | None = None,
) -> DecodedVideo:
    """Decode all frames of ``path`` with PyAV as upright RGB uint8 ``(N, H, W, 3)`` (display rotation applied).

    Frames whose longest side exceeds ``max_side`` are downscaled (aspect kept); ``None`` keeps full size. The audio
    stream, if any, is decoded in the same pass (integrity check) and discarded. Raises :class:`DecodeError` naming
    the file if it cannot be opened, is truncated/corrupt, has no frames, or exceeds the time limit.
    :func:`pinlite_edge.features.prepare_file` does not call this (it crops while decoding, without whole frames).
    """
    from pinlite_edge.features.decode import decode_media

    path = check_file(path)
    deadline = deadline or Deadline(path, timeout_s)
    sink = _RgbFrames(max_side)
    media = decode_media(path, deadline, video=sink, require_video=True, require_audio=False)
    fps = sane_fps(media.declared_fps, source=str(path))
    frames = sink.frames
    if not frames:
        raise DecodeError(path, "no video frames could be decoded")
    order = constant_rate_order(np.asarray(media.video_stamps) * 1000.0, fps, source=str(path),
                                by_timestamps=not plausible_fps(media.declared_fps))
    if order is not None:
        frames = [frames[i] for i in order]
    return DecodedVideo(frames=np.stack(frames), fps=fps)


def constant_rate_order(stamps_ms: np.ndarray, fps: float, source: str = "video", *,
                        by_timestamps: bool = False) -> np.ndarray | None:
    """For a variable-frame-rate stream, the frame shown at each tick of a constant ``fps`` grid; else None.

    Frames are placed by their presentation timestamps (the last frame shown at or before each tick), so the
    clip keeps its real duration and audio stays aligned. Unusable timestamps (missing, non-monotonic) -> None.
    ``by_timestamps``: place them so even when their gaps are regular (the stream's declared rate was not
    believed, :func:`sane_fps`, so ``fps`` is not the stream's rate).
    """
    if stamps_ms.size < (2 if by_timestamps else 3):
        return None
    gaps = np.diff(stamps_ms)
    if (gaps <= 0).any():
        return None
    median = float(np.median(gaps))
    step = 1000.0 / fps
    regular = gaps.max() <= 1.5 * median and gaps.min() >= 0.5 * median
    drift = float(np.abs(stamps_ms - stamps_ms[0] - np.arange(stamps_ms.size) * step).max())
    if regular and drift <= 0.5 * step and not by_timestamps:
        return None  # constant rate (within jitter) at the declared rate
    ticks = stamps_ms[0] + np.arange(0.0, stamps_ms[-1] - stamps_ms[0] + median, step)
    order = np.clip(np.searchsorted(stamps_ms, ticks + 1e-6, side="right") - 1, 0, stamps_ms.size - 1)
    if not regular:
        log.warning("%s has a variable frame rate (frame gaps %.0f..%.0f ms); frames resampled by timestamp to "
                    "%.3g fps", source, gaps.min(), gaps.max(), fps)
    elif not by_timestamps:
        log.warning("%s: its frame timestamps drift from the declared %.4g fps (by up to %.0f ms); frames resampled "
                    "by timestamp to %.3g fps", source, fps, drift, fps)
    return order
