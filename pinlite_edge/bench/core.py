"""The bench (SPEC §7): accuracy, EPS, latency, memory and end-to-end time of deployed artefacts on this machine.

:func:`run_bench` takes artefacts and data; it never trains or exports (the CLI, ``bench/prepare.py``, builds a
missing workspace or artefact first). Passes, each separate so that none disturbs another's measurement:

1. evaluation: one pass over the data runs every artefact and the references it needs (the FP32 teacher and each
   artefact's FP32 source checkpoint, on the artefacts' device) on the same batches (``runtimes.Comparator``);
   agreement and EPS come from ``runtimes.compare_outputs``;
2. latency: a fixed batch, the models timed in turns (``measure_interleaved``);
3. end to end: videos scored through the SDK's own path (``Detector``: decode + face crop + MFCC + model), beside
   the featurisation and the model alone (``bench/endtoend.py``);
4. memory: every model loaded alone in a fresh process (``bench/memory.py``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import PinliteError, UsageError, WriteError
from pinlite_edge.export.formats import default_precision, precisions_for
from pinlite_edge.metrics import classification_metrics, softmax_fake_prob
from pinlite_edge.runtimes import BACKENDS, BaseRunner, Comparator, compare_outputs, inspect_artifact, load_runner
from pinlite_edge.runtimes.trt.cuda import CUDA_BINDINGS
from pinlite_edge.utils.atomic import make_output_folder
from pinlite_edge.utils.hashing import sha256_file

from pinlite_edge.bench.data import EvalData, load_eval_data
from pinlite_edge.bench.endtoend import check_end_to_end_backends, find_videos, measure_end_to_end
from pinlite_edge.bench.machine import describe_machine
from pinlite_edge.bench.memory import measure_isolated
from pinlite_edge.bench.modelstats import params_and_flops
from pinlite_edge.bench.references import (
    ReferenceCacheError, ReferenceMismatchError, ReferenceOutputs, cache_name, load_reference, save_reference,
)
from pinlite_edge.bench.timing import TimingResult, measure_interleaved
from pinlite_edge.bench.workspace import (
    DEFAULT_WORKSPACE, WorkspaceError, cuda_index, enclosing_workspace, is_workspace, resolve_artefacts,
    source_checkpoint, stage_checkpoint,
)

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    runtime: str = "ort"
    precision: str | None = None  # None: the runtime's default (export.formats.default_precision: trt -> fp16)
    artifacts: Path | None = None  # None: the quickstart workspace (the CLI builds it when missing)
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
    cuda_binding: str = "auto"  # TensorRT runner: "auto" (pycuda first when importable) | "pycuda" | "cuda-python"
    out: Path = Path("bench-results")
    teacher: Path | None = None
    teacher_cache: Path | None = None
    cache_dir: Path | None = None
    time_teacher: bool = False
    plots: bool = True
    attention_clips: int = 4
    memory: bool = True  # measure each model alone in a fresh process
    memory_calls: int = 3
    e2e: bool = True  # end-to-end time per video and real-time factor
    e2e_data: str | None = None  # None/"auto": ../shared/data/real-av when present, else synthetic mp4 clips
    e2e_clips: int = 3
    data_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = True  # progress bars while the CLI builds the quickstart workspace (--no-progress: none)

    @property
    def resolved_precision(self) -> str:
        return self.precision or default_precision(self.runtime)

    def validate(self) -> None:
        if self.runtime not in BACKENDS:
            raise PinliteError(f"--runtime must be one of {BACKENDS}, got {self.runtime!r}")
        if self.resolved_precision not in precisions_for(self.runtime):
            raise WorkspaceError(f"no {self.resolved_precision} artefact format for runtime {self.runtime!r}; "
                                 f"choose from {list(precisions_for(self.runtime))}")
        if self.cuda_binding not in CUDA_BINDINGS:
            raise PinliteError(f"--cuda-binding must be one of {CUDA_BINDINGS}, got {self.cuda_binding!r}")
        if not self.compare and self.device and _device_for(self.runtime, self.device) != self.device \
                and not (self.runtime == "torch" and self.device == "tensorrt"):
            where = "the CPU (XNNPACK)" if self.runtime == "executorch" else "a CUDA GPU"
            raise UsageError(f"--runtime {self.runtime} runs on {where} only; --device {self.device} does not apply "
                             "(leave --device out)")
        for name in ("batch", "eval_batch", "iters", "block", "memory_calls", "e2e_clips"):
            if getattr(self, name) < 1:
                raise PinliteError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.e2e and self.e2e_data not in (None, "auto", "synthetic") and not Path(self.e2e_data).exists():
            raise UsageError(f"--e2e-data {self.e2e_data} does not exist (a folder or file of videos, auto or "
                             "synthetic)")
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
    end_to_end: dict[str, Any] | None = None
    attention_samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "machine": self.machine, "data": self.data, "teacher": self.teacher,
                "rows": self.rows, "comparison": self.comparison, "end_to_end": self.end_to_end,
                "notes": self.notes}


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


def runner_options(backend: str, cfg: BenchConfig) -> dict[str, Any]:
    """What ``load_runner`` gets for an artefact of ``backend`` under ``cfg``."""
    opts: dict[str, Any] = {"device": _device_for(backend, cfg.device)}
    if backend == "trt":
        opts["cuda_binding"] = cfg.cuda_binding
    else:
        opts["threads"] = cfg.threads
    return opts


def reference_device(artefact_devices: list[str], notes: list[str]) -> str:
    """Where the torch references run: on the artefacts' GPU when they run on one and torch sees it, else the CPU."""
    gpu = next((d for d in artefact_devices if d.startswith("cuda") or d == "tensorrt"), None)
    if gpu is None:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return gpu if gpu.startswith("cuda") else "cuda"
    notes.append(f"the artefacts run on {gpu} but torch sees no CUDA device: the FP32 references (teacher, sources) "
                 "ran on the CPU")
    return "cpu"


