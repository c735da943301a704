"""onnxruntime backend: ``loader`` imports onnxruntime and builds every ``InferenceSession`` of the project (the
runner's, export's parity checks, the benchmarks'), ``runner`` holds :class:`OrtRunner`."""
from pinlite_edge.runtimes.ort.runner import OrtRunner

__all__ = ["OrtRunner"]
