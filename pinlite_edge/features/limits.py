"""Documented limits on what one clip may cost, and the range checks of the arguments that size an allocation.

Every allocation the features pipeline makes is sized by one of these, checked before anything is allocated:

* ``max_duration_s``: seconds of media per clip. The container's declared duration is checked when the file is
  opened, the decoded frames and samples while decoding (a container may lie). :func:`Detector.detect
  <pinlite_edge.detector.Detector.detect>` streams a clip window by window (memory does not grow with length), so
  its default, :data:`DEFAULT_MAX_DURATION_S`, bounds time; the whole-clip functions (``prepare_file``,
  ``prepare_windows``, ``featurise_file``, ``decode_audio``, ``decode_video``) hold the clip, so theirs,
  :data:`WHOLE_CLIP_MAX_DURATION_S`, bounds memory too.
* ``max_pixels``: width x height of a video frame (checked on the stream header and on every decoded frame).
* the audio sample rate (:data:`MIN_SAMPLE_RATE` .. :data:`MAX_SAMPLE_RATE`), the frame rate of arrays
  (:data:`MIN_FPS` .. :data:`MAX_FPS`), the window stride (at least :data:`MIN_STRIDE_S`) and the number of
  windows a whole-clip call may hold (:data:`MAX_WINDOW_BYTES`).

Going over a limit raises :class:`~pinlite_edge.errors.DecodeError` (files) or :class:`~pinlite_edge.errors.InputError`
(arguments, arrays) naming the limit and how to change it; nothing is silently truncated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pinlite_edge.errors import InputError
from pinlite_edge.utils.checks import is_finite_number, is_whole

#: Detector.detect (streaming): one hour of media per clip.
DEFAULT_MAX_DURATION_S = 3600.0
#: Whole-clip functions (all crops and samples in memory): five minutes per clip.
WHOLE_CLIP_MAX_DURATION_S = 300.0
#: Largest frame (pixels): 16.8 M, i.e. 4096 x 4096 (covers 4K UHD/DCI and 5K 5120 x 2880).
DEFAULT_MAX_PIXELS = 4096 * 4096
#: Audio sample rates accepted (files and arrays).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 768000
#: Frame rates accepted for arrays (files: implausible rates fall back to 25 fps with a warning).
MIN_FPS, MAX_FPS = 1.0, 240.0
#: Smallest window stride (seconds): below one frame at 100 fps windows only repeat frames.
MIN_STRIDE_S = 0.01
#: A whole-clip call refuses to build more model windows than this many bytes (windows of the paper preset are
#: 3.1 MB each); streaming detection holds one batch.
MAX_WINDOW_BYTES = 1 << 30
#: Frames and samples past the container's declared duration by more than this (fraction, plus
#: :data:`DURATION_SLACK_S`) are not used: a timestamp gap cannot stretch a clip beyond what its header says.
DURATION_SLACK = 0.5
DURATION_SLACK_S = 2.0


@dataclass(frozen=True)
class DecodeLimits:
    """Per-clip limits (see the module doc). ``max_duration_s`` seconds, ``max_pixels`` width x height."""

    max_duration_s: float = DEFAULT_MAX_DURATION_S
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        check_positive("max_duration_s", self.max_duration_s)
        if not is_whole(self.max_pixels, 64 * 64, numpy=True):
            raise InputError(f"max_pixels must be an int >= 4096 (width x height of a frame), got {self.max_pixels!r}")


def check_positive(name: str, value: object) -> float:
    """``value`` as a positive finite float, else :class:`InputError` naming ``name``."""
    if not is_finite_number(value, numpy=True) or value <= 0:
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


#: Smallest ``max_side`` (pixels) frames may be scaled to: 0, negative or fractional sizes found no face and said so.
MIN_MAX_SIDE = 64


def check_max_side(max_side: object) -> int | None:
    """``None`` (full size) or a whole number of pixels of at least :data:`MIN_MAX_SIDE` for the longest side."""
    if max_side is None:
        return None
    if not is_whole(max_side, MIN_MAX_SIDE, numpy=True):
        raise InputError(f"max_side must be None (full size) or a whole number of pixels >= {MIN_MAX_SIDE}, got "
                         f"{max_side!r}")
    return int(max_side)


def check_sample_rate(sample_rate: object, name: str = "sample_rate") -> int:
    """An int Hz within MIN_SAMPLE_RATE..MAX_SAMPLE_RATE (sizes resampling filters and buffers)."""
    if not is_whole(sample_rate, numpy=True):
        raise InputError(f"{name} must be a positive int (Hz), got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise InputError(f"{name} must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {sample_rate!r}")
    return int(sample_rate)


def check_fps(fps: object) -> float:
    """A frame rate within MIN_FPS..MAX_FPS (sizes the number of windows an array clip gives)."""
    import numpy as np

    if isinstance(fps, (bool, np.bool_)) or not isinstance(fps, (int, float, np.number)) or not np.isfinite(fps) \
            or fps <= 0:
        raise InputError(f"fps must be a positive finite number, got {fps!r}")
    if not MIN_FPS <= float(fps) <= MAX_FPS:
        raise InputError(f"fps must be between {MIN_FPS:g} and {MAX_FPS:g} frames per second, got {fps!r}")
    return float(fps)


def check_stride(stride_seconds: object) -> float | None:
    """``None`` (one window) or a stride of at least MIN_STRIDE_S seconds."""
    if stride_seconds is None:
        return None
    if not is_finite_number(stride_seconds, numpy=True) or stride_seconds <= 0:
        raise InputError(f"stride_seconds must be positive, got {stride_seconds!r}")
    if stride_seconds < MIN_STRIDE_S:
        raise InputError(f"stride_seconds must be at least {MIN_STRIDE_S:g} s (finer strides only repeat frames and "
                         f"multiply the work), got {stride_seconds!r}")
    return float(stride_seconds)


def declared_bound(declared_s: float | None) -> float | None:
    """Seconds of media used at most given a declared duration (with slack), so that a timestamp gap cannot stretch
    a clip beyond its header; None when the container declares none."""
    if declared_s is not None and math.isfinite(declared_s) and declared_s > 0:
        return declared_s * (1.0 + DURATION_SLACK) + DURATION_SLACK_S
    return None