def _checkpoint_sha(path: Path) -> str:
    spec = inspect_artifact(path)
    return spec.sha256 or sha256_file(path)


def _reference(name: str, path: Path | None, sha: str | None, data: EvalData, cache_dir: Path, device: str,
               threads: int | None) -> tuple[ReferenceOutputs | None, BaseRunner | None]:
    """Cached outputs of a reference model, or a runner that must compute them in the evaluation pass."""
    if path is None or sha is None:
        return None, None
    cached = cache_dir / cache_name(sha, data.fingerprint, device)
    if cached.is_file():
        try:
            ref = load_reference(cached, data_fingerprint=data.fingerprint, model_sha256=sha)
            log.info("%s outputs from cache %s", name, cached)
            return ref, None
        except ReferenceCacheError as exc:
            log.warning("ignoring cache: %s", exc)
    return None, load_runner(path, device=device, threads=threads)


def _trained_face_crops(checkpoint: Path) -> set[bool]:
    """The face_crop settings of the real-video datasets a checkpoint was trained on (its record), if recorded."""
    from pinlite_edge.checkpoint import read_record

    try:
        train = (read_record(checkpoint).get("dataset") or {}).get("train") or {}
    except Exception:  # an unreadable record is reported where the checkpoint is loaded
        return set()
    parts = train.get("sources") if isinstance(train.get("sources"), list) else [train]
    return {bool(p["face_crop"]) for p in parts if isinstance(p, dict) and "face_crop" in p}


def _note_face_crop_mismatch(data: Any, checkpoints: list[Path], notes: list[str]) -> None:
    """Real-video evaluation data cropped otherwise than the models' real training data: their accuracy is measured
    on inputs unlike the ones they learnt from (``--data-option face_crop=...`` sets it)."""
    used = data.dataset.describe().get("face_crop") if hasattr(data.dataset, "describe") else None
    if used is None:
        return
    for path in checkpoints:
        trained = _trained_face_crops(path)
        if trained and used not in trained:
            note = (f"{data.spec} is read with face_crop={str(used).lower()}, but {path} was trained on real video "
                    f"with face_crop={str(trained.pop()).lower()}: pass --data-option face_crop="
                    f"{str(not used).lower()} to evaluate it on inputs like its training data")
            log.warning(note)
            notes.append(note)


