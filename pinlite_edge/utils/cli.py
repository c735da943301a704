"""Command-line conventions shared by the CLIs: one line per error, exit 2 for usage errors, 1 for failures."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from pinlite_edge.errors import PinliteError, UsageError

EXIT_FAILURE = 1
EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2), not usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def report(exc: PinliteError, prog: str) -> int:
    """Print ``exc`` as one line on stderr; the exit status: 2 for a :class:`UsageError`, else 1."""
    message = " ".join(str(exc).split())  # one line, whatever the message holds
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILURE


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
