"""TrtRunner: serialized TensorRT engines (10.x / 11.x), buffers and stream through cuda-python.

Why cuda-python and not pycuda: TensorRT's own samples moved to cuda-python in 10.13, its wheels install in seconds
(pycuda is an sdist that must compile against the CUDA toolkit), and a missing driver fails in a catchable way.

An engine is bound to a TensorRT version and a GPU: the manifest's ``target`` (``tensorrt_version``,
``compute_capability``, ``gpu_name``) is checked against this machine BEFORE the engine is deserialised, so a
mismatch is a clear :class:`ManifestError` instead of a crash inside TensorRT.

Per call: inputs are copied into pinned host buffers, then host→device, ``set_input_shape`` +
``set_tensor_address`` + ``execute_async_v3`` on one stream, device→host, synchronise. CUDA events around the
enqueue give ``last_device_time_s``. Buffers are sized once for the optimisation profile's maximum batch.
"""
from __future__ import annotations

import ctypes
import logging
from typing import Any

import numpy as np

from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES
from pinlite_edge.errors import BackendUnavailableError, ManifestError, PinliteError
from pinlite_edge.runtimes.artifact import INSTALL_HINTS, ArtifactSpec, check_io_shapes
from pinlite_edge.runtimes.base import BaseRunner

log = logging.getLogger(__name__)


