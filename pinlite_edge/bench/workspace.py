"""Where the bench finds its models: a quickstart workspace (docs/architecture.md) or explicit artefact files."""
from __future__ import annotations

import logging
from pathlib import Path

from pinlite_edge.errors import PinliteError
from pinlite_edge.manifest import MANIFEST_SUFFIX, manifest_path_for

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE = Path("pinlite-workspace")

#: (runtime, precision) -> export format (docs/architecture.md, SPEC §6)
FORMATS: dict[tuple[str, str], str] = {
    ("ort", "fp32"): "onnx", ("ort", "fp16"): "onnx-fp16", ("ort", "int8"): "onnx-int8",
    ("trt", "fp16"): "trt-fp16", ("trt", "int8"): "trt-int8",
    ("executorch", "fp32"): "pte", ("executorch", "int8"): "pte-int8",
}
#: workspace checkpoints of each model stage
STAGES = ("teacher", "distilled", "pruned")


class WorkspaceError(PinliteError):
    """The bench cannot find the workspace or the artefacts it was asked for."""


def is_workspace(path: Path) -> bool:
    return path.is_dir() and ((path / "exports").is_dir() or (path / "distilled").is_dir()
                              or (path / "teacher").is_dir())


def stage_checkpoint(workspace: Path, stage: str) -> Path | None:
    path = workspace / stage / "best.safetensors"
    return path if path.is_file() else None


def artefacts_in(folder: Path) -> list[Path]:
    """Files under ``folder`` (recursively: the quickstart writes ``exports/<fmt>/<name>/<file>``) that have a
    manifest beside them, sorted by path."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not p.name.endswith(MANIFEST_SUFFIX) and manifest_path_for(p).is_file())


def resolve_artefacts(artifacts: Path, runtime: str, precision: str) -> list[Path]:
    """Artefacts to bench for ``runtime``/``precision``.

    ``artifacts`` is a workspace (then ``torch`` means the distilled and pruned checkpoints and other runtimes the
    files under ``exports/<format>/``), a folder of artefacts with manifests, or one artefact file.
    """
    if artifacts.is_file():
        if not _built_for(artifacts, runtime, precision):
            raise WorkspaceError(f"{artifacts} is not a {runtime} {precision} artefact ({_describe(artifacts)}); "
                                 f"pass --runtime/--precision to match it")
        return [artifacts]
    if not artifacts.is_dir():
        raise WorkspaceError(f"--artifacts {artifacts} does not exist")
    if is_workspace(artifacts):
        if runtime == "torch":
            if precision != "fp32":
                raise WorkspaceError(f"the torch runtime runs FP32 checkpoints, not {precision}")
            found = [p for p in (stage_checkpoint(artifacts, s) for s in ("distilled", "pruned")) if p]
            where = f"{artifacts}/distilled|pruned/best.safetensors"
        else:
            fmt = FORMATS.get((runtime, precision))
            if fmt is None:
                choices = sorted(p for r, p in FORMATS if r == runtime)
                raise WorkspaceError(f"no {precision} artefact format for runtime {runtime!r}; choose from {choices}")
            found = artefacts_in(artifacts / "exports" / fmt)
            where = f"{artifacts}/exports/{fmt}/"
        if not found:
            raise WorkspaceError(f"no {runtime} {precision} artefact in {where}: export one first "
                                 f"(python -m pinlite_edge.export ...) or pass --artifacts FILE")
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
    if path.suffix == ".safetensors":
        return "torch", "fp32"
    from pinlite_edge.manifest import read_manifest

    m = read_manifest(path, verify=False)  # the runner verifies the hash when it loads the artefact
    return m.runtime, m.precision


def _built_for(path: Path, runtime: str, precision: str) -> bool:
    return _runtime_and_precision(path) == (runtime, precision)


def _describe(path: Path) -> str:
    return "{} {}".format(*_runtime_and_precision(path))


def ensure_workspace(path: Path, *, build: bool = True) -> Path:
    """Return ``path`` if it is a workspace; else build the quickstart workspace there (with progress)."""
    if is_workspace(path):
        return path
    if not build:
        raise WorkspaceError(f"{path} is not a pinlite workspace (no exports/, distilled/ or teacher/)")
    try:
        from pinlite_edge import quickstart
    except ImportError:
        raise WorkspaceError(
            f"no workspace at {path} and pinlite_edge.quickstart is not available to build one; "
            "train and export models first, or pass --artifacts") from None
    if not hasattr(quickstart, "run_quickstart") or not hasattr(quickstart, "QuickstartConfig"):
        raise WorkspaceError(f"no workspace at {path}: build it with `python -m pinlite_edge.quickstart` first")
    log.warning("no workspace at %s: building the quickstart workspace (trains small models on synthetic data; "
                "this takes a while)", path)
    quickstart.run_quickstart(quickstart.QuickstartConfig(workspace=str(path), progress=True))
    if not is_workspace(path):
        raise WorkspaceError(f"the quickstart finished but {path} is still not a workspace")
    return path
