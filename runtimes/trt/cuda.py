"""One small CUDA interface for the TensorRT runner, over pycuda or cuda-python.

JetPack users typically have **pycuda** (built against JetPack's CUDA); **cuda-python** installs from wheels and is
what TensorRT's own samples use since 10.13. Both are written against their documented APIs:

- pycuda (``pycuda.driver``, documen.tician.de/pycuda/driver.html): ``init``, ``Device(i).name()`` /
  ``compute_capability()`` / ``retain_primary_context()`` (the device's primary context, the one TensorRT's runtime
  API uses; pushed on open, popped and detached on close), ``mem_alloc`` -> ``DeviceAllocation`` (``int()`` is the
  pointer, ``free()``), ``pagelocked_empty``, ``memcpy_htod_async(dest, src, stream)`` /
  ``memcpy_dtoh_async(dest, src, stream)`` (host side page-locked), ``Stream()`` (``handle``, ``synchronize()``),
  ``Event()`` (``record(stream)``, ``synchronize()``, ``time_till(end)`` in ms), ``mem_get_info()`` -> (free, total).
- cuda-python (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6): every call returns ``(cudaError_t, *values)``:
  ``cudaSetDevice``, ``cudaGetDeviceProperties`` (``name``, ``major``, ``minor``), ``cudaMalloc`` / ``cudaFree``,
  ``cudaMallocHost`` / ``cudaFreeHost``, ``cudaMemcpyAsync(dst, src, count, kind, stream)``, ``cudaStreamCreate`` /
  ``cudaStreamSynchronize`` / ``cudaStreamDestroy``, ``cudaEventCreate`` / ``cudaEventRecord`` /
  ``cudaEventElapsedTime`` / ``cudaEventDestroy``, ``cudaMemGetInfo`` -> (free, total).

:func:`select_binding` picks one: ``"auto"`` tries pycuda first (JetPack), then cuda-python; ``"pycuda"`` or
``"cuda-python"`` forces one. A missing library is a :class:`BackendUnavailableError` naming what to install.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
from typing import Any, ContextManager, Iterator, Protocol

import numpy as np

from pinlite_edge.errors import BackendUnavailableError, PinliteError

log = logging.getLogger(__name__)

CUDA_BINDINGS = ("auto", "pycuda", "cuda-python")
PYCUDA_HINT = ("pip install pycuda (it compiles against the CUDA toolkit: on JetPack install it with JetPack's CUDA "
               "in PATH), or use cuda_binding='cuda-python'")
CUDA_PYTHON_HINT = "pip install 'pinlite-edge[tensorrt]' (cuda-python), or use cuda_binding='pycuda'"
DRIVER_HINT = "needs an NVIDIA GPU with a working driver"


class CudaCallError(PinliteError, RuntimeError):
    """A CUDA call failed after the device was opened (copy, stream, event...)."""


class CudaBinding(Protocol):
    """What the TensorRT runner needs from CUDA. Device pointers are ints; host buffers are page-locked numpy
    arrays; streams and events are the binding's own objects."""

    name: str

    def open(self, device_index: int) -> tuple[str, str]:
        """Make ``device_index`` current for this thread; return its (name, compute capability "major.minor")."""

    def close(self) -> None:
        """Undo :meth:`open` (release the context)."""

    def on_this_thread(self) -> ContextManager[None]:
        """Make the opened device current on the calling thread for the block: CUDA's current context (driver
        API) and current device (runtime API) are per host thread, and a Detector may score from several."""

    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) device memory in bytes."""

    def alloc(self, nbytes: int) -> int: ...

    def free(self, ptr: int) -> None: ...

    def alloc_host(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray: ...

    def free_host(self, array: np.ndarray) -> None: ...

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        """Copy all of the C-contiguous page-locked ``src`` to device pointer ``dst``."""

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        """Fill all of the C-contiguous page-locked ``dst`` from device pointer ``src``."""

    def stream_create(self) -> Any: ...

    def stream_handle(self, stream: Any) -> int:
        """The ``cudaStream_t`` as an int (what ``execute_async_v3`` takes)."""

    def stream_synchronize(self, stream: Any) -> None: ...

    def stream_destroy(self, stream: Any) -> None: ...

    def event_create(self) -> Any: ...

    def event_record(self, event: Any, stream: Any) -> None: ...

    def event_elapsed_ms(self, start: Any, end: Any) -> float: ...

    def event_destroy(self, event: Any) -> None: ...


class PycudaBinding:
    """:class:`CudaBinding` over ``pycuda.driver`` with the device's retained primary context."""

    name = "pycuda"

    def __init__(self, driver: Any):
        self.driver = driver
        self._context: Any = None
        self._allocations: dict[int, Any] = {}

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.driver.Error as exc:
            raise CudaCallError(f"pycuda {what} failed: {exc}") from None

    def open(self, device_index: int) -> tuple[str, str]:
        drv = self.driver
        try:
            drv.init()
            count = drv.Device.count()
            if not 0 <= device_index < count:
                raise BackendUnavailableError("trt", f"CUDA device {device_index} does not exist ({count} visible)",
                                              "pick an existing device: device='cuda:N'")
            dev = drv.Device(device_index)
            self._context = dev.retain_primary_context()
            self._context.push()
            major, minor = dev.compute_capability()
            return str(dev.name()), f"{major}.{minor}"
        except drv.Error as exc:
            raise BackendUnavailableError("trt", f"pycuda cannot open CUDA device {device_index}: {exc}",
                                          DRIVER_HINT) from None

    def close(self) -> None:
        if self._context is not None:
            try:
                self._context.pop()
                self._context.detach()
            finally:
                self._context = None

    @contextlib.contextmanager
    def on_this_thread(self) -> Iterator[None]:
        if self._context is None:
            raise CudaCallError("pycuda: the device is not open")
        self._call("Context.push", self._context.push)
        try:
            yield
        finally:
            self._call("Context.pop", self._context.pop)

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self._call("mem_get_info", self.driver.mem_get_info)
        return int(free), int(total)

    def alloc(self, nbytes: int) -> int:
        allocation = self._call("mem_alloc", self.driver.mem_alloc, nbytes)
        ptr = int(allocation)
        self._allocations[ptr] = allocation
        return ptr

    def free(self, ptr: int) -> None:
        allocation = self._allocations.pop(ptr, None)
        if allocation is not None:
            self._call("DeviceAllocation.free", allocation.free)

    def alloc_host(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self._call("pagelocked_empty", self.driver.pagelocked_empty, shape, dtype)

    def free_host(self, array: np.ndarray) -> None:
        base = array.base
        if base is not None and hasattr(base, "free"):  # PagelockedHostAllocation
            self._call("PagelockedHostAllocation.free", base.free)

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self._call("memcpy_htod_async", self.driver.memcpy_htod_async, dst, src, stream)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self._call("memcpy_dtoh_async", self.driver.memcpy_dtoh_async, dst, src, stream)

    def stream_create(self) -> Any:
        return self._call("Stream", self.driver.Stream)

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def stream_synchronize(self, stream: Any) -> None:
        self._call("Stream.synchronize", stream.synchronize)

    def stream_destroy(self, stream: Any) -> None:
        pass  # a pycuda Stream is destroyed with the object

    def event_create(self) -> Any:
        return self._call("Event", self.driver.Event)

    def event_record(self, event: Any, stream: Any) -> None:
        self._call("Event.record", event.record, stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        self._call("Event.synchronize", end.synchronize)
        return float(self._call("Event.time_till", start.time_till, end))

    def event_destroy(self, event: Any) -> None:
        pass  # destroyed with the object


class CudaPythonBinding:
    """:class:`CudaBinding` over cuda-python's runtime API (``cuda.bindings.runtime``)."""

    name = "cuda-python"

    def __init__(self, cudart: Any):
        self.cudart = cudart
        self._host: dict[int, int] = {}  # id(array) -> pinned pointer
        self._device_index: int | None = None

    def _check(self, result: Any, what: str, unavailable: bool = False) -> Any:
        """cuda-python returns ``(err, *values)``; raise on an error, return the value(s)."""
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            if unavailable:
                raise BackendUnavailableError("trt", f"CUDA call {what} failed: {err}", DRIVER_HINT)
            raise CudaCallError(f"CUDA call {what} failed: {err}")
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def open(self, device_index: int) -> tuple[str, str]:
        rt = self.cudart
        self._check(rt.cudaSetDevice(device_index), f"cudaSetDevice({device_index})", unavailable=True)
        self._device_index = device_index
        props = self._check(rt.cudaGetDeviceProperties(device_index), "cudaGetDeviceProperties", unavailable=True)
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return name, f"{props.major}.{props.minor}"

    def close(self) -> None:
        pass  # the runtime API's primary context stays with the process

    @contextlib.contextmanager
    def on_this_thread(self) -> Iterator[None]:
        if self._device_index is None:
            raise CudaCallError("cuda-python: the device is not open")
        self._check(self.cudart.cudaSetDevice(self._device_index), f"cudaSetDevice({self._device_index})")
        yield

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self._check(self.cudart.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(free), int(total)

    def alloc(self, nbytes: int) -> int:
        return int(self._check(self.cudart.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._check(self.cudart.cudaFree(ptr), "cudaFree")

    def alloc_host(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._check(self.cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
        array = np.frombuffer((ctypes.c_byte * nbytes).from_address(ptr), dtype=dtype).reshape(shape)
        self._host[id(array)] = ptr
        return array

    def free_host(self, array: np.ndarray) -> None:
        ptr = self._host.pop(id(array), None)
        if ptr is not None:
            self._check(self.cudart.cudaFreeHost(ptr), "cudaFreeHost")

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.cudart.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream),
                    "cudaMemcpyAsync H2D")

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.cudart.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream),
                    "cudaMemcpyAsync D2H")

    def stream_create(self) -> Any:
        return self._check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._check(self.cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream: Any) -> None:
        self._check(self.cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def event_create(self) -> Any:
        return self._check(self.cudart.cudaEventCreate(), "cudaEventCreate")

    def event_record(self, event: Any, stream: Any) -> None:
        self._check(self.cudart.cudaEventRecord(event, stream), "cudaEventRecord")

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        return float(self._check(self.cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def event_destroy(self, event: Any) -> None:
        self._check(self.cudart.cudaEventDestroy(event), "cudaEventDestroy")


def _import_pycuda() -> Any:
    import pycuda.driver as driver  # noqa: PLC0415 - lazy: only when the TensorRT runner is activated

    return driver


def _import_cuda_python() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python < 12.6 layout
    return cudart


def select_binding(name: str = "auto") -> CudaBinding:
    """The CUDA binding for ``name`` ("auto": pycuda when it imports, as on JetPack, else cuda-python)."""
    if name not in CUDA_BINDINGS:
        from pinlite_edge.runtimes.base import RunnerOptionError

        raise RunnerOptionError(f"runner option cuda_binding must be one of {list(CUDA_BINDINGS)}, got {name!r}")
    # in order of preference for "auto": pycuda first, as on JetPack
    candidates = (("pycuda", _import_pycuda, PycudaBinding, PYCUDA_HINT),
                  ("cuda-python", _import_cuda_python, CudaPythonBinding, CUDA_PYTHON_HINT))
    errors = []
    for label, load, binding, hint in candidates:
        if name not in ("auto", label):
            continue
        try:
            return binding(load())
        except ImportError as exc:
            if name == label:
                raise BackendUnavailableError("trt", f"{label} does not import: {exc}", hint) from None
            errors.append(f"{label}: {exc}")
    raise BackendUnavailableError("trt", "neither CUDA binding imports (" + "; ".join(errors) + ")",
                                  "install one: pycuda (JetPack) or `pip install 'pinlite-edge[tensorrt]'` "
                                  "(cuda-python)")
