"""Real-faces evaluation (issue #12): learned models and the classical sync baseline on genuine talking-face clips.

For every clip of the chosen split of ``pinlite_edge/data/splits/real_av.json`` (default ``test``; ``dev`` for
sanity checks, ``train`` for the baseline's threshold) five conditions are built from ONE decode of the clip:

==============  ======================================================================================
original        the in-sync clip
delay200        audio delayed by 5 frames (200 ms at 25 fps; 5 frames at any rate, the offset head's unit)
advance200      audio advanced by 5 frames
delay80         audio delayed by 2 frames (80 ms at 25 fps)
swap            audio of the same time span of another clip of the split, of a different speaker
                (the next clip in split order whose speaker group differs; deterministic)
==============  ======================================================================================

Sign convention (``pinlite_edge.data.syncpairs``): delay ``k`` frames = the window's audio is read from
``start - k / fps``. Windows are half a window apart (``--stride``) and keep a margin of 5 frames at both ends so the
shifted audio stays inside the clip; a clip shorter than one window plus both margins is skipped (noted in the report).

Per model (``NAME=PATH``: a ``.safetensors`` checkpoint or an ``.onnx`` / ``.pte`` / engine artefact, loaded with
``pinlite_edge.runtimes.load_runner``) each condition of each clip is scored as ``Detector`` scores a file
(``Detector.score_windows``): the offset scan's P(fake) (primary, the Detector's default verdict;
``pinlite_edge/offset_scan.py``) and the mean and max of the window P(fake). The report gives the ROC AUC of originals
vs each manipulated condition, the false-positive rate on originals at the model's threshold (its operating point,
else 0.5), and the offset accuracy within +-1 frame (clip offset = the scan's best shift; the offset head's own
estimate is reported beside it) on the +-200 ms clips and on the 80 ms clips.  The training-free baseline
(``benchmarks/sync_baseline.py``) is one more row on the same windows; its threshold is chosen on the TRAIN split
(the cut between train originals and all train manipulations that maximises TPR - FPR, Youden's J, on the mean
aggregate), unless ``--baseline-threshold`` gives one.

    python benchmarks/real_faces.py --model student=ws/distilled/best.safetensors --model onnx=ws/x.onnx
    python benchmarks/real_faces.py --split dev --baseline-only

Writes ``benchmarks/results/real_faces/<machine>.{json,md}`` with the run's record (``benchmarks/_record.py``;
``real_faces_<split>/`` for another split; ``--out-dir`` (results root) and ``--stem`` (bench name) change that).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import RESULTS_DIR, build_record, repo_relative, write_result  # noqa: E402
from benchmarks.sync_baseline import BaselineConfig, mouth_motion, window_sync  # noqa: E402
from pinlite_edge.contract import InputContract, contract_for_preset  # noqa: E402
from pinlite_edge.errors import DatasetError, InputError, PinliteError  # noqa: E402
from pinlite_edge.features.windows import PreparedClip, Window, window_at, window_starts  # noqa: E402
from pinlite_edge.metrics import roc_auc  # noqa: E402
from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS  # noqa: E402
from pinlite_edge.utils.hashing import sha256_file  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.real_faces")

DEFAULT_ROOT = REPO_ROOT.parent / "shared" / "data" / "real-av"
DEFAULT_SPLIT_FILE = REPO_ROOT / "pinlite_edge" / "data" / "splits" / "real_av.json"
DEFAULT_OUT_DIR = RESULTS_DIR
#: Condition name -> audio delay in video frames (None: audio of another clip).
CONDITIONS: dict[str, int | None] = {"original": 0, "delay200": 5, "advance200": -5, "delay80": 2, "swap": None}
MANIPULATED = ("delay200", "advance200", "delay80", "swap")
MARGIN_FRAMES = 5
BASELINE_NAME = "sync-baseline"
#: clip scores: the offset scan's P(fake) (what Detector decides on by default), the mean and max window P(fake)
AGGREGATES = ("scan", "mean", "max")
PRIMARY = "scan"


# --- data ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitClip:
    """One clip of the split file; ``path`` is resolved against the data root."""

    file: str
    path: Path
    sha256: str
    speaker_group: str


def load_split(split_file: Path, root: Path, split: str) -> list[SplitClip]:
    """The clips of ``split`` in file order. Raises :class:`DatasetError` for a bad file or a missing clip."""
    try:
        doc = json.loads(Path(split_file).read_text())
        entries = doc["clips"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read the split file {split_file}: {exc}; pass --split-file "
                           "pinlite_edge/data/splits/real_av.json") from None
    names = sorted({str(e.get("split")) for e in entries})
    clips = [SplitClip(e["file"], Path(root) / e["file"], e["sha256"], e["speaker_group"])
             for e in entries if e.get("split") == split]
    if not clips:
        raise DatasetError(f"split {split!r} has no clip in {split_file}; the file has {names}")
    missing = [c.file for c in clips if not c.path.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} clip(s) of split {split!r} are missing under {root}: {missing[:3]}; "
                           "pass --root pointing at the real-av folder")
    return clips


def data_fingerprint(clips: Sequence[SplitClip]) -> str:
    """sha256 over the sorted ``(file, sha256)`` pairs of the split file's clips."""
    h = hashlib.sha256()
    for file, digest in sorted((c.file, c.sha256) for c in clips):
        h.update(f"{file}\t{digest}\n".encode())
    return h.hexdigest()


