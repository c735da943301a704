"""Command-line conventions shared by the CLIs: one line per error, exit 2 for usage errors (a missing backend or
device included: what was asked for cannot run here), 1 for failures, 130 on Ctrl-C and 143 on SIGTERM (one line,
no traceback), 0 when the reader of stdout went away (``| head``). :func:`run_command` applies them all."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import sys
import threading
from typing import Any, Callable, Iterator, NoReturn

from pinlite_edge.errors import BackendUnavailableError, PinliteError, UsageError
from pinlite_edge.utils.checks import is_finite_number

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


#: how many warnings from one place in the code a CLI shows before it stops repeating them
REPEATS_SHOWN = 5
#: the console log line of every CLI: the time (a long scan or training run says when), level, logger, message
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"


def configure_logging(level: int, repeated: str | None = None) -> None:
    """A CLI's console logging (stderr, :data:`LOG_FORMAT`); with ``repeated`` (where the hidden ones are, e.g. "-v
    shows them all"), repeated SDK warnings are shown :data:`REPEATS_SHOWN` times (:func:`limit_repeated_warnings`).
    Library code never calls this: an app embedding the SDK owns its logging."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT)
    if repeated is not None:
        limit_repeated_warnings(repeated)


class RepeatedWarnings(logging.Filter):
    """A console handler's filter: the SDK's WARNING lines from one place in the code (one per file, e.g. "no face
    found in X" over a folder of 10 000 faceless clips) are shown :data:`REPEATS_SHOWN` times, the last of them with
    a note that more are not shown and where they are; errors and other levels always pass."""

    def __init__(self, where: str, shown: int = REPEATS_SHOWN):
        super().__init__()
        self.where, self.shown = where, shown
        self.counts: dict[tuple[str, int], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or not record.name.startswith("pinlite_edge"):
            return True
        # one place in the code; a warning logged again from elsewhere (scan's decoding processes) names its own
        key = getattr(record, "repeat_key", (record.pathname, record.lineno))
        n = self.counts[key] = self.counts.get(key, 0) + 1
        if n == self.shown:
            note = f"further warnings like this are not shown: {self.where}"
            record.msg, record.args = f"{record.getMessage()} ({note})", ()
        return n <= self.shown


def limit_repeated_warnings(where: str, shown: int = REPEATS_SHOWN) -> None:
    """Put a :class:`RepeatedWarnings` filter on the console handler a CLI's ``logging.basicConfig`` made (a plain
    ``StreamHandler`` of the root logger; not twice, and not on other handlers, e.g. a test's capture). Handlers
    elsewhere, e.g. the one collecting the warnings about each input for its result, still get every warning."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(isinstance(f, RepeatedWarnings)
                                                              for f in handler.filters):
            handler.addFilter(RepeatedWarnings(where, shown))


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def print_error(prog: str, message: object) -> None:
    """``prog: error: message`` as one line on stderr, whatever the message holds."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)


def report(exc: PinliteError, prog: str) -> int:
    """Print ``exc`` as one line on stderr; the exit status: 2 for a :class:`UsageError` or a
    :class:`BackendUnavailableError` (the runtime or device asked for is not here: exit 2 from every CLI, as from
    ``bench`` and ``detect``), else 1."""
    print_error(prog, exc)
    return EXIT_USAGE if isinstance(exc, (UsageError, BackendUnavailableError)) else EXIT_FAILURE


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a job scheduler's stop) raises ``KeyboardInterrupt`` as Ctrl-C does, so
    ``finally`` blocks and temporary folders are cleaned up instead of left behind. Main thread only (elsewhere a
    no-op); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(prog: str, body: Callable[[], int | None], interrupted: str | Callable[[], str] | None = None) -> int:
    """Run a CLI's work, ``body`` (its exit status, None for 0), the way every CLI ends:

    * a :class:`PinliteError`: one line and exit status 1 or 2 (:func:`report`);
    * Ctrl-C, or SIGTERM (:func:`interrupt_on_sigterm`): one line, ``prog: interrupted`` (``terminated``) followed by
      ``; `` and ``interrupted`` (or what it returns: e.g. what was kept and how to resume), exit status 130 (143);
    * stdout closed by its reader (``| head -1``): quietly, exit status 0 (the reader has what it wanted; write
      files before printing so that they do not depend on it).
    """
    try:
        with interrupt_on_sigterm():  # kill, timeout, Slurm, docker stop: the same ending as Ctrl-C
            status = body()
            sys.stdout.flush()  # inside the try: a pipe's buffer is written here, not at exit
    except PinliteError as exc:
        return report(exc, prog)
    except KeyboardInterrupt as exc:
        terminated = bool(exc.args) and exc.args[0] == f"signal {signal.SIGTERM}"
        note = interrupted() if callable(interrupted) else interrupted
        start = "\n" if sys.stderr.isatty() else ""  # not on the line of the terminal's ^C
        print(f"{start}{prog}: {'terminated' if terminated else 'interrupted'}{'; ' + note if note else ''}",
              file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_closed():  # another pipe (a subprocess's): not the reader having what it wanted
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    return status or 0


def _stdout_closed() -> bool:
    """Has the reader of stdout closed it (a pipe without a reader polls as an error)?"""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no file descriptor
        return True


def key_value(text: str) -> tuple[str, Any]:
    """argparse ``type`` of a repeatable ``KEY=VALUE`` option: the value parsed as JSON when it is JSON (numbers,
    booleans, objects), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


#: what ``--no-offset-scan`` with the default verdict is told (``detect`` and ``scan``)
NO_SCAN_NEEDS_WINDOW_AGGREGATE = ("--no-offset-scan needs --aggregate max or mean (the default verdict, 'scan', is the "
                                  "offset scan's P(fake))")


def add_verdict_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threshold``, ``--aggregate`` and ``--no-offset-scan``: how a CLI that runs the ``Detector`` (``detect``,
    ``scan``) turns scores into a verdict. :func:`verdict_argument_problem` checks their combination."""
    from pinlite_edge.operating_point import AGGREGATES

    parser.add_argument("--threshold", type=float, default=None,
                        help="P(fake) at or above which the verdict is fake (default: the model's operating point, "
                             "measured on genuine clips by python -m pinlite_edge.calibrate; 0.5 for a model without "
                             "one)")
    parser.add_argument("--aggregate", choices=AGGREGATES, default="scan",
                        help="what the verdict uses: 'scan' (default), the offset scan's P(fake): the audio "
                             "re-aligned every other frame up to +-6 frames, does another alignment fit the lips "
                             "better than the given one?; 'max' / 'mean': the window P(fake) aggregated over the "
                             "clip. All three are reported")
    parser.add_argument("--no-offset-scan", action="store_true",
                        help="skip the offset scan (it adds 5-35%% to the model time of ONNX, .pte and torch "
                             "artefacts, which encode each window's frames once, and 7x on artefacts exported before "
                             "that; needs --aggregate max or mean; the offset estimate then comes from the offset "
                             "head)")


def verdict_argument_problem(aggregate: str, offset_scan: bool) -> str | None:
    """What is wrong with a verdict's ``--aggregate`` / ``--no-offset-scan`` combination, or None."""
    return NO_SCAN_NEEDS_WINDOW_AGGREGATE if aggregate == "scan" and not offset_scan else None


def add_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """``--timeout``: the decoding time limit of one file (``detect`` and ``scan``); 0 disables it."""
    from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S, SECONDS_PER_MEDIA_SECOND

    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"seconds allowed to decode one file, plus {SECONDS_PER_MEDIA_SECOND:g} s per second of "
                             "media decoded, so a long clip that decodes at least half as fast as it plays is never "
                             "cut (default: %(default)s; 0 disables the limit)")


def timeout_problem(timeout_s: float | None) -> str | None:
    """What is wrong with a decoding time limit, or None. ``timeout_s`` as the APIs take it: None for no limit (what
    ``--timeout 0`` gives: ``args.timeout or None``), else positive finite seconds."""
    if timeout_s is not None and not (is_finite_number(timeout_s, numpy=True) and timeout_s > 0):
        return f"--timeout must be positive finite seconds (0 on the command line: no limit), got {timeout_s}"
    return None
