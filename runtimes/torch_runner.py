"""Moved to :mod:`pinlite_edge.runtimes.torch` (re-exported here for callers not yet updated)."""
from pinlite_edge.runtimes.torch.runner import TorchRunner

__all__ = ["TorchRunner"]
