"""Loading for the PyTorch backend: the torch import with its install hint, the device check, the process-wide
thread count (held while a runner is active, :class:`ThreadRequests`; one thread in a forked child) and the model
itself."""
from __future__ import annotations

import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from pinlite_edge.errors import BackendUnavailableError
from pinlite_edge.runtimes.artifact import INSTALL_HINTS, import_backend_module

INSTALL_HINT = INSTALL_HINTS["torch"]


def import_torch() -> Any:
    """The ``torch`` module, or :class:`BackendUnavailableError` saying how to install it."""
    return import_backend_module("torch", "torch")


def check_device(torch: Any, device: str) -> None:
    """A CUDA device must exist when one is asked for; there is no silent fallback to the CPU."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError("torch", f"device {device!r} requested but CUDA is not available",
                                      "install a CUDA build of torch and run on a machine with an NVIDIA GPU")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise BackendUnavailableError("torch", f"device {device!r} requested but only "
                                      f"{torch.cuda.device_count()} CUDA device(s) are visible",
                                      "pick an index below that, or set CUDA_VISIBLE_DEVICES")


class ThreadRequests:
    """torch's intra-op thread count is process-wide (torch has no per-model pool), so the active runners that asked
    for a count share it: the latest request holds while its runner is active; when it is released the count goes
    back to the latest request still held, and to the process's own count when none is. (Each runner saving and
    restoring "the previous" count left a still-active runner on another's count, and the process on 1 thread,
    whenever runners closed in another order than they were opened.)

    A count the host sets on the thread this registry last set it on, while requests are held, is the host's: a
    later hold or release keeps it as the count to come back to (it used to be overwritten on close). torch's count
    is read per OS thread, so a count read on another thread says nothing about the host and is not taken as its.

    :meth:`release_from_gc` is the garbage collector's way in (a runner dropped while active): the collector can run
    inside :meth:`hold` or :meth:`release` on the same thread, so it never waits for the lock; a release it cannot
    make at once is made by the next hold or release."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[tuple[int, int]] = []  # (request id, threads), oldest first
        self._original: int | None = None
        self._applied: tuple[int, int] | None = None  # (OS thread id, count) this registry last set
        self._next_id = 0
        self._deferred: deque[tuple[Any, int]] = deque()  # (torch, request) the collector could not release

    def hold(self, torch: Any, threads: int | None) -> int | None:
        """Ask for ``threads`` (None/0: no request); returns the request's id for :meth:`release`."""
        if not threads:
            return None
        with self._lock:
            if not self._held or self._host_changed(torch):
                self._original = int(torch.get_num_threads())
            self._next_id += 1
            self._held.append((self._next_id, int(threads)))
            self._set(torch, int(threads))
            request = self._next_id
            self._drain()
            return request

    def release(self, torch: Any, request: int | None) -> None:
        if request is None:
            return
        with self._lock:
            self._release(torch, request)
            self._drain()

    def release_from_gc(self, torch: Any, request: int | None) -> None:
        """:meth:`release` for a finaliser: never blocks (see the class doc)."""
        if request is None:
            return
        if not self._lock.acquire(blocking=False):
            self._deferred.append((torch, request))
            return
        try:
            self._release(torch, request)
            self._drain()
        finally:
            self._lock.release()

    def _host_changed(self, torch: Any) -> bool:
        return (self._applied is not None and self._applied[0] == threading.get_ident()
                and int(torch.get_num_threads()) != self._applied[1])

    def _set(self, torch: Any, count: int) -> None:
        torch.set_num_threads(count)
        self._applied = (threading.get_ident(), count)

    def _release(self, torch: Any, request: int) -> None:
        held = [(i, n) for i, n in self._held if i != request]
        if len(held) == len(self._held):
            return  # released already (close, then the garbage collector's finaliser)
        self._held = held
        if self._host_changed(torch):  # the host set its own count meanwhile: keep it, and come back to it
            self._original = int(torch.get_num_threads()) if held else None
            self._applied = (threading.get_ident(), int(torch.get_num_threads()))
            return
        count = held[-1][1] if held else self._original
        if count is not None:
            self._set(torch, count)

    def _drain(self) -> None:
        while self._deferred:
            torch, request = self._deferred.popleft()
            self._release(torch, request)


#: the one registry of the process (the thread count it mirrors is the process's)
THREAD_REQUESTS = ThreadRequests()
_FORK_HOOK = False


def set_threads(torch: Any, threads: int | None) -> int | None:
    """Hold a thread-count request (:class:`ThreadRequests`); returns its id for :func:`restore_threads`."""
    _single_threaded_after_fork(torch)
    return THREAD_REQUESTS.hold(torch, threads)


def restore_threads(torch: Any, request: int | None) -> None:
    THREAD_REQUESTS.release(torch, request)


def restore_threads_from_gc(torch: Any, request: int | None) -> None:
    """:func:`restore_threads` for a garbage-collected runner (never waits for the registry's lock)."""
    THREAD_REQUESTS.release_from_gc(torch, request)


def _single_threaded_after_fork(torch: Any) -> None:
    """Once per process: a child made by ``os.fork()`` (gunicorn --preload, celery prefork, multiprocessing's
    "fork") runs torch on one thread. torch's OpenMP pool does not survive fork: a model that had run
    multi-threaded in the parent hung forever in the child's first inference (PyTorch's DataLoader workers do the
    same)."""
    global _FORK_HOOK
    if _FORK_HOOK or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))
    _FORK_HOOK = True


def load_model(artifact: Path, device: str, model: Any = None, *, allow_unverified: bool = False) -> Any:
    """The checkpoint's model (or ``model`` when given) on ``device``, in eval mode. ``allow_unverified`` loads a
    checkpoint that has no hash to verify against (only for an artefact inspected with ``verify=False``)."""
    if model is None:
        from pinlite_edge.checkpoint import load_checkpoint

        model, _ = load_checkpoint(artifact, allow_unverified=allow_unverified)
    return model.to(device).eval()
