"""The table of export formats: one row per format (name, suffix, runtime, precision, GPU, options it takes).

Each row names the function that produces it (``module:function`` inside ``pinlite_edge.export``), imported only when
that format is asked for, so ``--help`` and the ONNX formats never import ExecuTorch or TensorRT.

This is the project's only table of artefact kinds: the bench derives its runtime names, the format each
``--runtime``/``--precision`` pair means, the suffixes and each runtime's default precision from it
(:func:`runtimes`, :func:`format_for`, :func:`precisions_for`, :func:`default_precision`). The ``torch`` runtime
runs the training checkpoint itself (:data:`CHECKPOINT`), which is not an export format.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pinlite_edge.errors import ExportOptionError

_ONNX = frozenset({"opset", "gru"})
_CALIB = frozenset({"calib_data", "calib_split", "calib_size", "keep_float", "sensitivity", "sensitivity_size"})
_TRT = frozenset({"batch", "opt_batch", "workspace_mb", "timing_cache", "device", "shared_rows"})
COMMON = frozenset({"force", "name", "seed"})


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str  # appended to the artefact stem
    runtime: str  # runner backend named in the manifest: "ort" | "trt" | "executorch"
    precision: str  # "fp32" | "fp16" | "int8"
    needs_gpu: bool
    options: frozenset[str]  # options this format takes besides COMMON
    handler: str  # "module:function" in pinlite_edge.export
    description: str

    @property
    def allowed_options(self) -> frozenset[str]:
        return self.options | COMMON

    def load_handler(self) -> Callable:
        module, func = self.handler.split(":")
        return getattr(importlib.import_module(f"pinlite_edge.export.{module}"), func)


FORMATS: dict[str, ExportFormat] = {f.name: f for f in [
    ExportFormat("onnx", ".onnx", "ort", "fp32", False,
                 _ONNX | {"exporter", "dynamic_batch", "batch"},
                 "onnx_formats:export_onnx", "FP32 ONNX, dynamic batch (onnxruntime, TensorRT input)"),
    ExportFormat("onnx-fp16", ".fp16.onnx", "ort", "fp16", False,
                 _ONNX | _CALIB | {"batch"},
                 "onnx_formats:export_onnx_fp16", "FP16 ONNX with FP32 islands (Cast) for the precision plan"),
    ExportFormat("onnx-int8", ".int8.onnx", "ort", "int8", False,
                 _ONNX | _CALIB | {"batch", "calib_method", "quant_format", "per_channel",
                                   "weight_only", "symmetric_activations", "activation_type", "speed_float",
                                   "reduce_range"},
                 "onnx_formats:export_onnx_int8", "INT8 ONNX for onnxruntime (static; symmetric per-channel weights, "
                 "symmetric activations stored uint8; QDQ or QOperator)"),
    ExportFormat("trt-fp16", ".fp16.engine", "trt", "fp16", True,
                 _ONNX | _CALIB | _TRT | {"weak_typing"},
                 "tensorrt:export_trt_fp16", "TensorRT engine, strongly typed from the FP16 ONNX"),
    ExportFormat("trt-int8", ".int8.engine", "trt", "int8", True,
                 _ONNX | _CALIB | _TRT | {"calib_method", "per_channel", "weak_typing"},
                 "tensorrt:export_trt_int8", "TensorRT engine, strongly typed from the FP16 + QDQ ONNX"),
    ExportFormat("pte", ".pte", "executorch", "fp32", False, frozenset({"batch", "shared_rows"}),
                 "executorch:export_pte", "ExecuTorch program, XNNPACK delegate, static batch"),
    ExportFormat("pte-int8", ".int8.pte", "executorch", "int8", False, _CALIB | {"batch", "shared_rows"},
                 "executorch:export_pte_int8", "ExecuTorch program, PT2E INT8 (XNNPACKQuantizer), GRU/softmax float"),
]}


@dataclass(frozen=True)
class CheckpointKind:
    """What the ``torch`` runtime runs: the FP32 training checkpoint (``pinlite_edge.checkpoint``), not an export."""

    name: str = "checkpoint"
    suffix: str = ".safetensors"
    runtime: str = "torch"
    precision: str = "fp32"
    needs_gpu: bool = False


CHECKPOINT = CheckpointKind()


def artefact_kinds() -> list[ExportFormat | CheckpointKind]:
    """Every kind of artefact a runtime runs: the checkpoint, then the export formats in table order."""
    return [CHECKPOINT, *FORMATS.values()]


def runtimes() -> tuple[str, ...]:
    """Runtime (runner backend) names in table order: ``("torch", "ort", "trt", "executorch")``."""
    return tuple(dict.fromkeys(k.runtime for k in artefact_kinds()))


def precisions() -> tuple[str, ...]:
    """Every precision some artefact has, widest first: ``("fp32", "fp16", "int8")``."""
    order = {"fp32": 0, "fp16": 1, "int8": 2}
    return tuple(sorted({k.precision for k in artefact_kinds()}, key=lambda p: (order.get(p, 9), p)))


def precisions_for(runtime: str) -> tuple[str, ...]:
    """The precisions ``runtime`` has an artefact kind for, widest first."""
    return tuple(p for p in precisions() if any(k.runtime == runtime and k.precision == p for k in artefact_kinds()))


def default_precision(runtime: str) -> str:
    """``fp32`` where the runtime has an FP32 artefact kind, else ``fp16`` (TensorRT), else its widest."""
    have = precisions_for(runtime)
    if not have:
        raise ExportOptionError(f"unknown runtime {runtime!r}; choose one of {', '.join(runtimes())}")
    for p in ("fp32", "fp16"):
        if p in have:
            return p
    return have[0]


def format_for(runtime: str, precision: str) -> ExportFormat | CheckpointKind | None:
    """The artefact kind of ``runtime`` at ``precision`` (None when the table has none)."""
    for k in artefact_kinds():
        if k.runtime == runtime and k.precision == precision:
            return k
    return None


def get_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ExportOptionError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}") from None


def check_options(fmt: ExportFormat, given: set[str], spell: Callable[[str], str] = str) -> None:
    """Reject options the format does not take (with the list of those it does); ``spell`` names an option the way
    the caller knows it (the CLI: its flag)."""
    from pinlite_edge.export.options import ExportOptions

    unknown = sorted(given - ExportOptions.field_names())
    if unknown:
        raise ExportOptionError(f"unknown export option(s) {[spell(o) for o in unknown]}")
    rejected = sorted(given - fmt.allowed_options)
    if rejected:
        raise ExportOptionError(f"format {fmt.name!r} does not take option(s) {[spell(o) for o in rejected]}; it takes "
                          f"{sorted(spell(o) for o in fmt.allowed_options)}")


def artifact_path(fmt: ExportFormat, output_dir: str | Path, kind: str, name: str | None) -> Path:
    """``<output_dir>/<name or pinlite-<kind>><the format's suffix>``: where an export of a ``kind`` model goes."""
    stem = name or f"pinlite-{kind}"
    return Path(output_dir) / f"{stem}{fmt.suffix}"
