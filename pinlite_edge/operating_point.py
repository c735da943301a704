"""The operating point: the P(fake) threshold a model's verdicts use, measured on genuine clips.

A model trained on balanced sync pairs (half in-sync, half shifted or swapped) is not calibrated for genuine footage:
on the real clips of ``../shared/data/real-av`` the quickstart student gave max-aggregate P(fake) 0.50-0.81 to clips
that are all genuine, so a fixed 0.5 called 29 of 31 of them fake. The operating point is measured instead: score
genuine, in-sync clips that are not in the evaluation split, and per aggregate pick the lowest threshold at which at
most ``target_fpr`` of them would be called fake. For the window aggregates (``max``, ``mean``) it is *raised, never
lowered*, from 0.5: a handful of calibration clips may protect against false alarms but must not make a model more
trigger-happy than its own probabilities. The offset scan's score (``scan``, :mod:`pinlite_edge.offset_scan`) is not
such a probability: ``1 - exp(-gap)`` compares two alignments of the same clip and has no 50% point (a genuine clip
scores 0 when its own alignment fits best), so its threshold is the calibration quantile alone (floor 0). On the
real-faces test split the scan ranked shifted clips above genuine ones (AUC 0.86 for 200 ms delays) while 0.5 called
none of them fake (``benchmarks/results/real_faces/notes.md``).

Short clips: a verdict resting on fewer than :data:`SHORT_CLIP_WINDOWS` windows gets thresholds measured on short
genuine scores (calibration's excerpts, ``pinlite_edge.data.reencode``), never below the whole-clip ones.

The record travels with the model: checkpoint record -> artefact manifest -> ``runner.operating_point`` ->
``Detector`` (its default threshold when the caller gives none); ``DetectionResult.threshold_source`` says which.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from pinlite_edge.errors import InputError
from pinlite_edge.utils.checks import is_finite_number, is_whole

#: window aggregates ("max", "mean" of the window P(fake)) and the offset scan's P(fake) (pinlite_edge.offset_scan)
AGGREGATES = ("max", "mean", "scan")
#: the threshold a model without an operating point uses, and the floor of a calibrated one
DEFAULT_THRESHOLD = 0.5
DEFAULT_TARGET_FPR = 0.05
#: the lowest threshold calibration may choose per aggregate (module doc): 0.5 for window probabilities, 0 for the scan
THRESHOLD_FLOORS = {"max": DEFAULT_THRESHOLD, "mean": DEFAULT_THRESHOLD, "scan": 0.0}
#: how far above the highest genuine score that must pass a threshold sits: more than the float rounding by which
#: a model's artefacts score the same clip apart (the ONNX and .pte exports are checked to 1e-4 in logits, a few 1e-6
#: in probability on the clips seen), far less than the spread of genuine clips' scores
THRESHOLD_MARGIN = 1e-5
#: a clip whose verdict rests on fewer windows than this is "short" and gets the short-clip thresholds: the offset
#: scan's complete windows (shifted audio inside the track) or, for max / mean, the windows with the face. A 3 s clip
#: (GRID's length) gives 3 complete scan windows. Few windows make a noisier score: at the thresholds measured on
#: whole clips, 17 of 56 genuine 1.2 s and 2 s excerpts were called fake (benchmarks/results/short_clips/).
SHORT_CLIP_WINDOWS = 3
#: the largest ``short_clip_windows`` a stored record may give (more would make most clips "short")
MAX_SHORT_CLIP_WINDOWS = 32


@dataclass(frozen=True)
class OperatingPoint:
    """Per-aggregate thresholds and the genuine clips they were measured on."""

    thresholds: dict[str, float]  # aggregate ("max" | "mean" | "scan") -> P(fake) threshold
    target_fpr: float  # at most this fraction of the calibration clips is called fake
    clips: int  # genuine clips scored (no-face clips excluded)
    data: str  # where the clips came from (folder, split file, splits)
    stride_seconds: float | None = None  # window stride used (None: the contract's default, as Detector uses)
    fpr_at_threshold: dict[str, float] = field(default_factory=dict)  # measured on the calibration clips
    fpr_at_default: dict[str, float] = field(default_factory=dict)  # the same clips at 0.5, for comparison
    #: re-encoded copies of each clip scored besides it (pinlite_edge.data.reencode; ``clips`` counts them too)
    reencodings: tuple[str, ...] = ()
    #: distinct genuine clips among ``clips`` (None: a record written before it was counted)
    originals: int | None = None
    #: whether the clips were scored with the face crop (the Detector default) or as whole frames
    face_crop: bool = True
    #: the thresholds for a clip whose verdict rests on fewer than ``short_clip_windows`` windows, measured on the
    #: short scores among ``clips`` (excerpts; never below ``thresholds``); empty: none measured (a record from before
    #: them, or no short score), and ``thresholds`` serve every clip
    short_thresholds: dict[str, float] = field(default_factory=dict)
    short_clip_windows: int = SHORT_CLIP_WINDOWS
    #: per aggregate, the scores among ``clips`` on fewer windows (``thresholds`` are measured on the others)
    short_clips: dict[str, int] = field(default_factory=dict)
    fpr_short: dict[str, float] = field(default_factory=dict)  # of the short scores at ``short_thresholds``

    def describe_clips(self) -> str:
        """E.g. ``"25 genuine clips"``, or with re-encoded copies ``"98 scores: 25 genuine clips and re-encoded
        copies"`` (``data`` names the re-encodings)."""
        if not self.reencodings:
            return f"{self.clips} genuine clips"
        clips = f"{self.originals} genuine clips" if self.originals is not None else "genuine clips"
        return f"{self.clips} scores: {clips} and re-encoded copies"

    def setting_differences(self, stride_seconds: float | None, face_crop: bool,
                            default_stride: float | None = None) -> list[str]:
        """How a Detector's windowing differs from the one these thresholds were measured with (empty: none);
        ``default_stride``: the stride None stands for (one window), so that giving it explicitly is no difference."""
        def stride(value: float | None) -> str:
            return "the default stride" if value is None else f"stride {value:g} s"

        def same(a: float | None, b: float | None) -> bool:
            a, b = (default_stride if a is None else a), (default_stride if b is None else b)
            return a == b or (a is not None and b is not None and abs(a - b) < 1e-9)

        out = []
        if not same(stride_seconds, self.stride_seconds):
            out.append(f"at {stride(self.stride_seconds)} (this Detector: {stride(stride_seconds)})")
        if face_crop != self.face_crop:
            out.append(f"{'with' if self.face_crop else 'without'} the face crop (this Detector: "
                       f"{'with' if face_crop else 'without'})")
        return out

    def threshold(self, aggregate: str) -> float:
        try:
            return float(self.thresholds[aggregate])
        except KeyError:
            raise InputError(f"the operating point has no threshold for aggregate {aggregate!r} "
                             f"(it has {sorted(self.thresholds)})") from None

    def short_threshold(self, aggregate: str, windows: int) -> float | None:
        """The short-clip threshold for a verdict on ``windows`` windows, or None when the clip is not short or none
        was measured for ``aggregate``."""
        if windows >= self.short_clip_windows or aggregate not in self.short_thresholds:
            return None
        return float(self.short_thresholds[aggregate])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: str = "record") -> "OperatingPoint":
        """Parse a stored record; anything malformed is an :class:`InputError` naming ``source``."""
        if not isinstance(d, Mapping):
            raise InputError(f"{source}: operating_point must be a JSON object, got {type(d).__name__}")
        thresholds = d.get("thresholds")
        if not isinstance(thresholds, Mapping) or not thresholds:
            raise InputError(f"{source}: operating_point.thresholds must map an aggregate to a threshold")
        parsed = _thresholds(thresholds, source, "thresholds")
        short = _thresholds(d.get("short_thresholds") or {}, source, "short_thresholds")
        for agg, value in short.items():
            if agg not in parsed or value < parsed[agg]:
                raise InputError(f"{source}: operating_point.short_thresholds[{agg!r}] = {value} needs a whole-clip "
                                 f"threshold for {agg!r} at or below it (got {parsed.get(agg)}): short clips are "
                                 "never judged more readily than whole ones")
        windows = check_short_clip_windows(d.get("short_clip_windows", SHORT_CLIP_WINDOWS),
                                           f"{source}: operating_point.short_clip_windows")
        try:
            return cls(thresholds=parsed, target_fpr=float(d.get("target_fpr", math.nan)), clips=int(d.get("clips", 0)),
                       data=str(d.get("data", "")),
                       stride_seconds=None if d.get("stride_seconds") is None else float(d["stride_seconds"]),
                       fpr_at_threshold={str(k): float(v) for k, v in dict(d.get("fpr_at_threshold") or {}).items()},
                       fpr_at_default={str(k): float(v) for k, v in dict(d.get("fpr_at_default") or {}).items()},
                       reencodings=tuple(str(x) for x in (d.get("reencodings") or ())),
                       originals=None if d.get("originals") is None else int(d["originals"]),
                       face_crop=bool(d.get("face_crop", "(no face crop)" not in str(d.get("data", "")))),
                       short_thresholds=short,
                       short_clip_windows=windows,
                       short_clips={str(k): int(v) for k, v in dict(d.get("short_clips") or {}).items()},
                       fpr_short={str(k): float(v) for k, v in dict(d.get("fpr_short") or {}).items()})
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: malformed operating_point: {exc}") from None


