"""Train the PinPoint teacher: cross-entropy on real/fake + offset cross-entropy (SPEC §3), plus the attention
alignment term (``--align-weight``, default 1; an addition to the SPEC described in ``training/losses.py``).

    python -m pinlite_edge.training.teacher --data synthetic --preset tiny --epochs 10 --output runs/teacher
    python -m pinlite_edge.training.teacher --output runs/teacher --resume      # after an interruption

The offset loss only counts samples with a defined audio offset (``offset_class != -100``).
Multi-GPU: ``torchrun --nproc_per_node=N -m pinlite_edge.training.teacher ...`` (DDP; gloo on CPU).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence


from pinlite_edge.training.cli import add_pretrained_args, base_parser, stage_main
from pinlite_edge.training.config import TeacherConfig
from pinlite_edge.training.context import prepare
from pinlite_edge.training.engine import FitResult, check_output, fit
from pinlite_edge.training.models import build_model
from pinlite_edge.training.losses import teacher_loss
from pinlite_edge.training.runtime import cleanup_distributed

log = logging.getLogger(__name__)


def train_teacher(cfg: TeacherConfig) -> FitResult:
    """Train a teacher as configured; returns the best checkpoint path and metrics."""
    cfg.check()  # option values no run can use: one line before anything is read or written
    check_output(Path(cfg.output), cfg.resume)
    ctx = prepare(cfg)
    try:
        model = build_model("teacher", cfg.preset, cfg.model_options, cfg.pretrained)

        def objective(out, batch):
            return teacher_loss(out, batch["label"], batch["offset_class"], cfg.offset_weight, cfg.align_weight,
                                cfg.pair_weight, batch.get("clip_id"))

        return fit(model, objective, ctx.train, ctx.val, cfg, ctx.device, dist=ctx.dist, stage="teacher",
                   record={"kind": "teacher", "backbone_pretrained": model.backbone_pretrained})
    finally:
        cleanup_distributed(ctx.dist)


def build_parser():
    d = TeacherConfig()
    p = base_parser(__doc__, "pinlite_edge.training.teacher", d)
    add_pretrained_args(p)
    return p


def print_result(res: FitResult) -> None:
    m = res.best_metrics
    print(f"best teacher: {res.best_path} (val AUC {m.get('auc', float('nan')):.4f}, loss "
          f"{m.get('loss', float('nan')):.4f}, accuracy {m.get('accuracy', float('nan')):.4f}, "
          f"epoch {m.get('epoch')})")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The command line (``prog`` renames it in help texts, e.g. when run as ``python -m pinlite_edge.training teacher``)."""
    return stage_main(build_parser, TeacherConfig, train_teacher, print_result, argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
