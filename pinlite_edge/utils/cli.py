"""Command-line conventions shared by the CLIs: one line per error, exit 2 for usage errors, 1 for failures."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn

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
