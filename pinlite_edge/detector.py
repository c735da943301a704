"""Detector: the API apps use. ``Detector.load(artifact).detect("clip.mp4")`` -> :class:`DetectionResult`.

A clip is cut into 0.64 s windows (SPEC §1; stride configurable), every window is scored by the runner chosen from
the artefact's manifest, and the per-window fake probabilities are aggregated (max and mean are both reported).
By default every window is also scored with its audio shifted a few frames either way (the offset scan,
:mod:`pinlite_edge.offset_scan`): the clip's offset estimate is the best-agreeing shift, and the verdict (aggregate
``"scan"``) says how much better another alignment explains the lips than the given one. ``aggregate="max"`` /
``"mean"`` decide on the window probabilities instead (``scan_offsets=None`` then skips the scan). The scan scores a
window's frames against its audio at every shift in one call (frame sharing, :mod:`pinlite_edge.runtimes.base`): an
artefact that shares frames encodes them once, so the scan costs 1.05-1.35x the model time of no scan instead of 7x
(the frame encoder is nearly all of the model; measured in ``benchmarks/results/scan_cost/``). The explanation is the
attention of the last cross-attention layer: its column sums say how much each of the 16 sampled frames was looked
at (per-frame saliency).
"""
from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from pinlite_edge.contract import MAX_OFFSET, InputContract
from pinlite_edge.errors import InputError, UsageError
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S
from pinlite_edge.features.limits import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_PIXELS, check_positive
from pinlite_edge.features.windows import FACE_WINDOW_MIN
from pinlite_edge.metrics import softmax, softmax_fake_prob
from pinlite_edge.offset_scan import (DEFAULT_SCAN_OFFSETS, LOCAL_SCAN_RADIUS, ScanCurve, ScanResult,
                                      check_scan_offsets, local_fake_probs)
from pinlite_edge.operating_point import AGGREGATES, DEFAULT_THRESHOLD
from pinlite_edge.trained_on import describe_training_data, trained_on_real_video
from pinlite_edge.utils.atomic import finite_json
from pinlite_edge.utils.checks import is_finite_number, is_whole
from pinlite_edge.utils.logcapture import captured_warnings

log = logging.getLogger(__name__)



@dataclass
class WindowScore:
    start_seconds: float
    fake_prob: float
    offset_frames: int  # estimated audio offset of this window, -5..+5 video frames
    offset_confidence: float
    #: the offset scan over this window and its neighbours (offset_scan.local_fake_probs): where the clip looks out of
    #: sync, a hint rather than a located manipulation (benchmarks/results/localisation/). None: no scan
    fake_prob_local_scan: float | None = None
    #: share of the window's frames where the face tracker had the face (1.0 without face crop: pre-cropped frames
    #: all count; None: not known); a window below
    #: FACE_WINDOW_MIN does not count in the verdict when the clip has windows with the face
    face_fraction: float | None = None
    #: whether the verdict rests on this window: the offset scan's windows (face, shifted audio inside the track), or
    #: for max / mean the windows with the face
    in_verdict: bool = True