def _artefact_paths(cfg: BenchConfig) -> tuple[list[Path], Path | None]:
    if cfg.compare:
        paths = [Path(p) for p in cfg.compare]
        if cfg.artifacts is not None:
            return paths, (cfg.artifacts if is_workspace(cfg.artifacts) else None)
        # artefacts of one workspace: its teacher (EPS vs teacher, SPEC §7) and caches, as with --artifacts
        homes = {enclosing_workspace(p) for p in paths}
        workspace = homes.pop() if len(homes) == 1 else None
        if workspace is not None:
            log.info("--compare: the artefacts are in workspace %s; its teacher and caches are used", workspace)
        return paths, workspace
    root = cfg.artifacts if cfg.artifacts is not None else DEFAULT_WORKSPACE
    paths = resolve_artefacts(root, cfg.runtime, cfg.resolved_precision, cfg.device)
    return paths, (root if is_workspace(root) else None)


#: seconds between the accuracy pass's "evaluated N/M clips" lines (it said one per --eval-batch batch: on a large
#: test split, thousands of lines)
EVAL_REPORT_S = 10.0


class EvalProgress:
    """Says how far the accuracy pass is, at most every :data:`EVAL_REPORT_S` seconds, with an estimate of the time
    left, and always once at the end."""

    def __init__(self, total: int, say: Callable[[str], None], clock: Callable[[], float] = time.perf_counter):
        self.total, self.say, self.clock = total, say, clock
        self.start = self.last = clock()

    def update(self, done: int) -> None:
        now = self.clock()
        if done < self.total and now - self.last < EVAL_REPORT_S:
            return
        self.last = now
        spent = now - self.start
        left = f", about {spent * (self.total - done) / done:.0f} s left" if 0 < done < self.total else ""
        self.say(f"  evaluated {done}/{self.total} clips ({spent:.0f} s{left})")


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Bench existing artefacts on ``cfg.data``; raises :class:`WorkspaceError` (saying how to build them) when the
    workspace or an artefact is missing. Never trains or exports."""
    cfg.validate()
    say = progress or (lambda msg: log.info(msg))
    notes: list[str] = []
    paths, workspace = _artefact_paths(cfg)
    specs = [inspect_artifact(p) for p in paths]
    if len({s.contract for s in specs}) != 1:
        raise WorkspaceError("the artefacts were built for different input contracts; bench them separately")
    contract: InputContract = specs[0].contract
    if cfg.teacher is not None:
        teacher = inspect_artifact(cfg.teacher)
        if teacher.model_kind != "teacher":
            raise UsageError(f"--teacher {cfg.teacher} is a {teacher.model_kind}, not the FP32 teacher: EPS and "
                             "agreement against it would compare the student with itself (give the teacher's "
                             "checkpoint, e.g. pinlite-workspace/teacher/best.safetensors)")
        if teacher.contract != contract:
            raise UsageError(f"--teacher {cfg.teacher} was trained for another input contract (preset "
                             f"{teacher.preset!r}, frames {teacher.contract.frames_shape()}) than the artefacts "
                             f"(preset {specs[0].preset!r}, frames {contract.frames_shape()}); give the teacher the "
                             "student was distilled from")
    options = [runner_options(s.backend, cfg) for s in specs]
    for s, o in zip(specs, options):  # --compare: one --device for backends that run in different places
        if cfg.device and o["device"] != cfg.device:
            notes.append(f"{s.path.name} ({s.backend}) runs on {o['device']}, not on --device {cfg.device}")
    runners: list[BaseRunner] = [load_runner(s.path, **o) for s, o in zip(specs, options)]
    ref_device = reference_device([o["device"] for o in options], notes)
    if cfg.e2e:  # what the artefacts need is checked first; this one in seconds, not after the accuracy and latency
        check_end_to_end_backends()

    cache_dir = cfg.cache_dir or ((workspace / "cache" / "bench") if workspace else cfg.out / "cache")
    data = load_eval_data(cfg.data, cfg.split, contract, limit=cfg.limit,
                          cache_dir=(workspace / "cache") if workspace else None, **cfg.data_options)
    say(f"data: {cfg.data} {cfg.split}, {data.num_clips} clips (fingerprint {data.fingerprint[:12]})")

    refs = _load_references(cfg, workspace, specs, data, cache_dir, ref_device, notes)
    teacher_ref, teacher_runner, source_refs = refs.teacher_ref, refs.teacher_runner, refs.source_refs
    if teacher_runner is not None or refs.source_runners:  # their outputs are cached after the evaluation pass
        try:
            make_output_folder(cache_dir, "--cache-dir" if cfg.cache_dir else "the reference cache", keep=False)
        except (UsageError, WriteError) as exc:
            if cfg.cache_dir:
                raise
            raise type(exc)(f"{exc}; give --cache-dir DIR") from None

    # 1. evaluation pass: every model on the same batches, the data read once
    evaluated: dict[str, BaseRunner] = {f"artefact:{i}": r for i, r in enumerate(runners)}
    if teacher_runner is not None:
        evaluated["teacher"] = teacher_runner
    evaluated.update({f"source:{sha}": r for sha, r in refs.source_runners.items()})
    labels: list[np.ndarray] = []
    clip_ids: list[str] = []
    eval_progress = EvalProgress(data.num_clips, say)

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in data.batches(cfg.eval_batch):
            labels.append(batch["label"])
            clip_ids.extend(batch["clip_id"])
            yield batch["frames"], batch["mfcc"]
            eval_progress.update(len(clip_ids))

    active: list[BaseRunner] = []
    try:
        extra = ([refs.timing_teacher] if refs.timing_teacher else []) + list(refs.source_runners.values())
        for r in runners + extra:
            r.activate()
            active.append(r)
        report = Comparator(evaluated).run(batches=batches())
        labels_all = np.concatenate(labels)
        if teacher_runner is not None:
            teacher_ref = ReferenceOutputs(refs.teacher_sha or "", data.fingerprint, report.outputs["teacher"],
                                           clip_ids)
            save_reference(cache_dir / cache_name(teacher_ref.model_sha256, data.fingerprint, ref_device), teacher_ref)
        for sha in refs.source_runners:
            source_refs[sha] = ReferenceOutputs(sha, data.fingerprint, report.outputs[f"source:{sha}"], clip_ids)
            save_reference(cache_dir / cache_name(sha, data.fingerprint, ref_device), source_refs[sha])
        for name, ref in [("teacher", teacher_ref), *((f"source {sha[:12]}", r) for sha, r in source_refs.items())]:
            if ref is not None and ref.clip_ids != clip_ids:  # a cache for these data holds these clips, in order
                raise ReferenceMismatchError(f"{name} reference holds {ref.num_clips} clips, not the {len(clip_ids)} "
                                          "clips this run evaluated, in their order")

        # 2. latency
        fixed = data.first_batch(cfg.batch)
        timed = list(runners) + ([refs.timing_teacher] if (refs.timing_teacher and cfg.time_teacher) else [])
        say(f"timing {len(timed)} model(s): batch {cfg.batch}, {cfg.warmup} warm-up + {cfg.iters} calls each"
            + (f", in turns of {cfg.turn_warmup} untimed + {cfg.block} timed calls" if len(timed) > 1 else ""))
        timings = measure_interleaved(timed, fixed["frames"], fixed["mfcc"], warmup=cfg.warmup, iters=cfg.iters,
                                      block=cfg.block, turn_warmup=cfg.turn_warmup)

        # 3. end to end, through the SDK's own featurisation and Detector
        e2e_info, e2e_rows = None, [None] * len(runners)
        if cfg.e2e:
            videos = find_videos(cfg.e2e_data, cfg.e2e_clips, cache_dir, contract)
            say(f"end to end: {len(videos.paths)} video(s), {videos.source}")
            e2e_info, e2e_rows = measure_end_to_end(runners, videos, contract, batch_size=cfg.eval_batch)
    finally:
        for r in active:
            r.deactivate()

    memory = _measure_memory(cfg, specs, options, runners, fixed, say, notes) if cfg.memory else [None] * len(runners)
    outputs = [report.outputs[f"artefact:{i}"] for i in range(len(runners))]
    rows = [_row(specs[i], runners[i], outputs[i], labels_all, timings[i], teacher_ref,
                 source_refs.get(refs.source_of[i] or ""), memory[i], e2e_rows[i]) for i in range(len(runners))]
    teacher_info: dict[str, Any] = {"checkpoint": str(refs.teacher_path) if refs.teacher_path else None,
                                    "sha256": refs.teacher_sha, "device": ref_device,
                                    "cache": str(cfg.teacher_cache) if cfg.teacher_cache else None}
    if teacher_ref is not None:
        teacher_info["metrics"] = classification_metrics(
            labels_all, softmax_fake_prob(teacher_ref.outputs["logits"])).to_dict()
    if refs.timing_teacher and cfg.time_teacher:
        teacher_info["latency"] = timings[-1].to_dict()
        cfg_dict = refs.timing_teacher.spec.record.get("model_config") if refs.timing_teacher.spec.record else None
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
    cfg_json["precision"] = None if cfg.compare else cfg.resolved_precision
    gpu = cuda_index(cfg.device) if cfg.device and cfg.device.startswith("cuda") else None
    return BenchResult(config=cfg_json, machine=describe_machine(gpu),
                       data={**data.describe(), "clip_ids_head": clip_ids[:k]}, rows=rows, teacher=teacher_info,
                       comparison=comparison, notes=notes, end_to_end=e2e_info, attention_samples=samples)


@dataclass
class _References:
    """What the bench compares the artefacts with: the FP32 teacher (outputs from a cache, or a runner for the
    evaluation pass) and each artefact's FP32 source checkpoint (by sha256)."""

    teacher_path: Path | None
    teacher_sha: str | None
    teacher_ref: ReferenceOutputs | None
    teacher_runner: BaseRunner | None  # evaluated with the artefacts (its outputs were not cached)
    timing_teacher: BaseRunner | None  # timed for the plots, even when its outputs came from a cache
    source_of: list[str | None]  # per artefact: its source checkpoint's sha256 (None: no EPS vs source)
    source_refs: dict[str, ReferenceOutputs]  # cached source outputs
    source_runners: dict[str, BaseRunner]  # sources to evaluate with the artefacts


