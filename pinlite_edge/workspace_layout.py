"""The quickstart workspace's layout, shared by the quickstart (which builds it) and the bench (which reads it)::

    <workspace>/teacher|distilled|pruned/best.safetensors    training stages (STAGES)
    <workspace>/exports/<format>/pinlite-student<suffix>     artefacts (ARTEFACT_STEM + the format's suffix)
    <workspace>/summary.json
"""
from __future__ import annotations

from pathlib import Path

from pinlite_edge.errors import UsageError

DEFAULT_WORKSPACE = Path("pinlite-workspace")
#: training stages, in build order: each is a folder holding best.safetensors
STAGES = ("teacher", "distilled", "pruned")
#: the stem of every artefact the quickstart and the bench build in a workspace
ARTEFACT_STEM = "pinlite-student"
#: what ``detect`` and ``scan`` load when no ``--model`` is given: the quickstart workspace's ONNX FP32 student
DEFAULT_MODEL_FORMAT = "onnx"


def export_artifact_path(workspace: str | Path, fmt: str) -> Path:
    """``<workspace>/exports/<fmt>/pinlite-student<suffix of fmt>``."""
    from pinlite_edge.export.formats import get_format

    return Path(workspace) / "exports" / fmt / f"{ARTEFACT_STEM}{get_format(fmt).suffix}"


def default_model(workspace: str | Path = DEFAULT_WORKSPACE) -> Path:
    """The quickstart workspace's ONNX student (the model the README's main command builds); a
    :class:`~pinlite_edge.errors.UsageError` saying how to get one when it is not there."""
    path = export_artifact_path(workspace, DEFAULT_MODEL_FORMAT)
    if not path.is_file():
        raise UsageError(f"no --model given and no quickstart model at {path} (relative to {Path.cwd()}): build it "
                         "with `python -m pinlite_edge.quickstart` (or `python -m pinlite_edge.bench`, which builds "
                         "it first), or pass --model ARTEFACT (.onnx, .pte, TensorRT engine or .safetensors "
                         "checkpoint)")
    return path


__all__ = ["ARTEFACT_STEM", "DEFAULT_MODEL_FORMAT", "DEFAULT_WORKSPACE", "STAGES", "default_model",
           "export_artifact_path"]
