"""Where the bench finds its models: a quickstart workspace (docs/architecture.md) or explicit artefact files.

Which file a ``--runtime``/``--precision`` pair means comes from the one table of artefact kinds,
``pinlite_edge.export.formats``. Nothing here builds anything: the CLI (``bench/prepare.py``) builds a missing
workspace or artefact before :func:`pinlite_edge.bench.run_bench` looks for it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pinlite_edge.errors import UsageError
from pinlite_edge.export.formats import format_for, precisions_for
from pinlite_edge.manifest import MANIFEST_SUFFIX, manifest_path_for
from pinlite_edge.workspace_layout import ARTEFACT_STEM, DEFAULT_WORKSPACE, exports_dir

log = logging.getLogger(__name__)

#: the workspace's artefact the runtimes' other artefacts (TensorRT engines) are built from: its FP32 ONNX
SOURCE_FORMAT = "onnx"
BUILD_HINT = ("build it with `python -m pinlite_edge.quickstart` (or run `python -m pinlite_edge.bench` without "
              "--artifacts, which builds the default workspace first)")


def build_hint(workspace: Path) -> str:
    """How to build or finish ``workspace``: the quickstart command that writes *that* folder."""
    if Path(workspace) == DEFAULT_WORKSPACE:
        return BUILD_HINT
    return f"build or finish it with `python -m pinlite_edge.quickstart --workspace {workspace}`"


def _on(workspace: Path) -> str:
    """The bench's ``--artifacts`` argument for ``workspace`` (none for the default one)."""
    return "" if Path(workspace) == DEFAULT_WORKSPACE else f" --artifacts {workspace}"


class WorkspaceError(UsageError):
    """The bench cannot find the workspace or the artefacts it was asked for (what was asked for is not there: a
    usage error, exit 2)."""


def is_workspace(path: Path) -> bool:
    return path.is_dir() and ((path / "exports").is_dir() or (path / "distilled").is_dir()
                              or (path / "teacher").is_dir())


def enclosing_workspace(artifact: Path) -> Path | None:
    """The quickstart-layout workspace holding ``artifact`` (the nearest folder above it with a teacher stage), if
    any."""
    for parent in Path(artifact).resolve().parents:
        if is_workspace(parent) and (parent / "teacher").is_dir():
            return parent
    return None


def stage_checkpoint(workspace: Path, stage: str) -> Path | None:
    path = workspace / stage / "best.safetensors"
    return path if path.is_file() else None


def source_checkpoint(artifact: Path, manifest: Any, workspace: Path | None) -> tuple[Path | None, str | None]:
    """The FP32 checkpoint an artefact was exported from, if it can be found here with the recorded hash;
    else ``(None, why)``."""
    from pinlite_edge.utils.hashing import sha256_file

    src = getattr(manifest, "source_checkpoint", None)
    if not src:
        return None, "the manifest names no source checkpoint"
    want = getattr(manifest, "source_checkpoint_sha256", None)
    # a manifest is a file from anywhere: its path is only a hint, the sha256 (which every export records) decides,
    # and only checkpoints are hashed (not whatever file a crafted path names)
    if not want:
        return None, f"the manifest records no sha256 of its source checkpoint {src}"
    if Path(src).suffix != ".safetensors":
        return None, f"the manifest's source checkpoint {src} is not a .safetensors checkpoint"
    candidates = []
    if workspace is not None:  # the workspace's own copy first (it may have been moved or copied since the export)
        if not Path(src).is_absolute():
            candidates.append(workspace / src)
        candidates.append(workspace / Path(*Path(src).parts[-2:]))  # "<stage>/best.safetensors"
    candidates.append(Path(src))
    if not Path(src).is_absolute():
        candidates.append(artifact.parent / src)
    candidates.append(artifact.parent / Path(src).name)
    # the path is recorded as given at export time (relative to that command's folder): from another folder, the
    # checkpoint is found by its "<stage>/best.safetensors" in the folders above the artefact (a workspace's
    # exports/<format>/ sits two levels below it)
    candidates += [up / Path(*Path(src).parts[-2:]) for up in list(artifact.resolve().parents)[:4]]
    mismatched = None
    for c in dict.fromkeys(candidates):
        if c.is_file():
            if sha256_file(c) != want:
                mismatched = mismatched or c
                continue
            return c, None
    if mismatched is not None:
        return None, f"source checkpoint {mismatched} does not match the manifest's sha256"
    return None, f"source checkpoint {src} not found"


