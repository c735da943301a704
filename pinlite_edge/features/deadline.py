"""A decoding time limit: checked between packets/frames so a pathological file cannot hang a caller."""
from __future__ import annotations

import time
from pathlib import Path

from pinlite_edge.errors import DecodeError, InputError

#: Default seconds allowed for decoding one file (audio and video together).
DEFAULT_TIMEOUT_S = 60.0


class Deadline:
    """Raises :class:`DecodeError` naming the file once ``timeout_s`` seconds have passed since creation.

    ``timeout_s=None`` disables the limit. The check runs between decoded packets/frames; a single library call
    that blocks forever (e.g. a stalled network read) is bounded by the I/O timeouts given to PyAV/OpenCV instead.
    """

    def __init__(self, path: str | Path, timeout_s: float | None = DEFAULT_TIMEOUT_S):
        if timeout_s is not None and timeout_s <= 0:
            raise InputError(f"decoding time limit must be positive seconds or None (no limit), got {timeout_s}")
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._end = None if timeout_s is None else time.monotonic() + timeout_s

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    def extend(self, seconds: float) -> None:
        """Move the limit ``seconds`` later (time spent outside decoding, e.g. scoring windows while streaming)."""
        if self._end is not None and seconds > 0:
            self._end += seconds

    def check(self) -> None:
        if self._end is not None and time.monotonic() > self._end:
            raise DecodeError(self.path, f"decoding exceeded the time limit of {self.timeout_s:g} s")