@dataclass
class DetectionResult:
    """Verdict, per-window scores and the explanation of one clip."""

    #: "fake" | "real" | "no-face" (no face anywhere in the clip) | "silent-audio" (a digitally silent audio track):
    #: in the last two the probabilities are still reported but say little, so no verdict is given
    verdict: str
    fake_prob_max: float
    fake_prob_mean: float
    aggregate: str
    threshold: float
    #: clip-level offset estimate (frames; audio delayed by k frames gives +k): the offset scan's best shift, or
    #: without a scan the argmax of the window-averaged offset-head distribution (``offset_source`` says which)
    offset_frames: int
    #: the scan's posterior of that shift among those scanned (softmax of the curve), else the offset head's
    offset_confidence: float
    windows: list[WindowScore]
    #: (num_windows, num_frames) column sums of each window's attention: how much every sampled frame was attended
    frame_saliency: np.ndarray
    #: (num_windows, num_frames) time (s) of each frame slot, window start + k * T / num_frames (SPEC §1), for
    #: plotting saliency on the clip's time axis: the frame sampled there is the one on screen at that time, within
    #: a frame period; in a clip shorter than one window the slots past its end show its last frame (padding)
    frame_times: np.ndarray
    attention: np.ndarray  # (num_windows, audio tokens, frames)
    source: str
    model: str
    #: uint8 (num_frames, S, S, 3) frames of the most suspicious window, for the overlay; not serialised
    explain_frames: np.ndarray | None = field(default=None, repr=False)
    #: what the model was trained on, from its manifest / checkpoint record (pinlite_edge.trained_on)
    model_training_data: str = "unknown"
    #: False: a synthetic-only model, whose verdicts on real footage say little; None: not recorded
    model_trained_on_real_video: bool | None = None
    #: a face was found in the clip (None: face crop off, or windows scored without that information)
    face_found: bool | None = None
    #: fraction of the frames searched where the tracked face was detected (None: not known)
    face_coverage: float | None = None
    #: most faces seen at once in the face tracker's whole-image searches (None: not known). More than
    #: one: the verdict follows the tracked face only, and in a genuine clip another person's speech does not move
    #: its lips (a two-person interview can look out of sync)
    faces_in_view: int | None = None
    #: where ``threshold`` came from: "caller", "operating point (<clips it was measured on>)" or "default 0.5"
    threshold_source: str = "caller"
    #: P(fake) of the offset scan (None: no scan): 1 - exp(-(best alignment's margin - given alignment's margin))
    fake_prob_scan: float | None = None
    #: the offset scan behind ``fake_prob_scan`` and ``offset_frames`` (None: no scan)
    scan: ScanResult | None = None
    offset_source: str = "offset head"  # "offset scan" | "offset head"
    #: the offset head's clip estimate (argmax of the window-averaged offset distribution), with or without a scan
    offset_head_frames: int | None = None
    #: what qualifies the verdict: the WARNING messages the SDK logged while reading and scoring this input (a
    #: variable frame rate, digitally silent audio, tracks of different lengths, several faces in view...), in order
    warnings: list[str] = field(default_factory=list)

    def evidence_windows(self, aggregate: str | None = None) -> int:
        """The windows a verdict on ``aggregate`` (default: this result's) rests on: the offset scan's windows, or
        for ``max`` / ``mean`` the windows with the face (fewer than ``SHORT_CLIP_WINDOWS``: a short clip, with its
        own thresholds in the operating point)."""
        return verdict_windows(aggregate or self.aggregate, self.scan, [w.face_fraction for w in self.windows])

    @property
    def fake_prob(self) -> float:
        """The aggregate the verdict is based on."""
        if self.aggregate == "scan":
            assert self.fake_prob_scan is not None
            return self.fake_prob_scan
        return self.fake_prob_max if self.aggregate == "max" else self.fake_prob_mean

    @property
    def fake_prob_per_window(self) -> np.ndarray:
        return np.array([w.fake_prob for w in self.windows], dtype=np.float64)

    @property
    def most_suspicious_window(self) -> int:
        """The window the explanation shows: behind the verdict's own statistic. With the scan verdict, the highest
        local offset scan (``WindowScore.fake_prob_local_scan``); else the highest window P(fake); among the windows
        the verdict rests on (``WindowScore.in_verdict``). First one on ties."""
        if self.aggregate == "scan" and self.scan is not None:
            scores = np.array([w.fake_prob_local_scan for w in self.windows], np.float64)
        else:
            scores = self.fake_prob_per_window
        counted = np.array([w.in_verdict for w in self.windows], bool)
        if counted.any():
            scores = np.where(counted, scores, -np.inf)
        return int(np.argmax(scores))

    def to_dict(self, include_attention: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source, "model": self.model, "verdict": self.verdict, "fake_prob": self.fake_prob,
            "fake_prob_max": self.fake_prob_max, "fake_prob_mean": self.fake_prob_mean,
            "fake_prob_scan": self.fake_prob_scan, "aggregate": self.aggregate,
            "threshold": self.threshold, "threshold_source": self.threshold_source,
            "verdict_windows": self.evidence_windows(), "offset_frames": self.offset_frames,
            "offset_confidence": self.offset_confidence, "offset_source": self.offset_source,
            "offset_head_frames": self.offset_head_frames,
            "offset_scan": None if self.scan is None else self.scan.to_dict(),
            "windows": [dict(w.__dict__) for w in self.windows],
            # float64 before rounding: a float32 rounded is printed with its binary noise (1.1871399879455566)
            "frame_saliency": np.round(np.asarray(self.frame_saliency, np.float64), 5).tolist(),
            "frame_times": np.round(np.asarray(self.frame_times, np.float64), 4).tolist(),
            "model_training_data": self.model_training_data,
            "model_trained_on_real_video": self.model_trained_on_real_video,
            "face_found": self.face_found, "face_coverage": self.face_coverage, "faces_in_view": self.faces_in_view,
            "warnings": list(self.warnings),
        }
        if include_attention:
            d["attention"] = np.round(np.asarray(self.attention, np.float64), 6).tolist()
        return d

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as strict JSON (a non-finite number would be ``null``, never ``NaN``)."""
        return json.dumps(finite_json(self.to_dict(**kwargs)), indent=2, allow_nan=False)

    def save_explanation(self, path: str | Path) -> Path:
        """Write a PNG: fake probability over time, the most suspicious window's frames weighted by saliency, and
        its attention map."""
        return draw_explanation(self, Path(path))


def draw_explanation(result: DetectionResult, path: Path) -> Path:
    """The PNG behind :meth:`DetectionResult.save_explanation` (matplotlib, its own Agg canvas: the host's backend
    and pyplot state are left alone), written atomically."""
    from pinlite_edge.utils.atomic import atomic_path
    from pinlite_edge.utils.figures import agg_figure, colormap

    top = result.most_suspicious_window
    frames = result.explain_frames
    n = result.frame_saliency.shape[1]
    fig = agg_figure(figsize=(12, 6.5))
    inferno = colormap("inferno")
    grid = fig.add_gridspec(3, n, height_ratios=[1.0, 1.1, 1.6])
    ax = fig.add_subplot(grid[0, :])
    starts = [w.start_seconds for w in result.windows]
    ax.plot(starts, result.fake_prob_per_window, "o-", color="tab:red", label="window classifier")
    if result.scan is not None:  # where the clip looks out of sync (a hint: benchmarks/results/localisation/)
        ax.plot(starts, [w.fake_prob_local_scan for w in result.windows], "s-", color="tab:blue", ms=3,
                label="local offset scan")
    why = "highest local offset scan" if result.aggregate == "scan" and result.scan is not None \
        else "highest window P(fake)"
    ax.axvline(starts[top], color="tab:orange", lw=1.5, alpha=0.7, label=f"window shown below ({why})")
    ax.legend(loc="upper right", fontsize=7)
    if result.aggregate != "scan":  # the threshold applies to these window probabilities' aggregate
        ax.axhline(result.threshold, color="grey", ls="--", lw=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("window start (s)")
    ax.set_ylabel("P(fake)")
    ax.set_title(f"{Path(result.source).name}: {result.verdict.upper()} ({result.aggregate} P(fake) "
                 f"{result.fake_prob:.2f}; offset estimate {result.offset_frames:+d} frames)", fontsize=10)
    sal = result.frame_saliency[top]
    weight = (sal - sal.min()) / (np.ptp(sal) or 1.0)
    for k in range(n):
        axk = fig.add_subplot(grid[1, k])
        if frames is not None:
            axk.imshow(frames[k])
        axk.set_xticks([])
        axk.set_yticks([])
        for spine in axk.spines.values():
            spine.set_edgecolor(inferno(weight[k]))
            spine.set_linewidth(1 + 4 * weight[k])
        axk.set_title(f"{sal[k]:.2f}", fontsize=6)
    scan = result.scan
    split = n // 3 if scan is not None else n // 2  # with a scan, the bottom row holds three panels
    ax_att = fig.add_subplot(grid[2, :split])
    ax_att.imshow(result.attention[top], cmap="magma", aspect="auto")
    ax_att.set_xlabel("frame")
    ax_att.set_ylabel("audio token")
    ax_att.set_title(f"attention, window at {result.windows[top].start_seconds:.2f} s", fontsize=9)
    ax_sal = fig.add_subplot(grid[2, split + 1:(2 * split if scan is not None else n)])
    ax_sal.bar(range(n), sal, color=inferno(weight))
    ax_sal.set_xlabel("frame")
    ax_sal.set_ylabel("saliency (attention column sum)")
    if scan is not None:  # the offset scan: how well each audio shift fits the lips, the given alignment at 0
        ax_scan = fig.add_subplot(grid[2, 2 * split + 1:])
        ks, margins = list(scan.curve), list(scan.curve.values())
        ax_scan.plot(ks, margins, "o-", color="tab:blue")
        ax_scan.axvline(0, color="grey", ls="--", lw=1)
        ax_scan.plot([scan.offset_frames], [scan.curve[scan.offset_frames]], "o", ms=10, mfc="none", color="tab:red")
        ax_scan.set_xlabel("audio shift (frames)")
        ax_scan.set_ylabel("real-vs-fake margin")
        ax_scan.set_title(f"offset scan: best {scan.offset_frames:+d}, P(fake) {scan.fake_prob:.2f}", fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.93, bottom=0.08, hspace=0.45, wspace=0.15)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def _display_frames(frames: np.ndarray, contract: InputContract) -> np.ndarray:
    """Undo the ImageNet normalisation of ``(T, 3, S, S)`` model frames -> uint8 ``(T, S, S, 3)``."""
    mean = np.asarray(contract.mean, np.float32)[None, :, None, None]
    std = np.asarray(contract.std, np.float32)[None, :, None, None]
    rgb = np.clip(np.rint((frames * std + mean) * 255.0), 0, 255).astype(np.uint8)  # rounded: 112 stays 112
    return rgb.transpose(0, 2, 3, 1)


#: Model inputs are normalised (frames about -2.2..2.7, MFCCs a few units): a window with values beyond this did not
#: come from :mod:`pinlite_edge.features` and would overflow float32 arithmetic inside the model.
MAX_FEATURE_ABS = 1e3
#: Largest ``batch_size`` (windows per model call).
MAX_BATCH_SIZE = 1024


#: what Detector uses of a runner (``pinlite_edge.runtimes.base.BaseRunner`` has them all)
RUNNER_INTERFACE = ("contract", "is_active", "activate", "deactivate", "infer")


def _check_runner(runner: Any) -> None:
    """A :class:`UsageError` unless ``runner`` offers :data:`RUNNER_INTERFACE`; a path names :meth:`Detector.load`."""
    if isinstance(runner, (str, bytes, os.PathLike)):
        raise UsageError(f"Detector() takes a loaded runner, not the path {os.fsdecode(runner)!r}: "
                         f"use Detector.load(path) to load an artefact")
    missing = [name for name in RUNNER_INTERFACE if not hasattr(runner, name)]
    if missing:
        raise UsageError(f"Detector() takes a runner (from Detector.load(path) or pinlite_edge.runtimes.load_runner); "
                         f"{type(runner).__name__!r} object has no {', '.join(missing)}")


def _check_options(threshold: Any, aggregate: Any, batch_size: Any, stride_seconds: Any, face_crop: Any,
                   scan_offsets: Any) -> tuple[int, ...]:
    """Detector options: an :class:`InputError` (also a ``ValueError``) naming the option; returns the validated
    scan offsets."""
    from pinlite_edge.features.limits import check_stride

    if threshold is not None and not (is_finite_number(threshold, numpy=True) and 0.0 <= threshold <= 1.0):
        raise InputError(f"Detector option threshold must be a number in [0, 1] (or None: the model's operating "
                         f"point), got {threshold!r}")
    if not isinstance(aggregate, str) or aggregate not in AGGREGATES:
        raise InputError(f"Detector option aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if not is_whole(batch_size, 1, MAX_BATCH_SIZE, numpy=True):
        raise InputError(f"Detector option batch_size must be an int in 1..{MAX_BATCH_SIZE}, got {batch_size!r}")
    try:
        check_stride(stride_seconds)
    except InputError as exc:
        raise InputError(f"Detector option {exc}") from None
    if not isinstance(face_crop, (bool, np.bool_)):
        raise InputError(f"Detector option face_crop must be True or False, got {face_crop!r}")
    try:
        offsets = check_scan_offsets(scan_offsets)
    except InputError as exc:
        raise InputError(f"Detector option {exc}") from None
    if aggregate == "scan" and not offsets:
        raise InputError("Detector option aggregate='scan' needs the offset scan; give scan_offsets (default "
                         f"{DEFAULT_SCAN_OFFSETS}) or choose aggregate 'max' or 'mean'")
    return offsets


def check_windows(frames: np.ndarray, mfcc: np.ndarray, source: str) -> None:
    """Refuse model inputs that are not finite or far outside the normalised range (before the model sees them)."""
    for name, arr in (("frames", frames), ("mfcc", mfcc)):
        if not np.issubdtype(arr.dtype, np.floating):
            raise InputError(f"{source}: window {name} must be float32 features, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise InputError(f"{source}: window {name} contain NaN or inf")
        peak = float(np.abs(arr).max()) if arr.size else 0.0
        if peak > MAX_FEATURE_ABS:
            raise InputError(f"{source}: window {name} reach |x| = {peak:.3g}, far outside normalised features "
                             f"(|x| <= {MAX_FEATURE_ABS:g}); make windows with pinlite_edge.features")


def _precision_note(runner: Any) -> str | None:
    """A quantised artefact's operating point was measured on the FP32 checkpoint it was exported from."""
    precision = str(getattr(runner, "precision", "fp32") or "fp32")
    if precision == "fp32":
        return None
    return (f"measured on the FP32 checkpoint this {precision} artefact was exported from, whose probabilities "
            "differ a little (the false-positive rate is that checkpoint's)")