def artefacts_in(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursively: the quickstart writes ``exports/<fmt>/<name>/<file>``) that have a
    manifest beside them, sorted by path."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.name.endswith(MANIFEST_SUFFIX) and manifest_path_for(p).is_file())


def _no_format_error(runtime: str, precision: str) -> WorkspaceError:
    return WorkspaceError(f"no {precision} artefact format for runtime {runtime!r}; choose from "
                          f"{list(precisions_for(runtime))}")


def cuda_index(device: str | None) -> int:
    """The CUDA device number of ``device`` ("cuda:1" -> 1; "cuda", "cpu" or None -> 0)."""
    return int(device.split(":")[1]) if device and device.startswith("cuda:") else 0


def resolve_artefacts(artifacts: Path, runtime: str, precision: str, device: str | None = None) -> list[Path]:
    """Artefacts to bench for ``runtime``/``precision``.

    ``artifacts`` is a workspace (then ``torch`` means the distilled and pruned checkpoints, ``trt`` the cached engine
    built for this GPU and TensorRT version from the workspace's ONNX (``bench/engine_cache.py``), and other runtimes
    the files under ``exports/<format>/``), a folder of artefacts with manifests, or one artefact file.
    """
    kind = format_for(runtime, precision)
    if kind is None:
        raise _no_format_error(runtime, precision)
    if artifacts.is_file():
        if not _built_for(artifacts, runtime, precision):
            raise WorkspaceError(f"{artifacts} is not a {runtime} {precision} artefact ({_describe(artifacts)}); "
                                 f"pass --runtime/--precision to match it")
        return [artifacts]
    if not artifacts.exists():
        if artifacts == DEFAULT_WORKSPACE:
            raise WorkspaceError(f"no workspace at {artifacts}: {BUILD_HINT}")
        raise WorkspaceError(f"--artifacts {artifacts} does not exist")
    if not artifacts.is_dir():
        raise WorkspaceError(f"--artifacts {artifacts} is neither a file nor a folder")
    if is_workspace(artifacts):
        if runtime == "torch":
            found = [p for p in (stage_checkpoint(artifacts, s) for s in ("distilled", "pruned")) if p]
            where = f"{artifacts}/distilled|pruned/best.safetensors"
            hint = build_hint(artifacts)
        elif runtime == "trt":
            from pinlite_edge.bench.engine_cache import find_engine

            from pinlite_edge.bench.engine_cache import detect_target

            # the engine built for the benched GPU (engines are cached per GPU model and TensorRT version)
            engine, where = find_engine(artifacts, precision, detect_target(cuda_index(device)))
            found = [engine] if engine else []
            hint = f"`python -m pinlite_edge.bench --runtime trt{_on(artifacts)}` builds it on first use"
        else:
            found = artefacts_in(exports_dir(artifacts, kind.name))
            where = f"{artifacts}/exports/{kind.name}/"
            hint = (f"`python -m pinlite_edge.bench --runtime {runtime} --precision {precision}"
                    f"{_on(artifacts)}` builds it on first "
                    f"use, or export one (python -m pinlite_edge.export --format {kind.name} ...)")
        if not found:
            raise WorkspaceError(f"no {runtime} {precision} artefact in {where}: {hint}")
        return found
    found = artefacts_in(artifacts) + sorted(artifacts.glob("*.safetensors"))
    if not found:
        raise WorkspaceError(f"{artifacts} holds no artefact with a manifest and no checkpoint")
    matching = [p for p in sorted(set(found)) if _built_for(p, runtime, precision)]
    if not matching:  # never bench another runtime's artefacts in place of the one asked for
        raise WorkspaceError(f"{artifacts} holds no {runtime} {precision} artefact; it has: "
                             + ", ".join(f"{p.name} ({_describe(p)})" for p in sorted(set(found))))
    return matching


def _runtime_and_precision(path: Path) -> tuple[str, str]:
    from pinlite_edge.export.formats import CHECKPOINT

    if path.suffix == CHECKPOINT.suffix:  # its own record describes it; a manifest beside it is refused on loading
        return CHECKPOINT.runtime, CHECKPOINT.precision
    from pinlite_edge.manifest import read_manifest
    from pinlite_edge.runtimes.artifact import backend_name

    m = read_manifest(path, verify=False)  # the runner verifies the hash when it loads the artefact
    return backend_name(m.runtime), m.precision


def _built_for(path: Path, runtime: str, precision: str) -> bool:
    return _runtime_and_precision(path) == (runtime, precision)


def _describe(path: Path) -> str:
    return "{} {}".format(*_runtime_and_precision(path))
