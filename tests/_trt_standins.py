"""Stand-ins for ``tensorrt`` (10.x/11.x runtime API) and the two CUDA bindings the TensorRT runner supports
(``pycuda.driver`` and cuda-python's ``cuda.bindings.runtime``), over one fake GPU, for the runner-contract tests.

They follow the documented APIs (TensorRT Python API: Runtime, ICudaEngine, IExecutionContext; pycuda's "Device
Interface" page; cuda-python's runtime bindings, which return ``(cudaError_t, *values)``) and behave like the real
thing where a runner could get it wrong:

- copies, ``execute_async_v3`` and event records are queued on their stream and run only at synchronisation, so a
  runner that reads its outputs before synchronising gets stale buffers; host memory is read at that time too;
- device pointers must come from an allocation and copies must fit in it; freed or foreign pointers fail;
- pycuda calls need a current context (``retain_primary_context().push()``), and its async copies need page-locked
  host memory (``pagelocked_empty``);
- ``execute_async_v3`` fails without every tensor address or with an input shape outside the optimisation profile.

The engine computes a tiny known model with numpy (the weights are in the engine file, JSON); the tests compare it
with the same model in torch.
"""
from __future__ import annotations

import ctypes
import enum
import json
import sys
import threading
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES, TINY_CONTRACT

C = TINY_CONTRACT
ENGINE_MAGIC = "pinlite-standin-trt-engine"