def _load_references(cfg: BenchConfig, workspace: Path | None, specs: list[Any], data: EvalData, cache_dir: Path,
                     ref_device: str, notes: list[str]) -> _References:
    """The FP32 teacher and every artefact's FP32 source checkpoint: outputs cached per device kind, else runners
    (why one is missing goes to ``notes``)."""
    teacher_path = cfg.teacher or (stage_checkpoint(workspace, "teacher") if workspace else None)
    teacher_sha = _checkpoint_sha(teacher_path) if teacher_path else None
    teacher_ref: ReferenceOutputs | None = None
    teacher_runner: BaseRunner | None = None
    if cfg.teacher_cache is not None:
        teacher_ref = load_reference(cfg.teacher_cache, data_fingerprint=data.fingerprint, model_sha256=teacher_sha)
        teacher_sha = teacher_ref.model_sha256
        notes.append(f"teacher outputs loaded from {cfg.teacher_cache}")
    elif teacher_path is None:
        notes.append("no FP32 teacher (neither --teacher, a workspace teacher, nor --teacher-cache): "
                     "EPS vs teacher not reported")
    else:
        teacher_ref, teacher_runner = _reference("teacher", teacher_path, teacher_sha, data, cache_dir, ref_device,
                                                 cfg.threads)
    # the teacher is timed (for the plots) even when its outputs came from a cache
    timing_teacher = teacher_runner or (load_runner(teacher_path, device=ref_device, threads=cfg.threads)
                                        if cfg.time_teacher and teacher_path else None)
    sources: dict[str, Path] = {}
    source_of: list[str | None] = []
    for s in specs:
        if s.backend == "torch":
            source_of.append(None)  # an FP32 checkpoint is its own source
            continue
        path, why = source_checkpoint(s.path, s.manifest, workspace)
        if path is None:
            notes.append(f"{s.path.name}: no EPS vs source ({why})")
            source_of.append(None)
            continue
        sha = _checkpoint_sha(path)
        sources[sha] = path
        source_of.append(sha)
    _note_face_crop_mismatch(data, [*sources.values(), *(s.path for s in specs if s.backend == "torch")], notes)
    source_refs: dict[str, ReferenceOutputs] = {}
    source_runners: dict[str, BaseRunner] = {}
    for sha, path in sources.items():
        if sha == teacher_sha and teacher_ref is not None:
            source_refs[sha] = teacher_ref
            continue
        ref, runner = _reference(f"source {path.name}", path, sha, data, cache_dir, ref_device, cfg.threads)
        if ref is not None:
            source_refs[sha] = ref
        elif runner is not None:
            source_runners[sha] = runner
    return _References(teacher_path, teacher_sha, teacher_ref, teacher_runner, timing_teacher, source_of,
                       source_refs, source_runners)


