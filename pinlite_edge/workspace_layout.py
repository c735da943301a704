"""The quickstart workspace's layout, shared by the quickstart (which builds it) and the bench (which reads it)::

    <workspace>/teacher|distilled|pruned/best.safetensors    training stages (STAGES)
    <workspace>/exports/<format>/pinlite-student<suffix>     artefacts (ARTEFACT_STEM + the format's suffix)
    <workspace>/summary.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pinlite_edge.errors import UsageError

DEFAULT_WORKSPACE = Path("pinlite-workspace")
#: training stages, in build order: each is a folder holding best.safetensors
STAGES = ("teacher", "distilled", "pruned")
#: the stem of every artefact the quickstart and the bench build in a workspace
ARTEFACT_STEM = "pinlite-student"
#: what ``detect`` and ``scan`` load when no ``--model`` is given: the quickstart workspace's ONNX FP32 student
DEFAULT_MODEL_FORMAT = "onnx"


#: the real talking-face clips "auto" looks for (quickstart training, the bench's end-to-end videos)
REAL_DATA = Path("..") / "shared" / "data" / "real-av"


def real_data_places() -> list[Path]:
    """Where "auto" looks for :data:`REAL_DATA`: from the working directory, then beside the repository checkout this
    package runs from (an editable install; a package installed into site-packages has no checkout)."""
    places = [REAL_DATA]
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        places.append(checkout / REAL_DATA)
    return places


def find_real_data() -> Path | None:
    """The first of :func:`real_data_places` that is a folder, resolved; None when there is none."""
    return next((p.resolve() for p in real_data_places() if p.is_dir()), None)


def exports_dir(workspace: str | Path, fmt: str) -> Path:
    """``<workspace>/exports/<fmt>``: where a workspace keeps its artefacts of format ``fmt``."""
    return Path(workspace) / "exports" / fmt


def export_artifact_path(workspace: str | Path, fmt: str) -> Path:
    """``<workspace>/exports/<fmt>/pinlite-student<suffix of fmt>``."""
    from pinlite_edge.export.formats import get_format

    return exports_dir(workspace, fmt) / f"{ARTEFACT_STEM}{get_format(fmt).suffix}"


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model ARTEFACT`` of the scoring CLIs (``detect``, ``scan``), optional: :func:`resolve_model` fills it in."""
    parser.add_argument("--model", type=Path, default=None,
                        help="artefact (.onnx, .pte, TensorRT engine, or .safetensors checkpoint) with its manifest "
                             "(default: the quickstart's ONNX student, "
                             f"{export_artifact_path(DEFAULT_WORKSPACE, DEFAULT_MODEL_FORMAT)})")


def resolve_model(given: Path | None, workspace: str | Path = DEFAULT_WORKSPACE) -> Path:
    """``given`` (``--model``), else the quickstart workspace's ONNX student (the model the README's main command
    builds); a :class:`~pinlite_edge.errors.UsageError` saying how to get one when it is not there."""
    if given is not None:
        return given
    path = export_artifact_path(workspace, DEFAULT_MODEL_FORMAT)
    if not path.is_file():
        raise UsageError(f"no --model given and no quickstart model at {path} (relative to {Path.cwd()}): build it "
                         "with `python -m pinlite_edge.quickstart` (or `python -m pinlite_edge.bench`, which builds "
                         "it first), or pass --model ARTEFACT (.onnx, .pte, TensorRT engine or .safetensors "
                         "checkpoint)")
    return path


__all__ = ["ARTEFACT_STEM", "DEFAULT_MODEL_FORMAT", "DEFAULT_WORKSPACE", "STAGES", "add_model_argument",
           "export_artifact_path", "resolve_model"]
