"""OrtRunner: ONNX artefacts (FP32, FP16 with FP32 islands, INT8 QDQ) on onnxruntime.

``device``: ``"cpu"`` (CPUExecutionProvider), ``"cuda"`` (CUDAExecutionProvider) or ``"tensorrt"``
(TensorrtExecutionProvider, with CUDA as the provider of the nodes TensorRT rejects). A requested provider that
this onnxruntime build lacks raises :class:`BackendUnavailableError`; there is no silent fallback to the CPU.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES
from pinlite_edge.errors import BackendUnavailableError, ManifestError
from pinlite_edge.runtimes.artifact import INSTALL_HINTS, ArtifactSpec, check_io_shapes
from pinlite_edge.runtimes.base import BaseRunner

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
}
_OPT_LEVELS = ("disable", "basic", "extended", "all")


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError("ort", f"onnxruntime does not import: {exc}", INSTALL_HINTS["ort"]) from None
    return ort


class OrtRunner(BaseRunner):
    """onnxruntime InferenceSession with explicit providers and thread counts."""

    backend = "ort"

    def __init__(self, spec: ArtifactSpec, *, device: str = "cpu", threads: int | None = None,
                 inter_op_threads: int | None = None, optimization: str = "all",
                 optimized_model_path: str | None = None, profile: bool = False, batch_policy: str = "split"):
        if device not in PROVIDERS:
            raise ValueError(f"ORT device must be one of {sorted(PROVIDERS)}, got {device!r}")
        if optimization not in _OPT_LEVELS:
            raise ValueError(f"optimization must be one of {_OPT_LEVELS}, got {optimization!r}")
        super().__init__(spec.path, spec.contract, precision=spec.precision, device=device, preset=spec.preset,
                         model_kind=spec.model_kind, max_batch=spec.max_batch, fmt=spec.format,
                         batch_policy=batch_policy)
        self.spec = spec
        self.threads = threads
        self.inter_op_threads = inter_op_threads
        self.optimization = optimization
        self.optimized_model_path = optimized_model_path
        self.profile = profile
        self.session: Any = None
        self.providers: list[str] = []

    def activate_impl(self) -> None:
        ort = _import_ort()
        wanted = PROVIDERS[self.device]
        available = ort.get_available_providers()
        if wanted[0] not in available:
            raise BackendUnavailableError(
                "ort", f"execution provider {wanted[0]} is not in this onnxruntime build (available: {available})",
                "pip install onnxruntime-gpu for CUDA/TensorRT providers")
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        if self.inter_op_threads:
            opts.inter_op_num_threads = int(self.inter_op_threads)
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        if self.optimized_model_path:
            opts.optimized_model_filepath = self.optimized_model_path
        opts.enable_profiling = self.profile
        opts.log_severity_level = 3
        providers = [p for p in wanted if p in available] + ["CPUExecutionProvider"] * (self.device != "cpu")
        try:
            self.session = ort.InferenceSession(str(self.artifact), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ManifestError(f"onnxruntime cannot load {self.artifact}: {exc}") from None
        try:
            self._check_session(wanted[0])
        except Exception:
            self.session = None
            raise

    def _check_session(self, wanted: str) -> None:
        self.providers = list(self.session.get_providers())
        if wanted not in self.providers:
            raise BackendUnavailableError("ort", f"{wanted} was requested but the session runs on {self.providers}",
                                          "check the CUDA / TensorRT libraries onnxruntime-gpu needs")
        inputs = {i.name: tuple(i.shape) for i in self.session.get_inputs()}
        check_io_shapes(self.artifact, self.contract, inputs)
        outputs = [o.name for o in self.session.get_outputs()]
        if sorted(outputs) != sorted(OUTPUT_NAMES):
            raise ManifestError(f"{self.artifact} has outputs {outputs}, expected {list(OUTPUT_NAMES)}")

    def deactivate_impl(self) -> None:
        if self.session is not None and self.profile:
            log.info("onnxruntime profile written to %s", self.session.end_profiling())
        self.session = None

    def infer_impl(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(list(OUTPUT_NAMES), {INPUT_NAMES[0]: frames, INPUT_NAMES[1]: mfcc})
        return dict(zip(OUTPUT_NAMES, values))

    def extra_info(self) -> dict[str, Any]:
        return {"providers": self.providers or PROVIDERS[self.device], "threads": self.threads,
                "optimization": self.optimization}
