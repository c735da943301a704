"""Loading for the ExecuTorch backend: the ``executorch.runtime`` import with its install hint, the quantized
kernels an INT8 program needs, and the program's ``forward`` method. This is the only module that loads a program
(``Runtime.get().load_program``, from a path or from the bytes a runner verified).

Inputs are passed as contiguous tensors because ``execute`` ignores strides.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from pinlite_edge.errors import ManifestError
from pinlite_edge.runtimes.artifact import INSTALL_HINTS, import_backend_module

INSTALL_HINT = INSTALL_HINTS["executorch"]

log = logging.getLogger(__name__)


def import_runtime() -> Any:
    """``executorch.runtime.Runtime``, or :class:`BackendUnavailableError` saying how to install it."""
    return import_backend_module("executorch", "executorch.runtime").Runtime


def register_quantized_kernels() -> None:
    """Register the quantized out-variants an INT8 program uses (before it is loaded)."""
    import_backend_module("executorch", "executorch.kernels.quantized")


class _ProgramsLoaded:
    """Whether this process has loaded a program yet. ExecuTorch's CPU threadpool is process-wide, and a loaded
    program's XNNPACK runtime keeps a pointer to it: resizing it (``_unsafe_reset_threadpool`` replaces the pool)
    after a program was loaded crashes that program's next call. So the pool is sized before the first load only."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.any = False


_PROGRAMS = _ProgramsLoaded()


def _portable_lib() -> Any:
    return import_backend_module("executorch", "executorch.extension.pybindings.portable_lib")


def threadpool_size() -> int:
    """The threads ExecuTorch's CPU threadpool (the one XNNPACK's kernels run on) has now."""
    return int(_portable_lib()._threadpool_get_thread_count())


def size_threadpool(threads: int | None, source: str) -> int:
    """Give ExecuTorch's CPU threadpool ``threads`` threads (None: leave it) if no program was loaded in this process
    yet; otherwise it keeps its size, with a warning when that differs. Returns the size it has (what runs)."""
    with _PROGRAMS.lock:
        size = threadpool_size()
        if threads and size != int(threads):
            if _PROGRAMS.any:
                log.warning("%s: ExecuTorch's threadpool is process-wide and already in use by a program loaded "
                            "earlier: it stays at %d threads, not the %d asked (load the first ExecuTorch program "
                            "with the thread count you want)", source, size, threads)
            else:
                _portable_lib()._unsafe_reset_threadpool(int(threads))
                size = threadpool_size()
        return size


#: the program's method that takes k mfcc rows per frames row and encodes the frames once (frame sharing:
#: ``runtimes.base``); written by ``pinlite_edge.export.executorch`` unless ``shared_rows=1``
SHARED_METHOD = "forward_shared"


def load_method(program: str | Path | bytes, *, quantized: bool = True, source: str | None = None) -> Any:
    """The ``forward`` method of a ``.pte`` program (:func:`load_methods`)."""
    return load_methods(program, quantized=quantized, source=source)["forward"]


def load_methods(program: str | Path | bytes, *, quantized: bool = True, source: str | None = None) -> dict[str, Any]:
    """``forward`` and, when the program has it, :data:`SHARED_METHOD` of a ``.pte`` program: a path, or the
    program's bytes (a runner hands over the bytes it verified, :func:`pinlite_edge.runtimes.artifact.
    read_verified_bytes`; ``load_program`` keeps them alive with the program). Quantized kernels are registered first
    unless ``quantized=False``. ``source`` names the program in errors. Raises :class:`ManifestError` when ExecuTorch
    cannot load it."""
    Runtime = import_runtime()  # noqa: N806 - the class, named as executorch names it
    if quantized:
        register_quantized_kernels()
    name = source or (str(program) if not isinstance(program, bytes) else "the program")
    try:
        data = program if isinstance(program, bytes) else Path(program)
        with _PROGRAMS.lock:  # from now on the threadpool is in use (size_threadpool)
            _PROGRAMS.any = True
        loaded = Runtime.get().load_program(data)
        names = set(loaded.method_names)
        if "forward" not in names:
            raise ManifestError(f"ExecuTorch program {name} has no forward method (methods: {sorted(names)})")
        return {m: LoadedMethod(loaded.load_method(m), loaded) for m in ("forward", SHARED_METHOD) if m in names}
    except ManifestError:
        raise
    except Exception as exc:  # pybind RuntimeError with an ExecuTorch error code
        raise ManifestError(f"ExecuTorch cannot load {name}: {exc}") from None


class LoadedMethod:
    """A program's method together with the program it came from. ``Program`` holds the bytes a program was loaded
    from, but a ``Method`` does not hold its ``Program``: dropping the program frees the bytes under the method and
    the next ``execute`` reads freed memory (a segfault, seen with ``load_program(bytes)``)."""

    def __init__(self, method: Any, program: Any):
        self.method = method
        self.program = program

    def execute(self, inputs: Any) -> Any:
        return self.method.execute(inputs)

    def __getattr__(self, name: str) -> Any:  # metadata, ... of the method
        return getattr(self.method, name)


def execute(method: Any, frames: np.ndarray, mfcc: np.ndarray) -> list[np.ndarray]:
    """Run ``forward`` on one batch; returns the outputs in the program's order as numpy copies."""
    import torch

    outs = method.execute([torch.from_numpy(np.ascontiguousarray(frames)),
                           torch.from_numpy(np.ascontiguousarray(mfcc))])
    return [o.detach().numpy().copy() if hasattr(o, "detach") else np.asarray(o) for o in outs]
