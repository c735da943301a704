"""ExecuTorch backend: ``loader`` imports ``executorch.runtime`` and loads every ``.pte`` program of the project
(the runner's, export's parity check, the benchmarks'), ``runner`` holds :class:`ExecuTorchRunner`."""
from pinlite_edge.runtimes.executorch.runner import ExecuTorchRunner

__all__ = ["ExecuTorchRunner"]
