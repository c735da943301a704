"""Iterative attention-head pruning of a distilled PIN-Lite student (SPEC §3).

Each iteration (1) scores every remaining head ``h`` of every layer ``l`` with ``‖W_Q,l,h‖₁ + ‖W_K,l,h‖₁ + ‖W_V,l,h‖₁``
(``model.head_importance()``: one score per (layer, head), compared across layers; the SPEC's
``Σ_layers`` reads as that global comparison, since summing over layers would drop head ``h`` from every layer; or, with ``--importance ablation``, by how much the training loss on the compensation
clips rises when only that head is removed: benchmarks/results/pruning/ shows that on the tiny student the L1
norms are nearly equal and pick a head whose removal costs 10 points, where ablation picks a harmless one),
(2) PHYSICALLY removes the globally least important head (``model.prune_heads``: the Q/K/V rows and
output-projection columns are deleted, so the model really gets smaller; no masks), and (3) fine-tunes for
``--epochs`` epochs (default 3) at ``--lr`` (default 1e-5). A removed head is replaced by its mean output over
``--compensation-clips`` training clips (folded into the output projection's bias; an addition to the paper, which
zeroes the head); alone it does not rescue a badly chosen head (pruning.md). With ``--compensation-clips 0``,
removing the head before fine-tuning is equivalent to the paper's masking (a masked head contributes nothing and
receives no gradient) and lets the fine-tuning run on the smaller model; with the default compensation the removed
head's mean output stays in the bias, so the outputs differ from masking by that mean.

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

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Subset

from pinlite_edge.checkpoint import load_checkpoint, read_record, save_checkpoint
from pinlite_edge.data.provenance import fine_tuned_summary, training_data_summary
from pinlite_edge.errors import CheckpointError, PinliteError, UsageError
from pinlite_edge.utils.atomic import make_output_folder
from pinlite_edge.trained_on import training_data_from_record
from pinlite_edge.utils.hashing import sha256_file
from pinlite_edge.models import AVSyncDetector, ModelConfig, count_parameters, mean_head_outputs

from pinlite_edge.training.cli import add_distill_args, base_parser, stage_main
from pinlite_edge.training.config import IMPORTANCE_CRITERIA, PruneConfig
from pinlite_edge.training.context import prepare
from pinlite_edge.training.data import Split, make_loader
from pinlite_edge.training.distill import (check_compatible, distillation_objective, missing_checkpoints,
                                           teacher_record, warn_unless_kind)
from pinlite_edge.training.engine import STATE_FILE, check_output, config_changes, fit, is_complete
from pinlite_edge.training.evaluate import evaluate, predict
from pinlite_edge.training.losses import teacher_loss
from pinlite_edge.training.runtime import cleanup_distributed
from pinlite_edge.training.teacher_cache import load_teachers, teacher_targets

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    best_path: Path
    steps: list[dict[str, Any]]


def _built(split: Split) -> Any:
    return split.source if split.source is not None else split.dataset


def _calibration_batches(split: Split, cfg: PruneConfig, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The first ``cfg.compensation_clips`` training clips (at least one batch), in order, on ``device``."""
    n = max(1, min(int(cfg.compensation_clips), len(split.dataset)))
    loader = DataLoader(Subset(split.dataset, range(n)), batch_size=cfg.eval_batch_size, shuffle=False)
    return [{k: v.to(device) for k, v in b.items() if k in ("frames", "mfcc", "label", "offset_class")}
            for b in loader]


def _head_means(model: AVSyncDetector, batches: list[dict[str, torch.Tensor]], cfg: PruneConfig
                ) -> list[torch.Tensor] | None:
    """Each head's mean output on the calibration batches (None when compensation is off)."""
    if int(cfg.compensation_clips) <= 0:
        return None
    return mean_head_outputs(model, ((b["frames"], b["mfcc"]) for b in batches))


@torch.no_grad()
def _hard_label_loss(model: AVSyncDetector, batches: list[dict[str, torch.Tensor]], cfg: PruneConfig) -> float:
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        loss, _ = teacher_loss(model(b["frames"], b["mfcc"]), b["label"], b["offset_class"], cfg.offset_weight,
                               cfg.align_weight)
        total += float(loss) * len(b["label"])
        count += len(b["label"])
    return total / count


def ablation_importance(model: AVSyncDetector, batches: list[dict[str, torch.Tensor]], cfg: PruneConfig,
                        means: list[torch.Tensor] | None) -> list[torch.Tensor]:
    """Per layer and head: the increase of the hard-label training loss (CE + offset + alignment) on the calibration
    clips when only that head is removed (replaced by its mean when ``means`` is given). Layers with one head: inf."""
    base = _hard_label_loss(model, batches, cfg)
    scores = []
    for layer, n_heads in enumerate(model.config.heads_per_layer):
        row = torch.full((n_heads,), float("inf"))
        if n_heads > 1:
            for head in range(n_heads):
                trial = copy.deepcopy(model)
                trial.prune_heads({layer: [head]}, mean_head_outputs=means)
                row[head] = _hard_label_loss(trial, batches, cfg) - base
        scores.append(row)
    return scores