# --------------------------------------------------------------------------------------------- the fake GPU
@dataclass
class FakeGpu:
    name: str = "Orin"
    major: int = 8
    minor: int = 7
    total: int = 8 << 30
    device_count: int = 1
    mem: dict[int, bytearray] = field(default_factory=dict)
    pinned: dict[int, Any] = field(default_factory=dict)  # host address -> ctypes buffer (page-locked stand-in)
    queues: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    clock_ms: float = 0.0
    next_ptr: int = 0x7F00_0000_0000
    next_handle: int = 1
    launches: int = 0

    def malloc(self, nbytes: int) -> int:
        ptr = self.next_ptr
        self.next_ptr += (nbytes + 0xFFF) & ~0xFFF or 0x1000
        self.mem[ptr] = bytearray(nbytes)
        return ptr

    def free(self, ptr: int) -> bool:
        return self.mem.pop(int(ptr), None) is not None

    def used(self) -> int:
        return sum(len(b) for b in self.mem.values())

    def _buffer(self, ptr: int, nbytes: int) -> bytearray:
        buf = self.mem.get(int(ptr))
        if buf is None:
            raise ValueError(f"device pointer {ptr:#x} is not an allocation (freed or foreign)")
        if nbytes > len(buf):
            raise ValueError(f"copy of {nbytes} bytes overruns the {len(buf)}-byte allocation at {ptr:#x}")
        return buf

    def write(self, ptr: int, data: bytes) -> None:
        self._buffer(ptr, len(data))[: len(data)] = data

    def read(self, ptr: int, nbytes: int) -> bytes:
        return bytes(self._buffer(ptr, nbytes)[:nbytes])

    def alloc_pinned(self, nbytes: int) -> int:
        buf = (ctypes.c_byte * max(nbytes, 1))()
        self.pinned[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    def is_pinned(self, address: int, nbytes: int) -> bool:
        return any(a <= address and address + nbytes <= a + ctypes.sizeof(b) for a, b in self.pinned.items())

    def new_stream(self) -> int:
        handle = self.next_handle
        self.next_handle += 1
        self.queues[handle] = []
        return handle

    def enqueue(self, handle: int, op: Callable[[], None]) -> None:
        if handle not in self.queues:
            raise ValueError(f"stream {handle} does not exist")
        self.queues[handle].append(op)

    def synchronize(self, handle: int) -> None:
        ops, self.queues[handle] = self.queues[handle], []
        for op in ops:
            op()

    def h2d(self, handle: int, dst: int, src_address: int, nbytes: int) -> None:
        self._buffer(dst, nbytes)  # checked when enqueued, like the driver's argument checks
        self.enqueue(handle, lambda: self.write(dst, ctypes.string_at(src_address, nbytes)))

    def d2h(self, handle: int, dst_address: int, src: int, nbytes: int) -> None:
        self._buffer(src, nbytes)
        self.enqueue(handle, lambda: ctypes.memmove(dst_address, self.read(src, nbytes), nbytes))


class FakeEvent:
    def __init__(self) -> None:
        self.time_ms: float | None = None


def record(gpu: FakeGpu, event: FakeEvent, handle: int) -> None:
    event.time_ms = None

    def op() -> None:
        event.time_ms = gpu.clock_ms
    gpu.enqueue(handle, op)


# --------------------------------------------------------------------------------------------- cuda-python
class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's names
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorNotReady = 600


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaStream_t:  # noqa: N801
    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


class cudaEvent_t(FakeEvent):  # noqa: N801
    pass


def cuda_python_module(gpu: FakeGpu) -> types.ModuleType:
    """``cuda.bindings.runtime`` over ``gpu``: every call returns ``(cudaError_t, *values)``."""
    rt = types.ModuleType("cuda.bindings.runtime")
    ok = cudaError_t.cudaSuccess
    state = threading.local()  # the runtime API's current device is per host thread

    def need_device() -> None:
        if getattr(state, "device", None) is None:  # the runtime API would pick device 0 implicitly; set it
            raise AssertionError("cudaSetDevice was not called on this thread before using the device")

    def set_device(i: int) -> tuple:
        if not 0 <= i < gpu.device_count:
            return (cudaError_t.cudaErrorInvalidDevice,)
        state.device = i
        return (ok,)

    def props(i: int) -> tuple:
        if not 0 <= i < gpu.device_count:
            return (cudaError_t.cudaErrorInvalidDevice, None)
        return (ok, types.SimpleNamespace(name=gpu.name.encode() + b"\x00" * 8, major=gpu.major, minor=gpu.minor))

    def malloc(n: int) -> tuple:
        need_device()
        return (ok, gpu.malloc(n))

    def free(ptr: int) -> tuple:
        return (ok,) if gpu.free(ptr) else (cudaError_t.cudaErrorInvalidValue,)

    def malloc_host(n: int) -> tuple:
        return (ok, gpu.alloc_pinned(n))

    def free_host(ptr: int) -> tuple:
        return (ok,) if gpu.pinned.pop(int(ptr), None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def memcpy_async(dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: cudaStream_t) -> tuple:
        try:
            if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
                gpu.h2d(int(stream), int(dst), int(src), count)
            elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
                gpu.d2h(int(stream), int(dst), int(src), count)
            else:
                return (cudaError_t.cudaErrorInvalidValue,)
        except ValueError:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (ok,)

    def stream_create() -> tuple:
        need_device()
        return (ok, cudaStream_t(gpu.new_stream()))

    def stream_sync(stream: cudaStream_t) -> tuple:
        if int(stream) not in gpu.queues:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        gpu.synchronize(int(stream))
        return (ok,)

    def stream_destroy(stream: cudaStream_t) -> tuple:
        return (ok,) if gpu.queues.pop(int(stream), None) is not None else (cudaError_t.cudaErrorInvalidResourceHandle,)

    def event_record(event: cudaEvent_t, stream: cudaStream_t) -> tuple:
        record(gpu, event, int(stream))
        return (ok,)

    def elapsed(start: cudaEvent_t, end: cudaEvent_t) -> tuple:
        if start.time_ms is None or end.time_ms is None:
            return (cudaError_t.cudaErrorNotReady, None)
        return (ok, end.time_ms - start.time_ms)

    rt.cudaError_t, rt.cudaMemcpyKind = cudaError_t, cudaMemcpyKind
    rt.cudaSetDevice, rt.cudaGetDeviceProperties = set_device, props
    rt.cudaMalloc, rt.cudaFree, rt.cudaMallocHost, rt.cudaFreeHost = malloc, free, malloc_host, free_host
    rt.cudaMemcpyAsync = memcpy_async
    rt.cudaStreamCreate, rt.cudaStreamSynchronize, rt.cudaStreamDestroy = stream_create, stream_sync, stream_destroy
    rt.cudaEventCreate = lambda: (ok, cudaEvent_t())
    rt.cudaEventRecord, rt.cudaEventElapsedTime = event_record, elapsed
    rt.cudaEventDestroy = lambda event: (ok,)
    rt.cudaMemGetInfo = lambda: (ok, gpu.total - gpu.used(), gpu.total)
    return rt


# --------------------------------------------------------------------------------------------- pycuda
def pycuda_module(gpu: FakeGpu) -> types.ModuleType:
    """``pycuda.driver`` over ``gpu``, with a context stack (calls without a current context fail)."""
    drv = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    state = {"initialised": False, "retained": 0}
    stacks = threading.local()  # the driver API's context stack is per host thread

    def stack() -> list:
        if not hasattr(stacks, "contexts"):
            stacks.contexts = []
        return stacks.contexts

    def need_context(what: str) -> None:
        if not state["initialised"]:
            raise LogicError(f"{what} failed: cuInit has not been called")
        if not stack():
            raise LogicError(f"{what} failed: invalid device context (no current context on this thread)")

    class Context:
        def push(self) -> None:
            stack().append(self)

        def pop(self) -> None:  # documented as a static method; an instance call pops the top of the stack
            if not stack():
                raise LogicError("cuCtxPopCurrent failed: no current context")
            stack().pop()

        def detach(self) -> None:
            state["retained"] -= 1

    class Device:
        def __init__(self, number: int) -> None:
            if not state["initialised"]:
                raise LogicError("cuDeviceGet failed: not initialized")
            if not 0 <= number < gpu.device_count:
                raise LogicError("cuDeviceGet failed: invalid device ordinal")

        @staticmethod
        def count() -> int:
            return gpu.device_count

        def name(self) -> str:
            return gpu.name

        def compute_capability(self) -> tuple[int, int]:
            return gpu.major, gpu.minor

        def retain_primary_context(self) -> Context:
            state["retained"] += 1
            return Context()

    class DeviceAllocation:
        def __init__(self, ptr: int) -> None:
            self.ptr = ptr

        def __int__(self) -> int:
            return self.ptr

        def free(self) -> None:
            need_context("cuMemFree")
            if not gpu.free(self.ptr):
                raise LogicError("cuMemFree failed: invalid value")

    class PagelockedHostAllocation:
        def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
            dtype = np.dtype(dtype)
            self.address = gpu.alloc_pinned(int(np.prod(shape)) * dtype.itemsize)
            self.__array_interface__ = {"shape": tuple(shape), "typestr": dtype.str, "version": 3,
                                        "data": (self.address, False)}

        def free(self) -> None:
            gpu.pinned.pop(self.address, None)

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            need_context("cuStreamCreate")
            self.handle = gpu.new_stream()

        def synchronize(self) -> None:
            gpu.synchronize(self.handle)

    class Event(FakeEvent):
        def __init__(self, flags: int = 0) -> None:
            need_context("cuEventCreate")
            super().__init__()

        def record(self, stream: Stream | None = None) -> "Event":
            record(gpu, self, stream.handle if stream is not None else 0)
            return self

        def synchronize(self) -> "Event":
            return self

        def time_till(self, end: "Event") -> float:
            if self.time_ms is None or end.time_ms is None:
                raise LogicError("cuEventElapsedTime failed: invalid value (event not reached)")
            return end.time_ms - self.time_ms

    def pinned_address(array: np.ndarray, what: str) -> int:
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            raise LogicError(f"{what}: host buffer must be a contiguous numpy array")
        address = array.ctypes.data
        if not gpu.is_pinned(address, array.nbytes):
            raise LogicError(f"{what}: host memory must be page-locked (pagelocked_empty)")
        return address

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Stream | None = None) -> None:
        need_context("cuMemcpyHtoDAsync")
        try:
            gpu.h2d(stream.handle if stream else 0, int(dest), pinned_address(src, "memcpy_htod_async"), src.nbytes)
        except ValueError as exc:
            raise LogicError(f"cuMemcpyHtoDAsync failed: {exc}") from None

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Stream | None = None) -> None:
        need_context("cuMemcpyDtoHAsync")
        try:
            gpu.d2h(stream.handle if stream else 0, pinned_address(dest, "memcpy_dtoh_async"), int(src), dest.nbytes)
        except ValueError as exc:
            raise LogicError(f"cuMemcpyDtoHAsync failed: {exc}") from None

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        need_context("cuMemAlloc")
        return DeviceAllocation(gpu.malloc(nbytes))

    def mem_get_info() -> tuple[int, int]:
        need_context("cuMemGetInfo")
        return gpu.total - gpu.used(), gpu.total

    def init(flags: int = 0) -> None:
        state["initialised"] = True
        gpu.queues.setdefault(0, [])  # the legacy default stream

    drv.Error, drv.LogicError = Error, LogicError
    drv.init, drv.Device, drv.Context, drv.Stream, drv.Event = init, Device, Context, Stream, Event
    drv.mem_alloc, drv.mem_get_info = mem_alloc, mem_get_info
    drv.pagelocked_empty = lambda shape, dtype, order="C", mem_flags=0: np.asarray(
        PagelockedHostAllocation(tuple(shape) if not isinstance(shape, int) else (shape,), dtype))
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    drv.state = state  # for the tests: retain count
    drv.context_stack = stack  # for the tests: this thread's context stack
    return drv


