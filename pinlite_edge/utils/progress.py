"""One progress bar for every long job (training epochs, evaluation, scans, calibration).

On a terminal it redraws at tqdm's usual rate. When stderr is not a terminal (a log file, CI, ``nohup``) every redraw
is a new ``\\r``-separated line in the log: a 2-epoch run wrote about 600 of them (58 KB), so there it redraws at
most every :data:`LOG_INTERVAL_S` seconds (and at the end), which keeps an ETA in the log without flooding it.
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
    if not _is_terminal(stream):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S * 2)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **kwargs)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False