def least_important_head(model: AVSyncDetector, scores: Sequence[torch.Tensor] | None = None
                         ) -> tuple[int, int, float]:
    """``(layer, head, importance)`` of the globally least important head among layers with more than one head.

    ``scores``: per-layer head importances (default: the L1 criterion of SPEC §3, ``model.head_importance()``).
    """
    best: tuple[int, int, float] | None = None
    for layer, layer_scores in enumerate(model.head_importance() if scores is None else scores):
        if layer_scores.numel() <= 1:
            continue
        head = int(torch.argmin(layer_scores))
        value = float(layer_scores[head])
        if best is None or value < best[2]:
            best = (layer, head, value)
    if best is None:
        raise PinliteError("every layer has a single head left: nothing more can be pruned")
    return best


def planned_steps(heads_per_layer: Sequence[int], prune_steps: int, target_heads: int | None) -> int:
    total = int(sum(heads_per_layer))
    target = total - int(prune_steps) if target_heads is None else int(target_heads)
    if not len(heads_per_layer) <= target < total:
        most = total - len(heads_per_layer)
        asked = f"--prune-steps {prune_steps}" if target_heads is None else f"--target-heads {target_heads}"
        why = ("nothing to prune" if target >= total else
               f"each of the {len(heads_per_layer)} layers keeps at least one")
        raise UsageError(f"{asked} would leave {target} heads, but {why} (the model has {list(heads_per_layer)}): "
                         f"--prune-steps can be 1..{most}, --target-heads {len(heads_per_layer)}..{total - 1}")
    return total - target


def _heads_per_layer(checkpoint: str | Path) -> list[int] | None:
    """The attention heads per layer a checkpoint's record gives (None: a record that load_checkpoint reports)."""
    try:
        return list(ModelConfig.from_dict(read_record(checkpoint)["model_config"]).heads_per_layer)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def prune(cfg: PruneConfig) -> PruneResult:
    """Prune ``cfg.student`` as configured; returns the final checkpoint and the per-step report."""
    cfg.check()  # option values no run can use: one line before anything is read or written
    if not cfg.student:
        raise CheckpointError("pruning needs the distilled student checkpoint (--student PATH)")
    missing_checkpoints([cfg.student, *cfg.teachers])
    warn_unless_kind([cfg.student], "student", "--student")
    warn_unless_kind(cfg.teachers, "teacher", "--teacher")
    out_dir = Path(cfg.output)
    make_output_folder(out_dir, "--output", keep=False)  # a file, /proc/x: one line before any data
    if not cfg.resume and ((out_dir / "best.safetensors").exists() or any(out_dir.glob("step*"))):
        raise UsageError(f"{out_dir} already holds a pruning run; pass --resume to continue it or choose another "
                         "--output")
    student_heads = _heads_per_layer(cfg.student)
    if student_heads is not None:  # out of range: one line before any data
        planned_steps(student_heads, cfg.prune_steps, cfg.target_heads)
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
                return teacher_loss(out, batch["label"], batch["offset_class"], cfg.offset_weight,
                                    cfg.align_weight, cfg.pair_weight, batch.get("clip_id"))

            eps_reference = "unpruned student"

        def report(step: int, removed: dict[str, Any] | None) -> dict[str, Any]:
            m = evaluate(model, val_loader, ctx.device, reference_attention=reference).metrics
            row = {"step": step, "removed": removed, "heads_per_layer": list(model.config.heads_per_layer),
                   "params": count_parameters(model), "val_auc": m["auc"], "val_accuracy": m["accuracy"],
                   "val_loss": m["loss"],
                   "val_f1": m["f1"], "val_eps": m["eps"], "eps_reference": eps_reference}
            log.info("prune step %d: heads %s, %d params, val accuracy %.4f, EPS %.3f", step,
                     row["heads_per_layer"], row["params"], row["val_accuracy"], row["val_eps"])
            return row

        student_sha = sha256_file(cfg.student)
        # every step's weights keep what the source student learned: each checkpoint, the steps' too, says so
        training_data = fine_tuned_summary(training_data_summary({"train": _built(ctx.train), "val": _built(ctx.val)}),
                                           training_data_from_record(source_record))
        steps = [report(0, None)]
        # the same clips every iteration (only the model changes); not loaded when neither feature needs them
        needs_calibration = cfg.importance == "ablation" or int(cfg.compensation_clips) > 0
        calib = _calibration_batches(ctx.train, cfg, ctx.device) if needs_calibration else []
        for k in range(1, n_steps + 1):
            step_dir = out_dir / f"step{k}"
            means = _head_means(model, calib, cfg)
            scores = (ablation_importance(model, calib, cfg, means) if cfg.importance == "ablation"
                      else model.head_importance())
            layer, head, value = least_important_head(model, scores)
            model.prune_heads({layer: [head]}, mean_head_outputs=means)
            removed = {"layer": layer, "head": head, "importance": value, "criterion": cfg.importance,
                       "importance_all": [[float(v) for v in row] for row in scores],
                       "replaced_by": "mean output" if means is not None else "zero"}
            step_cfg = replace(cfg, output=str(step_dir), resume=cfg.resume and (step_dir / STATE_FILE).exists())
            if is_complete(step_dir):
                _check_done_step(step_dir, step_cfg, student_sha)
                log.info("prune step %d already done in %s", k, step_dir)
            else:
                check_output(step_dir, step_cfg.resume, warn_fresh=False)
                fit(model, objective, ctx.train, ctx.val, step_cfg, ctx.device, dist=ctx.dist, stage=f"prune{k}",
                    record={"kind": "student", "pruned_from": cfg.student, "pruned_from_sha256": student_sha,
                            "removed": removed, "training_data": training_data,
                            "backbone_pretrained": source_record.get("backbone_pretrained")},
                    val_reference_attention=reference)
            model, _ = load_checkpoint(step_dir / "best.safetensors", map_location=ctx.device)
            steps.append(report(k, removed))

        final = out_dir / "best.safetensors"
        if ctx.dist.is_main:
            # what the source student was trained on and how its backbone started stay true of the pruned one
            kept = ("dataset", "dataset_fingerprint", "backbone_pretrained")
            record = {**{k: v for k, v in source_record.items() if k in kept},
                      "training_data": training_data,
                      "stage": "prune", "kind": "student", "config": cfg.to_dict(), "source_student": cfg.student,
                      "teachers": teacher_record(cfg.teachers), "prune_steps": steps,
                      "params": count_parameters(model), "heads_per_layer": list(model.config.heads_per_layer),
                      "best": {"auc": steps[-1]["val_auc"], "accuracy": steps[-1]["val_accuracy"],
                               "loss": steps[-1]["val_loss"],
                               "eps": steps[-1]["val_eps"]}, "complete": True}
            save_checkpoint(final, model, record)
        return PruneResult(final, steps)
    finally:
        cleanup_distributed(ctx.dist)


