"""Loading for the TensorRT backend: the ``tensorrt`` import with its install hint (the one used by both the runner
and ``export.tensorrt``), the engine-target check and deserialisation.

An engine is bound to a TensorRT version and a GPU: the manifest's ``target`` (``tensorrt_version``,
``compute_capability``, ``gpu_name``) is checked against this machine BEFORE the engine is deserialised, so a
mismatch is a clear :class:`ManifestError` instead of a crash inside TensorRT.
"""
from __future__ import annotations

from typing import Any

from pinlite_edge.errors import BackendUnavailableError, ManifestError
from pinlite_edge.runtimes.artifact import INSTALL_HINTS, import_backend_module

INSTALL_HINT = INSTALL_HINTS["trt"]
#: the oldest TensorRT major version the exporter and runner are written for: strongly typed networks
#: (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), ``execute_async_v3``, tensor-name I/O (TensorRT 8.6 has the
#: flag only as a preview, and the binding-index API)
MIN_TENSORRT_MAJOR = 10
TOO_OLD_HINT = ("JetPack 6.0 ships TensorRT 8.6; JetPack 6.1 and later ship 10.3: upgrade JetPack (docs/jetson.md), or "
                "run the ONNX export with --runtime ort")


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`BackendUnavailableError` saying how to install it, or that its version is
    older than :data:`MIN_TENSORRT_MAJOR` (before any ONNX work: 8.6 failed deep inside the engine build)."""
    trt = import_backend_module("trt", "tensorrt")
    version = str(getattr(trt, "__version__", ""))
    if _numbers(version, 1)[0] < MIN_TENSORRT_MAJOR:
        what = f"TensorRT {version} is too old" if version else "the tensorrt module reports no __version__"
        raise BackendUnavailableError("trt", f"{what}: pinlite-edge needs TensorRT {MIN_TENSORRT_MAJOR} or newer "
                                             "(strongly typed networks, execute_async_v3)", TOO_OLD_HINT)
    return trt


def _numbers(version: str, count: int = 4) -> tuple[int, ...]:
    """The first ``count`` numeric parts of a version string ("10.3.0.26" -> (10, 3, 0, 26))."""
    parts = []
    for p in str(version).split(".")[:count]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _major_minor(version: str) -> tuple[int, ...]:
    return _numbers(version, 2)


def same_release(built: str, running: str) -> bool:
    """Whether an engine built with TensorRT ``built`` runs on ``running``: NVIDIA binds an engine that is not
    version-compatible to the exact TensorRT version it was built with. Compared on the parts both strings give
    (at least major.minor), so a JetPack "10.3.0" matches its own "10.3.0.30" build but not 10.3.1."""
    a, b = _numbers(built), _numbers(running)
    common = max(2, min(len(a), len(b)))
    return a[:common] == b[:common]


def check_engine_target(target: dict[str, Any], *, trt_version: str, compute_capability: str,
                        gpu_name: str, source: str = "engine") -> list[str]:
    """Refuse an engine built with another TensorRT version (NVIDIA: an engine runs only on the version that built it,
    unless built version-compatible) or for another GPU compute capability; return warnings.

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
    elif not same_release(built, trt_version):
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


def shared_rows(frames_rows: int, mfcc_rows: int) -> int:
    """Most mfcc rows per frames row an engine takes (frame sharing), from the largest ``frames`` and ``mfcc``
    batches its profile allows: ``mfcc_rows // frames_rows`` when that is at least 2, else 0 (no sharing). The rule
    the runner reads an engine with and export records in the manifest."""
    return mfcc_rows // frames_rows if mfcc_rows >= 2 * frames_rows else 0


def deserialize_engine(trt: Any, data: bytes, source: str) -> Any:
    """``Runtime(Logger(WARNING)).deserialize_cuda_engine(data)`` on the engine's bytes (a runner hands over the bytes
    it verified, :func:`pinlite_edge.runtimes.artifact.read_verified_bytes`); :class:`ManifestError` naming
    ``source`` when TensorRT refuses."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise ManifestError(f"TensorRT could not deserialise {source} (see the TensorRT log above)")
    return engine


def engine_device_memory(engine: Any) -> int | None:
    """Activation memory an execution context of ``engine`` needs (``device_memory_size_v2``, TensorRT >= 10.1;
    ``device_memory_size`` before), or None when neither attribute exists."""
    for attr in ("device_memory_size_v2", "device_memory_size"):
        value = getattr(engine, attr, None)
        if value is not None:
            return int(value)
    return None
