"""TensorRT backend: ``loader`` imports tensorrt (the one import with its install hint, also used by
``export.tensorrt``), checks an engine's target against this GPU and deserialises it; ``cuda`` puts pycuda and
cuda-python behind one small interface for buffers, streams and events; ``runner`` holds :class:`TrtRunner`."""
from pinlite_edge.runtimes.trt.runner import TrtRunner

__all__ = ["TrtRunner"]