def _measure_memory(cfg: BenchConfig, specs: list[Any], options: list[dict[str, Any]], runners: list[BaseRunner],
                    fixed: dict[str, np.ndarray], say: Callable[[str], None],
                    notes: list[str]) -> list[dict[str, Any] | None]:
    """Pass 4: each model loaded alone in a fresh process, after every other pass; a failure is a note, never
    hidden (the row then has no memory figure)."""
    memory: list[dict[str, Any] | None] = [None] * len(runners)
    for i, (s, o) in enumerate(zip(specs, options)):
        say(f"memory: {runners[i].name} alone in a fresh process ({cfg.memory_calls} calls)")
        try:
            memory[i] = measure_isolated(s.path, o, fixed["frames"], fixed["mfcc"], cfg.memory_calls).to_dict()
        except Exception as exc:  # reported, never hidden: the row shows no memory figure and a note says why
            notes.append(f"memory of {runners[i].name} not measured: {type(exc).__name__}: {exc}")
    return memory


def _against(name: str, ref: ReferenceOutputs | None, other: str, out: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """Agreement and EPS of ``out`` against a reference's outputs (``runtimes.compare_outputs``)."""
    return None if ref is None else compare_outputs(name, ref.outputs, other, out).to_dict()


def _row(spec: Any, runner: BaseRunner, out: dict[str, np.ndarray], labels: np.ndarray, timing: TimingResult,
         teacher: ReferenceOutputs | None, source: ReferenceOutputs | None, memory: dict[str, Any] | None,
         e2e: dict[str, Any] | None) -> dict[str, Any]:
    cfg = spec.manifest.model_config if spec.manifest else (spec.record or {}).get("model_config", {})
    params, flops = params_and_flops(cfg)
    metrics = classification_metrics(labels, softmax_fake_prob(out["logits"]))
    eps_source = _against("FP32 source", source, runner.name, out)
    if spec.backend == "torch":
        eps_source = {"eps_mean": 1.0, "eps_std": 0.0, "note": "FP32 checkpoint: it is its own source"}
    return {
        "name": runner.name, "artifact": str(spec.path), "backend": spec.backend, "format": spec.format,
        "precision": spec.precision, "device": runner.device, "preset": spec.preset, "model_kind": spec.model_kind,
        "heads_per_layer": list(cfg.get("heads_per_layer", [])),
        "artifact_size_bytes": spec.path.stat().st_size, "params": params, "flops": flops,
        "latency": timing.to_dict(), "throughput_clips_per_s": timing.throughput_clips_per_s,
        "memory": memory, "end_to_end": e2e,
        "metrics": metrics.to_dict(), "eps_vs_teacher": _against("FP32 teacher", teacher, runner.name, out),
        "eps_vs_source": eps_source, "runner": runner.info.to_dict(),
    }
