"""Python API: ``export_model(checkpoint, format, output_dir, **options)`` and ``export_from_model(model, ...)``."""
from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from pinlite_edge.errors import ExportError, ExportOptionError
from pinlite_edge.feature_version import FEATURE_VERSION
from pinlite_edge.export.calibration import CalibrationSet, load_calibration
from pinlite_edge.export.formats import ExportFormat, artifact_path, check_options, get_format
from pinlite_edge.export.options import ExportOptions
from pinlite_edge.export.plan import PrecisionPlan
from pinlite_edge.manifest import Manifest, publish_artifact, staging_path_for
from pinlite_edge.trained_on import training_data_from_record
from pinlite_edge.utils.atomic import check_writable_target, write_error
from pinlite_edge.utils.hashing import sha256_file

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    artifact: Path
    manifest: Path
    format: str
    precision: str
    plan: PrecisionPlan | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sensitivity(self) -> list:
        return list(self.plan.sensitivity) if self.plan else []


@dataclass
class HandlerOutput:
    """What a format function reports back; :func:`export_from_model` turns it into the manifest."""

    plan: PrecisionPlan | None = None
    dynamic_batch: bool = True
    max_batch: int | None = None
    calibration: dict[str, Any] | None = None
    target: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportContext:
    """Everything a format function needs: an eval-mode CPU copy of the model, options, paths, calibration data."""

    model: nn.Module
    fmt: ExportFormat
    options: ExportOptions
    artifact: Path
    work_dir: Path
    calibration_override: CalibrationSet | None = None
    progress: bool = False  # progress bars for the long steps (the sensitivity table)
    _calibration: CalibrationSet | None = None

    def calibration(self) -> CalibrationSet:
        if self._calibration is None:
            if self.calibration_override is not None:
                self._calibration = self.calibration_override.subset(self.options.calib_size)
            else:
                o = self.options
                log.info("loading %d calibration clips from %s (%s)", o.calib_size, o.calib_data, o.calib_split)
                self._calibration = load_calibration(o.calib_data, self.model.config.contract, o.calib_size,
                                                     o.calib_split, o.seed)
        return self._calibration


def tool_versions(*extra: str) -> dict[str, str]:
    """Versions of torch/onnx/onnxruntime and of any extra package named (only those importable)."""
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "onnx", "onnxruntime", *extra):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def check_path_argument(name: str, value: Any) -> None:
    """An :class:`ExportError` naming argument ``name`` unless ``value`` is a path (a ``str`` or ``Path``)."""
    if not isinstance(value, (str, Path)):
        raise ExportOptionError(f"{name} must be a path (str or Path), got {value!r}")