# --------------------------------------------------------------------------------------------- the model
def standin_weights(module: Any) -> dict[str, list]:
    """The torch StandIn module's weights as JSON-able lists."""
    return {k: v.detach().numpy().tolist() for k, v in module.state_dict().items()}


def numpy_standin(w: dict[str, np.ndarray], frames: np.ndarray, mfcc: np.ndarray) -> list[np.ndarray]:
    """The StandIn model of tests/test_runtimes.py written with numpy: (logits, offset_logits, attention)."""
    def linear(x: np.ndarray, name: str) -> np.ndarray:
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    batch = frames.shape[0]
    v = linear(frames.mean(axis=(3, 4)), "pf")
    a = linear(mfcc.reshape(batch, 16, 4, 13).mean(axis=2), "pa")
    scores = a @ v.transpose(0, 2, 1)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    attn = e / e.sum(-1, keepdims=True)
    pooled = (attn @ v).mean(axis=1)
    return [linear(pooled, "cls"), linear(pooled, "off"), attn]


def engine_bytes(weights: dict[str, list], *, max_batch: int = 4, static_batch: int | None = None,
                 nan_rows: tuple[int, ...] = (), audio_rows: int = 1) -> bytes:
    """A stand-in engine. ``audio_rows > 1``: its profile takes up to that many mfcc rows per frames row, and it
    computes each frames row once for its mfcc rows, as an engine built from an ONNX graph with separate batch axes."""
    return json.dumps({"magic": ENGINE_MAGIC, "weights": weights, "max_batch": max_batch,
                       "static_batch": static_batch, "nan_rows": list(nan_rows), "audio_rows": audio_rows}).encode()


