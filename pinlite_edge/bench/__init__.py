"""The bench (SPEC §7): ``python -m pinlite_edge.bench`` or :func:`run_bench` from code."""
from pinlite_edge.bench.core import BenchConfig, BenchResult, run_bench
from pinlite_edge.bench.timing import LatencyStats, TimingResult, measure_interleaved

__all__ = ["BenchConfig", "BenchResult", "LatencyStats", "TimingResult", "measure_interleaved", "run_bench"]