def _thresholds(thresholds: Any, source: str, key: str) -> dict[str, float]:
    """``{aggregate: threshold}`` of a stored record, validated (:class:`InputError` naming ``source``)."""
    if not isinstance(thresholds, Mapping):
        raise InputError(f"{source}: operating_point.{key} must map an aggregate to a threshold")
    parsed: dict[str, float] = {}
    for agg, value in thresholds.items():
        if agg not in AGGREGATES:
            raise InputError(f"{source}: operating_point has a threshold for unknown aggregate {agg!r}")
        if not is_finite_number(value) or not 0.0 <= float(value) <= 1.0:
            raise InputError(f"{source}: operating_point.{key} for {agg!r} must be a number in [0, 1], got "
                             f"{value!r}")
        parsed[agg] = float(value)
    return parsed


def check_short_clip_windows(windows: Any, name: str = "short_clip_windows") -> int:
    """:class:`InputError` unless ``windows`` is a whole number in 1..:data:`MAX_SHORT_CLIP_WINDOWS` (``name``: how
    the caller spells it)."""
    if not is_whole(windows, 1, MAX_SHORT_CLIP_WINDOWS):
        raise InputError(f"{name} must be a whole number in 1..{MAX_SHORT_CLIP_WINDOWS}, got {windows!r}")
    return windows


