"""Loading for the onnxruntime backend: the import with its install hint, execution providers, session options and
the ``InferenceSession`` itself. This is the only module that constructs a session: the runner, export's parity
and kernel checks and the benchmarks all come here, so they run what users run.

``device``: ``"cpu"`` (CPUExecutionProvider), ``"cuda"`` (CUDAExecutionProvider) or ``"tensorrt"``
(TensorrtExecutionProvider, with CUDA for the nodes TensorRT rejects). A requested provider that this onnxruntime
build lacks, or that the session does not end up using, raises :class:`BackendUnavailableError`: there is no
silent fallback to the CPU.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pinlite_edge.errors import BackendUnavailableError, ManifestError
from pinlite_edge.runtimes.artifact import INSTALL_HINTS, import_backend_module
from pinlite_edge.runtimes.base import check_choice

INSTALL_HINT = INSTALL_HINTS["ort"]
PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
}
OPT_LEVELS = ("disable", "basic", "extended", "all")


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or :class:`BackendUnavailableError` saying how to install it."""
    return import_backend_module("ort", "onnxruntime")


def session_options(ort: Any, *, threads: int | None = None, inter_op_threads: int | None = None,
                    optimization: str = "all", optimized_model_path: str | Path | None = None,
                    profile: bool = False) -> Any:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    if inter_op_threads:
        opts.inter_op_num_threads = int(inter_op_threads)
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if optimized_model_path:
        opts.optimized_model_filepath = str(optimized_model_path)
    opts.enable_profiling = profile
    opts.log_severity_level = 3
    return opts


def create_session(model: str | Path | bytes, *, device: str = "cpu", threads: int | None = None,
                   inter_op_threads: int | None = None, optimization: str = "all",
                   optimized_model_path: str | Path | None = None, profile: bool = False) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model`` (a path or serialized bytes) on ``device``.

    Raises :class:`BackendUnavailableError` when the provider is missing or unused, :class:`ManifestError` when
    onnxruntime cannot load the model.
    """
    check_choice("device", device, list(PROVIDERS), "ort")
    check_choice("optimization", optimization, OPT_LEVELS, "ort")
    ort = import_onnxruntime()
    wanted = PROVIDERS[device]
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise BackendUnavailableError(
            "ort", f"execution provider {wanted[0]} is not in this onnxruntime build (available: {available})",
            "pip install onnxruntime-gpu for CUDA/TensorRT providers")
    opts = session_options(ort, threads=threads, inter_op_threads=inter_op_threads, optimization=optimization,
                           optimized_model_path=optimized_model_path, profile=profile)
    providers = [p for p in wanted if p in available] + ["CPUExecutionProvider"] * (device != "cpu")
    source = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        name = "the serialized model" if isinstance(model, bytes) else str(model)
        raise ManifestError(f"onnxruntime cannot load {name}: {exc}") from None
    used = list(session.get_providers())
    if wanted[0] not in used:
        raise BackendUnavailableError("ort", f"{wanted[0]} was requested but the session runs on {used}",
                                      "check the CUDA / TensorRT libraries onnxruntime-gpu needs")
    return session


def run(session: Any, frames: Any, mfcc: Any, output_names: list[str] | None = None) -> list[Any]:
    """``session.run`` on the contract's two inputs (all outputs unless ``output_names``)."""
    from pinlite_edge.contract import INPUT_NAMES

    return session.run(output_names, {INPUT_NAMES[0]: frames, INPUT_NAMES[1]: mfcc})


def optimized_graph(model: str | Path, optimization: str = "extended") -> Any:
    """The graph onnxruntime's CPU provider runs for ``model`` after its fusions and constant folding, as an
    ``onnx.ModelProto`` (default level "extended": no hardware-specific layouts)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="pinlite-ort-opt-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        create_session(model, optimization=optimization, optimized_model_path=out)
        return onnx.load(str(out))
