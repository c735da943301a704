"""Export options: one dataclass for every format; each format names the options it takes (see ``formats.py``)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pinlite_edge.errors import ExportOptionError
from pinlite_edge.utils.checks import is_whole

CALIB_METHODS = ("minmax", "entropy", "percentile")
EXPORTERS = ("classic", "dynamo")
GRU_MODES = ("native", "matmul")
QUANT_FORMATS = ("qdq", "qoperator")
# Which float layers of an INT8 ONNX store their weights as int8 (compute stays FP32): "float" every float layer with a
# weight except the GRU (SPEC: GRU weights stay FP32), "float+gru" / "gru" also / only the GRU (int8-rounded GRU
# weights: opt-in), "none".
WEIGHT_ONLY_MODES = ("none", "float", "float+gru", "gru")
ACTIVATION_TYPES = ("uint8", "int8")  # storage type of INT8 ONNX activations (onnxruntime artefact)
SPEED_FLOAT_MODES = ("auto", "none")  # onnxruntime-CPU speed plan of an INT8 ONNX (export/cpu_speed_plan.py)
#: what a value of each field annotation of ExportOptions must be (checked before the ranges, by validate)
_TYPE_WORDS = {"bool": "True or False", "int": "an integer", "int | None": "an integer or None", "str": "a string",
               "str | None": "a string or None"}


def _has_type(value: Any, annotation: str) -> bool:
    """``value`` fits ``annotation`` (a key of ``_TYPE_WORDS``): bools are bools, ints are ints and not bools."""
    if value is None:
        return annotation.endswith("| None")
    if isinstance(value, bool):
        return annotation == "bool"
    if annotation.startswith("int"):
        return is_whole(value, numpy=True)
    return isinstance(value, str) if annotation.startswith("str") else False


@dataclass
class ExportOptions:
    """Every option of every format, with its default. A format rejects options it does not take."""

    force: bool = False  # overwrite an existing artefact
    name: str | None = None  # artefact file stem; default "pinlite-<kind>"
    opset: int = 17  # ONNX opset (>= 17)
    exporter: str = "classic"  # torch.onnx exporter: "classic" (TorchScript, ~2 s) or "dynamo" (~40 s)
    gru: str = "native"  # ONNX: "native" (one GRU node) or "matmul" (explicit matmuls, same weights)
    dynamic_batch: bool = True  # ONNX: dynamic batch axis
    batch: int | None = None  # ONNX static/max batch, TensorRT profile max batch, .pte static batch
    calib_data: str = "synthetic"  # dataset spec for build_dataset ("synthetic", "lavdf:PATH", "folder:PATH")
    calib_split: str = "train"
    calib_size: int = 256
    calib_method: str = "minmax"
    keep_float: int = 0  # keep the N most sensitive quantizable layers float (beyond the fixed plan)
    sensitivity: bool = True  # measure the per-layer sensitivity table (needed for keep_float > 0)
    sensitivity_size: int = 32  # clips of the calibration set used for the sensitivity table
    quant_format: str = "qdq"  # ORT INT8: "qdq" (portable, TensorRT-ready) or "qoperator" (ORT CPU kernels)
    per_channel: bool = True
    # INT8 activations symmetric (a grid centred on 0), as the export issue and TensorRT require; asymmetric
    # activations (--asymmetric-activations) are an onnxruntime-only option. Weights are always symmetric per channel;
    # TensorRT builds are always symmetric with int8 zero point 0.
    symmetric_activations: bool = True
    # Storage of the onnxruntime INT8 artefact's activations. "uint8" (default): a symmetric range is stored with zero
    # point 128 -- the same quantization grid as int8 with zero point 0 -- because onnxruntime's x86 kernels are u8 x s8
    # (VNNI) and left a third of the convolutions unfused (float) with int8 activations. TensorRT builds always use
    # int8 with zero point 0.
    activation_type: str = "uint8"
    # uint8 activations x int8 weights: on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's u8 x s8
    # kernels add pairs of products in int16 (VPMADDUBSW), which can saturate; 7-bit weights ("reduce range") cannot.
    # --full-range-weights keeps 8-bit weights for targets known to have VNNI (or ARM).
    reduce_range: bool = True
    # "auto": keep float the layers measured to run faster float in onnxruntime on the CPU (depthwise convs, the early
    # high-resolution stages; export/cpu_speed_plan.py); "none": quantize everything the SPEC plan allows.
    speed_float: str = "auto"
    weight_only: str = "float"  # INT8 ONNX: float layers whose weights are *stored* int8 (Cast * scale, folded to FP32
    #                             by onnxruntime at load), compute stays float; see WEIGHT_ONLY_MODES
    workspace_mb: int = 1024  # TensorRT workspace memory pool
    timing_cache: str | None = None  # TensorRT timing cache file (read if present, written after the build)
    weak_typing: bool = False  # TensorRT 10 only: builder flags + per-layer precision instead of strongly typed
    opt_batch: int | None = None  # TensorRT optimisation profile "opt" batch
    #: .pte: mfcc rows per frames row of the program's second method ``forward_shared``; TensorRT: the most mfcc rows
    #: per frames row the optimisation profile takes (frame sharing: the offset scan's 7 audio shifts with the window's
    #: frames encoded once); 1: no sharing
    shared_rows: int = 7
    device: int = 0  # CUDA device index (TensorRT)
    seed: int = 0

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def validate(self) -> None:
        """Check value types and ranges (which options a format takes is checked by the format table)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not _has_type(value, f.type):
                raise ExportOptionError(f"{f.name} must be {_TYPE_WORDS[f.type]}, got {value!r}")
        checks = [
            (self.opset >= 17, f"opset must be >= 17 (SPEC §6), got {self.opset}"),
            (self.exporter in EXPORTERS, f"exporter must be one of {EXPORTERS}, got {self.exporter!r}"),
            (self.gru in GRU_MODES, f"gru must be one of {GRU_MODES}, got {self.gru!r}"),
            (self.batch is None or self.batch >= 1, f"batch must be >= 1, got {self.batch}"),
            (self.opt_batch is None or self.opt_batch >= 1, f"opt_batch must be >= 1, got {self.opt_batch}"),
            (1 <= self.shared_rows <= 64, f"shared_rows must be 1..64 (1: no forward_shared method), got "
                                          f"{self.shared_rows}"),
            (self.calib_size >= 1, f"calib_size must be >= 1, got {self.calib_size}"),
            (self.calib_method in CALIB_METHODS, f"calib_method must be one of {CALIB_METHODS}, got "
                                                 f"{self.calib_method!r}"),
            (self.keep_float >= 0, f"keep_float must be >= 0, got {self.keep_float}"),
            (self.sensitivity_size >= 1, f"sensitivity_size must be >= 1, got {self.sensitivity_size}"),
            (self.quant_format in QUANT_FORMATS, f"quant_format must be one of {QUANT_FORMATS}, got "
                                                 f"{self.quant_format!r}"),
            (self.weight_only in WEIGHT_ONLY_MODES, f"weight_only must be one of {WEIGHT_ONLY_MODES}, got "
                                                    f"{self.weight_only!r}"),
            (self.activation_type in ACTIVATION_TYPES, f"activation_type must be one of {ACTIVATION_TYPES}, got "
                                                       f"{self.activation_type!r}"),
            (self.speed_float in SPEED_FLOAT_MODES, f"speed_float must be one of {SPEED_FLOAT_MODES}, got "
                                                    f"{self.speed_float!r}"),
            (self.workspace_mb >= 1, f"workspace_mb must be >= 1, got {self.workspace_mb}"),
            (self.keep_float == 0 or self.sensitivity, "keep_float > 0 needs the sensitivity table "
                                                       "(do not disable sensitivity)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ExportOptionError(msg)
        if self.name is not None and (not self.name or Path(self.name).name != self.name):
            raise ExportOptionError(f"name must be a plain file stem, got {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
