"""The bench (SPEC §7): accuracy, EPS and latency of deployed artefacts on the machine it runs on.

One pass over the evaluation data runs every artefact (and the references it needs: the FP32 teacher and each
artefact's FP32 source checkpoint) on the same batches; then latency is measured on a fixed batch, the models timed
in turns (``measure_interleaved``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pinlite_edge.contract import OUTPUT_NAMES, InputContract
from pinlite_edge.errors import PinliteError
from pinlite_edge.metrics import classification_metrics, explainability_preservation_score, softmax_fake_prob
from pinlite_edge.runtimes import BaseRunner, compare_outputs, inspect_artifact, load_runner
from pinlite_edge.runtimes.torch_runner import TorchRunner
from pinlite_edge.utils.hashing import sha256_file

from pinlite_edge.bench.data import EvalData, load_eval_data
from pinlite_edge.bench.machine import describe_machine
from pinlite_edge.bench.modelstats import params_and_flops
from pinlite_edge.bench.references import (
    ReferenceCacheError, ReferenceOutputs, cache_name, load_reference, save_reference,
)
from pinlite_edge.bench.timing import TimingResult, measure_interleaved
from pinlite_edge.bench.workspace import (
    DEFAULT_WORKSPACE, WorkspaceError, ensure_workspace, is_workspace, resolve_artefacts, stage_checkpoint,
)

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "ort", "trt", "executorch")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BenchConfig:
    runtime: str = "ort"
    precision: str = "fp32"
    artifacts: Path | None = None  # None: the quickstart workspace (built if missing)
    compare: list[Path] = field(default_factory=list)  # explicit artefacts, benched together (overrides runtime)
    data: str = "synthetic"
    split: str = "test"
    limit: int | None = None
    batch: int = 1
    eval_batch: int = 8
    warmup: int = 5
    iters: int = 50
    block: int = 5  # timed calls per runner per turn when several models are timed together
    turn_warmup: int = 1  # untimed calls at the start of each turn (the model's weights back in cache)
    threads: int | None = None
    device: str | None = None  # None: cpu (trt: cuda)
    out: Path = Path("bench-results")
    teacher: Path | None = None
    teacher_cache: Path | None = None
    cache_dir: Path | None = None
    time_teacher: bool = False
    plots: bool = True
    attention_clips: int = 4
    data_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.runtime not in RUNTIMES:
            raise PinliteError(f"--runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise PinliteError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("batch", "eval_batch", "iters", "block"):
            if getattr(self, name) < 1:
                raise PinliteError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "turn_warmup"):
            if getattr(self, name) < 0:
                raise PinliteError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")


@dataclass
class BenchResult:
    config: dict[str, Any]
    machine: dict[str, Any]
    data: dict[str, Any]
    rows: list[dict[str, Any]]
    teacher: dict[str, Any]
    comparison: list[dict[str, Any]]
    notes: list[str]
    attention_samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "machine": self.machine, "data": self.data, "teacher": self.teacher,
                "rows": self.rows, "comparison": self.comparison, "notes": self.notes}


def _device_for(backend: str, device: str | None) -> str:
    """``--device`` per backend: TensorRT engines always run on CUDA, ExecuTorch on the CPU, and ORT's
    ``tensorrt`` provider means ``cuda`` for the torch references."""
    if backend == "trt":
        return device if device and device.startswith("cuda") else "cuda"
    if backend == "executorch":
        return "cpu"
    if backend == "torch" and device == "tensorrt":
        return "cuda"
    return device or "cpu"


def _runner_options(backend: str, cfg: BenchConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {"device": _device_for(backend, cfg.device)}
    if backend != "trt":
        opts["threads"] = cfg.threads
    return opts


def _resolve_source(spec_path: Path, manifest: Any, workspace: Path | None) -> tuple[Path | None, str | None]:
    """The FP32 checkpoint an artefact was exported from, if it can be found here with the recorded hash."""
    src = getattr(manifest, "source_checkpoint", None)
    if not src:
        return None, "the manifest names no source checkpoint"
    candidates = [Path(src)]
    if not Path(src).is_absolute():
        candidates += [spec_path.parent / src]
        if workspace is not None:  # e.g. "pinlite-workspace/pruned/best.safetensors" recorded from another cwd
            candidates += [workspace / src, workspace / Path(*Path(src).parts[-2:])]
    candidates += [spec_path.parent / Path(src).name]
    for c in candidates:
        if c.is_file():
            want = getattr(manifest, "source_checkpoint_sha256", None)
            if want and sha256_file(c) != want:
                return None, f"source checkpoint {c} does not match the manifest's sha256"
            return c, None
    return None, f"source checkpoint {src} not found"


def _checkpoint_sha(path: Path) -> str:
    spec = inspect_artifact(path)
    return spec.sha256 or sha256_file(path)


class _Collector:
    """Concatenates per-batch outputs of one model."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUT_NAMES}

    def add(self, out: dict[str, np.ndarray]) -> None:
        for k in OUTPUT_NAMES:
            self.parts[k].append(out[k])

    def result(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.parts.items()}