def swap_partners(clips: Sequence[SplitClip]) -> list[int | None]:
    """For clip ``i``, the index of the next clip (cyclically) with another speaker group; None if there is none."""
    out: list[int | None] = []
    for i, clip in enumerate(clips):
        partner = None
        for j in range(1, len(clips)):
            other = (i + j) % len(clips)
            if clips[other].speaker_group != clip.speaker_group:
                partner = other
                break
        out.append(partner)
    return out


class ClipStore:
    """Prepared clips kept in memory for the run: each (clip, contract) is decoded and face-cropped once."""

    def __init__(self, prepare: Callable[[Path, InputContract], PreparedClip] | None = None):
        if prepare is None:
            from pinlite_edge.features.pipeline import prepare_file

            prepare = prepare_file
        self._prepare = prepare
        self._cache: dict[tuple[str, InputContract], PreparedClip] = {}
        self.seconds: dict[tuple[str, InputContract], float] = {}

    def get(self, path: Path, contract: InputContract) -> PreparedClip:
        key = (str(path), contract)
        if key not in self._cache:
            t0 = time.perf_counter()
            self._cache[key] = self._prepare(path, contract)
            self.seconds[key] = time.perf_counter() - t0
            clip = self._cache[key]
            log.info("prepared %s at %d px in %.2f s (%.3f s per s of video)", Path(path).name,
                     contract.frame_size, self.seconds[key], self.seconds[key] / max(clip.video_seconds, 1e-9))
        return self._cache[key]

    def featurise_seconds_per_second(self, path: Path, contract: InputContract) -> float:
        clip = self.get(path, contract)
        return self.seconds[(str(path), contract)] / max(clip.video_seconds, 1e-9)


# --- windows and conditions ------------------------------------------------------------------------------------
def condition_starts(clip: PreparedClip, contract: InputContract, stride_seconds: float | None,
                     margin_frames: int = MARGIN_FRAMES) -> list[float] | None:
    """Window starts keeping ``margin_frames`` at both ends (so every condition stays inside the clip), or None when
    the clip is shorter than one window plus both margins."""
    margin = margin_frames / clip.fps
    inner = clip.duration - 2 * margin
    if inner + 1e-6 < contract.window_seconds:
        return None
    stride = contract.window_seconds / 2 if stride_seconds is None else stride_seconds
    return [round(margin + s, 6) for s in window_starts(inner, contract, stride, fps=clip.fps)]


def swap_audio_start(start: float, partner: PreparedClip, window_seconds: float) -> float:
    """Same time span in the partner's audio; wrapped around when the partner is shorter."""
    room = partner.audio_seconds - window_seconds
    if room <= 0:
        return 0.0
    return start if start <= room else float(start % room)


def window_audio(clip: PreparedClip, start: float, delay_seconds: float | None, partner: PreparedClip | None,
                 window_seconds: float) -> tuple[np.ndarray | None, float]:
    """Where the audio of the window starting at ``start`` comes from: ``(signal, start in it)``. A delay in seconds
    reads the clip's own audio from ``start - delay`` (signal None: the clip's); ``None`` reads the partner's audio
    (another speaker) over the same time span."""
    if delay_seconds is not None:
        return None, start - delay_seconds
    if partner is None:
        raise InputError("the swap condition needs a partner clip of another speaker")
    return partner.audio, swap_audio_start(start, partner, window_seconds)


def delayed_windows(clip: PreparedClip, contract: InputContract, starts: Sequence[float],
                    delay_seconds: float | None, partner: PreparedClip | None = None,
                    scan_offsets: tuple[int, ...] = ()) -> list[Window]:
    """Model windows of ``clip`` with the audio delayed by ``delay_seconds`` (``None``: the partner's audio, see
    :func:`window_audio`), with the offset scan's shifted-audio MFCCs when ``scan_offsets`` are given (shifted from
    that audio, as Detector shifts a file's)."""
    windows = []
    for s in starts:
        audio, audio_start = window_audio(clip, s, delay_seconds, partner, contract.window_seconds)
        windows.append(window_at(clip, contract, s, audio=audio, audio_start_seconds=audio_start,
                                 scan_offsets=scan_offsets))
    return windows


def condition_delay(clip: PreparedClip, condition: str) -> float | None:
    """The audio delay in seconds of ``condition`` (see :data:`CONDITIONS`) for ``clip``; None for swapped audio."""
    if condition not in CONDITIONS:
        raise InputError(f"unknown condition {condition!r}; choose from {list(CONDITIONS)}")
    shift = CONDITIONS[condition]
    return None if shift is None else shift / clip.fps


def condition_windows(clip: PreparedClip, contract: InputContract, starts: Sequence[float], condition: str,
                      partner: PreparedClip | None = None, scan_offsets: tuple[int, ...] = ()) -> list[Window]:
    """Model windows of ``clip`` under ``condition`` (see :data:`CONDITIONS`; :func:`delayed_windows`)."""
    return delayed_windows(clip, contract, starts, condition_delay(clip, condition), partner, scan_offsets)


