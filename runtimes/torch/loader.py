"""Loading for the PyTorch backend: the torch import with its install hint, the device check, the process-wide
thread count (set on activation, restored on deactivation) and the model itself."""
from __future__ import annotations

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


def set_threads(torch: Any, threads: int | None) -> int | None:
    """Set torch's intra-op thread count (process-wide: torch has no per-model pool); return the previous count
    to give to :func:`restore_threads`, or None when nothing was changed."""
    if not threads:
        return None
    previous = int(torch.get_num_threads())
    torch.set_num_threads(int(threads))
    return previous


def restore_threads(torch: Any, previous: int | None) -> None:
    if previous is not None:
        torch.set_num_threads(previous)


def load_model(artifact: Path, device: str, model: Any = None, *, allow_unverified: bool = False) -> Any:
    """The checkpoint's model (or ``model`` when given) on ``device``, in eval mode. ``allow_unverified`` loads a
    checkpoint that has no hash to verify against (only for an artefact inspected with ``verify=False``)."""
    if model is None:
        from pinlite_edge.checkpoint import load_checkpoint

        model, _ = load_checkpoint(artifact, allow_unverified=allow_unverified)
    return model.to(device).eval()
