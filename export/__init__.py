"""Export PIN-Lite / PinPoint models: ONNX (FP32/FP16/INT8), TensorRT engines, ExecuTorch programs.

``export_model(checkpoint, format, output_dir, **options) -> ExportResult`` and ``export_from_model(model, ...)``;
the formats and the options each takes are in :data:`FORMATS`. CLI: ``python -m pinlite_edge.export --help``.

Attributes are imported lazily: the format table (``pinlite_edge.export.formats``, read by the scoring CLIs and the
bench) does not bring torch and the exporters with it.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_SOURCES = {
    "ExportResult": "api", "export_from_model": "api", "export_model": "api",
    "CalibrationSet": "calibration", "from_arrays": "calibration", "load_calibration": "calibration",
    "FORMATS": "formats", "ExportFormat": "formats", "get_format": "formats",
    "ExportOptions": "options",
    "FloatEntry": "plan", "PrecisionPlan": "plan", "SensitivityRow": "plan",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is not None:
        return getattr(importlib.import_module(f"pinlite_edge.export.{module}"), name)
    try:  # a submodule (``pinlite_edge.export.api``) as an attribute, as before the attributes were lazy
        return importlib.import_module(f"pinlite_edge.export.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"pinlite_edge.export.{name}":
            raise
    raise AttributeError(f"module 'pinlite_edge.export' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})
