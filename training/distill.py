"""Distil PIN-Lite from a frozen PinPoint teacher (or an ensemble of teachers), SPEC §3:

    L = α·CE_hard + (1−α)·T²·KL(softmax(t/T) ‖ softmax(s/T)) + β·MSE(A_T, A_S) + w_off·CE_offset + w_align·L_align

(``L_align``, the attention alignment term of ``training/losses.py``, is an addition to the SPEC; ``--align-weight``,
default 1)
defaults α=0.5, β=5.0, T=2.0, AdamW + cosine schedule, gradient clipping, AMP on CUDA (fp32 on CPU).
The KL is over the two-class (real, fake) distributions. With several ``--teacher`` checkpoints the softened
probabilities and the attention maps are averaged over the teachers.

The frozen teacher's outputs are computed once per dataset split and cached (memory + ``<output>/teacher_cache``
keyed by teacher weights hash + dataset fingerprint). This is valid because samples are deterministic and
un-augmented (the same tensor every epoch); a training split that augments (real-video train splits by default)
runs the teacher on every batch instead, as ``--no-teacher-cache`` does.

    python -m pinlite_edge.training.distill --teacher runs/teacher/best.safetensors --output runs/distilled
Multi-GPU: ``torchrun --nproc_per_node=N -m pinlite_edge.training.distill ...`` (DDP; gloo on CPU).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from pinlite_edge.errors import CheckpointError, PinliteError, UsageError
from pinlite_edge.models import AVSyncDetector, ModelOutput

from pinlite_edge.training.cli import add_distill_args, add_pretrained_args, base_parser, stage_main
from pinlite_edge.training.config import DistillConfig
from pinlite_edge.training.context import prepare
from pinlite_edge.training.data import Split
from pinlite_edge.training.engine import FitResult, Objective, check_output, fit
from pinlite_edge.training.models import build_model
from pinlite_edge.training.losses import DistillWeights, distillation_loss
from pinlite_edge.training.runtime import barrier, cleanup_distributed
from pinlite_edge.training.teacher_cache import load_teachers, teacher_hash, teacher_targets

log = logging.getLogger(__name__)


def check_compatible(student: AVSyncDetector, teachers: Sequence[AVSyncDetector], paths: Sequence[str]) -> None:
    for t, p in zip(teachers, paths):
        if t.config.contract != student.config.contract:
            raise CheckpointError(f"teacher {p} was trained for another input contract (preset {t.config.preset!r}) "
                                  f"than the student (preset {student.config.preset!r})")


def distillation_objective(cfg: Any, teachers: list[AVSyncDetector], train: Split, device: torch.device,
                           cache_dir: Path | None, dist_info: Any) -> Objective:
    """The loss closure used by :func:`fit`: teacher outputs from the cache, or recomputed per batch."""
    weights = DistillWeights(cfg.alpha, cfg.beta, cfg.temperature, cfg.offset_weight, cfg.align_weight,
                             cfg.pair_weight)
    if cfg.cache_teacher and train.augmented:
        log.info("the training data is augmented per epoch: the teacher runs on every batch instead of being cached")
    if cfg.cache_teacher and not train.augmented:
        if dist_info.is_main:
            targets = teacher_targets(cfg.teachers, train, device, batch_size=cfg.eval_batch_size,
                                      cache_dir=cache_dir, models=teachers)
        barrier(dist_info)
        if not dist_info.is_main:
            targets = teacher_targets(cfg.teachers, train, device, batch_size=cfg.eval_batch_size,
                                      cache_dir=cache_dir, models=teachers)

        def cached(out: ModelOutput, batch: dict[str, Any]):
            t_logits, t_attn = targets.batch(batch["index"], device)
            return distillation_loss(out, batch["label"], batch["offset_class"], t_logits, t_attn, weights,
                                     batch.get("clip_id"))

        return cached

    def live(out: ModelOutput, batch: dict[str, Any]):
        with torch.no_grad():
            outs = [t(batch["frames"], batch["mfcc"]) for t in teachers]
        t_logits = torch.stack([o.logits.float() for o in outs])
        t_attn = torch.stack([o.attention.float() for o in outs]).mean(dim=0)
        return distillation_loss(out, batch["label"], batch["offset_class"], t_logits, t_attn, weights,
                                     batch.get("clip_id"))

    return live


def teacher_record(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Each teacher's path, weights hash and what it was trained on (its ``training_data``, None when its record
    has none): a student distilled on synthetic clips from a teacher that saw real faces says so."""
    from pinlite_edge.checkpoint import read_record
    from pinlite_edge.trained_on import training_data_from_record

    def trained_on(path: str) -> dict[str, Any] | None:
        try:
            return training_data_from_record(read_record(path, allow_unverified=True))
        except PinliteError:
            return None  # a bad checkpoint is reported where it is loaded

    return [{"path": str(p), "weights_sha256": teacher_hash(p), "training_data": trained_on(p)} for p in paths]