def _settings_note(runner: Any, point: Any, stride_seconds: float | None, face_crop: bool) -> str | None:
    """An operating point measured with another stride or face crop than this Detector's."""
    contract = getattr(runner, "contract", None)
    differences = point.setting_differences(stride_seconds, face_crop, getattr(contract, "window_seconds", None))
    if not differences:
        return None
    return (f"the operating point was measured {' and '.join(differences)}: its false-positive rate does not carry "
            "over; recalibrate with these settings (python -m pinlite_edge.calibrate) or pass threshold=")


def _threshold_notes(runner: Any, point: Any, stride_seconds: float | None, face_crop: bool,
                     warn: bool = False) -> list[str]:
    """What qualifies an operating point's thresholds for this runner and these settings (both whole-clip and
    short-clip ones); ``warn``: log the settings difference."""
    settings = _settings_note(runner, point, stride_seconds, face_crop)
    if settings is not None and warn:
        log.warning("%s: %s", getattr(runner, "name", "model"), settings)
    return [n for n in (_precision_note(runner), settings) if n is not None]


def _resolve_threshold(threshold: float | None, aggregate: str, runner: Any, stride_seconds: float | None = None,
                       face_crop: bool = True) -> tuple[float, str]:
    """The verdict threshold and where it came from: the caller's, else the model's operating point for
    ``aggregate`` (measured on genuine clips, :mod:`pinlite_edge.operating_point`), else 0.5. An operating point
    measured with another stride or face-crop setting than the Detector's is used with a warning saying so."""
    if threshold is not None:
        return float(threshold), "caller"
    point = getattr(runner, "operating_point", None)
    if point is not None and aggregate in point.thresholds:
        notes = _threshold_notes(runner, point, stride_seconds, face_crop, warn=True)
        return point.threshold(aggregate), "; ".join([f"operating point ({point.describe_clips()}: {point.data})",
                                                      *notes])
    if point is not None:
        return DEFAULT_THRESHOLD, (f"default {DEFAULT_THRESHOLD} (the model's operating point has no {aggregate!r} "
                                   "threshold; recalibrate with python -m pinlite_edge.calibrate)")
    return DEFAULT_THRESHOLD, f"default {DEFAULT_THRESHOLD} (the model has no operating point)"


