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
        from pinlite_edge.features.limits import check_max_side

        self.max_side = check_max_side(max_side)
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
    from pinlite_edge.features.limits import DecodeLimits, declared_bound
    from pinlite_edge.features.streams import place_frames

    path = check_file(path)
    deadline = deadline or Deadline(path, timeout_s)
    sink = _RgbFrames(max_side)
    media = decode_media(path, deadline, video=sink, require_video=True, require_audio=False)
    fps = sane_fps(media.declared_fps, source=str(path))
    frames = sink.frames
    if not frames:
        raise DecodeError(path, "no video frames could be decoded")
    order = place_frames(media.video_stamps, fps, bound_s=declared_bound(media.declared_seconds),
                         max_duration_s=DecodeLimits().max_duration_s, source=str(path),
                         by_timestamps=not plausible_fps(media.declared_fps))
    frames = [frames[i] for i in order]
    return DecodedVideo(frames=np.stack(frames), fps=fps)
