"""TensorRT engines of a workspace, built on first use and cached per GPU and TensorRT version (issue #14).

An engine only runs on the GPU model and TensorRT version it was built with, so ``bench --runtime trt`` builds it on
the machine it runs on, once. The cache key is the GPU name, its compute capability, the TensorRT version, the
precision and the sha256 of the workspace's FP32 ONNX (``exports/onnx/pinlite-student.onnx``: which model).
Layout::

    <workspace>/exports/trt-fp16/<gpu>-cc<major.minor>-trt<version>-<key digest>/pinlite-student.fp16.engine
                                                                               (+ .manifest.json, cache-key.json)
    <workspace>/exports/trt-timing/<gpu>-cc<major.minor>-trt<version>.cache      (TensorRT timing cache)

The engine is built through the export API (``pinlite_edge.export.export_model``, format ``trt-fp16`` /
``trt-int8``) from the checkpoint the workspace ONNX was exported from (the export writes its own FP16 or QDQ ONNX
from it, with the precision plan); the timing cache is shared by every build on this GPU and TensorRT version.
``cache-key.json`` is written after the engine and its manifest are published, so an interrupted build is redone.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from pinlite_edge.errors import BackendUnavailableError, PinliteError
from pinlite_edge.manifest import manifest_path_for, read_manifest
from pinlite_edge.utils.atomic import atomic_write_json
from pinlite_edge.utils.hashing import json_sha256
from pinlite_edge.workspace_layout import export_artifact_path, exports_dir

from pinlite_edge.bench.workspace import (
    ARTEFACT_STEM, SOURCE_FORMAT, WorkspaceError, source_checkpoint, stage_checkpoint,
)

log = logging.getLogger(__name__)

KEY_FILE = "cache-key.json"
#: export options of an engine built on first use (64 calibration clips, as the quickstart's INT8 ONNX)
BUILD_OPTIONS: dict[str, Any] = {"calib_size": 64}
GPU_HINT = ("run it on a machine with an NVIDIA GPU and its driver (a Jetson with JetPack, or x86 with nvidia-smi "
            "working)")


@dataclass(frozen=True)
class TrtTarget:
    """The machine an engine is built for: what TensorRT binds an engine to."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    device_index: int = 0

    @property
    def slug(self) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-") or "gpu"
        return f"{gpu}-cc{self.compute_capability}-trt{self.tensorrt_version}"


def detect_target(device_index: int = 0) -> TrtTarget:
    """TensorRT version and GPU of this machine, or ONE :class:`BackendUnavailableError` naming everything that is
    missing (TensorRT, a GPU) and how to get it."""
    from pinlite_edge.export import tensorrt as trt_export

    missing: list[str] = []
    hints: list[str] = []
    trt = gpu = None
    try:
        trt = trt_export.import_tensorrt()
    except BackendUnavailableError as exc:
        missing.append(exc.reason)
        hints.append(exc.install_hint or "")
    try:
        gpu = trt_export.cuda_device(device_index)
    except BackendUnavailableError as exc:
        missing.append(exc.reason)
        hints.append(GPU_HINT)
    if missing:
        raise BackendUnavailableError("trt", "; ".join(missing), "; ".join(h for h in hints if h))
    return TrtTarget(str(trt.__version__), gpu.name, gpu.compute_capability, gpu.index)


def cache_key(target: TrtTarget, precision: str, onnx_sha256: str, checkpoint_sha256: str | None) -> dict[str, Any]:
    return {"gpu_name": target.gpu_name, "compute_capability": target.compute_capability,
            "tensorrt_version": target.tensorrt_version, "precision": precision, "source_onnx_sha256": onnx_sha256,
            "source_checkpoint_sha256": checkpoint_sha256}


def key_digest(key: dict[str, Any]) -> str:
    return json_sha256(key)[:16]


def source_onnx(workspace: Path) -> Path:
    path = export_artifact_path(workspace, SOURCE_FORMAT)
    if not (path.is_file() and manifest_path_for(path).is_file()):
        raise WorkspaceError(f"{workspace} has no FP32 ONNX ({path} with its manifest) to build a TensorRT engine "
                             "from: build the workspace with `python -m pinlite_edge.quickstart`")
    return path