class MissingCheckpointError(CheckpointError, UsageError):
    """A checkpoint named on the command line that is not a file: a usage error (exit 2); one that is there but
    cannot be read is a :class:`CheckpointError`, a failure (exit 1)."""


def missing_checkpoints(paths: Sequence[str]) -> None:
    """:class:`MissingCheckpointError` for a checkpoint path that is not a file: a folder (a run's output folder: name
    its ``best.safetensors``) or nothing at all."""
    folders = [p for p in paths if Path(p).is_dir()]
    if folders:
        raise MissingCheckpointError(f"{folders[0]} is a folder, not a checkpoint: give the checkpoint in it, e.g. "
                                     f"{Path(folders[0]) / 'best.safetensors'}")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise MissingCheckpointError(f"checkpoint(s) {missing} do not exist")


def warn_unless_kind(paths: Sequence[str], kind: str, role: str) -> None:
    """Warn when a checkpoint given as ``role`` holds another kind of network than ``kind`` (a student as a teacher:
    self-distillation, allowed but rarely meant)."""
    from pinlite_edge.checkpoint import read_record

    for path in paths:
        try:
            # the record only: the weights are verified where they are loaded, not hashed twice
            found = read_record(path, allow_unverified=True).get("model_config", {}).get("kind")
        except PinliteError:
            continue  # a bad checkpoint is reported where it is loaded
        if found not in (None, kind):
            log.warning("%s %s holds a %s, not a %s: check the path (this run goes on with it)", role, path, found,
                        kind)


def distill(cfg: DistillConfig) -> FitResult:
    """Train a student by distillation as configured; returns the best checkpoint path and metrics."""
    cfg.check()  # option values no run can use: one line before anything is read or written
    if not cfg.teachers:
        raise CheckpointError("distillation needs at least one teacher checkpoint (--teacher PATH)")
    missing_checkpoints(cfg.teachers)
    warn_unless_kind(cfg.teachers, "teacher", "--teacher")
    check_output(Path(cfg.output), cfg.resume)
    ctx = prepare(cfg)
    try:
        teachers = load_teachers(cfg.teachers, ctx.device)
        student = build_model("student", cfg.preset, cfg.model_options, cfg.pretrained)
        check_compatible(student, teachers, cfg.teachers)
        cache_dir = Path(cfg.cache_dir or Path(cfg.output) / "teacher_cache")
        objective = distillation_objective(cfg, teachers, ctx.train, ctx.device, cache_dir, ctx.dist)
        val_targets = teacher_targets(cfg.teachers, ctx.val, ctx.device, batch_size=cfg.eval_batch_size,
                                      cache_dir=cache_dir, models=teachers)
        record = {"kind": "student", "teachers": teacher_record(cfg.teachers),
                  "distillation": {"alpha": cfg.alpha, "beta": cfg.beta, "temperature": cfg.temperature,
                                   "offset_weight": cfg.offset_weight, "align_weight": cfg.align_weight,
                                   "pair_weight": cfg.pair_weight,
                                   "teacher_cache": cfg.cache_teacher and not ctx.train.augmented},
                  "backbone_pretrained": student.backbone_pretrained,
                  "eps_reference": "teacher" if len(cfg.teachers) == 1 else "teacher ensemble (mean attention)"}
        return fit(student, objective, ctx.train, ctx.val, cfg, ctx.device, dist=ctx.dist, stage="distill",
                   record=record, val_reference_attention=val_targets.attention.numpy())
    finally:
        cleanup_distributed(ctx.dist)


def build_parser():
    d = DistillConfig()
    p = base_parser(__doc__, "pinlite_edge.training.distill", d)
    add_distill_args(p, d, required_teacher=True)
    add_pretrained_args(p)
    return p


def print_result(res: FitResult) -> None:
    m = res.best_metrics
    print(f"best student: {res.best_path} (val AUC {m.get('auc', float('nan')):.4f}, accuracy "
          f"{m.get('accuracy', float('nan')):.4f}, "
          f"EPS {m.get('eps', float('nan')):.3f}, epoch {m.get('epoch')})")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The command line (``prog`` renames it in help texts, e.g. when run as ``python -m pinlite_edge.training distill``)."""
    return stage_main(build_parser, DistillConfig, distill, print_result, argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
