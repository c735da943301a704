"""The warnings the SDK logs while it reads and scores one input, collected for the result that input gets.

Library code reports degraded input through :mod:`logging` (a variable frame rate, digitally silent audio, tracks of
different lengths, several faces in view). A command-line user sees those lines on stderr; an app that embeds the
:class:`~pinlite_edge.Detector`, or reads ``scan``'s JSON lines, needs them beside the verdict they qualify.
:func:`captured_warnings` collects them for the block it wraps, from the calling thread only, so concurrent
detections on other threads keep their own.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator

#: the most messages kept per input (a pathological file could log one per frame)
MAX_MESSAGES = 50


class _ThreadCollector(logging.Handler):
    def __init__(self, thread: int, sink: list[str]):
        super().__init__(level=logging.WARNING)
        self.thread = thread
        self.sink = sink
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        message = record.getMessage()
        if message in self.sink:
            return
        if len(self.sink) < MAX_MESSAGES:
            self.sink.append(message)
        else:
            self.dropped += 1


@contextmanager
def captured_warnings(logger: str = "pinlite_edge") -> Iterator[list[str]]:
    """Yield a list that receives, in order and without repeats, the WARNING (and worse) messages logged under
    ``logger`` by this thread while the block runs. Messages a logging configuration suppresses (a level above
    WARNING on ``logger`` or the root logger it inherits from, e.g. ``basicConfig(level=logging.ERROR)``) are never
    logged, so they cannot be collected: the list then ends with a message saying so and how to keep them."""
    messages: list[str] = []
    handler = _ThreadCollector(threading.get_ident(), messages)
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield messages
    finally:
        target.removeHandler(handler)
        if handler.dropped:
            messages.append(f"... and {handler.dropped} more warnings (see the log)")
        if not target.isEnabledFor(logging.WARNING):
            messages.append(f"warnings about this input were not collected: logging for {logger!r} is set above "
                            f"WARNING ({logging.getLevelName(target.getEffectiveLevel())}); to keep them in results, "
                            f"call logging.getLogger({logger!r}).setLevel(logging.WARNING) (and filter your handlers "
                            "instead of the root logger's level)")


__all__ = ["MAX_MESSAGES", "captured_warnings"]