class _ExplainedWindow:
    """Keeps the frames of the window the explanation will show (:attr:`DetectionResult.most_suspicious_window`)
    while windows stream past, without holding the clip. Which windows the verdict rests on is known only at the
    clip's end (those with the face, if any; for the scan, of those the complete ones, if any), so the best window so
    far is kept per kind (face, complete): the verdict's windows are always whole kinds. For the local offset scan
    the last ``LOCAL_SCAN_RADIUS`` windows wait too: their score is final only once the neighbours after them are
    scored."""

    def __init__(self) -> None:
        self._best: dict[tuple[bool, bool], tuple[float, int, np.ndarray]] = {}  # kind -> (score, index, frames)
        self._pending: dict[int, tuple[np.ndarray, tuple[bool, bool]]] = {}  # index -> frames, kind; score not final

    def offer(self, first: int, frames: list[np.ndarray], kinds: list[tuple[bool, bool]], scores: np.ndarray,
              scores_from: int, final_below: int) -> None:
        """Windows ``first..`` with their ``frames`` and kinds ``(face, complete)``; ``scores[j]`` is window
        ``scores_from + j``'s score (covering every window still pending); those below ``final_below`` are final.
        Strictly greater wins: the first maximum, as ``np.argmax`` over the clip."""
        for i, (f, kind) in enumerate(zip(frames, kinds)):
            self._pending[first + i] = (f, kind)
        for i in sorted(k for k in self._pending if k < final_below):
            f, kind = self._pending.pop(i)
            score = float(scores[i - scores_from])
            if kind not in self._best or score > self._best[kind][0]:
                self._best[kind] = (score, i, f.copy())

    def frames(self, in_verdict: Sequence[bool]) -> np.ndarray | None:
        """The frames of the best window among those the verdict rests on (``in_verdict`` per window)."""
        kinds = [(score, index, f) for score, index, f in self._best.values() if in_verdict[index]]
        if not kinds:
            return None
        return max(kinds, key=lambda t: (t[0], -t[1]))[2]  # the highest score, the first window on ties


def _face_fraction(window: Any, source: str) -> float | None:
    """``window.face_fraction`` checked: None (not known) or a share in 0..1."""
    fraction = getattr(window, "face_fraction", None)
    if fraction is None:
        return None
    if not (is_finite_number(fraction, numpy=True) and 0.0 <= fraction <= 1.0):
        raise InputError(f"{source}: window face_fraction must be None or a share in 0..1, got {fraction!r}")
    return float(fraction)