def export_from_model(model: nn.Module, format: str, output_dir: str | Path, *,
                      source_checkpoint: str | Path | None = None, calibration: CalibrationSet | None = None,
                      training_data: dict[str, Any] | None = None, operating_point: dict[str, Any] | None = None,
                      feature_version: int | None = FEATURE_VERSION, source_checkpoint_sha256: str | None = None,
                      progress: bool = False, **options: Any) -> ExportResult:
    """Export an in-memory model. ``calibration`` overrides ``calib_data`` (arrays already in memory);
    ``training_data`` is what the model was trained on (recorded in the manifest; :func:`export_model` takes it from
    the checkpoint record); so are ``operating_point``, the thresholds measured on genuine clips
    (``python -m pinlite_edge.calibrate``), and ``feature_version``, the feature pipeline it was trained for (None:
    not recorded; the default: this SDK's, for a model trained in this process). ``source_checkpoint_sha256``: the
    hash of the checkpoint file the model was loaded from (default: hashed when the export is done). ``progress``:
    progress bars for the long steps on stderr (the CLI's default; not an export option, not in the manifest)."""
    fmt = get_format(format)
    check_options(fmt, set(options))
    opts = ExportOptions(**options)
    opts.validate()
    check_path_argument("output_dir", output_dir)
    if not hasattr(model, "config"):
        raise ExportError("the model has no .config (export works on pinlite_edge AVSyncDetector models)")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportOptionError(f"output {output_dir} is a file, not a folder: give a folder for the artefact and its "
                          "manifest (--output DIR)")
    artifact = artifact_path(fmt, output_dir, model.config.kind, opts.name)
    if artifact.exists() and not opts.force:
        raise ExportOptionError(f"{artifact} already exists; pass force=True (--force) to overwrite it")
    check_writable_target(artifact)  # never replace a symlink, folder or device node
    made = _missing_parents(output_dir)  # folders this call creates: removed again if the export fails
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(output_dir, exc, "cannot create the output folder") from None
    if fmt.needs_gpu:
        log.info("format %s builds for an NVIDIA GPU", fmt.name)
    handler = fmt.load_handler()
    prepared = copy.deepcopy(model).cpu().eval()
    start = time.perf_counter()
    # The handler writes a staging file (a name unique to this process and call); publish_artifact() then swaps
    # artefact + manifest in as a pair, hashing the bytes it publishes, so a kill at any moment or a concurrent
    # export into the same folder never leaves an artefact beside another artefact's manifest.
    staged = staging_path_for(artifact)
    try:
        with tempfile.TemporaryDirectory(prefix="pinlite-export-") as tmp:
            ctx = ExportContext(prepared, fmt, opts, staged, Path(tmp), calibration, progress=progress)
            out: HandlerOutput = handler(ctx)
    except BaseException:
        staged.unlink(missing_ok=True)
        for folder in made:  # innermost first; a folder something else wrote into stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    seconds = time.perf_counter() - start
    if not staged.is_file():
        raise ExportError(f"format {fmt.name} finished without writing {artifact}")
    config = model.config
    src_sha = source_checkpoint_sha256 or (sha256_file(source_checkpoint) if source_checkpoint is not None else None)
    manifest = Manifest(
        format=fmt.name, runtime=fmt.runtime, precision=fmt.precision, artifact=artifact.name, artifact_sha256="",
        model_kind=config.kind, preset=config.preset, model_config=config.to_dict(),
        input_contract=config.contract.to_dict(), dynamic_batch=out.dynamic_batch, max_batch=out.max_batch,
        precision_plan=out.plan.to_dict() if out.plan else {"precision": fmt.precision, "float_layers": []},
        source_checkpoint=str(source_checkpoint) if source_checkpoint is not None else None,
        source_checkpoint_sha256=src_sha, calibration=out.calibration, training_data=training_data,
        operating_point=operating_point, feature_version=feature_version,
        tool_versions={**tool_versions(), **out.tool_versions}, target=out.target,
        extra={"export_options": _recorded_options(opts, fmt, calibration), "export_seconds": round(seconds, 2),
               **out.extra},
    )
    try:
        manifest_file = publish_artifact(staged, artifact, manifest)
    finally:
        staged.unlink(missing_ok=True)  # published: already renamed away; failed: not left behind
    log.info("exported %s -> %s (%.1f s)", fmt.name, artifact, seconds)
    return ExportResult(artifact, manifest_file, fmt.name, fmt.precision, out.plan, seconds, out.extra)


def _recorded_options(opts: Any, fmt: Any, calibration: Any) -> dict[str, Any]:
    """The options of ``fmt`` as used: with a calibration set given by the caller, where the calibration clips would
    have come from (``calib_data``, ``calib_split``) was not used, and the manifest's ``calibration`` says what was
    (the record used to name the synthetic default beside a calibration of real clips)."""
    recorded = {k: v for k, v in opts.to_dict().items() if k in fmt.allowed_options}
    if calibration is not None:
        for key in ("calib_data", "calib_split"):
            if key in recorded:
                recorded[key] = "not used: a calibration set was given (the manifest's calibration says which)"
    return recorded


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def export_model(checkpoint: str | Path, format: str, output_dir: str | Path, *, progress: bool = False,
                 **options: Any) -> ExportResult:
    """Load ``checkpoint`` (safetensors + JSON record) and export it; see :data:`FORMATS` for formats/options.
    ``progress``: as for :func:`export_from_model`."""
    from pinlite_edge.checkpoint import load_checkpoint

    fmt = get_format(format)  # fail on a bad format before loading anything
    check_options(fmt, set(options) - {"calibration"})
    check_path_argument("checkpoint", checkpoint)
    check_path_argument("output_dir", output_dir)
    model, record = load_checkpoint(checkpoint)
    loaded_sha = record["weights_sha256"]  # the file's sha256 when its record was read
    if sha256_file(checkpoint) != loaded_sha:  # e.g. calibrate rewrote it meanwhile: the record may be the old one
        raise ExportError(f"{checkpoint} changed while it was being loaded (a calibration or training run writing "
                          "it?); nothing was exported, run the export again")
    # the manifest names the bytes that were loaded, not a file calibrate may rewrite while the export runs
    return export_from_model(model, format, output_dir, source_checkpoint=checkpoint,
                             source_checkpoint_sha256=loaded_sha,
                             training_data=training_data_from_record(record),
                             operating_point=record.get("operating_point"),
                             feature_version=record.get("feature_version"), progress=progress, **options)
