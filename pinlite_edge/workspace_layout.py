"""The quickstart workspace's layout, shared by the quickstart (which builds it) and the bench (which reads it)::

    <workspace>/teacher|distilled|pruned/best.safetensors    training stages (STAGES)
    <workspace>/exports/<format>/pinlite-student<suffix>     artefacts (ARTEFACT_STEM + the format's suffix)
    <workspace>/summary.json
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_WORKSPACE = Path("pinlite-workspace")
#: training stages, in build order: each is a folder holding best.safetensors
STAGES = ("teacher", "distilled", "pruned")
#: the stem of every artefact the quickstart and the bench build in a workspace
ARTEFACT_STEM = "pinlite-student"


def export_artifact_path(workspace: str | Path, fmt: str) -> Path:
    """``<workspace>/exports/<fmt>/pinlite-student<suffix of fmt>``."""
    from pinlite_edge.export.formats import get_format

    return Path(workspace) / "exports" / fmt / f"{ARTEFACT_STEM}{get_format(fmt).suffix}"


__all__ = ["ARTEFACT_STEM", "DEFAULT_WORKSPACE", "STAGES", "export_artifact_path"]