def _counts(face_fraction: float | None) -> bool:
    """Whether a window with this face share shows the face (not known: it does)."""
    return face_fraction is None or face_fraction >= FACE_WINDOW_MIN


def _counted(face_fractions: Sequence[float | None]) -> np.ndarray:
    """Which windows the window aggregates (max, mean, the offset head) count: those with the face, all of them when
    none has it."""
    faces = np.asarray([_counts(f) for f in face_fractions], bool)
    return faces if faces.any() else np.ones_like(faces)


def verdict_windows(aggregate: str, scan: ScanResult | None, face_fractions: Sequence[float | None]) -> int:
    """The windows a verdict on ``aggregate`` rests on: the offset scan's (``scan``), or for ``max`` / ``mean`` the
    windows the aggregates count (:func:`_counted`)."""
    if aggregate == "scan":
        if scan is None:
            raise InputError("no offset scan: a verdict on 'scan' needs one")
        return int(scan.windows_used)
    return int(_counted(face_fractions).sum())


class _Scores:
    """Model outputs of a clip's windows, accumulated batch by batch (only the frames of the window the explanation
    shows are kept: :class:`_ExplainedWindow`)."""

    def __init__(self, detector: "Detector", source: str):
        self.detector = detector
        self.source = source
        self.starts: list[float] = []
        self.logits: list[np.ndarray] = []
        self.offsets: list[np.ndarray] = []
        self.attention: list[np.ndarray] = []
        self.face_fractions: list[float | None] = []  # per window (None: not known)
        offsets = detector.scan_offsets
        self.scan = ScanCurve(offsets) if offsets else None
        #: the explanation follows the verdict's statistic: the local offset scan with the scan verdict
        self.by_local_scan = self.scan is not None and detector.aggregate == "scan"
        self.explained = _ExplainedWindow()

    def add(self, windows: list[Any]) -> None:
        c = self.detector.contract
        for w in windows:  # shapes before stacking: a wrong one used to surface as a numpy broadcast error
            if not all(hasattr(w, name) for name in ("frames", "mfcc", "start_seconds")):
                raise InputError(f"{self.source}: a window must have frames, mfcc and start_seconds "
                                 f"(pinlite_edge.features.Window), got {type(w).__name__}")
            for name, want in (("frames", c.frames_shape()), ("mfcc", c.mfcc_shape())):
                if tuple(np.shape(getattr(w, name))) != tuple(want):
                    raise InputError(f"{self.source}: window {name} must have shape {tuple(want)}, got "
                                     f"{tuple(np.shape(getattr(w, name)))}")
            start = w.start_seconds
            if not (is_finite_number(start, numpy=True) and start >= 0):
                raise InputError(f"{self.source}: window start_seconds must be a finite number >= 0, got {start!r}")
        fractions = [_face_fraction(w, self.source) for w in windows]
        faces = [_counts(f) for f in fractions]
        frames = np.stack([w.frames for w in windows])
        mfcc = np.stack([w.mfcc for w in windows])
        check_windows(frames, mfcc, self.source)
        if self.scan is None:
            out = self._infer(frames, mfcc)
        else:
            out = self._infer_with_scan(windows, frames, mfcc, faces)
        logits = out["logits"]
        first = len(self.starts)
        frames_in = [w.frames for w in windows]
        kinds = [(face, self.scan is None or bool(getattr(w, "shifts_in_track", True)))
                 for face, w in zip(faces, windows)]
        if self.by_local_scan:
            assert self.scan is not None
            # the windows still pending start at first - R; their local scans read R windows before them
            lo = max(0, first - 2 * LOCAL_SCAN_RADIUS)
            local = local_fake_probs(self.scan.window_margins(lo), self.scan.offsets.index(0))
            end = lo + len(local)
            self.explained.offer(first, frames_in, kinds, local, lo, end - LOCAL_SCAN_RADIUS)
        else:  # a window's P(fake) is final at once
            self.explained.offer(first, frames_in, kinds, softmax_fake_prob(logits), first, first + len(windows))
        self.starts.extend(float(w.start_seconds) for w in windows)
        self.face_fractions.extend(fractions)
        self.logits.append(logits)
        self.offsets.append(out["offset_logits"])
        self.attention.append(out["attention"])

    def _infer(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v) for k, v in self.detector.runner.infer(frames, mfcc).items()}
        if not all(np.isfinite(v).all() for v in out.values()):
            from pinlite_edge.runtimes.base import RunnerOutputError

            raise RunnerOutputError(f"{self.detector.runner.name} returned NaN/inf outputs for {self.source}")
        return out

    def _infer_with_scan(self, windows: list[Any], frames: np.ndarray, mfcc: np.ndarray,
                         faces: list[bool]) -> dict[str, np.ndarray]:
        """One model call for the windows at every scan shift: each frames row serves its window's shifted-audio
        MFCCs (frame sharing, ``runtimes.base``: frames encoded once where the artefact shares them). Adds the
        margins to the scan curve; returns the outputs at the given alignment (the windows' own ``mfcc``)."""
        assert self.scan is not None
        offsets = self.scan.offsets
        shifted = [getattr(w, "mfcc_shifts", None) for w in windows]
        want = (len(offsets), *self.detector.contract.mfcc_shape())
        if any(m is None or tuple(np.shape(m)) != want for m in shifted):
            raise InputError(f"{self.source}: the offset scan needs each window's shifted-audio MFCCs {want}; make "
                             f"windows with scan_offsets={offsets} (pinlite_edge.features.open_windows / window_at), "
                             "or use Detector(scan_offsets=None, aggregate='max')")
        rows = np.stack(shifted)  # (B, offsets, steps, n)
        try:
            check_windows(frames[:1], rows, self.source)
        except InputError as exc:  # name the field the caller set
            raise InputError(str(exc).replace("window mfcc", "window mfcc_shifts")) from None
        zero = offsets.index(0)
        rows[:, zero] = mfcc
        n, k = len(windows), len(offsets)
        rows = rows.reshape(n * k, *want[1:])
        # without frame sharing the runner repeats each frames row k times: batch_size model rows per call, as
        # before, so that memory does not grow k-fold
        shared = getattr(self.detector.runner, "frames_shared_for", None)
        step = n if shared is not None and shared(k) else max(1, self.detector.batch_size // k)
        parts = []
        for i in range(0, n, step):  # a loop: a 3.11 comprehension's closure cells keep the inputs in a traceback
            parts.append(self._infer(frames[i:i + step], rows[i * k:(i + step) * k]))
        per_shift = {name: np.concatenate([p[name] for p in parts]).reshape(n, k, *parts[0][name].shape[1:])
                     for name in parts[0]}
        logits = per_shift["logits"]
        self.scan.add(logits[..., 0] - logits[..., 1], [bool(getattr(w, "shifts_in_track", True)) for w in windows],
                      faces)
        return {name: np.ascontiguousarray(v[:, zero]) for name, v in per_shift.items()}


class Detector:
    """Scores clips with a loaded runner. Use :meth:`load`; close with :meth:`close` or a ``with`` block.

    Thread-safe: one Detector may score clips from several threads at once (the runner's ``infer`` is thread-safe,
    the face detector is per thread, and a call keeps its state on its own stack).
    """

    def __init__(self, runner: Any, *, threshold: float | None = None, aggregate: str = "scan",
                 stride_seconds: float | None = None, face_crop: bool = True, batch_size: int = 8,
                 max_duration_s: float = DEFAULT_MAX_DURATION_S, max_pixels: int = DEFAULT_MAX_PIXELS,
                 timeout_s: float | None = DEFAULT_TIMEOUT_S,
                 scan_offsets: Sequence[int] | None = DEFAULT_SCAN_OFFSETS):
        from pinlite_edge.features.limits import DecodeLimits

        _check_runner(runner)
        self.scan_offsets = _check_options(threshold, aggregate, batch_size, stride_seconds, face_crop, scan_offsets)
        if timeout_s is not None:
            try:
                timeout_s = check_positive("timeout_s", timeout_s)
            except InputError as exc:
                raise InputError(f"Detector option {exc} (None: no limit)") from None
        self.timeout_s = timeout_s
        try:
            self.limits = DecodeLimits(max_duration_s=max_duration_s, max_pixels=max_pixels)
        except InputError as exc:
            raise InputError(f"Detector option {exc}") from None
        self.runner = runner
        self.aggregate = aggregate
        self.stride_seconds = None if stride_seconds is None else float(stride_seconds)
        self.face_crop = bool(face_crop)
        self.threshold, self.threshold_source = _resolve_threshold(threshold, aggregate, runner, self.stride_seconds,
                                                                   self.face_crop)
        #: the operating point behind ``threshold`` (None: the caller's threshold or 0.5): its short-clip thresholds
        #: decide clips whose verdict rests on few windows
        self.operating_point = getattr(runner, "operating_point", None) if threshold is None else None
        #: their caveats (quantised artefact, other settings), said with the short-clip thresholds too
        self._threshold_notes = ([] if self.operating_point is None else
                                 _threshold_notes(runner, self.operating_point, self.stride_seconds, self.face_crop))
        self.batch_size = int(batch_size)
        training_data = getattr(runner, "training_data", None)
        self.trained_on_real_video = trained_on_real_video(training_data)
        self.training_data_text = describe_training_data(training_data)
        self._warned_synthetic_only = False
        self._closed = False
        if not runner.is_active:
            runner.activate()

    @classmethod
    def load(cls, artifact: str | Path, *, threshold: float | None = None, aggregate: str = "scan",
             stride_seconds: float | None = None, face_crop: bool = True, batch_size: int = 8,
             max_duration_s: float = DEFAULT_MAX_DURATION_S, max_pixels: int = DEFAULT_MAX_PIXELS,
             timeout_s: float | None = DEFAULT_TIMEOUT_S, scan_offsets: Sequence[int] | None = DEFAULT_SCAN_OFFSETS,
             **runner_options: Any) -> "Detector":
        """Load any artefact (``.onnx``, ``.pte``, engine, ``.safetensors``); ``runner_options`` such as
        ``device="cuda"`` or ``threads=2`` go to :func:`pinlite_edge.runtimes.load_runner` (checked there: a bad value
        raises a ``RunnerOptionError`` naming it). The Detector's own options are checked before the artefact is
        loaded."""
        from pinlite_edge.features.limits import DecodeLimits
        from pinlite_edge.runtimes import load_runner

        _check_options(threshold, aggregate, batch_size, stride_seconds, face_crop, scan_offsets)
        try:
            DecodeLimits(max_duration_s=max_duration_s, max_pixels=max_pixels)
            if timeout_s is not None:
                check_positive("timeout_s", timeout_s)
        except InputError as exc:
            raise InputError(f"Detector option {exc}") from None
        return cls(load_runner(artifact, **runner_options), threshold=threshold, aggregate=aggregate,
                   stride_seconds=stride_seconds, face_crop=face_crop, batch_size=batch_size,
                   max_duration_s=max_duration_s, max_pixels=max_pixels, timeout_s=timeout_s,
                   scan_offsets=scan_offsets)

    @property
    def contract(self) -> InputContract:
        return self.runner.contract

    def close(self) -> None:
        """Release the model (idempotent); scoring afterwards raises :class:`RunnerStateError`."""
        if self.runner.is_active:
            self.runner.deactivate()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            from pinlite_edge.runtimes.base import RunnerStateError

            raise RunnerStateError(f"this Detector ({self.runner.name}) is closed (close() or the end of its `with` "
                                   "block): load another with Detector.load")

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- scoring --------------------------------------------------------------------------------------------
    def detect(self, video_path: str | Path) -> DetectionResult:
        """Decode a video file (frames + audio track) and score it, window by window while decoding: memory does not
        grow with the clip's length (``max_duration_s``, default one hour, bounds the media; ``max_pixels`` the
        frame size; ``timeout_s``, default 60 s plus 2 s per second of media decoded, the decoding time, scoring not counted). Decoding failures and
        limits raise ``DecodeError`` naming the file."""
        from pinlite_edge.features import open_windows

        self._check_open()
        source = os.fsdecode(bytes(video_path)) if isinstance(video_path, (bytes, bytearray)) else str(video_path)
        with captured_warnings() as warnings:
            stream, windows = open_windows(video_path, self.contract, face_crop=self.face_crop,
                                           stride_seconds=self.stride_seconds,
                                           max_duration_s=self.limits.max_duration_s,
                                           max_pixels=self.limits.max_pixels, timeout_s=self.timeout_s,
                                           scan_offsets=self.scan_offsets)
            try:
                result = self.score_stream(windows, source, face_info=lambda: (
                    stream.face_found, stream.face_coverage, stream.faces_in_view, stream.audio_silent))
            finally:  # a scoring error leaves the decoding suspended: close the file and its decoder now, not when
                windows.close()  # the caller drops the exception (a kept one held the file and decoder threads)
            self.warn_if_synthetic_only(source)
        result.warnings = warnings
        return result

    def _score_stream(self, windows: Any, source: str) -> _Scores:
        scores = _Scores(self, source)
        batch: list[Any] = []
        try:
            for w in windows:
                batch.append(w)
                if len(batch) == self.batch_size:
                    scores.add(batch)
                    batch = []
            if batch:
                scores.add(batch)
        except BaseException as exc:
            # a caller may keep the exception (a futures list, a retry queue): its traceback would keep the failed
            # batch's model inputs (about 12 MB for 8 windows) in this frame and the frames below it
            batch = w = None  # noqa: F841
            traceback.clear_frames(exc.__traceback__)
            raise
        if not scores.starts:
            raise InputError(f"{source}: no window to score")
        return scores

    def warn_if_synthetic_only(self, source: str | Path) -> None:
        """Once per Detector: a model trained on synthetic clips only is being used on a real video file (``detect``
        calls it; ``scan`` once for its folder)."""
        if self.trained_on_real_video is False and not self._warned_synthetic_only:
            self._warned_synthetic_only = True
            log.warning("%s was trained on synthetic clips only; its verdicts on real footage such as %s are not "
                        "reliable. Use a model trained with real video (python -m pinlite_edge.quickstart "
                        "--real-data DIR).", self.runner.name, source)

    def detect_arrays(self, frames: np.ndarray, audio: np.ndarray, sample_rate: int,
                      fps: float = 25.0) -> DetectionResult:
        """Score decoded media: ``frames`` uint8 RGB ``(N, H, W, 3)`` at ``fps``, ``audio`` ``(samples,)`` or
        ``(samples, channels)`` at ``sample_rate`` (dtype rules: docs/input-handling.md). Invalid arrays and
        arguments out of range raise ``InputError`` before anything is allocated. Windows are cut and scored a batch
        at a time."""
        from pinlite_edge.features import prepare_arrays, window_at, window_starts

        self._check_open()
        with captured_warnings() as warnings:
            clip = prepare_arrays(frames, audio, sample_rate, fps, self.contract, face_crop=self.face_crop,
                                  source="input arrays", limits=self.limits)
            starts = window_starts(clip.duration, self.contract, self.stride_seconds, fps=clip.fps,
                                   source="input arrays")
            windows = (window_at(clip, self.contract, s, scan_offsets=self.scan_offsets) for s in starts)
            result = self._result(self._score_stream(windows, "arrays"), face_found=clip.face_found,
                                  face_coverage=clip.face_coverage, faces_in_view=clip.faces_in_view,
                                  audio_silent=clip.audio_silent)
        result.warnings = warnings
        return result

    def score_windows(self, windows: list[Any], source: str = "windows", *, face_found: bool | None = None,
                      face_coverage: float | None = None, faces_in_view: int | None = None,
                      audio_silent: bool | None = None) -> DetectionResult:
        """Score a list of already-featurised windows (:meth:`score_stream` scores them as they arrive, as
        ``pinlite_edge.scan`` does with the windows its worker processes decode).

        ``face_found=False`` (the clip has no face) gives the verdict ``"no-face"``: the probabilities are still
        reported, but a lip-sync verdict without lips would be a guess; ``audio_silent=True`` (a digitally silent
        track) gives ``"silent-audio"`` for the same reason. Windows of the wrong shape, or whose features are not
        finite or far outside the normalised range, raise ``InputError`` before the model runs.
        """
        if not windows:
            raise InputError(f"{source}: no window to score")
        return self.score_stream(windows, source,
                                 face_info=lambda: (face_found, face_coverage, faces_in_view, audio_silent))

    def score_stream(self, windows: Iterable[Any], source: str = "windows", *,
                     face_info: Callable[[], tuple[Any, ...]] | None = None) -> DetectionResult:
        """Score windows as they arrive (any iterable, e.g. streamed from a decoding process), ``batch_size`` at a
        time: only one batch and the per-window scores are held, so memory does not grow with the clip's length.

        ``face_info`` is called once the windows are exhausted and returns ``(face_found, face_coverage)``,
        ``(face_found, face_coverage, faces_in_view)`` or ``(face_found, face_coverage, faces_in_view, audio_silent)``
        (a stream knows them only at its end); ``None``: not known. ``face_coverage`` is a fraction (0..1),
        ``faces_in_view`` a count (>= 0). An error raised by the iterable propagates unchanged.
        """
        self._check_open()
        with captured_warnings() as warnings:
            scores = self._score_stream(iter(windows), source)
            info = tuple(face_info()) if face_info is not None else ()
            if len(info) not in (0, 2, 3, 4):
                raise InputError("face_info must return (face_found, face_coverage[, faces_in_view[, audio_silent]]), "
                                 f"got {info!r}")
            face_found, face_coverage, faces_in_view, audio_silent = (info + (None,) * 4)[:4]
            for name, flag in (("face_found", face_found), ("audio_silent", audio_silent)):
                if flag is not None and not isinstance(flag, (bool, np.bool_)):  # "no" used to count as true
                    raise InputError(f"{name} must be True, False or None, got {flag!r}")
            if face_coverage is not None and not (is_finite_number(face_coverage, numpy=True)
                                                  and 0.0 <= face_coverage <= 1.0):
                raise InputError(f"face_coverage must be a fraction from 0 to 1 or None, got {face_coverage!r}")
            if faces_in_view is not None and not is_whole(faces_in_view, 0, numpy=True):
                raise InputError(f"faces_in_view must be a count >= 0 or None, got {faces_in_view!r}")
            result = self._result(scores, face_found=face_found, face_coverage=face_coverage,
                                  faces_in_view=faces_in_view, audio_silent=audio_silent)
        result.warnings = warnings
        return result

    def _threshold_for(self, windows: int) -> tuple[float, str]:
        """The threshold (and its source) for a verdict resting on ``windows`` windows: the operating point's
        short-clip one below its ``short_clip_windows``, else :attr:`threshold`."""
        point = self.operating_point
        short = None if point is None else point.short_threshold(self.aggregate, windows)
        if short is None:
            return self.threshold, self.threshold_source
        return short, "; ".join([f"operating point for short clips (the verdict rests on {windows} window(s), fewer "
                                 f"than {point.short_clip_windows}; measured on "
                                 f"{point.short_clips.get(self.aggregate, 0)} short genuine scores: {point.data})",
                                 *self._threshold_notes])

    def _result(self, scores: _Scores, *, face_found: bool | None, face_coverage: float | None,
                faces_in_view: int | None = None, audio_silent: bool | None = None) -> DetectionResult:
        logits = np.concatenate(scores.logits)
        offset_probs = softmax(np.concatenate(scores.offsets))
        attention = np.concatenate(scores.attention)
        probs = softmax_fake_prob(logits)
        c = self.contract
        scan = scores.scan.result() if scores.scan is not None else None
        local = [None] * len(probs) if scan is None else scan.local_fake_probs().tolist()
        if scores.by_local_scan:  # the last windows' local scan is final now that the clip has ended
            scores.explained.offer(len(local), [], [], np.asarray(local), 0, len(local))
        counted = _counted(scores.face_fractions)  # windows without the face do not count
        in_verdict = scan.used_mask if self.aggregate == "scan" and scan is not None else counted
        windows = [WindowScore(start_seconds=s, fake_prob=float(p), offset_frames=int(np.argmax(op)) - MAX_OFFSET,
                               offset_confidence=float(op.max()), fake_prob_local_scan=lp, face_fraction=ff,
                               in_verdict=bool(u))
                   for s, p, op, lp, ff, u in zip(scores.starts, probs, offset_probs, local, scores.face_fractions,
                                                  in_verdict)]
        if not counted.all():
            log.warning("%s: the face tracker lost the face in %d of %d windows; they do not count in the verdict",
                        scores.source, int((~counted).sum()), len(counted))
        mean_offset = offset_probs[counted].mean(axis=0)
        p_max, p_mean = float(probs[counted].max()), float(probs[counted].mean())
        decisive = {"max": p_max, "mean": p_mean, "scan": None if scan is None else scan.fake_prob}[self.aggregate]
        assert decisive is not None  # aggregate "scan" implies a scan (_check_options)
        head_offset = int(np.argmax(mean_offset)) - MAX_OFFSET
        if scan is not None:
            curve = np.array(list(scan.curve.values()))
            offset, offset_conf, offset_source = scan.offset_frames, float(softmax(curve).max()), "offset scan"
        else:
            offset, offset_conf, offset_source = head_offset, float(mean_offset.max()), "offset head"
        # frame k of a window is sampled uniformly over the window (SPEC §1): its time is start + k * T / n
        step = c.window_seconds / c.num_frames
        times = np.array([[s + k * step for k in range(c.num_frames)] for s in scores.starts])
        threshold, threshold_source = self._threshold_for(int(np.sum(in_verdict)))
        verdict = "fake" if decisive >= threshold else "real"
        if face_found is False:
            verdict = "no-face"
        elif audio_silent:  # no lip-sync evidence: a confident "real" here was a wrong answer (e.g. audio removed)
            verdict = "silent-audio"
        return DetectionResult(
            verdict=verdict, fake_prob_max=p_max, fake_prob_mean=p_mean,
            aggregate=self.aggregate, threshold=threshold, threshold_source=threshold_source,
            offset_frames=offset, offset_confidence=offset_conf, offset_source=offset_source,
            offset_head_frames=head_offset,
            fake_prob_scan=None if scan is None else scan.fake_prob, scan=scan, windows=windows, frame_saliency=attention.sum(axis=1),
            frame_times=times, attention=attention, source=scores.source, model=self.runner.name,
            explain_frames=_display_frames(scores.explained.frames(list(in_verdict)), c),
            model_training_data=self.training_data_text, model_trained_on_real_video=self.trained_on_real_video,
            face_found=face_found, face_coverage=face_coverage, faces_in_view=faces_in_view,
        )