def check_target_fpr(target_fpr: Any, name: str = "target_fpr") -> None:
    """:class:`InputError` unless ``target_fpr`` is a fraction in [0, 1) (``name``: how the caller spells it)."""
    if not isinstance(target_fpr, (int, float)) or not 0.0 <= target_fpr < 1.0:
        raise InputError(f"{name} must be a fraction in [0, 1), got {target_fpr}")


def threshold_at_fpr(scores: Sequence[float], target_fpr: float, floor: float = DEFAULT_THRESHOLD) -> float:
    """The lowest threshold ``t >= floor`` at which at most ``target_fpr`` of ``scores`` (P(fake) in [0, 1], a
    sequence or array) satisfy ``score >= t``.

    Verdicts call a clip fake when its score is ``>= threshold``, so the threshold sits just above the highest
    score that must stay below it: :data:`THRESHOLD_MARGIN` above it, because the same clip scored by the model's
    artefacts (ONNX, ``.pte``, another CPU) moves by float rounding, and one float step above let a calibration clip
    scored by the ONNX export land on the threshold (1.4e-8 above its checkpoint score: called fake).
    """
    if len(scores) == 0:
        raise InputError("no genuine clip scores to calibrate on")
    check_target_fpr(target_fpr)
    ranked = sorted((float(s) for s in scores), reverse=True)
    if any(not math.isfinite(s) for s in ranked):
        raise InputError("a calibration score is not finite")
    if not 0.0 <= ranked[-1] <= ranked[0] <= 1.0:  # a margin or a logit gave a threshold of 0 or 1
        raise InputError(f"calibration scores must be P(fake) in [0, 1], got scores from {ranked[-1]:g} to "
                         f"{ranked[0]:g}")
    allowed = int(math.floor(target_fpr * len(ranked) + 1e-9))  # clips that may stay at or above the threshold
    if allowed >= len(ranked):
        return floor
    must_pass = ranked[allowed]  # the highest score that must fall below the threshold
    return max(floor, min(1.0, must_pass + THRESHOLD_MARGIN))