def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError("trt", f"tensorrt does not import: {exc}", INSTALL_HINTS["trt"]) from None
    return trt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6 layout
        except ImportError as exc:
            raise BackendUnavailableError("trt", f"cuda-python does not import: {exc}",
                                          "pip install pinlite-edge[tensorrt] (cuda-python)") from None
    return cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python returns ``(err, *values)``; raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendUnavailableError("trt", f"CUDA call {what} failed: {err}",
                                      "needs an NVIDIA GPU with a working driver")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _major_minor(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_engine_target(target: dict[str, Any], *, trt_version: str, compute_capability: str,
                        gpu_name: str, source: str = "engine") -> list[str]:
    """Refuse an engine built for another TensorRT major.minor or GPU compute capability; return warnings.

    ``target`` keys: ``tensorrt_version``, ``compute_capability`` ("8.7"), ``gpu_name``, optional
    ``version_compatible`` (built with TensorRT's version-compatible flag: any later version of the same major).
    """
    warnings: list[str] = []
    built = target.get("tensorrt_version") or target.get("trt_version")
    if not built:
        raise ManifestError(f"{source}: manifest target has no tensorrt_version; engines are bound to one "
                            "TensorRT version and cannot be checked")
    if target.get("version_compatible"):
        if _major_minor(built)[0] != _major_minor(trt_version)[0] or _major_minor(trt_version) < _major_minor(built):
            raise ManifestError(f"{source} was built (version-compatible) with TensorRT {built}, "
                                f"this machine has {trt_version}")
    elif _major_minor(built) != _major_minor(trt_version):
        raise ManifestError(f"{source} was built with TensorRT {built}, this machine has {trt_version}: "
                            "rebuild the engine here (python -m pinlite_edge.export --format trt-fp16 ...)")
    cc = target.get("compute_capability")
    if cc is None:
        raise ManifestError(f"{source}: manifest target has no compute_capability")
    if isinstance(cc, (list, tuple)):
        cc = ".".join(str(x) for x in cc)
    if str(cc) != str(compute_capability):
        raise ManifestError(f"{source} was built for compute capability {cc} ({target.get('gpu_name', '?')}), "
                            f"this GPU is {compute_capability} ({gpu_name}): rebuild the engine on this device")
    if target.get("gpu_name") and target["gpu_name"] != gpu_name:
        warnings.append(f"{source} was built on {target['gpu_name']}, running on {gpu_name} (same compute "
                        "capability; timings may differ)")
    return warnings


class TrtRunner(BaseRunner):
    """TensorRT engine runner (GPU only)."""

    backend = "trt"

    def __init__(self, spec: ArtifactSpec, *, device: str = "cuda", threads: int | None = None,
                 batch_policy: str = "split"):
        if not device.startswith("cuda"):
            raise ValueError(f"TensorRT engines run on a CUDA device, got {device!r}")
        super().__init__(spec.path, spec.contract, precision=spec.precision, device=device, preset=spec.preset,
                         model_kind=spec.model_kind, max_batch=spec.max_batch, fmt=spec.format,
                         batch_policy=batch_policy)
        self.spec = spec
        self.device_index = int(device.split(":")[1]) if ":" in device else 0
        self._trt: Any = None
        self._cudart: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.stream: Any = None
        self._events: tuple[Any, Any] | None = None
        self._host: dict[str, np.ndarray] = {}
        self._host_ptrs: dict[str, int] = {}
        self._device_ptrs: dict[str, int] = {}
        self.warnings: list[str] = []

    # --- loading ------------------------------------------------------------------------------------------
    def _device_identity(self) -> tuple[str, str]:
        cudart = self._cudart
        _check(cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
        props = _check(cudart.cudaGetDeviceProperties(self.device_index), "cudaGetDeviceProperties")
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return name, f"{props.major}.{props.minor}"

    def activate_impl(self) -> None:
        trt = _import_trt()
        self._cudart = _import_cudart()
        self._trt = trt
        gpu_name, cc = self._device_identity()
        target = self.spec.manifest.target if self.spec.manifest else {}
        self.warnings = check_engine_target(target, trt_version=trt.__version__, compute_capability=cc,
                                            gpu_name=gpu_name, source=str(self.artifact))
        for w in self.warnings:
            log.warning(w)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(self.artifact.read_bytes())
        if self.engine is None:
            raise ManifestError(f"TensorRT could not deserialise {self.artifact} (see the TensorRT log above)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = {n: tuple(self.engine.get_tensor_shape(n)) for n in names
                  if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        check_io_shapes(self.artifact, self.contract,
                        {n: tuple(None if d < 0 else d for d in s) for n, s in inputs.items()})
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if missing:
            raise ManifestError(f"{self.artifact} lacks outputs {missing}")
        for n in names:
            if self.engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise ManifestError(f"{self.artifact}: I/O tensor {n!r} is {self.engine.get_tensor_dtype(n)}, "
                                    "the contract keeps I/O float32")
        profile_max = int(self.engine.get_tensor_profile_shape(INPUT_NAMES[0], 0)[2][0])
        static = inputs[INPUT_NAMES[0]][0]
        engine_max = profile_max if static < 0 else int(static)
        self.max_batch = min(self.max_batch, engine_max) if self.max_batch else engine_max
        self._allocate(names)
        self.stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._events = (_check(self._cudart.cudaEventCreate(), "cudaEventCreate"),
                        _check(self._cudart.cudaEventCreate(), "cudaEventCreate"))

    def _full_shape(self, name: str, batch: int) -> tuple[int, ...]:
        shape = tuple(self.engine.get_tensor_shape(name))
        return (batch, *shape[1:])

    def _allocate(self, names: list[str]) -> None:
        cudart = self._cudart
        for n in names:
            shape = self._full_shape(n, self.max_batch)
            if any(d < 0 for d in shape[1:]):  # an output whose shape depends on the input: ask the profile
                raise ManifestError(f"{self.artifact}: tensor {n!r} has a dynamic non-batch dimension {shape}")
            nbytes = int(np.prod(shape)) * 4
            host_ptr = _check(cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            buf = (ctypes.c_byte * nbytes).from_address(int(host_ptr))
            self._host_ptrs[n] = int(host_ptr)
            self._host[n] = np.frombuffer(buf, dtype=np.float32).reshape(shape)
            self._device_ptrs[n] = int(_check(cudart.cudaMalloc(nbytes), "cudaMalloc"))
        free, total = _check(cudart.cudaMemGetInfo(), "cudaMemGetInfo")
        self.peak_gpu_memory_bytes = int(total - free)

    def deactivate_impl(self) -> None:
        cudart = self._cudart
        if cudart is not None:
            for ptr in self._device_ptrs.values():
                cudart.cudaFree(ptr)
            for ptr in self._host_ptrs.values():
                cudart.cudaFreeHost(ptr)
            if self._events:
                for ev in self._events:
                    cudart.cudaEventDestroy(ev)
            if self.stream is not None:
                cudart.cudaStreamDestroy(self.stream)
        self._device_ptrs, self._host_ptrs, self._host = {}, {}, {}
        self.context = self.engine = self.stream = self._events = None

    # --- inference ----------------------------------------------------------------------------------------
    def infer_impl(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        cudart, ctx, stream = self._cudart, self.context, self.stream
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        batch = frames.shape[0]
        for name, arr in ((INPUT_NAMES[0], frames), (INPUT_NAMES[1], mfcc)):
            host = self._host[name][:batch]
            host[...] = arr
            _check(cudart.cudaMemcpyAsync(self._device_ptrs[name], self._host_ptrs[name], arr.nbytes, h2d, stream),
                   "cudaMemcpyAsync H2D")
            if not ctx.set_input_shape(name, arr.shape):
                raise PinliteError(f"TensorRT refused input shape {arr.shape} for {name!r} ({self.artifact})")
        for name, ptr in self._device_ptrs.items():
            ctx.set_tensor_address(name, ptr)
        start, end = self._events
        _check(cudart.cudaEventRecord(start, stream), "cudaEventRecord")
        if not ctx.execute_async_v3(int(stream)):
            raise PinliteError(f"TensorRT execute_async_v3 failed for {self.artifact}")
        _check(cudart.cudaEventRecord(end, stream), "cudaEventRecord")
        out = {}
        for name in OUTPUT_NAMES:
            shape = tuple(ctx.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * 4
            _check(cudart.cudaMemcpyAsync(self._host_ptrs[name], self._device_ptrs[name], nbytes, d2h, stream),
                   "cudaMemcpyAsync D2H")
            out[name] = shape
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        self.last_device_time_s = float(_check(cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")) / 1e3
        return {name: self._host[name].reshape(-1)[: int(np.prod(shape))].reshape(shape).copy()
                for name, shape in out.items()}

    def extra_info(self) -> dict[str, Any]:
        return {"warnings": self.warnings} if self.warnings else {}
