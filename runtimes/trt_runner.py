"""Moved to :mod:`pinlite_edge.runtimes.trt` (re-exported here for callers not yet updated)."""
from pinlite_edge.runtimes.trt.loader import check_engine_target
from pinlite_edge.runtimes.trt.runner import TrtRunner

__all__ = ["TrtRunner", "check_engine_target"]
