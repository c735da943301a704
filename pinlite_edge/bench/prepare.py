"""What the bench CLI builds before it benches (never :func:`run_bench` itself), each step announced:

- the default quickstart workspace, when it is missing or unfinished (``quickstart.run_quickstart`` resumes a
  half-built one; about 10 minutes on a 2-core CPU the first time);
- in a workspace, the artefact the asked ``--runtime``/``--precision`` needs when the workspace has none: a TensorRT
  engine for this GPU and TensorRT version (``bench/engine_cache.py``), or another export format (``.pte``, FP16 /
  INT8 ONNX), built through the export API from the checkpoint the workspace's ONNX was exported from.

``--runtime trt`` checks for TensorRT and a GPU first, so a machine without them fails in a second, not after
building the workspace.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from pinlite_edge.export.formats import format_for
from pinlite_edge.manifest import read_manifest
from pinlite_edge.utils.cli import LOG_DATE_FORMAT, LOG_FORMAT

from pinlite_edge.bench.core import BenchConfig
from pinlite_edge.bench.engine_cache import BUILD_OPTIONS, detect_target, ensure_engine, source_onnx
from pinlite_edge.bench.workspace import (
    ARTEFACT_STEM, DEFAULT_WORKSPACE, WorkspaceError, artefacts_in, build_hint, cuda_index, exports_dir, is_workspace,
    source_checkpoint, stage_checkpoint,
)

log = logging.getLogger(__name__)

Say = Callable[[str], None]


@contextmanager
def _visible(logger_name: str) -> Iterator[None]:
    """Show INFO logs of ``logger_name`` (the quickstart's stage lines) while it builds, whatever the CLI's level."""
    logger = logging.getLogger(logger_name)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def ensure_quickstart_workspace(path: Path, say: Say, progress: bool = True) -> None:
    """Build (or finish) the quickstart workspace at ``path`` unless ``quickstart.workspace_status`` finds it complete
    (checked by content: checkpoints verify and record finished runs, exports verify and come from the current
    pruned checkpoint, the summary is newer than the checkpoints). ``progress``: the quickstart's progress bars."""
    from pinlite_edge import quickstart

    qcfg = quickstart.QuickstartConfig(workspace=str(path), progress=progress)
    status = quickstart.workspace_status(path, qcfg.export_formats)
    if status.complete:
        for stage, differ in status.outdated.items():
            log.warning("%s/%s was built with another recipe than today's preset (%s): benchmarking it as built; "
                        "`python -m pinlite_edge.quickstart --workspace %s` rebuilds it", path, stage, differ, path)
        return
    say(f"building the quickstart workspace at {path} (missing: {'; '.join(status.missing)}): teacher -> distilled "
        "student -> pruned student -> exports, about 10 minutes on a 2-core CPU the first time; finished stages "
        "are reused")
    with _visible("pinlite_edge.quickstart"):
        quickstart.run_quickstart(qcfg)
    status = quickstart.workspace_status(path, qcfg.export_formats)
    if not status.complete:  # e.g. an export that failed (the quickstart logs why): bench what exists
        log.warning("the quickstart finished but %s is still incomplete: %s", path, "; ".join(status.missing))
    else:
        say(f"workspace {path} is complete")


def _export_source(workspace: Path) -> Path:
    """The checkpoint the workspace's artefacts come from: the FP32 ONNX's source, else the pruned student."""
    try:
        onnx = source_onnx(workspace)
        ckpt, why = source_checkpoint(onnx, read_manifest(onnx), workspace)
    except WorkspaceError:
        ckpt, why = None, "the workspace has no FP32 ONNX"
    ckpt = ckpt or stage_checkpoint(workspace, "pruned")
    if ckpt is None:
        raise WorkspaceError(f"{workspace} has no checkpoint to export from ({why}; no pruned/best.safetensors): "
                             f"{build_hint(workspace)}")
    return ckpt


def ensure_runtime_artefact(workspace: Path, runtime: str, precision: str, say: Say,
                            cuda_device: int = 0) -> None:
    """Build the artefact ``runtime``/``precision`` needs in ``workspace`` when it has none."""
    if runtime == "torch":
        return  # the checkpoints themselves
    if runtime == "trt":
        ensure_engine(workspace, precision, target=detect_target(cuda_device), say=say)
        return
    kind = format_for(runtime, precision)
    if kind is None:
        raise WorkspaceError(f"no {precision} artefact format for runtime {runtime!r}")
    folder = exports_dir(workspace, kind.name)
    if artefacts_in(folder):
        return
    orphans = sorted(folder.rglob(f"*{kind.suffix}")) if folder.is_dir() else []
    if orphans:  # a file without its manifest: an export cut short, or one made by hand
        raise WorkspaceError(f"{orphans[0]} has no manifest beside it (an interrupted export?), so it cannot be "
                             "verified or benched: delete it and re-run, and the bench exports it again")
    from pinlite_edge.export import export_model

    ckpt = _export_source(workspace)
    say(f"exporting {kind.name} ({kind.description}) from {ckpt} into {folder}: first use of --runtime {runtime} "
        f"--precision {precision} on this workspace")
    options = BUILD_OPTIONS if kind.precision != "fp32" else {}
    result = export_model(ckpt, kind.name, folder, name=ARTEFACT_STEM, **options)
    say(f"exported {result.artifact} in {result.seconds:.0f} s")


def prepare(cfg: BenchConfig, say: Say) -> None:
    """Everything the CLI builds before :func:`run_bench` for ``cfg`` (nothing for ``--compare``)."""
    if cfg.compare:
        return
    cfg.validate()
    precision = cfg.resolved_precision
    if cfg.runtime == "trt":
        detect_target(cuda_index(cfg.device))  # TensorRT and a GPU, before anything is built
    root = cfg.artifacts if cfg.artifacts is not None else DEFAULT_WORKSPACE
    if cfg.artifacts is None:
        ensure_quickstart_workspace(root, say, cfg.progress)
    if is_workspace(root):
        ensure_runtime_artefact(root, cfg.runtime, precision, say, cuda_index(cfg.device))