def _check_done_step(step_dir: Path, step_cfg: PruneConfig, student_sha: str) -> None:
    """A finished step is reused only if it was made from this student with these settings: otherwise its weights
    would descend from another model than the record names (:class:`CheckpointError` naming what differs)."""
    done = read_record(step_dir / "best.safetensors")
    made_from = done.get("pruned_from_sha256")
    # how many steps follow does not change how this one was made
    changed = config_changes(done.get("config"), step_cfg.to_dict(), frozenset({"prune_steps", "target_heads"}))
    if made_from is not None and made_from != student_sha:
        changed.insert(0, f"student {done.get('pruned_from')} (sha256 {made_from[:12]}) -> {step_cfg.student} "
                          f"(sha256 {student_sha[:12]})")
    if changed:
        raise CheckpointError(f"cannot reuse the finished prune step in {step_dir}: it was made with other settings "
                              f"({'; '.join(changed)}); use a fresh --output, or the settings it was made with")


def build_parser():
    d = PruneConfig()
    p = base_parser(__doc__, "pinlite_edge.training.prune", d)
    g = p.add_argument_group("pruning")
    g.add_argument("--student", required=True, help="distilled student checkpoint to prune (.safetensors)")
    g.add_argument("--prune-steps", type=int, default=d.prune_steps,
                   help="heads to remove, one per prune+fine-tune iteration (default: %(default)s)")
    g.add_argument("--target-heads", type=int, default=None,
                   help="prune until this many heads remain over all layers (overrides --prune-steps)")
    g.add_argument("--importance", choices=IMPORTANCE_CRITERIA, default=d.importance,
                   help="head importance: 'l1' = sum of the L1 norms of the head's Q/K/V weights (SPEC §3, the "
                        "paper); 'ablation' = increase of the hard-label training loss on the compensation clips when "
                        "only that head is removed (measured, slower) (default: %(default)s)")
    g.add_argument("--compensation-clips", type=int, default=d.compensation_clips,
                   help="replace each removed head by its mean output over this many training clips, folded into "
                        "the output projection's bias (0: plain removal, i.e. zero ablation) (default: %(default)s)")
    add_distill_args(p, d, required_teacher=False)
    return p


def print_result(res: PruneResult) -> None:
    print(f"{'step':>4} {'heads':>10} {'params':>8} {'val_acc':>8} {'val_eps':>8}")
    for s in res.steps:
        print(f"{s['step']:>4} {str(s['heads_per_layer']):>10} {s['params']:>8} {s['val_accuracy']:>8.4f} "
              f"{s['val_eps']:>8.3f}")
    print(f"pruned student: {res.best_path}")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The command line (``prog`` renames it in help texts, e.g. when run as ``python -m pinlite_edge.training prune``)."""
    return stage_main(build_parser, PruneConfig, prune, print_result, argv, prog)


if __name__ == "__main__":
    raise SystemExit(main())
