"""TrtRunner: serialized TensorRT engines (10.x / 11.x) with buffers and a stream from pycuda or cuda-python.

``cuda_binding``: ``"auto"`` (pycuda when it imports, as on JetPack, else cuda-python), ``"pycuda"`` or
``"cuda-python"`` (see :mod:`pinlite_edge.runtimes.trt.cuda`).

Activation: open the device through the binding, check the manifest's target against it (before TensorRT sees the
engine), deserialise, create the execution context, check the I/O against the contract (names, float32, shapes),
size pinned host and device buffers once for the largest batch (the optimisation profile's maximum, or the static
batch), create the stream and two events.

Frame sharing (``runtimes.base``): an engine whose optimisation profile takes more ``mfcc`` rows than ``frames`` rows
(built from an ONNX graph with separate batch axes: ``export/tensorrt.py``, ``shared_rows``) takes up to that many
mfcc rows per frames row and encodes the frames once; the buffers of ``mfcc`` and the outputs are sized for it. Any
other engine gets the frames repeated by :class:`BaseRunner`.

Per call: inputs are copied into the pinned host buffers, then host->device, ``set_input_shape`` +
``set_tensor_address`` + ``execute_async_v3`` on the stream, device->host, synchronise. The events around the enqueue
give ``last_device_time_s``.

GPU memory: ``gpu_memory_bytes()`` is the device memory in use after loading (``mem_get_info`` total - free,
device-wide: on Jetson's unified memory that is all the board's memory in use), and ``extra_info()`` has the per-model
parts TensorRT and this runner know: the context's activation memory and the I/O buffers.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES
from pinlite_edge.errors import ManifestError, PinliteError
from pinlite_edge.runtimes.artifact import (ArtifactSpec, check_declared_sharing, check_io_shapes, declared_shared_rows,
                                             read_verified_bytes)
from pinlite_edge.runtimes.base import BaseRunner, check_choice, check_cuda_device, pad_to_batch
from pinlite_edge.runtimes.trt import loader
from pinlite_edge.runtimes.trt.cuda import CUDA_BINDINGS, CudaBinding, select_binding

log = logging.getLogger(__name__)


class TrtRunner(BaseRunner):
    """TensorRT engine runner (GPU only). ``threads`` is accepted (and checked) for a uniform runner interface but
    TensorRT's execution has no CPU thread pool to size."""

    backend = "trt"

    def __init__(self, spec: ArtifactSpec, *, device: str = "cuda", threads: int | None = None,
                 batch_policy: str = "split", cuda_binding: str = "auto"):
        self.device_index = check_cuda_device(device, self.backend)
        self.cuda_binding = check_choice("cuda_binding", cuda_binding, CUDA_BINDINGS, self.backend)
        super().__init__(spec.path, spec.contract, precision=spec.precision, device=device, preset=spec.preset,
                         model_kind=spec.model_kind, max_batch=spec.max_batch, fmt=spec.format,
                         batch_policy=batch_policy, threads=threads)
        self.spec = spec
        self._manifest_max_batch = spec.max_batch
        self._infer_lock = threading.Lock()
        #: the binding in use while active (the bench may read ``cuda.mem_get_info()`` through it)
        self.cuda: CudaBinding | None = None
        self._opened = False
        self.engine: Any = None
        self.context: Any = None
        self.stream: Any = None
        self._events: list[Any] = []
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        self._used_after_load: int | None = None
        self._activation_bytes: int | None = None
        #: most mfcc rows per frames row the engine's profile takes (0: no frame sharing)
        self.shared_rows = 0
        self.static_batch = 0
        self.warnings: list[str] = []

    # --- loading ------------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        trt = loader.import_tensorrt()
        cuda = self.cuda = select_binding(self.cuda_binding)
        self._opened = True  # close() copes with an open() that failed half-way
        gpu_name, cc = cuda.open(self.device_index)
        target = self.spec.manifest.target if self.spec.manifest else {}
        self.warnings = loader.check_engine_target(target, trt_version=trt.__version__, compute_capability=cc,
                                                   gpu_name=gpu_name, source=str(self.artifact))
        for w in self.warnings:
            log.warning(w)
        # the bytes checked against the manifest's sha256 are the bytes TensorRT deserialises
        self.engine = loader.deserialize_engine(trt, read_verified_bytes(self.spec), str(self.artifact))
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise PinliteError(f"TensorRT could not create an execution context for {self.artifact} "
                               "(out of GPU memory?)")
        names = self._check_io(trt)
        self.max_batch = self._engine_max_batch()
        #: a static engine's batch (frames rows every call must have), 0 for a dynamic profile
        self.static_batch = max(0, int(tuple(self.engine.get_tensor_shape(INPUT_NAMES[0]))[0]))
        self.shared_rows = self._engine_shared_rows()
        self.shares_frames = self.shared_rows > 0
        for n in names:
            shape = self._shape(n, self._rows(n, self.max_batch))
            self._host[n] = cuda.alloc_host(shape, np.float32)
            self._device[n] = cuda.alloc(int(np.prod(shape)) * 4)
        self.stream = cuda.stream_create()
        self._events = [cuda.event_create(), cuda.event_create()]
        self._activation_bytes = loader.engine_device_memory(self.engine)
        free, total = cuda.mem_get_info()
        self._used_after_load = int(total - free)

    def _check_io(self, trt: Any) -> list[str]:
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n: tuple(engine.get_tensor_shape(n)) for n in names
                  if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        check_io_shapes(self.artifact, self.contract,
                        {n: tuple(None if d < 0 else d for d in s) for n, s in inputs.items()})
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if missing:
            raise ManifestError(f"{self.artifact} lacks outputs {missing}")
        for n in names:
            if engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise ManifestError(f"{self.artifact}: I/O tensor {n!r} is {engine.get_tensor_dtype(n)}, "
                                    "the contract keeps I/O float32")
            if any(d < 0 for d in tuple(engine.get_tensor_shape(n))[1:]):
                raise ManifestError(f"{self.artifact}: tensor {n!r} has a dynamic non-batch dimension "
                                    f"{tuple(engine.get_tensor_shape(n))}")
        return names

    def _most_rows(self, name: str) -> int:
        """The largest batch input ``name`` takes: its static size, or its profile's maximum."""
        static = int(tuple(self.engine.get_tensor_shape(name))[0])
        return static if static > 0 else int(tuple(self.engine.get_tensor_profile_shape(name, 0)[2])[0])

    def _engine_max_batch(self) -> int:
        engine_max = self._most_rows(INPUT_NAMES[0])
        if self._manifest_max_batch is not None and self._manifest_max_batch > engine_max:
            raise ManifestError(f"{self.artifact}: the manifest says max_batch {self._manifest_max_batch}, the "
                                f"engine takes at most {engine_max}")
        return min(self._manifest_max_batch or engine_max, engine_max)

    def _engine_shared_rows(self) -> int:
        """Most mfcc rows per frames row of the profile (``mfcc`` max rows over ``frames`` max rows, when at least
        2), checked against the manifest's ``extra.shared_frames`` where export wrote it."""
        frames, mfcc = self._most_rows(INPUT_NAMES[0]), self._most_rows(INPUT_NAMES[1])
        rows = loader.shared_rows(frames, mfcc)
        check_declared_sharing(self.spec, lambda declared: declared_shared_rows(declared) == rows, "engine",
                               f"the engine's profile takes up to {mfcc} mfcc rows for {frames} frames rows")
        return rows

    def frames_shared_for(self, k: int) -> bool:
        """Up to the profile's mfcc rows per frames row (:attr:`shared_rows`)."""
        return self.shares_frames and k <= self.shared_rows

    def _rows(self, name: str, frames_rows: int) -> int:
        """Buffer rows of tensor ``name`` for ``frames_rows`` frames rows: mfcc and outputs hold the shared rows."""
        return frames_rows if name == INPUT_NAMES[0] else frames_rows * max(1, self.shared_rows)

    def _shape(self, name: str, batch: int) -> tuple[int, ...]:
        return (batch, *tuple(int(d) for d in self.engine.get_tensor_shape(name))[1:])

    def deactivate_impl(self) -> None:
        cuda = self.cuda
        if cuda is not None:
            try:
                if self.stream is not None:
                    cuda.stream_synchronize(self.stream)  # nothing may still write into the buffers freed below
                for ptr in self._device.values():
                    cuda.free(ptr)
                for arr in self._host.values():
                    cuda.free_host(arr)
                for ev in self._events:
                    cuda.event_destroy(ev)
                if self.stream is not None:
                    cuda.stream_destroy(self.stream)
            finally:
                self.context = self.engine = None  # TensorRT objects go before the context they live in
                if self._opened:
                    cuda.close()
        self._device, self._host, self._events = {}, {}, []
        self.context = self.engine = self.stream = self.cuda = None
        self._opened = False
        self.max_batch = self._manifest_max_batch
        self.shared_rows = 0
        self.shares_frames = False
        self.static_batch = 0

    def gpu_memory_bytes(self) -> int | None:
        return self._used_after_load

    # --- inference ----------------------------------------------------------------------------------------
    def infer_impl(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        """One call at a time (the execution context, stream and I/O buffers are shared: TensorRT allows one thread
        per execution context), with the device made current on the calling thread (a Detector's worker threads)."""
        assert self.cuda is not None
        with self._infer_lock, self.cuda.on_this_thread():
            return self._infer_locked(frames, mfcc)

    def _infer_locked(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        cuda, ctx, stream = self.cuda, self.context, self.stream
        wanted = mfcc.shape[0]
        # a static engine takes exactly its batch: the last chunk of a split call is padded, its outputs cut
        frames, mfcc = pad_to_batch(frames, mfcc, self.static_batch)
        batch = mfcc.shape[0]  # the outputs have one row per mfcc row (frame sharing: k per frames row)
        for name, arr in ((INPUT_NAMES[0], frames), (INPUT_NAMES[1], mfcc)):
            host = self._host[name][:arr.shape[0]]
            host[...] = arr
            cuda.memcpy_htod_async(self._device[name], host, stream)
            if not ctx.set_input_shape(name, arr.shape):
                raise PinliteError(f"TensorRT refused input shape {arr.shape} for {name!r} ({self.artifact})")
        for name, ptr in self._device.items():
            if not ctx.set_tensor_address(name, ptr):
                raise PinliteError(f"TensorRT refused the address of {name!r} ({self.artifact})")
        start, end = self._events
        cuda.event_record(start, stream)
        if not ctx.execute_async_v3(cuda.stream_handle(stream)):
            raise PinliteError(f"TensorRT execute_async_v3 failed for {self.artifact} (see the TensorRT log)")
        cuda.event_record(end, stream)
        hosts = {}
        for name in OUTPUT_NAMES:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
            if shape != self._shape(name, batch):
                raise PinliteError(f"TensorRT output {name!r} has shape {shape}, expected {self._shape(name, batch)}")
            hosts[name] = self._host[name][:batch]
            cuda.memcpy_dtoh_async(hosts[name], self._device[name], stream)
        cuda.stream_synchronize(stream)
        self.last_device_time_s = cuda.event_elapsed_ms(start, end) / 1e3
        return {name: host[:wanted].copy() for name, host in hosts.items()}

    def extra_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"cuda_binding": self.cuda.name if self.cuda is not None else self.cuda_binding}
        if self._host:
            info["gpu_memory"] = {
                "io_buffers_bytes": int(sum(a.nbytes for a in self._host.values())),
                "context_activation_bytes": self._activation_bytes,
                "device_used_after_load_bytes": self._used_after_load,
            }
        if self.warnings:
            info["warnings"] = self.warnings
        return info