def _reference(name: str, path: Path | None, sha: str | None, data: EvalData, cache_dir: Path | None,
               supplied_cache: Path | None, cfg: BenchConfig, notes: list[str]) -> tuple[ReferenceOutputs | None,
                                                                                      TorchRunner | None]:
    """Return cached outputs, or a runner that must compute them in the evaluation pass."""
    if supplied_cache is not None:
        ref = load_reference(supplied_cache, data_fingerprint=data.fingerprint, model_sha256=sha)
        notes.append(f"{name} outputs loaded from {supplied_cache}")
        return ref, None
    if path is None or sha is None:
        return None, None
    if cache_dir is not None:
        cached = cache_dir / cache_name(sha, data.fingerprint)
        if cached.is_file():
            try:
                ref = load_reference(cached, data_fingerprint=data.fingerprint, model_sha256=sha)
                log.info("%s outputs from cache %s", name, cached)
                return ref, None
            except ReferenceCacheError as exc:
                log.warning("ignoring cache: %s", exc)
    runner = load_runner(path, device=_device_for("torch", cfg.device), threads=cfg.threads)
    return None, runner  # type: ignore[return-value]


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    cfg.validate()
    say = progress or (lambda msg: log.info(msg))
    notes: list[str] = []
    workspace: Path | None = None
    if cfg.compare:
        paths = [Path(p) for p in cfg.compare]
        if cfg.artifacts is not None and is_workspace(cfg.artifacts):
            workspace = cfg.artifacts
    else:
        root = cfg.artifacts
        if root is None:
            root = ensure_workspace(DEFAULT_WORKSPACE)
        paths = resolve_artefacts(root, cfg.runtime, cfg.precision)
        workspace = root if is_workspace(root) else None
    specs = [inspect_artifact(p) for p in paths]
    contracts = {s.contract for s in specs}
    if len(contracts) != 1:
        raise WorkspaceError("the artefacts were built for different input contracts; bench them separately")
    contract: InputContract = specs[0].contract
    runners: list[BaseRunner] = [load_runner(s.path, **_runner_options(s.backend, cfg)) for s in specs]

    cache_dir = cfg.cache_dir or ((workspace / "cache" / "bench") if workspace else cfg.out / "cache")
    data = load_eval_data(cfg.data, cfg.split, contract, limit=cfg.limit,
                          cache_dir=(workspace / "cache") if workspace else None, **cfg.data_options)
    say(f"data: {cfg.data} {cfg.split}, {data.num_clips} clips (fingerprint {data.fingerprint[:12]})")

    # references: the FP32 teacher, and every artefact's FP32 source checkpoint
    teacher_path = cfg.teacher or (stage_checkpoint(workspace, "teacher") if workspace else None)
    teacher_sha = _checkpoint_sha(teacher_path) if teacher_path else None
    if teacher_path is None and cfg.teacher_cache is None:
        notes.append("no FP32 teacher (neither --teacher, a workspace teacher, nor --teacher-cache): "
                     "EPS vs teacher not reported")
    teacher_ref, teacher_runner = _reference("teacher", teacher_path, teacher_sha, data, cache_dir,
                                             cfg.teacher_cache, cfg, notes)
    if teacher_ref is not None and teacher_sha is None:
        teacher_sha = teacher_ref.model_sha256
    # the teacher is timed (for the plots) even when its outputs came from a cache
    timing_teacher = teacher_runner or (load_runner(teacher_path, device=_device_for("torch", cfg.device),
                                                    threads=cfg.threads)
                                        if cfg.time_teacher and teacher_path else None)
    sources: dict[str, tuple[Path, str]] = {}
    source_of: dict[int, str | None] = {}
    for i, s in enumerate(specs):
        if s.backend == "torch":
            source_of[i] = None  # an FP32 checkpoint is its own source
            continue
        path, why = _resolve_source(s.path, s.manifest, workspace)
        if path is None:
            notes.append(f"{s.path.name}: no EPS vs source ({why})")
            source_of[i] = None
            continue
        sha = _checkpoint_sha(path)
        sources[sha] = (path, sha)
        source_of[i] = sha
    source_refs: dict[str, ReferenceOutputs] = {}
    source_runners: dict[str, TorchRunner] = {}
    for sha, (path, _) in sources.items():
        if sha == teacher_sha and teacher_ref is not None:
            source_refs[sha] = teacher_ref
            continue
        ref, runner = _reference(f"source {path.name}", path, sha, data, cache_dir, None, cfg, notes)
        if ref is not None:
            source_refs[sha] = ref
        elif runner is not None:
            source_runners[sha] = runner

    # evaluation pass
    collectors = [_Collector() for _ in runners]
    teacher_col = _Collector() if teacher_runner else None
    source_cols = {sha: _Collector() for sha in source_runners}
    labels: list[np.ndarray] = []
    clip_ids: list[str] = []
    active: list[BaseRunner] = []
    try:
        for r in runners + ([timing_teacher] if timing_teacher else []) + list(source_runners.values()):
            r.activate()
            active.append(r)
        start = time.perf_counter()
        for bi, batch in enumerate(data.batches(cfg.eval_batch)):
            f, m = batch["frames"], batch["mfcc"]
            for r, col in zip(runners, collectors):
                col.add(r.infer(f, m))
            if teacher_runner and teacher_col:
                teacher_col.add(teacher_runner.infer(f, m))
            for sha, r in source_runners.items():
                source_cols[sha].add(r.infer(f, m))
            labels.append(batch["label"])
            clip_ids.extend(batch["clip_id"])
            say(f"  evaluated {len(clip_ids)}/{data.num_clips} clips ({time.perf_counter() - start:.0f} s)")
        labels_all = np.concatenate(labels)
        if teacher_runner and teacher_col:
            teacher_ref = ReferenceOutputs(teacher_sha or "", data.fingerprint, teacher_col.result(), clip_ids)
            save_reference(cache_dir / cache_name(teacher_ref.model_sha256, data.fingerprint), teacher_ref)
        for sha, col in source_cols.items():
            source_refs[sha] = ReferenceOutputs(sha, data.fingerprint, col.result(), clip_ids)
            save_reference(cache_dir / cache_name(sha, data.fingerprint), source_refs[sha])
        if teacher_ref is not None and teacher_ref.num_clips != len(clip_ids):
            raise ReferenceCacheError(f"teacher reference has {teacher_ref.num_clips} clips, data has {len(clip_ids)}")

        # latency
        fixed = data.first_batch(cfg.batch)
        timed = list(runners) + ([timing_teacher] if (timing_teacher and cfg.time_teacher) else [])
        say(f"timing {len(timed)} model(s): batch {cfg.batch}, {cfg.warmup} warm-up + {cfg.iters} calls each"
            + (f", in turns of {cfg.turn_warmup} untimed + {cfg.block} timed calls" if len(timed) > 1 else ""))
        timings = measure_interleaved(timed, fixed["frames"], fixed["mfcc"], warmup=cfg.warmup, iters=cfg.iters,
                                      block=cfg.block, turn_warmup=cfg.turn_warmup)
    finally:
        for r in active:
            r.deactivate()

    outputs = [c.result() for c in collectors]
    rows = [_row(specs[i], runners[i], outputs[i], labels_all, timings[i], teacher_ref,
                 source_refs.get(source_of[i] or "")) for i in range(len(runners))]
    teacher_info: dict[str, Any] = {"checkpoint": str(teacher_path) if teacher_path else None,
                                    "sha256": teacher_sha, "cache": str(cfg.teacher_cache) if cfg.teacher_cache
                                    else None}
    if teacher_ref is not None:
        teacher_info["metrics"] = classification_metrics(
            labels_all, softmax_fake_prob(teacher_ref.outputs["logits"])).to_dict()
    if timing_teacher and cfg.time_teacher:
        teacher_info["latency"] = timings[-1].to_dict()
        cfg_dict = timing_teacher.spec.record.get("model_config") if timing_teacher.spec.record else None
        if cfg_dict:
            teacher_info["params"], teacher_info["flops"] = params_and_flops(cfg_dict)
    comparison = [compare_outputs(runners[0].name, outputs[0], runners[i].name, outputs[i]).to_dict()
                  for i in range(1, len(runners))]
    k = min(cfg.attention_clips, len(clip_ids))
    samples = {r.name: outputs[i]["attention"][:k] for i, r in enumerate(runners)}
    if teacher_ref is not None:
        samples = {"teacher (FP32)": teacher_ref.outputs["attention"][:k], **samples}
    cfg_json = {k2: (str(v) if isinstance(v, Path) else [str(x) for x in v] if isinstance(v, list) else v)
                for k2, v in cfg.__dict__.items()}
    return BenchResult(config=cfg_json, machine=describe_machine(),
                       data={**data.describe(), "clip_ids_head": clip_ids[:k]}, rows=rows, teacher=teacher_info,
                       comparison=comparison, notes=notes, attention_samples=samples)


