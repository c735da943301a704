"""One progress bar for every long job (training epochs, evaluation, scans, calibration).

On a terminal it redraws at tqdm's usual rate. When stderr is not a terminal (a log file, CI, ``nohup``) every redraw
is a new ``\\r``-separated line in the log: a 2-epoch run wrote about 600 of them (58 KB), so there it redraws at
most every :data:`LOG_INTERVAL_S` seconds (and at the end), which keeps an ETA in the log without flooding it. There
``set_postfix`` / ``set_description`` never force a redraw either: the training loop sets its loss after every step,
and tqdm's default ``refresh=True`` redrew the bar each time, whatever ``mininterval`` said (one line per step).
Each redraw there is a line of its own, ended by a newline, so a log line written between two redraws starts a line.
"""
from __future__ import annotations

import sys
from typing import Any

#: seconds between redraws when stderr is not a terminal
LOG_INTERVAL_S = 30.0


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)`` (disabled unless ``enabled``), redrawn every :data:`LOG_INTERVAL_S` s when stderr
    is not a terminal."""
    from tqdm.auto import tqdm

    stream = kwargs.get("file") or sys.stderr
    cls = tqdm
    if not _is_terminal(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S * 2)
        kwargs["file"] = _LogLines(stream)
        cls = _log_bar_class(tqdm)
    kwargs.setdefault("dynamic_ncols", True)
    return cls(iterable, disable=not enabled, **kwargs)


def _log_bar_class(base: type) -> type:
    """``base`` (a tqdm class) whose postfix and description changes wait for the next throttled redraw."""

    class LogBar(base):  # type: ignore[valid-type, misc]
        def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
            super().set_postfix_str(s, refresh=False)

        def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
            super().set_description(desc, refresh=False)

        def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
            super().set_description_str(desc, refresh=False)

    return LogBar


class _LogLines:
    """A log file as a progress bar sees it: each redraw a line of its own. tqdm redraws in place (``\\r`` and no
    newline), so in a log file the next log line was glued to the bar ("...| 0/150 [00:00<?]WARNING no face...")."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()  # the erasing writes of a closing bar hold nothing else
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False