# --------------------------------------------------------------------------------------------- tensorrt
class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1


IO_SHAPES = {INPUT_NAMES[0]: C.frames_shape(), INPUT_NAMES[1]: C.mfcc_shape(), OUTPUT_NAMES[0]: (2,),
             OUTPUT_NAMES[1]: (11,), OUTPUT_NAMES[2]: (C.num_frames, C.num_frames)}


class ICudaEngine:
    def __init__(self, gpu: FakeGpu, spec: dict[str, Any]) -> None:
        self.gpu = gpu
        self.weights = {k: np.asarray(v, np.float32) for k, v in spec["weights"].items()}
        self.max_batch = spec["max_batch"]
        self.static_batch = spec["static_batch"]
        self.nan_rows = spec["nan_rows"]
        self.audio_rows = spec.get("audio_rows", 1)
        self._names = [*INPUT_NAMES, *OUTPUT_NAMES]
        self.device_memory_size_v2 = 1 << 20
        self.contexts = 0

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in INPUT_NAMES else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.static_batch or -1, *IO_SHAPES[name])

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        if profile_index != 0 or name not in INPUT_NAMES:
            raise RuntimeError("no such profile / not an input")
        low = self.static_batch or 1
        high = (self.static_batch or self.max_batch) * (self.audio_rows if name == INPUT_NAMES[1] else 1)
        return [(low, *IO_SHAPES[name]), (low, *IO_SHAPES[name]), (high, *IO_SHAPES[name])]

    def create_execution_context(self) -> "IExecutionContext":
        self.contexts += 1
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(high) or shape[1:] != tuple(high[1:]) or not low[0] <= shape[0] <= high[0]:
            return False
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in IO_SHAPES:
            return False
        self.addresses[name] = int(memory)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in INPUT_NAMES:
            return self.shapes.get(name, self.engine.get_tensor_shape(name))
        batch = self.shapes.get(INPUT_NAMES[1], (-1,))[0]  # one output row per mfcc row
        return (batch, *IO_SHAPES[name])

    def execute_async_v3(self, stream_handle: int) -> bool:
        gpu = self.engine.gpu
        if set(self.addresses) != set(IO_SHAPES) or set(self.shapes) != set(INPUT_NAMES):
            return False  # TensorRT logs "address or shape not set" and returns False
        rows, audio = self.shapes[INPUT_NAMES[0]][0], self.shapes[INPUT_NAMES[1]][0]
        if audio % rows or (audio != rows and self.engine.audio_rows < 2):
            return False  # TensorRT: the graph's Expand / Reshape cannot pair these batches
        shapes, addresses = dict(self.shapes), dict(self.addresses)

        def run() -> None:  # on the stream: reads the inputs as they are when the stream gets here
            batch = shapes[INPUT_NAMES[1]][0]
            frames, mfcc = [np.frombuffer(gpu.read(addresses[n], 4 * int(np.prod(shapes[n]))),
                                          np.float32).reshape(shapes[n]) for n in INPUT_NAMES]
            outs = numpy_standin(self.engine.weights, np.repeat(frames, batch // len(frames), axis=0), mfcc)
            for row in self.engine.nan_rows:
                if row < batch:
                    outs[0][row, 0] = np.nan
            for n, o in zip(OUTPUT_NAMES, outs):
                gpu.write(addresses[n], np.ascontiguousarray(o, np.float32).tobytes())
            gpu.clock_ms += 0.25 * batch
            self.engine.frames_rows_run = getattr(self.engine, "frames_rows_run", 0) + len(frames)
            gpu.launches += 1
        gpu.enqueue(int(stream_handle), run)
        return True


def tensorrt_module(gpu: FakeGpu, version: str = "10.3.0.30") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")

    class Logger:
        ERROR, WARNING, INFO = 1, 2, 3

        def __init__(self, level: int = 2) -> None:
            self.level = level

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
            try:
                spec = json.loads(bytes(data))
            except ValueError:
                return None  # TensorRT logs the error and returns None
            return ICudaEngine(gpu, spec) if spec.get("magic") == ENGINE_MAGIC else None

    trt.__version__ = version
    trt.Logger, trt.Runtime, trt.TensorIOMode, trt.DataType = Logger, Runtime, TensorIOMode, DataType
    return trt


def install(monkeypatch: Any, gpu: FakeGpu, bindings: tuple[str, ...]) -> dict[str, Any]:
    """Put the ``tensorrt`` stand-in and the chosen binding stand-ins in ``sys.modules`` (the other binding made
    un-importable); return the modules by name."""
    mods: dict[str, Any] = {"tensorrt": tensorrt_module(gpu)}
    monkeypatch.setitem(sys.modules, "tensorrt", mods["tensorrt"])
    if "pycuda" in bindings:
        drv = mods["pycuda"] = pycuda_module(gpu)
        pkg = types.ModuleType("pycuda")
        pkg.driver = drv
        monkeypatch.setitem(sys.modules, "pycuda", pkg)
        monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    else:
        monkeypatch.setitem(sys.modules, "pycuda", None)
        monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    if "cuda-python" in bindings:
        rt = mods["cuda-python"] = cuda_python_module(gpu)
        bindings_pkg = types.ModuleType("cuda.bindings")
        bindings_pkg.runtime = rt
        cuda_pkg = types.ModuleType("cuda")
        cuda_pkg.bindings = bindings_pkg
        monkeypatch.setitem(sys.modules, "cuda", cuda_pkg)
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings_pkg)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    else:
        for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
            monkeypatch.setitem(sys.modules, name, None)
    return mods
