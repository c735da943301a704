"""Entry point of ``python -m pinlite_edge.bench`` and the ``pinlite-bench`` script."""
from __future__ import annotations

import sys

from pinlite_edge.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
