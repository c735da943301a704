"""The bench (SPEC §7): ``python -m pinlite_edge.bench`` or :func:`run_bench` from code.

Attributes are imported lazily, so a process that only needs one small module (the memory pass's fresh process
imports ``pinlite_edge.bench.memory``) does not load torch and the whole bench.
"""
from __future__ import annotations

from typing import Any

__all__ = ["BenchConfig", "BenchResult", "LatencyStats", "TimingResult", "measure_interleaved", "run_bench"]


def __getattr__(name: str) -> Any:
    if name in ("BenchConfig", "BenchResult", "run_bench"):
        from pinlite_edge.bench import core

        return getattr(core, name)
    if name in ("LatencyStats", "TimingResult", "measure_interleaved"):
        from pinlite_edge.bench import timing

        return getattr(timing, name)
    raise AttributeError(f"module 'pinlite_edge.bench' has no attribute {name!r}")