def _eps(ref: ReferenceOutputs | None, out: dict[str, np.ndarray]) -> dict[str, Any] | None:
    if ref is None:
        return None
    res = explainability_preservation_score(ref.outputs["attention"], out["attention"])
    d = res.to_dict()
    d["max_abs_logit_diff"] = float(np.abs(ref.outputs["logits"] - out["logits"]).max())
    return d


def _row(spec: Any, runner: BaseRunner, out: dict[str, np.ndarray], labels: np.ndarray, timing: TimingResult,
         teacher: ReferenceOutputs | None, source: ReferenceOutputs | None) -> dict[str, Any]:
    cfg = spec.manifest.model_config if spec.manifest else (spec.record or {}).get("model_config", {})
    params, flops = params_and_flops(cfg)
    metrics = classification_metrics(labels, softmax_fake_prob(out["logits"]))
    eps_source = _eps(source, out)
    if spec.backend == "torch":
        eps_source = {"eps_mean": 1.0, "eps_std": 0.0, "note": "FP32 checkpoint: it is its own source"}
    return {
        "name": runner.name, "artifact": str(spec.path), "backend": spec.backend, "format": spec.format,
        "precision": spec.precision, "device": runner.device, "preset": spec.preset, "model_kind": spec.model_kind,
        "heads_per_layer": list(cfg.get("heads_per_layer", [])),
        "artifact_size_bytes": spec.path.stat().st_size, "params": params, "flops": flops,
        "latency": timing.to_dict(), "throughput_clips_per_s": timing.throughput_clips_per_s,
        "peak_rss_bytes": runner.peak_rss_bytes,
        "rss_increase_on_load_bytes": max(0, runner.peak_rss_bytes - runner.rss_before_activate_bytes),
        "peak_gpu_memory_bytes": runner.peak_gpu_memory_bytes,
        "metrics": metrics.to_dict(), "eps_vs_teacher": _eps(teacher, out), "eps_vs_source": eps_source,
        "runner": runner.info.to_dict(),
    }
