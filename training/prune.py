"""Iterative attention-head pruning of a distilled PIN-Lite student (SPEC §3).

Each iteration (1) scores every remaining head with ``Σ_layers ‖W_Q,h‖₁ + ‖W_K,h‖₁ + ‖W_V,h‖₁``
(``model.head_importance()``), (2) PHYSICALLY removes the globally least important head (``model.prune_heads``: the
Q/K/V rows and output-projection columns are deleted, so the model really gets smaller; no masks), and (3)
fine-tunes for ``--epochs`` epochs (default 3) at ``--lr`` (default 1e-5). Removing the head before fine-tuning is
equivalent to the paper's masking (a masked head contributes nothing and receives no gradient) and lets the
fine-tuning run on the smaller model.

How many heads go: ``--prune-steps N`` removes N heads, one per iteration (default 2: the paper's "4 -> 2 effective
heads", i.e. two heads removed in total over two iterations). ``--target-heads M`` instead prunes until M heads
remain over all layers (the student has 2 layers x 4 heads = 8). A layer always keeps at least one head.

With ``--teacher`` the fine-tuning uses the distillation objective (same α, β, T flags as distill) and accuracy and
EPS against the teacher are reported after every step; without a teacher, fine-tuning uses CE + offset CE and EPS is
measured against the unpruned student's attention.

Files: ``<output>/step<k>/`` (a resumable training run per iteration) and ``<output>/best.safetensors`` (the final
pruned model; ``load_checkpoint`` rebuilds it with its reduced head counts), whose record lists every step.

    python -m pinlite_edge.training.prune --student runs/distilled/best.safetensors \\
        --teacher runs/teacher/best.safetensors --output runs/pruned
Multi-GPU: ``torchrun --nproc_per_node=N -m pinlite_edge.training.prune ...`` (DDP; gloo on CPU).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from pinlite_edge.checkpoint import load_checkpoint, save_checkpoint
from pinlite_edge.errors import CheckpointError, PinliteError
from pinlite_edge.models import AVSyncDetector, count_parameters

from pinlite_edge.training.cli import add_distill_args, base_parser, config_from_args, parse, run_cli
from pinlite_edge.training.config import PruneConfig
from pinlite_edge.training.context import prepare
from pinlite_edge.training.data import make_loader
from pinlite_edge.training.distill import check_compatible, distillation_objective, teacher_record
from pinlite_edge.training.engine import STATE_FILE, check_output, fit, is_complete
from pinlite_edge.training.evaluate import evaluate, predict
from pinlite_edge.training.losses import teacher_loss
from pinlite_edge.training.runtime import cleanup_distributed
from pinlite_edge.training.teacher_cache import load_teachers, teacher_targets

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    best_path: Path
    steps: list[dict[str, Any]]


def least_important_head(model: AVSyncDetector) -> tuple[int, int, float]:
    """``(layer, head, importance)`` of the globally least important head among layers with more than one head."""
    best: tuple[int, int, float] | None = None
    for layer, scores in enumerate(model.head_importance()):
        if scores.numel() <= 1:
            continue
        head = int(torch.argmin(scores))
        value = float(scores[head])
        if best is None or value < best[2]:
            best = (layer, head, value)
    if best is None:
        raise PinliteError("every layer has a single head left: nothing more can be pruned")
    return best


def planned_steps(heads_per_layer: Sequence[int], prune_steps: int, target_heads: int | None) -> int:
    total = int(sum(heads_per_layer))
    target = total - int(prune_steps) if target_heads is None else int(target_heads)
    if target < len(heads_per_layer):
        raise PinliteError(f"cannot prune to {target} heads: each of the {len(heads_per_layer)} layers keeps at least "
                           f"one (model has {list(heads_per_layer)})")
    if target >= total:
        raise PinliteError(f"nothing to prune: target {target} heads, the model has {total}")
    return total - target


def prune(cfg: PruneConfig) -> PruneResult:
    """Prune ``cfg.student`` as configured; returns the final checkpoint and the per-step report."""
    if not cfg.student:
        raise CheckpointError("pruning needs the distilled student checkpoint (--student PATH)")
    missing = [t for t in [cfg.student, *cfg.teachers] if not Path(t).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint(s) {missing} do not exist")
    out_dir = Path(cfg.output)
    if not cfg.resume and ((out_dir / "best.safetensors").exists() or any(out_dir.glob("step*"))):
        raise PinliteError(f"{out_dir} already holds a pruning run; pass --resume to continue it or choose another "
                           "--output")
    ctx = prepare(cfg)
    try:
        model, source_record = load_checkpoint(cfg.student, map_location=ctx.device)
        if model.config.contract != ctx.contract:
            raise CheckpointError(f"student {cfg.student} uses preset {model.config.preset!r}, not --preset "
                                  f"{cfg.preset!r}")
        n_steps = planned_steps(model.config.heads_per_layer, cfg.prune_steps, cfg.target_heads)
        teachers = load_teachers(cfg.teachers, ctx.device) if cfg.teachers else []
        check_compatible(model, teachers, cfg.teachers)
        cache_dir = Path(cfg.cache_dir or out_dir / "teacher_cache")
        val_loader = make_loader(ctx.val, cfg.eval_batch_size, num_workers=cfg.num_workers)
        if teachers:
            reference = teacher_targets(cfg.teachers, ctx.val, ctx.device, batch_size=cfg.eval_batch_size,
                                        cache_dir=cache_dir, models=teachers).attention.numpy()
            objective = distillation_objective(cfg, teachers, ctx.train, ctx.device, cache_dir, ctx.dist)
            eps_reference = "teacher"
        else:
            reference = predict(model, val_loader, ctx.device)[2]

            def objective(out, batch):
                return teacher_loss(out, batch["label"], batch["offset_class"], cfg.offset_weight, cfg.align_weight)

            eps_reference = "unpruned student"

        def report(step: int, removed: dict[str, Any] | None) -> dict[str, Any]:
            m = evaluate(model, val_loader, ctx.device, reference_attention=reference).metrics
            row = {"step": step, "removed": removed, "heads_per_layer": list(model.config.heads_per_layer),
                   "params": count_parameters(model), "val_accuracy": m["accuracy"], "val_loss": m["loss"],
                   "val_f1": m["f1"], "val_eps": m["eps"], "eps_reference": eps_reference}
            log.info("prune step %d: heads %s, %d params, val accuracy %.4f, EPS %.3f", step,
                     row["heads_per_layer"], row["params"], row["val_accuracy"], row["val_eps"])
            return row

        steps = [report(0, None)]
        for k in range(1, n_steps + 1):
            step_dir = out_dir / f"step{k}"
            layer, head, value = least_important_head(model)
            importance = [s.tolist() for s in model.head_importance()]
            model.prune_heads({layer: [head]})
            removed = {"layer": layer, "head": head, "importance": value, "importance_all": importance}
            if is_complete(step_dir):
                log.info("prune step %d already done in %s", k, step_dir)
            else:
                step_cfg = replace(cfg, output=str(step_dir), resume=cfg.resume and (step_dir / STATE_FILE).exists())
                check_output(step_dir, step_cfg.resume)
                fit(model, objective, ctx.train, ctx.val, step_cfg, ctx.device, dist=ctx.dist, stage=f"prune{k}",
                    record={"kind": "student", "pruned_from": cfg.student, "removed": removed},
                    val_reference_attention=reference)
            model, _ = load_checkpoint(step_dir / "best.safetensors", map_location=ctx.device)
            steps.append(report(k, removed))

        final = out_dir / "best.safetensors"
        if ctx.dist.is_main:
            record = {**{k: v for k, v in source_record.items() if k in ("dataset", "dataset_fingerprint")},
                      "stage": "prune", "kind": "student", "config": cfg.to_dict(), "source_student": cfg.student,
                      "teachers": teacher_record(cfg.teachers), "prune_steps": steps,
                      "params": count_parameters(model), "heads_per_layer": list(model.config.heads_per_layer),
                      "best": {"accuracy": steps[-1]["val_accuracy"], "loss": steps[-1]["val_loss"],
                               "eps": steps[-1]["val_eps"]}, "complete": True}
            save_checkpoint(final, model, record)
        return PruneResult(final, steps)
    finally:
        cleanup_distributed(ctx.dist)


def build_parser():
    d = PruneConfig()
    p = base_parser(__doc__, "pinlite_edge.training.prune", d)
    g = p.add_argument_group("pruning")
    g.add_argument("--student", required=True, help="distilled student checkpoint to prune (.safetensors)")
    g.add_argument("--prune-steps", type=int, default=d.prune_steps,
                   help="heads to remove, one per prune+fine-tune iteration (default: %(default)s)")
    g.add_argument("--target-heads", type=int, default=None,
                   help="prune until this many heads remain over all layers (overrides --prune-steps)")
    add_distill_args(p, d, required_teacher=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    cfg = config_from_args(PruneConfig, args)

    def run():
        res = prune(cfg)
        print(f"{'step':>4} {'heads':>10} {'params':>8} {'val_acc':>8} {'val_eps':>8}")
        for s in res.steps:
            print(f"{s['step']:>4} {str(s['heads_per_layer']):>10} {s['params']:>8} {s['val_accuracy']:>8.4f} "
                  f"{s['val_eps']:>8.3f}")
        print(f"pruned student: {res.best_path}")

    return run_cli(run)


if __name__ == "__main__":
    raise SystemExit(main())
