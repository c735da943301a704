"""pinlite-edge: train, export and run PIN-Lite, an explainable audio-visual deepfake detector, on the edge."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):
    # Lazy: `import pinlite_edge` stays light; the Detector pulls in runtimes only when asked for.
    if name == "Detector":
        from pinlite_edge.detector import Detector

        return Detector
    raise AttributeError(f"module 'pinlite_edge' has no attribute {name!r}")