@dataclass
class CacheEntry:
    """Where the engine for one key lives, and the checkpoint it is built from."""

    key: dict[str, Any]
    folder: Path
    engine: Path
    checkpoint: Path
    timing_cache: Path

    def is_built(self) -> bool:
        key_file = self.folder / KEY_FILE
        if not (self.engine.is_file() and manifest_path_for(self.engine).is_file() and key_file.is_file()):
            return False
        try:
            return json.loads(key_file.read_text()) == self.key
        except (OSError, ValueError):
            return False


def cache_entry(workspace: Path, precision: str, target: TrtTarget) -> CacheEntry:
    from pinlite_edge.export.formats import get_format

    onnx = source_onnx(workspace)
    manifest = read_manifest(onnx)  # verifies the ONNX against its recorded sha256
    ckpt, why = source_checkpoint(onnx, manifest, workspace)
    if ckpt is None:
        ckpt = stage_checkpoint(workspace, "pruned")
        if ckpt is None:
            raise WorkspaceError(f"cannot build a TensorRT engine: the checkpoint of {onnx} is unusable ({why}) and "
                                 f"{workspace} has no pruned/best.safetensors")
        log.warning("%s: %s; building the engine from %s", onnx, why, ckpt)
    key = cache_key(target, precision, manifest.artifact_sha256, manifest.source_checkpoint_sha256)
    fmt = get_format(f"trt-{precision}")
    folder = exports_dir(workspace, fmt.name) / f"{target.slug}-{key_digest(key)}"
    return CacheEntry(key=key, folder=folder, engine=folder / f"{ARTEFACT_STEM}{fmt.suffix}", checkpoint=ckpt,
                      timing_cache=exports_dir(workspace, "trt-timing") / f"{target.slug}.cache")


def find_engine(workspace: Path, precision: str, target: TrtTarget | None = None) -> tuple[Path | None, str]:
    """The cached engine of this workspace's ONNX for this GPU and TensorRT version (None if not built yet), and
    where it was looked for."""
    entry = cache_entry(workspace, precision, target or detect_target())
    return (entry.engine if entry.is_built() else None), str(entry.folder)


def ensure_engine(workspace: Path, precision: str, *, target: TrtTarget | None = None,
                  options: dict[str, Any] | None = None, say: Callable[[str], None] | None = None) -> Path:
    """The cached engine, built first (through the export API) when this GPU / TensorRT / ONNX has none."""
    from pinlite_edge.export import export_model

    say = say or log.info
    target = target or detect_target()
    entry = cache_entry(workspace, precision, target)
    if entry.is_built():
        say(f"TensorRT {precision} engine for {target.gpu_name} (cc {target.compute_capability}, TensorRT "
            f"{target.tensorrt_version}): reusing {entry.engine}")
        return entry.engine
    say(f"building the TensorRT {precision} engine for {target.gpu_name} (cc {target.compute_capability}, TensorRT "
        f"{target.tensorrt_version}) from {entry.checkpoint} (source of the workspace ONNX), timing cache "
        f"{entry.timing_cache}: first use on this GPU, this takes a few minutes")
    entry.folder.mkdir(parents=True, exist_ok=True)
    entry.timing_cache.parent.mkdir(parents=True, exist_ok=True)
    opts = {**BUILD_OPTIONS, **(options or {})}
    result = export_model(entry.checkpoint, f"trt-{precision}", entry.folder, name=ARTEFACT_STEM, force=True,
                          timing_cache=str(entry.timing_cache), device=target.device_index, **opts)
    built = read_manifest(result.artifact).target or {}
    if (str(built.get("compute_capability")), str(built.get("tensorrt_version"))) != \
            (target.compute_capability, target.tensorrt_version):
        raise PinliteError(f"the engine built at {result.artifact} records target {built}, not this machine's "
                           f"{asdict(target)}")
    atomic_write_json(entry.folder / KEY_FILE, entry.key)
    say(f"built {result.artifact} in {result.seconds:.0f} s")
    return result.artifact