# --- scoring ---------------------------------------------------------------------------------------------------
@dataclass
class ConditionScore:
    """Clip-level scores of one condition: the clip scores of :data:`AGGREGATES` and the clip's offset estimate
    (the offset scan's for models; ``offset_head``: the offset head's, for comparison)."""

    scan: float
    mean: float
    max: float
    offset: int | None
    window_scores: list[float] = field(default_factory=list)
    offset_head: int | None = None
    scan_curve: dict[int, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"scan": self.scan, "mean": self.mean, "max": self.max, "offset": self.offset,
                "offset_head": self.offset_head,
                "scan_curve": None if self.scan_curve is None else {str(k): round(v, 5)
                                                                   for k, v in self.scan_curve.items()},
                "window_scores": [round(float(x), 6) for x in self.window_scores]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ConditionScore":
        """The clip-level scores back from :meth:`to_dict` as stored in a report (windows and curve left out)."""
        return cls(scan=d["scan"], mean=d["mean"], max=d["max"], offset=d["offset"], offset_head=d.get("offset_head"))


def score_windows(runner: Any, windows: Sequence[Window], batch_size: int = 16,
                  scan_offsets: tuple[int, ...] = DEFAULT_SCAN_OFFSETS) -> ConditionScore:
    """Score ``windows`` (made with the same ``scan_offsets``) exactly as ``Detector`` scores a file: window P(fake),
    their mean and max, the offset scan's P(fake) and offset, and the offset head's offset."""
    from pinlite_edge.detector import Detector

    r = Detector(runner, threshold=0.5, aggregate="scan", batch_size=batch_size,
                 scan_offsets=scan_offsets).score_windows(list(windows))
    assert r.scan is not None and r.fake_prob_scan is not None
    return ConditionScore(scan=r.fake_prob_scan, mean=r.fake_prob_mean, max=r.fake_prob_max, offset=r.offset_frames,
                          window_scores=r.fake_prob_per_window.tolist(), offset_head=r.offset_head_frames,
                          scan_curve=r.scan.curve)


def delayed_baseline(clip: PreparedClip, contract: InputContract, starts: Sequence[float],
                     delay_seconds: float | None, partner: PreparedClip | None, config: BaselineConfig,
                     motion: np.ndarray) -> ConditionScore:
    """The sync baseline on the same windows as :func:`delayed_windows` (native frames of each window's span); clip
    offset = argmax of the window-averaged correlation curve."""
    n = int(round(contract.window_seconds * clip.fps))
    scores, curves, lags = [], [], None
    for s in starts:
        audio, audio_start = window_audio(clip, s, delay_seconds, partner, contract.window_seconds)
        res = window_sync(clip, s, n, config, audio=audio, audio_start_seconds=audio_start, motion=motion)
        scores.append(res.sync_score)
        curves.append(res.corr)
        lags = res.lags
    mean_curve = np.nanmean(np.stack(curves), axis=0) if curves else np.array([])
    offset = None
    if lags is not None and np.isfinite(mean_curve).any():
        offset = int(lags[int(np.nanargmax(mean_curve))])
    arr = np.asarray(scores, np.float64)
    # the baseline's clip score is already a scan over lags (max off-zero correlation - correlation at 0): its "scan"
    # column is that score's mean over windows, as its "mean" column
    return ConditionScore(scan=float(arr.mean()), mean=float(arr.mean()), max=float(arr.max()), offset=offset,
                          window_scores=arr.tolist())


def baseline_condition(clip: PreparedClip, contract: InputContract, starts: Sequence[float], condition: str,
                       partner: PreparedClip | None, config: BaselineConfig, motion: np.ndarray) -> ConditionScore:
    """The sync baseline under ``condition`` (:func:`delayed_baseline`)."""
    return delayed_baseline(clip, contract, starts, condition_delay(clip, condition), partner, config, motion)


# --- metrics ---------------------------------------------------------------------------------------------------
def verdict_score(method: str, cond: ConditionScore) -> float:
    """A clip's score as its method decides on it: a model's offset-scan P(fake); the baseline's one sync score (it
    sits in every aggregate; read from ``mean``)."""
    return cond.mean if method == BASELINE_NAME else cond.scan


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def auc_vs_original(original: Sequence[float], manipulated: Sequence[float]) -> float | None:
    """ROC AUC with manipulated = positive (higher score = more fake); None without both classes."""
    if not original or not manipulated:
        return None
    labels = np.r_[np.zeros(len(original)), np.ones(len(manipulated))]
    return _nan_to_none(roc_auc(labels, np.r_[np.asarray(original, float), np.asarray(manipulated, float)]))


def offset_accuracy(pairs: Sequence[tuple[int | None, int]], tolerance: int = 1) -> float | None:
    """Fraction of ``(estimate, truth)`` pairs within ``tolerance`` frames (a missing estimate counts wrong)."""
    if not pairs:
        return None
    return float(np.mean([est is not None and abs(est - truth) <= tolerance for est, truth in pairs]))


def youden_threshold(original: Sequence[float], manipulated: Sequence[float]) -> float:
    """The score cut (fake when ``score >= cut``) maximising TPR - FPR; ties go to the lower FPR, then the higher
    cut. Candidate cuts are midpoints between sorted distinct scores (and just beyond both ends)."""
    o, m = np.asarray(original, float), np.asarray(manipulated, float)
    if o.size == 0 or m.size == 0:
        raise InputError("choosing a threshold needs original and manipulated scores")
    values = np.unique(np.r_[o, m])
    cuts = np.r_[values[0] - 1.0, (values[:-1] + values[1:]) / 2, values[-1] + 1.0]
    best: tuple[float, float, float] | None = None
    for cut in cuts:
        tpr, fpr = float((m >= cut).mean()), float((o >= cut).mean())
        key = (tpr - fpr, -fpr, cut)
        if best is None or key > best:
            best = key
    assert best is not None
    return float(best[2])


def summarise(per_clip: Sequence[dict[str, ConditionScore]], threshold: float | Mapping[str, float]) -> dict[str, Any]:
    """One table row: AUCs (mean = primary, max), FPR on originals and detection rate (TPR) of each manipulated
    condition at ``threshold`` (one value, or one per aggregate: a model's operating point), offset accuracies."""
    thresholds = dict(threshold) if isinstance(threshold, Mapping) else {a: float(threshold) for a in AGGREGATES}
    row: dict[str, Any] = {"num_clips": len(per_clip)}
    for agg in AGGREGATES:
        orig = [getattr(c["original"], agg) for c in per_clip]
        suffix = "" if agg == PRIMARY else f"_{agg}"
        thr = thresholds[agg]
        row[f"threshold{suffix}"] = thr
        for cond in MANIPULATED:
            fake = [getattr(c[cond], agg) for c in per_clip if cond in c]
            row[f"auc_{cond}{suffix}"] = auc_vs_original(orig, fake)
            row[f"tpr_{cond}{suffix}"] = float(np.mean([x >= thr for x in fake])) if fake else None
        row[f"fpr{suffix}"] = float(np.mean([x >= thr for x in orig])) if orig else None
    row["offset_acc_200"] = offset_accuracy([(c[k].offset, CONDITIONS[k]) for c in per_clip  # type: ignore[misc]
                                             for k in ("delay200", "advance200")])
    row["offset_acc_80"] = offset_accuracy([(c["delay80"].offset, CONDITIONS["delay80"]) for c in per_clip])
    row["offset_acc_original"] = offset_accuracy([(c["original"].offset, 0) for c in per_clip])
    heads = [(c[k].offset_head, CONDITIONS[k]) for c in per_clip for k in ("delay200", "advance200")
             if c[k].offset_head is not None]
    row["offset_acc_200_head"] = offset_accuracy(heads) if heads else None  # type: ignore[arg-type]
    return row


# --- the run ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path


def parse_model_spec(text: str) -> ModelSpec:
    """``NAME=PATH`` -> :class:`ModelSpec`; raises :class:`InputError` naming the bad argument."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise InputError(f"--model {text!r}: expected NAME=PATH, e.g. student=ws/distilled/best.safetensors")
    if name.strip() == BASELINE_NAME:
        raise InputError(f"--model {text!r}: the name {BASELINE_NAME!r} is the baseline's; pick another")
    p = Path(path.strip()).expanduser()
    if not p.is_file():
        raise InputError(f"--model {text!r}: {p} is not a file; give a .safetensors checkpoint or an exported "
                         "artefact file (.onnx, .pte, engine)")
    return ModelSpec(name.strip(), p)


@dataclass
class EvalConfig:
    root: Path = DEFAULT_ROOT
    split_file: Path = DEFAULT_SPLIT_FILE
    split: str = "test"
    models: list[ModelSpec] = field(default_factory=list)
    run_models: bool = True
    run_baseline: bool = True
    baseline_threshold: float | None = None  # None: chosen on the train split
    baseline_preset: str = "paper"
    stride_seconds: float | None = None  # None: half a window
    margin_frames: int = MARGIN_FRAMES
    threshold: float | None = None  # None: each model's operating point, else 0.5
    batch_size: int = 16
    device: str = "cpu"
    threads: int | None = 1
    verify_hashes: bool = True
    scan_offsets: tuple[int, ...] = DEFAULT_SCAN_OFFSETS  # the offset scan's shifts (frames), as Detector takes them


@dataclass
class SplitRun:
    """Per-clip results of one split: clip info, and ``scores[method][clip_index] = {condition: ConditionScore}``."""

    clips: list[SplitClip]
    info: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    scores: dict[str, dict[int, dict[str, ConditionScore]]] = field(default_factory=dict)


def _plan_split(cfg: EvalConfig, split: str, store: ClipStore, contract: InputContract) -> SplitRun:
    """Load, hash-check and prepare the clips of ``split`` at ``contract``. A clip that fails to decode is left out
    of the run and listed in ``skipped`` with the error (the report shows it); too-short clips are noted later."""
    clips: list[SplitClip] = []
    info: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for clip in load_split(cfg.split_file, cfg.root, split):
        entry: dict[str, Any] = {"file": clip.file, "speaker_group": clip.speaker_group, "sha256": clip.sha256}
        if cfg.verify_hashes:
            actual = sha256_file(clip.path)
            entry["sha256_matches_split"] = actual == clip.sha256
            if actual != clip.sha256:
                log.warning("%s: sha256 %s differs from the split file's %s (the clip changed)", clip.file,
                            actual[:12], clip.sha256[:12])
        try:
            prepared = store.get(clip.path, contract)
        except PinliteError as exc:
            log.error("skipping %s: %s", clip.file, exc)
            skipped.append({"file": clip.file, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        clips.append(clip)
        entry.update(duration_s=round(prepared.duration, 4), fps=prepared.fps,
                     face_found=getattr(prepared, "face_found", None),
                     face_coverage=getattr(prepared, "face_coverage", None))
        info.append(entry)
    return SplitRun(clips=clips, info=info, skipped=skipped)


def _evaluate_method(run: SplitRun, cfg: EvalConfig, store: ClipStore, contract: InputContract, method: str,
                     score_fn: Callable[[PreparedClip, list[float], str, PreparedClip | None], ConditionScore]) -> None:
    partners = swap_partners(run.clips)
    results: dict[int, dict[str, ConditionScore]] = {}
    for i, clip in enumerate(run.clips):
        prepared = store.get(clip.path, contract)
        starts = condition_starts(prepared, contract, cfg.stride_seconds, cfg.margin_frames)
        if starts is None:
            note = (f"{prepared.duration:.2f} s is shorter than one {contract.window_seconds:g} s window plus "
                    f"{cfg.margin_frames}-frame margins at both ends")
            if not any(s["file"] == clip.file for s in run.skipped):
                run.skipped.append({"file": clip.file, "reason": note})
                log.warning("skipping %s: %s", clip.file, note)
            continue
        partner = None if partners[i] is None else store.get(run.clips[partners[i]].path, contract)
        run.info[i]["num_windows"] = len(starts)
        run.info[i]["swap_partner"] = None if partners[i] is None else run.clips[partners[i]].file
        conds: dict[str, ConditionScore] = {}
        for cond in CONDITIONS:
            if cond == "swap" and partner is None:
                log.warning("%s: no clip of another speaker in the split; no swap condition", clip.file)
                continue
            conds[cond] = score_fn(prepared, starts, cond, partner)
        results[i] = conds
    run.scores[method] = results


def _baseline_scorer(contract: InputContract, config: BaselineConfig
                     ) -> Callable[[PreparedClip, list[float], str, PreparedClip | None], ConditionScore]:
    motion_cache: dict[int, np.ndarray] = {}

    def score(clip: PreparedClip, starts: list[float], cond: str, partner: PreparedClip | None) -> ConditionScore:
        if id(clip) not in motion_cache:
            motion_cache[id(clip)] = mouth_motion(clip.frames, config)
        return baseline_condition(clip, contract, starts, cond, partner, config, motion_cache[id(clip)])

    return score


def _model_scorer(runner: Any, contract: InputContract, batch_size: int, timing: dict[str, float],
                  scan_offsets: tuple[int, ...] = DEFAULT_SCAN_OFFSETS
                  ) -> Callable[[PreparedClip, list[float], str, PreparedClip | None], ConditionScore]:
    def score(clip: PreparedClip, starts: list[float], cond: str, partner: PreparedClip | None) -> ConditionScore:
        t0 = time.perf_counter()
        windows = condition_windows(clip, contract, starts, cond, partner, scan_offsets=scan_offsets)
        t1 = time.perf_counter()
        out = score_windows(runner, windows, batch_size, scan_offsets)
        timing["window_featurise_s"] = timing.get("window_featurise_s", 0.0) + t1 - t0
        timing["model_s"] = timing.get("model_s", 0.0) + time.perf_counter() - t1
        timing["windows"] = timing.get("windows", 0) + len(windows)
        return out

    return score


def model_threshold(runner: Any, given: float | None) -> tuple[float | dict[str, float], str]:
    """A model's verdict threshold(s) as ``Detector`` picks them: ``given`` (--threshold), else its operating point
    per aggregate (measured on genuine clips, ``python -m pinlite_edge.calibrate``), else 0.5."""
    if given is not None:
        return float(given), "--threshold"
    point = getattr(runner, "operating_point", None)
    if point is not None and any(a in point.thresholds for a in AGGREGATES):
        missing = [a for a in AGGREGATES if a not in point.thresholds]
        note = f"; 0.5 for {'/'.join(missing)} (not calibrated)" if missing else ""
        return ({a: point.threshold(a) if a in point.thresholds else 0.5 for a in AGGREGATES},
                f"operating point ({point.clips} clips: {point.data}){note}")
    return 0.5, "0.5 (no operating point)"


def _scored(run: SplitRun, method: str) -> list[dict[str, ConditionScore]]:
    return [run.scores[method][i] for i in sorted(run.scores[method])]


def evaluate(cfg: EvalConfig, store: ClipStore | None = None) -> dict[str, Any]:
    """Run every requested method on ``cfg.split`` and return the report (see :func:`write_report`)."""
    store = store or ClipStore()
    base_contract = contract_for_preset(cfg.baseline_preset)
    run: SplitRun | None = None
    rows: list[dict[str, Any]] = []
    models_meta: list[dict[str, Any]] = []
    baseline_meta: dict[str, Any] | None = None

    if cfg.run_models:
        from pinlite_edge.runtimes import load_runner

        for spec in cfg.models:
            runner = load_runner(spec.path, device=cfg.device, **({"threads": cfg.threads} if cfg.threads else {}))
            contract = runner.contract
            if run is None:
                run = _plan_split(cfg, cfg.split, store, contract)
            timing: dict[str, float] = {}
            log.info("scoring %s (%s) on %d clips", spec.name, spec.path, len(run.clips))
            with runner:
                _evaluate_method(run, cfg, store, contract, spec.name,
                                 _model_scorer(runner, contract, cfg.batch_size, timing, cfg.scan_offsets))
            threshold, source = model_threshold(runner, cfg.threshold)
            row = {"method": spec.name, **summarise(_scored(run, spec.name), threshold), "threshold_source": source}
            rows.append(row)
            models_meta.append({"name": spec.name, "path": repo_relative(spec.path), "backend": runner.name,
                                "sha256": sha256_file(spec.path) if spec.path.is_file() else None,
                                "preset_frame_size": contract.frame_size,
                                "training_data": getattr(runner, "training_data", None), "timing": timing})

    if cfg.run_baseline:
        bcfg = BaselineConfig()
        if run is None:
            run = _plan_split(cfg, cfg.split, store, base_contract)
        _evaluate_method(run, cfg, store, base_contract, BASELINE_NAME, _baseline_scorer(base_contract, bcfg))
        threshold_note: dict[str, Any]
        if cfg.baseline_threshold is not None:
            threshold = float(cfg.baseline_threshold)
            threshold_note = {"source": "--baseline-threshold"}
        else:
            if cfg.split == "train":
                train = run
            else:
                train = _plan_split(cfg, "train", store, base_contract)
                _evaluate_method(train, cfg, store, base_contract, BASELINE_NAME,
                                 _baseline_scorer(base_contract, bcfg))
            tr = _scored(train, BASELINE_NAME)
            orig = [c["original"].mean for c in tr]
            fake = [c[k].mean for c in tr for k in MANIPULATED if k in c]
            threshold = youden_threshold(orig, fake)
            threshold_note = {
                "source": "train split: Youden-J cut between train originals and all train manipulations (mean "
                          "aggregate)", "train_clips_scored": len(tr),
                "train_data_fingerprint": data_fingerprint(train.clips),
                "train_row": summarise(tr, threshold),
            }
            if cfg.split == "train":
                threshold_note["warning"] = "evaluated on the split the threshold was chosen on (in-sample)"
        rows.append({"method": BASELINE_NAME, **summarise(_scored(run, BASELINE_NAME), threshold),
                     "threshold_source": threshold_note["source"]})
        baseline_meta = {"config": bcfg.to_dict(), "threshold": threshold, "threshold_choice": threshold_note,
                         "preset_frame_size": base_contract.frame_size,
                         "score": "max_{|lag|>exclude_lag} corr - corr(0); not a probability"}

    if run is None:
        raise InputError("nothing to evaluate: give --model NAME=PATH, or drop --models-only")
    for i, entry in enumerate(run.info):
        clip = run.clips[i]
        entry["featurise_s_per_video_s"] = {
            str(c.frame_size): round(store.featurise_seconds_per_second(clip.path, c), 5)
            for (p, c) in store.seconds if p == str(clip.path)}
        entry["scores"] = {m: {k: v.to_dict() for k, v in run.scores[m][i].items()}
                           for m in run.scores if i in run.scores[m]}
    feat = [v for e in run.info for v in e["featurise_s_per_video_s"].values()]
    skipped = {s["file"] for s in run.skipped}
    used = [c for c in run.clips if c.file not in skipped]
    return {
        "split": cfg.split,
        "conditions": {k: (None if v is None else {"audio_delay_frames": v}) for k, v in CONDITIONS.items()},
        "windows": {"stride_seconds": cfg.stride_seconds, "stride_default": "half a window",
                    "margin_frames": cfg.margin_frames, "primary_aggregate": PRIMARY},
        "threshold": cfg.threshold,
        "scan_offsets": list(cfg.scan_offsets),
        "data": {"root": repo_relative(cfg.root), "split_file": repo_relative(cfg.split_file),
                 "fingerprint": data_fingerprint(used), "fingerprint_of": "sorted (file, sha256) of the clips scored",
                 "num_clips": len(used),
                 "skipped": run.skipped,
                 "face_found_rate": _rate([e.get("face_found") for e in run.info]),
                 "featurise_s_per_video_s_mean": round(float(np.mean(feat)), 5) if feat else None},
        "models": models_meta,
        "baseline": baseline_meta,
        "table": rows,
        "clips": run.info,
    }


def _rate(values: Sequence[Any]) -> float | None:
    known = [bool(v) for v in values if v is not None]
    return float(np.mean(known)) if known else None


_COLUMNS = (("auc_delay200", "AUC delay200"), ("auc_advance200", "AUC advance200"), ("auc_delay80", "AUC delay80"),
            ("auc_swap", "AUC swap"), ("fpr", "FPR@thr"), ("offset_acc_200", "offset acc ±1 (±200 ms)"),
            ("offset_acc_80", "offset acc ±1 (80 ms)"), ("offset_acc_200_head", "offset head acc ±1 (±200 ms)"))


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


#: issue #12's targets for the distilled student (lower bounds, except the FPR's upper bound)
STUDENT_TARGETS = (("auc_delay200", ">=", 0.85), ("auc_advance200", ">=", 0.85), ("auc_swap", ">=", 0.85),
                   ("fpr", "<=", 0.20), ("offset_acc_200", ">=", 0.60))
#: columns where "better than the baseline" is checked (higher is better, FPR lower is better)
_BEAT_COLUMNS = ("auc_delay200", "auc_advance200", "auc_delay80", "auc_swap", "fpr", "offset_acc_200")
INT8_AUC_TOLERANCE = 0.03


def target_checks(table: list[dict[str, Any]], student: str | None,
                  int8_pairs: Sequence[tuple[str, str]] = ()) -> list[dict[str, Any]]:
    """Issue #12's targets, checked on the table: ``student``'s absolute targets and "better than the baseline on
    every column", and every ``(int8, fp32)`` pair within :data:`INT8_AUC_TOLERANCE` AUC. Each check: what, the
    value, the target, met (None when a value is missing) and by how much it is missed (0 when met)."""
    rows = {r["method"]: r for r in table}
    checks: list[dict[str, Any]] = []

    def add(what: str, value: Any, op: str, target: Any) -> None:
        if value is None or target is None:
            checks.append({"check": what, "value": value, "target": f"{op} {target}", "met": None, "miss": None})
            return
        met = value >= target if op == ">=" else value <= target if op == "<=" else value > target
        miss = 0.0 if met else abs(float(value) - float(target))
        checks.append({"check": what, "value": value, "target": f"{op} {_fmt(target)}", "met": bool(met),
                       "miss": round(miss, 4)})

    row = rows.get(student or "")
    if row is not None:
        for key, op, target in STUDENT_TARGETS:
            add(f"{student} {key}", row.get(key), op, target)
        base = rows.get(BASELINE_NAME) or rows.get("baseline")
        if base is not None:
            for key in _BEAT_COLUMNS:
                lower_better = key == "fpr"
                value, ref = row.get(key), base.get(key)
                if value is not None and ref is not None:
                    met = value < ref if lower_better else value > ref
                    checks.append({"check": f"{student} {key} better than baseline", "value": value,
                                   "target": f"{'<' if lower_better else '>'} {_fmt(ref)}", "met": bool(met),
                                   "miss": 0.0 if met else round(abs(value - ref), 4)})
    for int8, fp32 in int8_pairs:
        a, b = rows.get(int8), rows.get(fp32)
        if a is None or b is None:
            continue
        for key in ("auc_delay200", "auc_advance200", "auc_delay80", "auc_swap"):
            if a.get(key) is not None and b.get(key) is not None:
                add(f"{int8} vs {fp32} |Δ{key}|", round(abs(a[key] - b[key]), 4), "<=", INT8_AUC_TOLERANCE)
    return checks


def render_markdown(report: dict[str, Any]) -> str:
    d = report["data"]
    lines = [f"# Real faces: sync detection on genuine talking-face clips ({report['split']} split)", "",
             f"Data: {d['num_clips']} clips of `{d['split_file']}` split `{report['split']}` under `{d['root']}`, "
             f"fingerprint `{d['fingerprint'][:16]}…`; skipped: "
             f"{', '.join(s['file'] + ' (' + s['reason'] + ')' for s in d['skipped']) or 'none'}", "",
             "Clip score = the offset scan's P(fake), what `Detector` decides on by default "
             "(`pinlite_edge/offset_scan.py`: each window re-scored with its audio shifted by "
             f"{', '.join(f'{k:+d}' for k in report.get('scan_offsets', DEFAULT_SCAN_OFFSETS))} frames; "
             "P(fake) = 1 - exp(-(best shift's margin "
             "- given alignment's margin))); windows every half window, 5-frame margins. AUC: originals vs each "
             "manipulated condition; FPR on originals at the threshold (a model's operating point, measured on "
             "genuine clips outside this split, else 0.5; the train-chosen cut for the baseline); offset = the scan's "
             "best shift (models) or the baseline's best lag, right within ±1 frame (the offset head's own estimate: "
             "last column). The baseline's score is its lag scan (max off-zero correlation - correlation at 0), "
             "averaged over windows.",
             "", "| method | " + " | ".join(h for _, h in _COLUMNS) + " |",
             "|---|" + "---|" * len(_COLUMNS)]
    for row in report["table"]:
        lines.append(f"| {row['method']} | " + " | ".join(_fmt(row.get(k)) for k, _ in _COLUMNS) + " |")
    for agg in AGGREGATES[1:]:
        lines += ["", f"Clip score = {agg} of the window P(fake) (same clips and windows):", "",
                  "| method | AUC delay200 | AUC advance200 | AUC delay80 | AUC swap | FPR@thr |",
                  "|---|---|---|---|---|---|"]
        for row in report["table"]:
            lines.append(f"| {row['method']} | " + " | ".join(_fmt(row.get(f"{k}_{agg}")) for k in
                                                                ("auc_delay200", "auc_advance200", "auc_delay80",
                                                                 "auc_swap", "fpr")) + " |")
    lines += ["", "At each method's threshold (" + " / ".join(AGGREGATES) + "): false positives on originals and "
              "detection rate of each manipulation:", "",
              "| method | threshold | FPR | TPR delay200 | TPR advance200 | TPR delay80 | TPR swap | threshold from |",
              "|---|---|---|---|---|---|---|---|"]
    for row in report["table"]:
        cells = [" / ".join(_fmt(row.get(k + ("" if a == PRIMARY else f"_{a}"))) for a in AGGREGATES) for k in
                 ("threshold", "fpr", "tpr_delay200", "tpr_advance200", "tpr_delay80", "tpr_swap")]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {row.get('threshold_source', '')} |")
    if report.get("targets"):
        lines += ["", "## Targets (issue #12)", "", "| check | value | target | met | missed by |", "|---|---|---|---|---|"]
        for c in report["targets"]:
            met = "n/a" if c["met"] is None else ("yes" if c["met"] else "**no**")
            lines.append(f"| {c['check']} | {_fmt(c['value'])} | {c['target']} | {met} | {_fmt(c['miss'])} |")
    if report.get("notes"):
        lines += ["", "## Findings", "", report["notes"].strip()]
    if report.get("baseline"):
        b = report["baseline"]
        lines += ["", f"Baseline threshold {b['threshold']:.4f}: {b['threshold_choice']['source']}."]
    lines += ["", f"Face found: {_fmt(d['face_found_rate'])} of clips; featurisation (decode + crop + resample) "
              f"{_fmt(d['featurise_s_per_video_s_mean'])} s per s of video (mean over clips).", "",
              "| clip | speaker | s | face found | face coverage | featurise s/s |", "|---|---|---|---|---|---|"]
    for c in report["clips"]:
        lines.append(f"| {c['file']} | {c['speaker_group']} | {c.get('duration_s')} | {_fmt(c.get('face_found'))} | "
                     f"{_fmt(c.get('face_coverage'))} | "
                     f"{', '.join(f'{v:.3f}@{k}px' for k, v in c.get('featurise_s_per_video_s', {}).items())} |")
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_report(record: dict[str, Any], report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``OUT_DIR/<bench>/<machine>.json`` (``{"record", ...report}``) and ``.md``."""
    return write_result(record, _jsonable(report), render_markdown(report), results_dir=out_dir)


def real_av_root(given: Path | None) -> Path | int:
    """The real-av folder to read (``--root``, else :data:`DEFAULT_ROOT`), or the exit status when there is none: 0
    when the default folder is absent (a warning: nothing to evaluate on this machine), 2 when ``--root`` is not a
    folder."""
    root = given if given is not None else DEFAULT_ROOT
    if root.is_dir():
        return root
    if given is None:
        log.warning("real-av data not found at %s: nothing evaluated (pass --root DIR)", root)
        return 0
    log.error("--root %s is not a directory; pass the real-av folder (with grid/ and talking/)", root)
    return 2


def scan_offsets_arg(text: str) -> tuple[int, ...]:
    """``--scan-offsets -6,-4,...`` -> validated offsets (argparse reports an :class:`InputError` as a usage error)."""
    from pinlite_edge.offset_scan import check_scan_offsets

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
        return check_scan_offsets(values)
    except (ValueError, InputError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def add_scan_offsets_argument(p: argparse.ArgumentParser, what: str) -> None:
    """``--scan-offsets`` (:func:`scan_offsets_arg`, default Detector's grid), the one definition every benchmark that
    scores with the offset scan takes; ``what`` says what the grid is used for."""
    p.add_argument("--scan-offsets", type=scan_offsets_arg, default=DEFAULT_SCAN_OFFSETS, metavar="K,K,...",
                   help=f"the offset scan's audio shifts in frames, 0 included, {what}; write --scan-offsets=-6,...,6 "
                        f"(default: Detector's, {','.join(str(k) for k in DEFAULT_SCAN_OFFSETS)})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=[], metavar="NAME=PATH",
                   help="models to evaluate: checkpoint .safetensors or artefact .onnx/.pte/engine")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="one more model (repeatable)")
    p.add_argument("--root", type=Path, default=None,
                   help=f"the real-av folder (default {repo_relative(DEFAULT_ROOT)}; skipped with a note if absent)")
    p.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE)
    p.add_argument("--split", default="test", choices=["train", "dev", "test"],
                   help="which split to evaluate (default test; dev for sanity checks)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--models-only", action="store_true", help="skip the baseline")
    only.add_argument("--baseline-only", action="store_true", help="skip the models")
    p.add_argument("--baseline-threshold", type=float, default=None,
                   help="the baseline's decision threshold (default: chosen on the train split in this run)")
    p.add_argument("--baseline-preset", default="paper", choices=["paper", "tiny"],
                   help="crop size the baseline's frames are prepared at (default paper, 128 px)")
    p.add_argument("--stride", type=float, default=None, help="window stride in seconds (default half a window)")
    p.add_argument("--threshold", type=float, default=None,
                   help="models' P(fake) threshold for FPR/TPR (default: each model's operating point, as Detector "
                        "uses it; 0.5 for a model without one)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="runner device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1,
                   help="runner threads (default 1: fastest on a shared small CPU; 0 = the backend's default)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                   help="results root: writes OUT_DIR/STEM/<machine>.{json,md}")
    p.add_argument("--stem", default=None, help="bench name (default real_faces, or real_faces_<split>)")
    p.add_argument("--no-hash-check", action="store_true", help="do not re-hash the clips against the split file")
    add_scan_offsets_argument(p, "for the models")
    p.add_argument("--student", default=None, metavar="NAME",
                   help="model whose issue-#12 targets are checked in the report (e.g. distilled)")
    p.add_argument("--int8-pair", action="append", default=[], metavar="INT8=FP32",
                   help="check that model INT8's AUCs are within 0.03 of model FP32's (repeatable)")
    p.add_argument("--notes", type=Path, default=None, help="Markdown file of findings to include in the report")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = real_av_root(args.root)
    if isinstance(root, int):
        return root
    try:
        models = [] if args.baseline_only else [parse_model_spec(m) for m in [*args.models, *args.model]]
        if args.models_only and not models:
            raise InputError("--models-only needs at least one --model NAME=PATH")
        cfg = EvalConfig(root=root, split_file=args.split_file, split=args.split, models=models,
                         run_models=not args.baseline_only, run_baseline=not args.models_only,
                         baseline_threshold=args.baseline_threshold, baseline_preset=args.baseline_preset,
                         stride_seconds=args.stride, threshold=args.threshold, batch_size=args.batch_size,
                         device=args.device, threads=args.threads or None, verify_hashes=not args.no_hash_check,
                         scan_offsets=args.scan_offsets)
        t0 = time.perf_counter()
        report = evaluate(cfg)
    except PinliteError as exc:
        log.error("%s", exc)
        return 2
    report = {"wall_seconds": round(time.perf_counter() - t0, 2), **report}
    pairs = [tuple(p.split("=", 1)) for p in args.int8_pair if "=" in p]
    report["targets"] = target_checks(report["table"], args.student, pairs)  # type: ignore[arg-type]
    if args.notes is not None:
        report["notes"] = args.notes.read_text()
    stem = args.stem or ("real_faces" if args.split == "test" else f"real_faces_{args.split}")
    d = report["data"]
    record = build_record(stem, "benchmarks/real_faces.py", argv,
                          data={k: d[k] for k in ("root", "split_file", "fingerprint", "fingerprint_of", "num_clips")})
    json_path, md_path = write_report(record, report, args.out_dir)
    for row in report["table"]:
        log.info("%s: %s", row["method"], {k: _fmt(row.get(k)) for k, _ in _COLUMNS})
    log.info("wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
