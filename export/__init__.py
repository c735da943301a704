"""Export PIN-Lite / PinPoint models: ONNX (FP32/FP16/INT8), TensorRT engines, ExecuTorch programs.

``export_model(checkpoint, format, output_dir, **options) -> ExportResult`` and ``export_from_model(model, ...)``;
the formats and the options each takes are in :data:`FORMATS`. CLI: ``python -m pinlite_edge.export --help``.
"""
from pinlite_edge.export.api import ExportResult, export_from_model, export_model
from pinlite_edge.export.calibration import CalibrationSet, from_arrays, load_calibration
from pinlite_edge.export.formats import FORMATS, ExportFormat, get_format
from pinlite_edge.export.options import ExportOptions
from pinlite_edge.export.plan import FloatEntry, PrecisionPlan, SensitivityRow

__all__ = [
    "FORMATS", "CalibrationSet", "ExportFormat", "ExportOptions", "ExportResult", "FloatEntry", "PrecisionPlan",
    "SensitivityRow", "export_from_model", "export_model", "from_arrays", "get_format", "load_calibration",
]