def false_positive_rate(scores: Sequence[float], threshold: float) -> float:
    return sum(1 for s in scores if s >= threshold) / len(scores) if len(scores) else math.nan


def fit_operating_point(scores: Mapping[str, Sequence[float]], *, target_fpr: float = DEFAULT_TARGET_FPR,
                        data: str = "", stride_seconds: float | None = None,
                        reencodings: Sequence[str] = (), originals: int | None = None,
                        face_crop: bool = True, windows: Mapping[str, Sequence[int]] | None = None,
                        short_clip_windows: int = SHORT_CLIP_WINDOWS) -> OperatingPoint:
    """``scores`` maps an aggregate to the genuine clips' aggregated P(fake); one threshold per aggregate.

    ``windows`` (same shape) gives the windows each score's verdict rests on: the scores on fewer than
    ``short_clip_windows`` get thresholds of their own (``short_thresholds``, never below the others), and the
    others are measured without them. Without ``windows`` (or without short scores) one threshold serves all.
    Scores are P(fake) in [0, 1]; the settings are checked as the Detector's and a stored record's are."""
    from pinlite_edge.features.limits import check_stride  # lazily: the features package loads the decoders

    stride_seconds = check_stride(stride_seconds)
    check_short_clip_windows(short_clip_windows)
    if not isinstance(face_crop, bool):
        raise InputError(f"face_crop must be True or False, got {face_crop!r}")
    unknown = sorted(set(scores) - set(AGGREGATES))
    if unknown:
        raise InputError(f"unknown aggregate(s) {unknown}; choose from {AGGREGATES}")
    counts = {len(v) for v in scores.values()}
    if len(counts) != 1:
        raise InputError("every aggregate must be scored on the same clips")
    if windows is not None and (not isinstance(windows, Mapping)
                                or any(len(windows.get(agg, ())) != len(v) for agg, v in scores.items())):
        raise InputError("windows must give one count per score of every aggregate")
    if windows is not None:
        for agg in scores:
            bad = [w for w in windows[agg] if not is_whole(w, 1, numpy=True)]
            if bad:  # 0, -3, 2.5 or True made a score a short clip's, NaN a whole clip's
                raise InputError(f"windows must be whole numbers >= 1 (the windows a clip's score rests on), got "
                                 f"{bad[0]!r} for {agg!r}")
    thresholds, short, fpr, fpr_short, short_counts, fpr_default = {}, {}, {}, {}, {}, {}
    for agg, vals in scores.items():
        short_mask = [w < short_clip_windows for w in windows[agg]] if windows is not None else [False] * len(vals)
        long_vals = [v for v, m in zip(vals, short_mask) if not m] or list(vals)  # short clips only: one threshold
        short_vals = [v for v, m in zip(vals, short_mask) if m]
        thresholds[agg] = threshold_at_fpr(long_vals, target_fpr, floor=THRESHOLD_FLOORS[agg])
        fpr[agg] = false_positive_rate(long_vals, thresholds[agg])
        fpr_default[agg] = false_positive_rate(long_vals, DEFAULT_THRESHOLD)  # the same scores, at 0.5
        if short_vals and len(short_vals) < len(vals):
            short_counts[agg] = len(short_vals)
            short[agg] = max(thresholds[agg], threshold_at_fpr(short_vals, target_fpr, floor=THRESHOLD_FLOORS[agg]))
            fpr_short[agg] = false_positive_rate(short_vals, short[agg])
    return OperatingPoint(
        thresholds=thresholds, target_fpr=float(target_fpr), clips=counts.pop(), data=data,
        stride_seconds=stride_seconds, reencodings=tuple(reencodings), originals=originals, face_crop=face_crop,
        fpr_at_threshold=fpr,
        fpr_at_default=fpr_default,
        short_thresholds=short, short_clip_windows=short_clip_windows,
        short_clips=short_counts, fpr_short=fpr_short)


__all__ = ["AGGREGATES", "DEFAULT_TARGET_FPR", "DEFAULT_THRESHOLD", "SHORT_CLIP_WINDOWS", "THRESHOLD_FLOORS",
           "OperatingPoint", "check_short_clip_windows", "check_target_fpr",
           "false_positive_rate", "fit_operating_point", "threshold_at_fpr"]
