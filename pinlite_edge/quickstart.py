"""End-to-end quickstart: teacher -> distilled student -> pruned student -> exports -> summary.

    python -m pinlite_edge.quickstart [--workspace ./pinlite-workspace] [--real-data DIR|none] [--smoke] [--force]

Training data: the synthetic generator, plus real talking-face video when a folder of in-sync real clips is given
(``--real-data DIR``; by default ``../shared/data/real-av`` when it exists). Real clips are used self-supervised:
every in-sync window is a real sample, and the same window with its audio shifted (every offset -5..+5 frames and
"far" shifts beyond) or swapped with another speaker's is a fake (``pinlite_edge.data.syncpairs``). A folder laid out
like ``../shared/data/real-av`` uses the speaker-disjoint split shipped in ``pinlite_edge/data/splits/real_av.json``;
any other folder is split by a hash of each clip's speaker group (or file name). Every checkpoint and exported
manifest records what it was trained on (``training_data``).

Stages already finished in the workspace are reused (a stage interrupted half-way is resumed); ``--force`` redoes
them. ``--smoke`` runs a handful of clips for one epoch per stage (a CI check that every stage runs, not a result).
The summary is printed as a table shaped like the paper's Table 2 and written to ``<workspace>/summary.json`` (a list
of rows with keys model, params, size_mb, gflops, latency_ms, accuracy, precision, recall, f1, auc, eps, real_auc;
metrics are fractions in 0..1 on the synthetic TEST split, EPS against the teacher's attention, ``real_auc`` the AUC
on the real clips' test-split sync pairs, window level (None without real data); latency is the median of batch-1 eager CPU runs;
GFLOPs from torch's FlopCounterMode, 1 MAC = 2 FLOPs).

Workspace layout (docs/architecture.md): ``cache/``, ``teacher/``, ``distilled/``, ``pruned/``, ``exports/``,
``summary.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from pinlite_edge.checkpoint import load_checkpoint
from pinlite_edge.data.reencode import CALIBRATION_REENCODINGS
from pinlite_edge.errors import PinliteError, UsageError
from pinlite_edge.models.config import ModelConfig, student_config, teacher_config
from pinlite_edge.utils.atomic import atomic_write_json, finite_json, folder_lock, make_output_folder
from pinlite_edge.utils.hashing import sha256_file
from pinlite_edge.workspace_layout import (ARTEFACT_STEM, DEFAULT_WORKSPACE, REAL_DATA, STAGES, export_artifact_path,
                                           exports_dir, find_real_data, real_data_places)

log = logging.getLogger("pinlite_edge.quickstart")

SUMMARY_KEYS = ("model", "params", "size_mb", "gflops", "latency_ms", "accuracy", "precision", "recall", "f1", "auc",
                "eps", "real_auc", "checkpoint_sha256")  # the last: which checkpoint the row evaluated
#: Formats the quickstart exports (CPU-buildable ones; TensorRT needs a GPU) and their options.
EXPORT_FORMATS: tuple[tuple[str, dict[str, Any]], ...] = (("onnx", {}), ("onnx-int8", {"calib_size": 64}))
SMOKE_EXPORT_FORMATS: tuple[tuple[str, dict[str, Any]], ...] = (("onnx", {}),)


#: the model preset the quickstart trains (CPU-sized)
PRESET = "tiny"
#: the model kind each training stage builds
STAGE_KINDS = {"teacher": "teacher", "distilled": "student", "pruned": "student"}


@dataclass
class QuickstartConfig:
    """Sizes and schedules of the quickstart (defaults: the full run; :meth:`smoke` the CI run)."""

    workspace: str = str(DEFAULT_WORKSPACE)
    force: bool = False
    seed: int = 0
    device: str = "auto"
    #: synthetic generator sizes (with real data, each epoch is these clips + as many balanced real windows)
    data_options: dict[str, Any] = field(default_factory=lambda: {"num_train": 800, "num_val": 160,
                                                                  "num_test": 400})
    batch_size: int = 16
    teacher_epochs: int = 7
    teacher_lr: float = 2e-3
    distill_epochs: int = 5
    distill_lr: float = 2e-3
    prune_epochs: int = 1
    prune_lr: float = 1e-5
    prune_steps: int = 2
    #: "ablation", not SPEC's "l1": on the tiny student the L1 norms of the heads are nearly equal and pick a head
    #: whose removal costs about 10 points (benchmarks/results/pruning/)
    prune_importance: str = "ablation"
    num_workers: int = 0
    progress: bool = True
    latency_runs: int = 7
    exports: bool = True
    export_formats: tuple[tuple[str, dict[str, Any]], ...] = EXPORT_FORMATS
    #: folder of in-sync real talking-face clips: "auto" (../shared/data/real-av when present), a path, or None
    real_data: str | None = "auto"
    #: speaker-disjoint split of the real clips (a split file's path or a shipped split's name, e.g. for a
    #: cross-validation fold); None: the shipped ``real_av`` split when the folder holds its clips, else a hash split
    split_file: str | None = None
    #: ModelConfig field overrides of the teacher and the student (e.g. ``{"appearance_input": False}``); a stage
    #: in the workspace built with other values for these fields is rebuilt
    model_options: dict[str, Any] = field(default_factory=dict)
    #: weight of the pair-ranking loss in every stage (pinlite_edge.training.losses; 0: off); a stage in the workspace
    #: built with another weight is rebuilt
    pair_weight: float = 0.0
    #: share of every training epoch drawn from the real sync pairs (the rest: the synthetic generator)
    real_weight: float = 0.5
    #: window stride over the real clips (seconds): every window gives a real sample and its shifted/swapped fakes
    real_stride_seconds: float = 0.32
    #: window stride of the real TRAIN split: dense, so window/shift pairs rarely repeat and cannot be memorised (with
    #: 0.32 s the teacher memorised the training clips: window AUC 0.50 on the real test split)
    real_train_stride_seconds: float = 0.04
    #: samples per epoch of each stage when real data is used (half synthetic, half real): what fits the 10-minute
    #: budget of the quickstart on a 2-core CPU (the natural epoch, every balanced real window once, is ~4700)
    teacher_epoch_size: int = 2000
    distill_epoch_size: int = 1000
    prune_epoch_size: int = 600
    #: fakes per real window (pinlite_edge.data.syncpairs.SyncPairConfig): a balanced epoch draws as many fakes as
    #: reals anyway, so a few per window keep the validation split small without starving training
    real_sync_pairs: dict[str, Any] = field(default_factory=lambda: {"shifts_per_window": 3, "far_per_window": 1,
                                                                     "swaps_per_window": 1})
    #: with real data, the exported student's verdict thresholds are measured on the genuine train + dev clips
    #: (pinlite_edge.calibrate): at most this share of them may be called fake (never a threshold below 0.5)
    target_fpr: float = 0.05
    #: and on copies of each re-encoded these ways (pinlite_edge.data.reencode): a genuine clip's scan score moves by
    #: ~0.1 under one more encoding, so a threshold measured on the clips alone calls more re-encoded genuine videos
    #: fake than ``target_fpr`` (benchmarks/results/real_faces_reencode/)
    calibration_reencodings: tuple[str, ...] = CALIBRATION_REENCODINGS

    @classmethod
    def smoke(cls, **overrides: Any) -> "QuickstartConfig":
        base = dict(data_options={"num_train": 8, "num_val": 4, "num_test": 4}, batch_size=4, teacher_epochs=1,
                    distill_epochs=1, prune_epochs=1, prune_steps=1, latency_runs=2,
                    export_formats=SMOKE_EXPORT_FORMATS, real_train_stride_seconds=0.32, teacher_epoch_size=16,
                    distill_epoch_size=16, prune_epoch_size=16, calibration_reencodings=())
        base.update(overrides)
        return cls(**base)


def resolve_real_data(value: str | None) -> Path | None:
    """The real-clip folder to train on: ``"auto"``: :func:`~pinlite_edge.workspace_layout.find_real_data`;
    ``None``/``"none"``: none."""
    if value is None or str(value).strip().lower() in ("", "none", "off", "no"):
        return None
    if str(value).strip().lower() == "auto":
        found = find_real_data()
        if found is None:
            log.warning("no real clips found in %s: training on synthetic data only (pass --real-data DIR)",
                        " or ".join(str(p.resolve()) for p in real_data_places()))
        return found
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UsageError(f"--real-data {value}: not a folder of video clips")
    return path.resolve()


def _shipped_split_for(root: Path) -> str | None:
    """``"real_av"`` when ``root`` holds every clip of the shipped real-av split, else None (hash split)."""
    from pinlite_edge.data.splits import REAL_AV_SPLIT, read_split_file

    try:
        records = read_split_file(REAL_AV_SPLIT)
    except PinliteError:
        return None
    return "real_av" if all((root / name).is_file() for name in records) else None


def _split_for(cfg: QuickstartConfig, real: Path) -> str | None:
    """The split file the real clips are split by: ``cfg.split_file``, else the shipped one when it fits."""
    return cfg.split_file if cfg.split_file is not None else _shipped_split_for(real)


def real_options(cfg: QuickstartConfig, real: Path) -> dict[str, Any]:
    """Options of the real-clip ``folder:`` dataset (sync pairs, strides, split file), as every stage uses them."""
    options: dict[str, Any] = {"sync_pairs": dict(cfg.real_sync_pairs), "stride_seconds": cfg.real_stride_seconds,
                               "train_stride_seconds": cfg.real_train_stride_seconds}
    split = _split_for(cfg, real)
    if split is not None:
        options["split_file"] = split
    return options


def _data(cfg: QuickstartConfig, real: Path | None) -> tuple[str | list[str], dict[str, Any]]:
    """The ``data`` spec(s) and options of every stage: synthetic, or synthetic + real sync pairs."""
    if real is None:
        return "synthetic", dict(cfg.data_options)
    options: dict[str, Any] = {f"synthetic.{k}": v for k, v in cfg.data_options.items()}
    options.update({f"folder.{k}": v for k, v in real_options(cfg, real).items()})
    options.update({"synthetic.weight": 1.0 - cfg.real_weight, "folder.weight": cfg.real_weight})
    return ["synthetic", f"folder:{real}"], options


def _common(cfg: QuickstartConfig, ws: Path, real: Path | None = None) -> dict[str, Any]:
    data, options = _data(cfg, real)
    return dict(data=data, preset=PRESET, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                num_workers=cfg.num_workers, data_options=options, progress=cfg.progress,
                cache_dir=str(ws / "cache"), in_memory="yes", pair_weight=cfg.pair_weight)


def _stage_dir(ws: Path, stage: str) -> Path:
    return ws / stage


# --------------------------------------------------------------------------------------------- what is complete
COMPLETE, MISSING, UNFINISHED, CORRUPT, STALE = "complete", "missing", "unfinished", "corrupt", "stale"


@dataclass
class WorkspaceStatus:
    """What a quickstart workspace holds, checked by content (hashes), not by the files' existence.

    Each entry is ``(state, detail)``; state is ``complete``, ``missing``, ``unfinished`` (a training run that can
    be resumed), ``corrupt`` (a checkpoint that does not verify) or ``stale`` (an export or summary that does not
    verify or was made from another checkpoint)."""

    workspace: Path
    stages: dict[str, tuple[str, str]]
    exports: dict[str, tuple[str, str]]
    summary: tuple[str, str]
    #: complete stages built with another recipe than today's preset (stage -> how it differs): usable, but
    #: not what ``python -m pinlite_edge.quickstart`` builds now (it rebuilds them)
    outdated: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def missing(self) -> list[str]:
        """One line per part that is not complete, e.g. ``"distilled/ (unfinished: ...)"`` (empty: complete)."""
        out = [f"{name}/ ({state}: {detail})" for name, (state, detail) in self.stages.items() if state != COMPLETE]
        out += [f"exports/{fmt} ({state}: {detail})" for fmt, (state, detail) in self.exports.items()
                if state != COMPLETE]
        if self.summary[0] != COMPLETE:
            out.append(f"summary.json ({self.summary[0]}: {self.summary[1]})")
        return out


def _sha256(path: Path, hashes: dict[Path, str] | None) -> str:
    """:func:`sha256_file` of ``path``, computed once per ``hashes`` (one status call's memo; None: no memo)."""
    if hashes is None:
        return sha256_file(path)
    if path not in hashes:
        hashes[path] = sha256_file(path)
    return hashes[path]


def stage_status(out: Path, hashes: dict[Path, str] | None = None) -> tuple[str, str]:
    """``(state, detail)`` of one training stage folder: its best checkpoint must verify and record a finished run.
    ``hashes``: the memo the checkpoint's sha256 goes into (reading the record hashes the file)."""
    from pinlite_edge.errors import CheckpointError
    from pinlite_edge.checkpoint import read_record

    best = out / "best.safetensors"
    try:
        has_anything = out.is_dir() and any(out.iterdir())
    except OSError as exc:
        return CORRUPT, f"cannot read {out}: {exc.strerror or exc}"
    if not has_anything:
        return MISSING, f"no training run in {out}"
    if not best.exists():
        return UNFINISHED, f"a run was started in {out}, no best checkpoint yet"
    try:
        record = read_record(best)
    except CheckpointError as exc:
        return CORRUPT, str(exc)
    if hashes is not None:
        hashes[best] = record["weights_sha256"]  # the sha256 of the file as it is now
    if not record.get("complete"):
        return UNFINISHED, f"the run in {out} did not finish (epoch {record.get('epoch', '?')})"
    return COMPLETE, str(best)


def export_status(ws: Path, fmt: str, checkpoint: Path | None,
                  hashes: dict[Path, str] | None = None) -> tuple[str, str]:
    """An export is complete when its manifest verifies (artefact hash, content hash) and it was exported from
    ``checkpoint`` as it is now (the source checkpoint's sha256 in the manifest; ``hashes``: see :func:`_sha256`)."""
    from pinlite_edge.errors import ManifestError
    from pinlite_edge.manifest import manifest_path_for, read_manifest

    artefact = export_artifact_path(ws, fmt)
    if not artefact.exists() and not manifest_path_for(artefact).exists():
        return MISSING, f"no {artefact.name}"
    try:
        manifest = read_manifest(artefact)
    except ManifestError as exc:
        return STALE, str(exc)
    if checkpoint is None or not checkpoint.is_file():
        return STALE, "the pruned checkpoint it comes from is missing"
    if manifest.source_checkpoint_sha256 != _sha256(checkpoint, hashes):
        return STALE, f"exported from another checkpoint than {checkpoint}"
    return COMPLETE, str(artefact)


def summary_status(ws: Path, hashes: dict[Path, str] | None = None) -> tuple[str, str]:
    """summary.json must hold a row per stage, each for the stage's checkpoint as it is: by the sha256 the row
    records (a copy of the workspace that did not keep file times is still complete), or, in a summary written before
    rows recorded it, by being newer than every stage checkpoint (``hashes``: see :func:`_sha256`)."""
    import json

    path = ws / "summary.json"
    if not path.is_file():
        return MISSING, "no summary.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        models = [r["model"] for r in rows]
    except (ValueError, RecursionError, OSError, TypeError, KeyError) as exc:
        return STALE, f"summary.json is unreadable ({exc})"
    if models != list(STAGES):
        return STALE, f"summary.json has rows {models}, expected {list(STAGES)}"
    for row in rows:  # the rows are printed and returned as they are: a value of another type is not a summary
        bad = [k for k in SUMMARY_KEYS if k not in ("model", "checkpoint_sha256")
               and not (row.get(k) is None or (isinstance(row.get(k), (int, float))
                                               and not isinstance(row.get(k), bool)))]
        if bad:
            return STALE, f"summary.json row {row['model']} has values that are not numbers: {bad}"
    written = path.stat().st_mtime
    for stage, row in zip(STAGES, rows):
        best = _stage_dir(ws, stage) / "best.safetensors"
        if not best.is_file():
            continue
        recorded = row.get("checkpoint_sha256") if isinstance(row, dict) else None
        if recorded is not None:
            if recorded != _sha256(best, hashes):
                return STALE, f"{stage} is not the checkpoint summary.json evaluated (rebuilt since)"
        elif best.stat().st_mtime > written:
            return STALE, f"{stage} was rebuilt after summary.json was written"
    return COMPLETE, str(path)


def workspace_status(workspace: str | Path,
                     export_formats: Sequence[tuple[str, dict[str, Any]]] = EXPORT_FORMATS) -> WorkspaceStatus:
    """Is this workspace complete, and what is missing? Checked by content, reading only (nothing is written).

    ``export_formats``: the formats a complete workspace holds (the quickstart's default: ONNX FP32 and INT8)."""
    ws = Path(workspace)
    hashes: dict[Path, str] = {}  # each stage checkpoint is hashed once in this call
    stages = {stage: stage_status(_stage_dir(ws, stage), hashes) for stage in STAGES}
    pruned = _stage_dir(ws, "pruned") / "best.safetensors"
    pruned_ok = stages["pruned"][0] == COMPLETE
    exports = {fmt: export_status(ws, fmt, pruned if pruned_ok else None, hashes) for fmt, _ in export_formats}
    outdated = {stage: differ for stage, (state, _) in stages.items() if state == COMPLETE
                and (differ := _recipe_differs(_stage_dir(ws, stage), {}, {}, STAGE_KINDS[stage]))}
    return WorkspaceStatus(ws, stages, exports, summary_status(ws, hashes), outdated)


# --------------------------------------------------------------------------------------------- stages
def _recipe_differs(out: Path, model_options: dict[str, Any], train_options: dict[str, Any],
                    kind: str | None = None) -> str | None:
    """How the stage's recorded model config differs from ``model_options``, or (``kind`` given) from the
    ``kind``'s preset config with those options (every field but the heads, which pruning changes), and its training
    config from ``train_options`` (``{field: (value asked for, value of a record without the field)}``); None: it
    agrees, or has no readable record. Records written before a config field existed read as that field's
    ``ModelConfig.from_dict`` default, so a preset that gained a field rebuilds workspaces built without it."""
    try:
        record = json.loads((out / "best.json").read_text(encoding="utf-8"))
        model, train = record["model_config"], record.get("config") or {}
        model = ModelConfig.from_dict(model).to_dict()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no readable record: stage_status decides
    differ = [f"model option {k}={model.get(k)!r}, asked for {v!r}" for k, v in model_options.items()
              if model.get(k) != v]
    if kind is not None:
        preset = (teacher_config if kind == "teacher" else student_config)(PRESET).to_dict()
        differ += [f"model {k}={model.get(k)!r}, the {PRESET} {kind} preset now has {v!r}" for k, v in preset.items()
                   if k not in model_options and k != "heads_per_layer" and model.get(k) != v]
    differ += [f"{k}={train.get(k, missing)!r}, asked for {v!r}" for k, (v, missing) in train_options.items()
               if train.get(k, missing) != v]
    return "; ".join(differ) or None


def _run_stage(name: str, ws: Path, force: bool, run: Any, upstream_rebuilt: bool = False,
               model_options: dict[str, Any] | None = None,
               train_options: dict[str, tuple[Any, Any]] | None = None) -> tuple[Path, bool]:
    """Run one training stage unless its checkpoint is complete; returns (best checkpoint, whether it ran)."""
    out = _stage_dir(ws, name)
    state, detail = stage_status(out)
    redo = None
    if force and state != MISSING:
        redo = "--force"
    elif state == CORRUPT:
        redo = f"its checkpoint does not verify ({detail})"
    elif upstream_rebuilt and state != MISSING:
        redo = "the stage it starts from was rebuilt in this run"
    elif state != MISSING and (differ := _recipe_differs(out, model_options or {}, train_options or {},
                                                         STAGE_KINDS[name])):
        redo = f"it was built with another recipe ({differ})"
    if redo is not None:
        log.info("stage %s: redoing it from scratch: %s", name, redo)
        shutil.rmtree(out)
        state = MISSING
    if state == COMPLETE:
        log.info("stage %s: reusing %s (its checkpoint verifies; pass --force to redo it)", name,
                 out / "best.safetensors")
        return out / "best.safetensors", False
    resume = state == UNFINISHED
    log.info("stage %s: %s", name, f"resuming: {detail}" if resume else f"building in {out}")
    t0 = time.perf_counter()
    run(out, resume)
    log.info("stage %s done in %.1f s", name, time.perf_counter() - t0)
    return out / "best.safetensors", True


def _export_stage(workspace: Path, checkpoint: Path, formats: Sequence[tuple[str, dict[str, Any]]] = EXPORT_FORMATS,
                  force: bool = False, real: Path | None = None,
                  folder_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Export the pruned student to ``<workspace>/exports/<format>/pinlite-student<suffix>``.

    An export whose manifest verifies and that was made from ``checkpoint`` as it is now is reused; any other is
    (re)built, published atomically over what was there. An export that fails is logged and recorded, the training
    results stay valid. Returns one dict per format.
    """
    from pinlite_edge.export.api import export_model

    results = []
    for fmt, options in formats:
        out_dir = exports_dir(workspace, fmt)
        artefact = export_artifact_path(workspace, fmt)
        state, detail = export_status(workspace, fmt, checkpoint)
        if state == COMPLETE and not force:
            log.info("export %s: reusing %s (it verifies and comes from %s)", fmt, artefact, checkpoint)
            results.append({"format": fmt, "path": str(artefact), "reused": True})
            continue
        log.info("export %s: %s", fmt, "--force" if force else f"building ({state}: {detail})")
        options = dict(options)
        if real is not None and "calib_size" in options:
            # calibrate on what the model sees: half synthetic clips, half real mouth crops (un-augmented)
            options["calibration"] = _calibration(int(options.pop("calib_size")), real, folder_options or {})
        try:
            res = export_model(checkpoint, fmt, out_dir, name=ARTEFACT_STEM, force=True, **options)
        except PinliteError as exc:
            log.warning("export %s FAILED: %s", fmt, exc)
            results.append({"format": fmt, "error": str(exc)})
            continue
        log.info("exported %s -> %s", fmt, res.artifact)
        results.append({"format": fmt, "path": str(res.artifact)})
    return results


def _calibrate_stage(checkpoint: Path, real: Path, cfg: QuickstartConfig, redo: bool) -> bool:
    """Measure the student's operating point on the genuine train + dev clips and store it in its checkpoint (the
    exports copy it into their manifests); returns whether it ran. A checkpoint that has one is reused."""
    from pinlite_edge.calibrate import calibrate_checkpoint
    from pinlite_edge.checkpoint import read_record
    from pinlite_edge.operating_point import AGGREGATES

    stored = read_record(checkpoint).get("operating_point") or {}
    same_copies = list(stored.get("reencodings") or ()) == list(cfg.calibration_reencodings)
    if not redo and set(AGGREGATES) <= set(stored.get("thresholds") or {}) and same_copies:
        log.info("operating point: reusing the one in %s", checkpoint)
        return False
    if stored and not redo:
        log.info("operating point in %s %s: measuring it again", checkpoint,
                 "was measured on other re-encoded copies" if not same_copies else
                 f"lacks thresholds for {sorted(set(AGGREGATES) - set(stored.get('thresholds') or {}))}")
    t0 = time.perf_counter()
    try:
        point = calibrate_checkpoint(checkpoint, real, split_file=_split_for(cfg, real), splits=("train", "dev"),
                                     target_fpr=cfg.target_fpr, reencodings=cfg.calibration_reencodings,
                                     progress=cfg.progress)
    except PinliteError as exc:
        log.warning("operating point NOT measured (%s): the student keeps the uncalibrated threshold 0.5, which "
                    "called most genuine clips fake in benchmarks/results/real_clip_verdicts", exc)
        return False
    log.info("operating point: thresholds %s, short clips %s, on %s (whole-clip scores called fake at 0.5: %s; at "
             "the thresholds: %s), %.1f s", {k: round(v, 4) for k, v in point.thresholds.items()},
             {k: round(v, 4) for k, v in point.short_thresholds.items()}, point.describe_clips(),
             {k: round(v, 3) for k, v in point.fpr_at_default.items()},
             {k: round(v, 3) for k, v in point.fpr_at_threshold.items()}, time.perf_counter() - t0)
    return True


def _calibration(size: int, real: Path, folder_options: dict[str, Any]) -> Any:
    from pinlite_edge.contract import TINY_CONTRACT
    from pinlite_edge.export.calibration import concat_calibration, load_calibration

    half = max(1, size // 2)
    return concat_calibration([load_calibration("synthetic", TINY_CONTRACT, size - half),
                               load_calibration(f"folder:{real}", TINY_CONTRACT, half, options=folder_options)])


def _test_loader(cfg: QuickstartConfig, ws: Path, data: str, options: dict[str, Any]) -> Any:
    from pinlite_edge.contract import TINY_CONTRACT
    from pinlite_edge.training.config import TrainConfig
    from pinlite_edge.training.context import load_data
    from pinlite_edge.training.data import make_loader

    # real sync pairs: thousands of windows (x15 audio variants); read them from the feature cache, not from RAM
    common = {**_common(cfg, ws), "data": data, "data_options": options, "progress": False,
              "in_memory": "yes" if data == "synthetic" else "no"}
    return make_loader(load_data(TrainConfig(**common), TINY_CONTRACT, "test", progress=False), 32)


def evaluate_models(checkpoints: dict[str, Path], cfg: QuickstartConfig, ws: Path,
                    real: Path | None = None) -> list[dict[str, Any]]:
    """Test-split metrics and costs of every checkpoint; EPS against the first one (the teacher).

    The classification columns and EPS are measured on the synthetic test split; ``real_auc`` (with real data) is
    the window-level ROC AUC on the real test split's sync pairs (in-sync windows vs shifted/swapped audio).
    """
    from pinlite_edge.training.evaluate import evaluate
    from pinlite_edge.training.profile import model_costs

    loader = _test_loader(cfg, ws, "synthetic", dict(cfg.data_options))
    real_loader = None
    if real is not None:
        real_loader = _test_loader(cfg, ws, f"folder:{real}", real_options(cfg, real))
    device = torch.device("cpu")
    rows, reference = [], None
    for name, path in checkpoints.items():
        model, _ = load_checkpoint(path)
        result = evaluate(model, loader, device, reference_attention=reference)
        if reference is None:
            reference = result.attention
            result = evaluate(model, loader, device, reference_attention=reference)
        m = result.metrics
        real_auc = evaluate(model, real_loader, device).metrics["auc"] if real_loader is not None else None
        row = {"model": name, **model_costs(model, path, latency_runs=cfg.latency_runs),
               **{k: m[k] for k in ("accuracy", "precision", "recall", "f1", "auc", "eps")}, "real_auc": real_auc,
               "checkpoint_sha256": sha256_file(path)}
        rows.append({k: finite_json(row[k]) for k in SUMMARY_KEYS})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<10} {'size_mb':>8} {'params':>9} {'gflops':>7} {'latency_ms':>10} {'accuracy':>8} "
            f"{'precision':>9} {'recall':>7} {'f1':>6} {'auc':>6} {'eps':>6} {'real_auc':>8}")
    lines = [head, "-" * len(head)]

    def f(v: Any, spec: str) -> str:
        return "n/a" if v is None else format(v, spec)

    for r in rows:
        lines.append(f"{r['model']:<10} {f(r['size_mb'], '8.3f')} {r['params']:>9} {f(r['gflops'], '7.4f')} "
                     f"{f(r['latency_ms'], '10.2f')} {f(r['accuracy'], '8.4f')} {f(r['precision'], '9.4f')} "
                     f"{f(r['recall'], '7.4f')} {f(r['f1'], '6.3f')} {f(r['auc'], '6.3f')} {f(r['eps'], '6.3f')} "
                     f"{f(r.get('real_auc'), '8.3f')}")
    return "\n".join(lines)


def run_quickstart(cfg: QuickstartConfig) -> list[dict[str, Any]]:
    """Build the workspace, or finish a half-built one, and write ``summary.json``; returns its rows.

    Each stage checks what is complete by content (:func:`workspace_status`): a training stage whose checkpoint
    verifies and records a finished run is reused, an unfinished one is resumed, a corrupt one (or one whose input
    stage was rebuilt in this run) is redone; an export whose manifest verifies and names the current pruned
    checkpoint is reused, any other is rebuilt; the summary is reused when nothing changed. Every decision is logged.
    """
    from pinlite_edge.training.config import check_pair_weight

    if not 0.0 < cfg.real_weight < 1.0:
        raise UsageError(f"real_weight must be between 0 and 1 (its share of each epoch), got {cfg.real_weight}")
    ws = Path(cfg.workspace)
    make_output_folder(ws, "--workspace")  # a file, /proc/x, a read-only place: one line, before any work
    real = resolve_real_data(cfg.real_data)
    if cfg.split_file is not None:
        if real is None:
            raise UsageError(f"--split-file {cfg.split_file} splits the real clips, but there are none (--real-data "
                             f"{cfg.real_data}): give --real-data DIR")
        from pinlite_edge.data.splits import read_split_file

        read_split_file(cfg.split_file)  # a malformed file fails here, not half-way through the teacher stage
    if cfg.model_options:  # a bad option fails here, before any finished stage is redone for it
        from pinlite_edge.training.models import check_model_options

        for kind in ("teacher", "student"):
            try:
                check_model_options(kind, PRESET, dict(cfg.model_options))
            except PinliteError as exc:
                raise UsageError(f"--model-option: {exc}") from None
    check_pair_weight(cfg.pair_weight)  # before any stage, not when the teacher stage starts training
    from pinlite_edge.data.syncpairs import SyncPairConfig

    try:  # bad sync-pair fields fail here, before any finished stage is redone for them
        SyncPairConfig.from_value(dict(cfg.real_sync_pairs), "--sync-pairs")
    except PinliteError as exc:
        raise UsageError(f"--sync-pairs: {exc}") from None
    if real is None and cfg.real_sync_pairs != QuickstartConfig().real_sync_pairs:
        raise UsageError("--sync-pairs sets the fakes made from real clips, but there are none (--real-data "
                         f"{cfg.real_data}): give --real-data DIR")
    # one build of a workspace at a time: two (a quickstart and a bench, two terminals) trained every stage into the
    # same folders at once, each resuming the other's checkpoints; the second now waits, then reuses what is done
    with folder_lock(ws, "building the workspace", waiting=f"another process is building {ws} (a quickstart or a "
                     "bench); waiting for it to finish, then reusing what it built"):
        return _build(cfg, ws, real)


def _build(cfg: QuickstartConfig, ws: Path, real: Path | None) -> list[dict[str, Any]]:
    """:func:`run_quickstart`'s stages, once its options are checked, under the workspace's lock."""
    from pinlite_edge.training.config import DistillConfig, PruneConfig, TeacherConfig, TrainConfig
    from pinlite_edge.training.distill import distill
    from pinlite_edge.training.prune import prune
    from pinlite_edge.training.teacher import train_teacher

    log.info("training data: synthetic generator%s", f" + real clips in {real}" if real else " only")
    common = _common(cfg, ws, real)
    # training options a finished stage must have been built with: (asked for, what a record without the field used)
    recipe = {"pair_weight": (cfg.pair_weight, TrainConfig.pair_weight),
              "data_options": (json.loads(json.dumps(common["data_options"])), None)}
    def size(n: int) -> int | None:
        return n if real is not None else None  # synthetic only: every clip once per epoch, as before

    teacher, ran = _run_stage("teacher", ws, cfg.force, lambda out, resume: train_teacher(TeacherConfig(
        **common, epochs=cfg.teacher_epochs, lr=cfg.teacher_lr, output=str(out), resume=resume,
        epoch_size=size(cfg.teacher_epoch_size), model_options=dict(cfg.model_options))),
        model_options=cfg.model_options, train_options=recipe)
    distilled, ran_d = _run_stage("distilled", ws, cfg.force, lambda out, resume: distill(DistillConfig(
        **common, epochs=cfg.distill_epochs, lr=cfg.distill_lr, output=str(out), resume=resume,
        teachers=[str(teacher)], epoch_size=size(cfg.distill_epoch_size), model_options=dict(cfg.model_options))),
        upstream_rebuilt=ran, model_options=cfg.model_options, train_options=recipe)
    ran = ran or ran_d
    pruned, ran_p = _run_stage("pruned", ws, cfg.force, lambda out, resume: prune(PruneConfig(
        **common, epochs=cfg.prune_epochs, lr=cfg.prune_lr, output=str(out), resume=resume, student=str(distilled),
        teachers=[str(teacher)], prune_steps=cfg.prune_steps, importance=cfg.prune_importance,
        epoch_size=size(cfg.prune_epoch_size))), upstream_rebuilt=ran, train_options=recipe,
        model_options=cfg.model_options)
    ran = ran or ran_p
    if real is not None:
        ran = _calibrate_stage(pruned, real, cfg, redo=cfg.force or ran_p) or ran
    if cfg.exports:
        _export_stage(ws, pruned, cfg.export_formats, force=cfg.force, real=real,
                      folder_options=real_options(cfg, real) if real else None)
    state, detail = summary_status(ws)
    if state == COMPLETE and not ran and not cfg.force:
        log.info("summary: reusing %s", ws / "summary.json")
        return json.loads((ws / "summary.json").read_text(encoding="utf-8"))
    log.info("summary: evaluating the three models (%s)", "stages rebuilt" if ran else f"{state}: {detail}")
    rows = evaluate_models({"teacher": teacher, "distilled": distilled, "pruned": pruned}, cfg, ws, real)
    atomic_write_json(ws / "summary.json", rows)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from pinlite_edge.utils.cli import OneLineParser, configure_logging, key_value, run_command

    p = OneLineParser(prog="python -m pinlite_edge.quickstart", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", default=str(DEFAULT_WORKSPACE), help="workspace folder (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="a handful of clips, one epoch per stage (seconds; CI)")
    p.add_argument("--force", action="store_true", help="redo finished stages instead of reusing them")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (default: %(default)s)")
    p.add_argument("--device", default="auto", help="training device: auto | cpu | cuda; the table's latency is "
                                                    "always measured on the CPU (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-export", action="store_true", help="skip the export stage")
    p.add_argument("--real-data", default="auto", metavar="DIR",
                   help="folder of in-sync real talking-face clips to train on besides the synthetic generator "
                        "(searched recursively); 'auto' uses %s when it exists, from the working directory or beside "
                        "this checkout; 'none' trains on synthetic data only (default: %%(default)s)" % REAL_DATA)
    p.add_argument("--split-file", default=None, metavar="FILE",
                   help="speaker-disjoint split of the real clips: train / dev (checkpoint selection, operating "
                        "point) / test (never used here), as JSON like pinlite_edge/data/splits/real_av.json "
                        "(default: that file when --real-data holds its clips, else a hash of each clip's speaker "
                        "group)")
    p.add_argument("--model-option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="override a field of the teacher's and the student's model config (repeatable; VALUE is "
                        "JSON where it parses, e.g. appearance_input=false); stages built otherwise are rebuilt")
    p.add_argument("--pair-weight", type=float, default=QuickstartConfig.pair_weight, metavar="W",
                   help="weight of the pair-ranking loss in every stage: a real window must fit its own audio better "
                        "than the same window's shifted or swapped audio (0: off; stages built with another weight "
                        "are rebuilt) (default: %(default)s)")
    p.add_argument("--sync-pairs", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="override a field of the fakes made from each real window (pinlite_edge.data.syncpairs."
                        "SyncPairConfig; repeatable, VALUE is JSON where it parses), e.g. rewrites_per_window=1 adds "
                        "a lip-sync-style fake per window; defaults: %s; stages built otherwise are rebuilt"
                        % ", ".join(f"{k}={v}" for k, v in QuickstartConfig().real_sync_pairs.items()))
    args = p.parse_args(argv)
    configure_logging(logging.INFO)
    opts = dict(workspace=args.workspace, force=args.force, seed=args.seed, device=args.device,
                progress=not args.no_progress, exports=not args.no_export, real_data=args.real_data,
                split_file=args.split_file, model_options=dict(args.model_option), pair_weight=args.pair_weight)
    if args.sync_pairs:
        opts["real_sync_pairs"] = {**QuickstartConfig().real_sync_pairs, **dict(args.sync_pairs)}
    cfg = QuickstartConfig.smoke(**opts) if args.smoke else QuickstartConfig(**opts)

    def run() -> int:
        t0 = time.perf_counter()
        rows = run_quickstart(cfg)  # a PinliteError: 2 for a usage error, 1 for a stage that failed
        wall = time.perf_counter() - t0
        print(format_table(rows))
        print(f"summary: {Path(cfg.workspace) / 'summary.json'}")
        print(f"wall time: {wall:.1f} s{' (smoke run: not a result)' if args.smoke else ''}")
        return 0

    # Ctrl-C / SIGTERM: one line, exit 130 / 143; the stages' checkpoints are resumable
    return run_command("python -m pinlite_edge.quickstart", run,
                       f"finished stages and the last checkpoints are kept in {cfg.workspace}: re-run the same "
                       "command to resume")


if __name__ == "__main__":
    raise SystemExit(main())
