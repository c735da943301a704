"""A decoding time limit: checked between packets/frames so a pathological file cannot hang a caller.

The limit grows with the media decoded: ``timeout_s`` plus :data:`SECONDS_PER_MEDIA_SECOND` for every second of
media the decoder has got through (how far the frames' timestamps have moved on, at most
:data:`MAX_CREDIT_PER_FRAME_S` per frame, so a timestamp that jumps buys no time, and at most the clip's limit). A
long clip that decodes at least half as fast as it plays is never cut; a file that makes no progress still fails
after ``timeout_s``. A flat 60 s cut off every 720p clip over about 15 minutes, well inside ``max_duration_s`` (one hour).
"""
from __future__ import annotations

import time
from pathlib import Path

from pinlite_edge.errors import DecodeError, InputError
from pinlite_edge.utils.checks import is_finite_number

#: Default seconds allowed for decoding one file (audio and video together) before the media decoded adds to it.
DEFAULT_TIMEOUT_S = 60.0
#: decoding seconds allowed per second of media decoded, on top of the timeout (2: at least half real time)
SECONDS_PER_MEDIA_SECOND = 2.0
#: media seconds one decoded frame can count at most: a gap or a broken clock moves the timestamps without work
MAX_CREDIT_PER_FRAME_S = 1.0


class Deadline:
    """Raises :class:`DecodeError` naming the file once ``timeout_s`` seconds, plus :data:`SECONDS_PER_MEDIA_SECOND`
    per second of media decoded (:meth:`advance`), have passed since creation.

    ``timeout_s=None`` disables the limit. The check runs between decoded packets/frames; a single library call
    that blocks forever (e.g. a stalled network read) is bounded by the I/O timeouts given to PyAV/OpenCV instead.
    """

    def __init__(self, path: str | Path, timeout_s: float | None = DEFAULT_TIMEOUT_S):
        if timeout_s is not None and (not is_finite_number(timeout_s, numpy=True) or timeout_s <= 0):
            raise InputError(f"decoding time limit must be positive finite seconds or None (no limit), got "
                             f"{timeout_s!r}")
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._end = None if timeout_s is None else time.monotonic() + timeout_s
        self._latest_s: float | None = None  # the latest media timestamp seen
        self._media_s = 0.0  # media decoded: what the timestamps moved on, in steps of at most a second

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    def extend(self, seconds: float) -> None:
        """Move the limit ``seconds`` later (time spent outside decoding, e.g. scoring windows while streaming)."""
        if self._end is not None and seconds > 0:
            self._end += seconds

    def advance(self, timestamp_s: float, cap_s: float) -> None:
        """A frame at media time ``timestamp_s`` was decoded: the limit grows by how far it moves the latest
        timestamp on (containers start anywhere: MPEG-TS often at hours), at most :data:`MAX_CREDIT_PER_FRAME_S`,
        and in all at most ``cap_s`` (the clip's duration limit)."""
        if self._latest_s is not None and timestamp_s > self._latest_s and self._end is not None:
            step = min(timestamp_s - self._latest_s, MAX_CREDIT_PER_FRAME_S, cap_s - self._media_s)
            if step > 0:
                self._end += SECONDS_PER_MEDIA_SECOND * step
                self._media_s += step
        if self._latest_s is None or timestamp_s > self._latest_s:
            self._latest_s = timestamp_s

    def check(self) -> None:
        if self._end is not None and time.monotonic() > self._end:
            raise DecodeError(self.path, f"decoding exceeded the time limit ({self.timeout_s:g} s, plus "
                                         f"{SECONDS_PER_MEDIA_SECOND:g} s per second of media: {self._media_s:.1f} s "
                                         "decoded): the file decodes too slowly or makes no progress; pass a larger "
                                         "timeout (timeout_s, --timeout) or none")
