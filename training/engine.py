"""The shared training loop: epochs, validation, best-checkpoint selection, resumable checkpoints, AMP, DDP.

Files written in the output folder (only by rank 0):

- ``last.state.safetensors``: everything needed to resume (model, optimizer, scheduler, grad scaler, RNG states,
  epoch / step counters, metric history), one file written atomically every ``checkpoint_every`` steps and at every
  epoch end, so a kill loses at most ``checkpoint_every`` steps.
- ``last.safetensors`` + ``last.json``: the model after the latest finished epoch (``load_checkpoint``-able).
- ``best.safetensors`` + ``best.json``: the best epoch by validation ROC AUC (ties, and epochs whose AUC is undefined
  because the validation split holds one class: lower validation loss; :func:`_better`). Accuracy is not used: at the
  default threshold it ties between epochs that all predict one class. ``best.json`` records the rule
  (``selection``) and gets ``"complete": true`` when training has finished.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pinlite_edge.utils.progress import progress_bar
from pinlite_edge import __version__
from pinlite_edge.checkpoint import load_checkpoint, read_record, save_checkpoint, verify_hashed
from pinlite_edge.data.augment import set_data_epoch
from pinlite_edge.data.provenance import training_data_summary
from pinlite_edge.errors import CheckpointError, PinliteError, UsageError
from pinlite_edge.utils.atomic import make_output_folder
from pinlite_edge.models import AVSyncDetector, ModelOutput, count_parameters

from pinlite_edge.training.config import TrainConfig
from pinlite_edge.training.data import EpochSampler, Split, make_loader, spec_label
from pinlite_edge.training.evaluate import evaluate
from pinlite_edge.training.runtime import DistInfo, barrier
from pinlite_edge.training.sampling import sampling_plan
from pinlite_edge.training.state import load_training_state, rng_state, save_training_state, set_rng_state

log = logging.getLogger(__name__)

STATE_FILE = "last.state.safetensors"
#: ``objective(output, batch_on_device) -> (loss, parts)``.
Objective = Callable[[ModelOutput, dict[str, Any]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class FitResult:
    best_path: Path
    best_metrics: dict[str, float]
    history: list[dict[str, Any]]
    resumed: bool


def is_complete(output: str | Path) -> bool:
    """True when ``output/best.json`` records a finished training run."""
    best = Path(output) / "best.safetensors"
    if not best.is_file():
        return False
    try:
        return bool(read_record(best).get("complete"))
    except CheckpointError:
        return False


def check_output(output: Path, resume: bool, warn_fresh: bool = True) -> None:
    """Before any data is prepared: refuse to silently overwrite a previous run in ``output``, and an ``output``
    that cannot be a folder (a file, ``/proc/x``, a read-only place: :func:`make_output_folder`). ``--resume`` with
    nothing in ``output`` warns that the run starts from scratch (unless ``warn_fresh`` is False: a prune step not
    reached yet)."""
    make_output_folder(output, "--output", keep=False)
    held = (output / STATE_FILE).exists() or (output / "best.safetensors").exists()
    if resume and not held and warn_fresh:
        log.warning("--resume: %s holds no training run (no %s or best.safetensors) to resume: training from "
                    "scratch", output, STATE_FILE)
    if not resume and held:
        raise UsageError(f"{output} already holds a training run; pass --resume to continue it or choose another "
                         "--output")


#: How :func:`_better` ranks epochs (recorded in every checkpoint).
SELECTION = {"metric": "val auc", "higher_is_better": True, "tie_break": "val loss (lower)",
             "undefined_auc": "val loss (lower)"}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _better(metrics: dict[str, float], best: dict[str, float] | None) -> bool:
    """Is this epoch's validation better than the best so far? Higher AUC wins; equal AUC, or an AUC that is NaN on
    either side (one-class validation data), falls back to the lower loss."""
    if best is None:
        return True
    auc, best_auc = metrics.get("auc", float("nan")), best.get("auc", float("nan"))
    if _finite(auc) and _finite(best_auc) and auc != best_auc:
        return auc > best_auc
    return metrics["loss"] < best["loss"]


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


#: settings a resumed run may change: where it runs and how it reports, not what it computes (the data are checked
#: by their fingerprint, the sampling and the parameter count separately)
RESUME_FREE_SETTINGS = frozenset({"resume", "device", "num_workers", "progress", "cache_dir", "in_memory",
                                  "in_memory_limit_gb", "eval_batch_size", "output", "checkpoint_every", "data",
                                  "data_options", "train_split", "val_split", "amp",
                                  "pretrained"})  # only initialises weights, which a resume loads from its state


def config_changes(before: dict[str, Any] | None, now: dict[str, Any],
                   also_free: frozenset[str] = frozenset()) -> list[str]:
    """``"key old -> new"`` for each training setting that differs between a saved run's config and this one's
    (checkpoint paths compared as real paths; ``also_free``: more keys that may differ); none for a state saved
    without its config."""
    if not isinstance(before, dict):
        return []

    def norm(key: str, value: Any) -> Any:
        if key in ("teachers", "student") and value:
            paths = [value] if isinstance(value, str) else list(value)
            return [os.path.realpath(str(p)) for p in paths]
        return value

    return [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
            if k not in RESUME_FREE_SETTINGS | also_free and norm(k, before.get(k)) != norm(k, now.get(k))]


def _check_saved_checkpoints(out_dir: Path, has_best: bool) -> None:
    """On resume: the best and last checkpoints the run wrote must still verify. The state holds only the current
    weights, so a damaged best epoch was found only after every remaining epoch, and could not be recovered."""
    for name in ("best.safetensors", "last.safetensors"):
        path = out_dir / name
        if not path.exists():
            if name == "best.safetensors" and has_best:
                raise CheckpointError(f"cannot resume: {path} is missing, but the run recorded a best epoch whose "
                                      "weights only it held; start again with a fresh --output")
            continue
        try:
            verify_hashed(path)
        except CheckpointError as exc:
            raise CheckpointError(f"cannot resume: {exc}; the weights it held are not in the training state, so "
                                  "start again with a fresh --output") from None


def _fresh_running() -> dict[str, Any]:
    return {"loss": 0.0, "correct": 0, "count": 0}


@dataclass
class _Progress:
    """Where a run stands: what the training state saves besides the tensors, and what a resume restores."""

    epoch: int = 0  # finished epochs
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, float] | None = None
    running: dict[str, Any] = field(default_factory=_fresh_running)  # this epoch's training loss / accuracy sums

    def meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "history": self.history, "best": self.best, "running": self.running}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "_Progress":
        return cls(meta["epoch"], meta["step_in_epoch"], meta["global_step"], meta["history"], meta["best"],
                   meta["running"])


@dataclass
class _Loop:
    """What one training run optimises with, built once by :func:`fit`."""

    model: AVSyncDetector
    train_model: nn.Module  # the model, or its DDP wrapper
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool

    def state_parts(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.use_amp else {},
                "rng": rng_state()}

    def load_state_parts(self, parts: dict[str, Any]) -> None:
        self.model.load_state_dict(parts["model"])
        self.optimizer.load_state_dict(parts["optimizer"])
        self.scheduler.load_state_dict(parts["scheduler"])
        if self.use_amp and parts.get("scaler"):
            self.scaler.load_state_dict(parts["scaler"])
        set_rng_state(parts["rng"])

    def step(self, batch: dict[str, Any], objective: Objective, grad_clip: float, stage: str, at: str
             ) -> tuple[torch.Tensor, ModelOutput]:
        """One optimisation step on ``batch`` (on the device); ``stage`` and ``at`` (``"epoch E step S"``) name it in
        the error a non-finite loss raises."""
        with torch.autocast(device_type=batch["frames"].device.type, dtype=torch.float16, enabled=self.use_amp):
            out = self.train_model(batch["frames"], batch["mfcc"])
        loss, _parts = objective(out, batch)
        if not torch.isfinite(loss):
            raise PinliteError(f"{stage}: the loss became {loss.item()} at {at}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, grad_clip)
        scale = self.scaler.get_scale() if self.use_amp else 0.0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # GradScaler skips the optimizer step when the scaled gradients overflow and lowers its scale: the schedule
        # then waits too, so that warmup counts real steps (and torch does not warn that the scheduler stepped
        # before the optimizer, as it did when the first AMP step overflowed)
        if not (self.use_amp and self.scaler.get_scale() < scale):
            self.scheduler.step()
        return loss, out


def _resume(loop: _Loop, state_path: Path, base_record: dict[str, Any], cfg: TrainConfig, stage: str) -> _Progress:
    """The progress saved in ``state_path``, its tensors loaded into ``loop``; refused (:class:`CheckpointError`)
    when the run was started on other data, sampling, model or settings, or its checkpoints no longer verify."""
    parts, meta = load_training_state(state_path)
    if meta.get("dataset_fingerprint") != base_record["dataset_fingerprint"]:
        raise CheckpointError(f"cannot resume {state_path}: it was trained on another dataset (fingerprints "
                              "differ: other videos, labels or options; or a run started by pinlite-edge before "
                              "2026-12-05, whose fingerprints did not cover the videos' sizes and times); use a "
                              "fresh --output")
    if "sampling" in meta and meta["sampling"] != base_record["sampling"]:
        raise CheckpointError(f"cannot resume {state_path}: it drew its epochs another way (--balance or data "
                              f"weights changed: {meta['sampling'].get('mode')} -> {base_record['sampling']['mode']}); "
                              "use the same options or a fresh --output")
    if meta.get("params") != base_record["params"]:
        raise CheckpointError(f"cannot resume {state_path}: the model ({meta.get('params')} parameters) differs "
                              f"from the one built now ({base_record['params']}); the preset or model options "
                              "changed: use a fresh --output (quickstart: --force)")
    changed = config_changes(meta.get("config"), base_record["config"])
    if changed:
        raise CheckpointError(f"cannot resume {state_path}: the training settings changed since it was started "
                              f"({'; '.join(changed)}); the optimizer state and the record would mix two "
                              "configurations: re-run with the settings it was started with, or use a fresh "
                              "--output")
    loop.load_state_parts(parts)
    progress = _Progress.from_meta(meta)
    _check_saved_checkpoints(state_path.parent, progress.best is not None)
    if progress.epoch >= cfg.epochs:
        log.info("resumed %s from %s: its %d epochs were done, finishing its checkpoints", stage, state_path,
                 cfg.epochs)
    else:
        log.info("resumed %s from %s at epoch %d step %d", stage, state_path, progress.epoch + 1,
                 progress.step_in_epoch)
    return progress


def fit(model: AVSyncDetector, objective: Objective, train: Split, val: Split, cfg: TrainConfig, device: torch.device,
        *, record: dict[str, Any] | None = None, dist: DistInfo | None = None,
        val_reference_attention: np.ndarray | None = None, stage: str = "train") -> FitResult:
    """Train ``model`` with ``objective`` for ``cfg.epochs`` epochs; see the module docstring for the files."""
    dist = dist or DistInfo()
    cfg.check()
    out_dir = Path(cfg.output)
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    use_amp = bool(cfg.amp and device.type == "cuda")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = sampling_plan(train.source if train.source is not None else train.dataset, cfg.balance,
                         spec_label(cfg.data), cfg.epoch_size, pairs=float(cfg.pair_weight) > 0)
    epoch_size = plan.size if plan is not None else len(train)
    sampling = plan.describe() if plan is not None else {"mode": cfg.balance,
                                                         "epoch_size": epoch_size, "sources": None}
    if plan is not None:
        log.info("%s: each epoch draws %d of %d training samples (%s)", stage, plan.size, len(train),
                 "; ".join(f"{s['name']}: {s['per_epoch']}" + (" balanced" if s["balanced"] else "")
                           for s in sampling["sources"]))
    steps_per_epoch = len(EpochSampler(epoch_size, cfg.seed, 0, rank=dist.rank, world_size=dist.world_size,
                                       plan=plan))
    steps_per_epoch = math.ceil(steps_per_epoch / cfg.batch_size)
    if steps_per_epoch == 0:
        raise PinliteError(f"the training split has {len(train)} samples: too few for {dist.world_size} process(es)")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps,
                                                                        steps_per_epoch * cfg.epochs))
    loop = _Loop(model, model, params, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_amp), use_amp)
    base_record = {
        "stage": stage, "config": cfg.to_dict(), "dataset": {"train": train.description, "val": val.description},
        "dataset_fingerprint": {"train": train.fingerprint, "val": val.fingerprint},
        "package_version": __version__, "params": count_parameters(model),
        "world_size": dist.world_size, "steps_per_epoch": steps_per_epoch, "sampling": sampling,
        "runtime": {"device": str(device), "amp": use_amp,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "torch_threads": torch.get_num_threads()},  # another count: slightly other weights
        "selection": SELECTION, "training_data": training_data_summary(
            {"train": train.source if train.source is not None else train.dataset,
             "val": val.source if val.source is not None else val.dataset}), **(record or {}),
    }

    state_path = out_dir / STATE_FILE
    resumed = bool(cfg.resume and state_path.exists())
    if resumed:
        progress = _resume(loop, state_path, base_record, cfg, stage)
    else:
        if cfg.resume:
            log.warning("--resume: no %s in %s, starting from scratch", STATE_FILE, out_dir)
        progress = _Progress()

    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        loop.train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                               find_unused_parameters=True)

    def save_state() -> None:
        if dist.is_main:
            save_training_state(state_path, loop.state_parts(), {
                **progress.meta(), "dataset_fingerprint": base_record["dataset_fingerprint"],
                "sampling": base_record["sampling"], "params": base_record["params"], "stage": stage,
                "config": cfg.to_dict()})

    val_loader = make_loader(val, cfg.eval_batch_size, num_workers=cfg.num_workers)
    while progress.epoch < cfg.epochs:
        t0 = time.perf_counter()
        train_peak_mb = _train_epoch(loop, objective, train, cfg, device, dist, plan, epoch_size, steps_per_epoch,
                                     progress, save_state, stage)
        result = evaluate(model, val_loader, device, reference_attention=val_reference_attention)
        entry = {"epoch": progress.epoch + 1,
                 "train_loss": progress.running["loss"] / max(1, progress.running["count"]),
                 "train_accuracy": progress.running["correct"] / max(1, progress.running["count"]),
                 "lr": float(scheduler.get_last_lr()[0]), "seconds": time.perf_counter() - t0,
                 **{f"val_{k}": v for k, v in result.metrics.items()}}
        if train_peak_mb is not None:  # the caching allocator's peak over the epoch's training steps
            entry["cuda_peak_mb"] = train_peak_mb
        progress.history.append(entry)
        val_metrics = result.metrics
        improved = _better(val_metrics, progress.best)
        if improved:
            progress.best = {**val_metrics, "epoch": progress.epoch + 1}
        log.info(f"{stage} epoch {progress.epoch + 1}/{cfg.epochs}: train loss {entry['train_loss']:.4f} "
                 f"acc {entry['train_accuracy']:.3f} | val loss {val_metrics['loss']:.4f} "
                 f"auc {val_metrics.get('auc', float('nan')):.3f} acc {val_metrics['accuracy']:.3f}"
                 + (f" eps {val_metrics['eps']:.3f}" if "eps" in val_metrics else "") + (" *" if improved else ""))
        progress.epoch += 1
        progress.step_in_epoch = 0
        progress.running = _fresh_running()
        if dist.is_main:
            rec = {**base_record, "history": progress.history, "best": progress.best, "epoch": progress.epoch,
                   "complete": False}
            save_checkpoint(out_dir / "last.safetensors", model, rec)
            if improved:
                save_checkpoint(out_dir / "best.safetensors", model, rec)
            save_state()
        barrier(dist)

    best_path = out_dir / "best.safetensors"
    if dist.is_main:
        # The record embedded in the safetensors file is the authority: re-save weights + updated record together.
        for path in (best_path, out_dir / "last.safetensors"):
            done_model, rec = load_checkpoint(path)
            rec.pop("weights_sha256", None)
            rec.update({"history": progress.history, "best": progress.best, "complete": True})
            save_checkpoint(path, done_model, rec)
    barrier(dist)
    return FitResult(best_path, dict(progress.best or {}), progress.history, resumed)


def _train_epoch(loop: _Loop, objective: Objective, train: Split, cfg: TrainConfig, device: torch.device,
                 dist: DistInfo, plan: Any, epoch_size: int, steps_per_epoch: int, progress: _Progress,
                 save_state: Callable[[], None], stage: str) -> float | None:
    """The training steps of epoch ``progress.epoch`` from ``progress.step_in_epoch`` on, the state saved every
    ``cfg.checkpoint_every`` steps; the CUDA allocator's peak MiB over them (None off CUDA)."""
    sampler = EpochSampler(epoch_size, cfg.seed, progress.epoch, start=progress.step_in_epoch * cfg.batch_size,
                           rank=dist.rank, world_size=dist.world_size, plan=plan)
    set_data_epoch(train.dataset, cfg.seed, progress.epoch)  # augmentation draws from (seed, epoch, index)
    loader = make_loader(train, cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                         pin_memory=device.type == "cuda")
    loop.model.train()
    bar = None
    if cfg.progress and dist.is_main:
        bar = progress_bar(total=steps_per_epoch, initial=progress.step_in_epoch,
                           desc=f"{stage} epoch {progress.epoch + 1}/{cfg.epochs}", leave=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    running = progress.running
    try:
        for batch in loader:
            batch = _to_device(batch, device)
            loss, out = loop.step(batch, objective, cfg.grad_clip, stage,
                                  f"epoch {progress.epoch + 1} step {progress.step_in_epoch}")
            progress.step_in_epoch += 1
            progress.global_step += 1
            n = int(batch["label"].numel())
            running["loss"] += float(loss.item()) * n
            running["correct"] += int((out.logits.argmax(-1) == batch["label"]).sum().item())
            running["count"] += n
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running['loss'] / running['count']:.4f}",
                                acc=f"{running['correct'] / running['count']:.3f}")
            if cfg.checkpoint_every > 0 and progress.step_in_epoch % cfg.checkpoint_every == 0 \
                    and progress.step_in_epoch < steps_per_epoch:
                save_state()
    finally:
        if bar is not None:
            bar.close()
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
