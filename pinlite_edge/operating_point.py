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

The record travels with the model: checkpoint record -> artefact manifest -> ``runner.operating_point`` ->
``Detector`` (its default threshold when the caller gives none); ``DetectionResult.threshold_source`` says which.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from pinlite_edge.errors import InputError

#: window aggregates ("max", "mean" of the window P(fake)) and the offset scan's P(fake) (pinlite_edge.offset_scan)
AGGREGATES = ("max", "mean", "scan")
#: the threshold a model without an operating point uses, and the floor of a calibrated one
DEFAULT_THRESHOLD = 0.5
DEFAULT_TARGET_FPR = 0.05
#: the lowest threshold calibration may choose per aggregate (module doc): 0.5 for window probabilities, 0 for the scan
THRESHOLD_FLOORS = {"max": DEFAULT_THRESHOLD, "mean": DEFAULT_THRESHOLD, "scan": 0.0}


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

    def describe_clips(self) -> str:
        """E.g. ``"25 genuine clips"``, or with re-encoded copies ``"98 scores: 25 genuine clips and re-encoded
        copies"`` (``data`` names the re-encodings)."""
        if not self.reencodings:
            return f"{self.clips} genuine clips"
        clips = f"{self.originals} genuine clips" if self.originals is not None else "genuine clips"
        return f"{self.clips} scores: {clips} and re-encoded copies"

    def setting_differences(self, stride_seconds: float | None, face_crop: bool) -> list[str]:
        """How a Detector's windowing differs from the one these thresholds were measured with (empty: none)."""
        def stride(value: float | None) -> str:
            return "the default stride" if value is None else f"stride {value:g} s"

        out = []
        if stride_seconds != self.stride_seconds:
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
        parsed: dict[str, float] = {}
        for agg, value in thresholds.items():
            if agg not in AGGREGATES:
                raise InputError(f"{source}: operating_point has a threshold for unknown aggregate {agg!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise InputError(f"{source}: operating_point threshold for {agg!r} must be a number in [0, 1], "
                                 f"got {value!r}")
            parsed[agg] = float(value)
        try:
            return cls(thresholds=parsed, target_fpr=float(d.get("target_fpr", math.nan)), clips=int(d.get("clips", 0)),
                       data=str(d.get("data", "")),
                       stride_seconds=None if d.get("stride_seconds") is None else float(d["stride_seconds"]),
                       fpr_at_threshold={str(k): float(v) for k, v in dict(d.get("fpr_at_threshold") or {}).items()},
                       fpr_at_default={str(k): float(v) for k, v in dict(d.get("fpr_at_default") or {}).items()},
                       reencodings=tuple(str(x) for x in (d.get("reencodings") or ())),
                       originals=None if d.get("originals") is None else int(d["originals"]),
                       face_crop=bool(d.get("face_crop", "(no face crop)" not in str(d.get("data", "")))))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: malformed operating_point: {exc}") from None


def threshold_at_fpr(scores: Sequence[float], target_fpr: float, floor: float = DEFAULT_THRESHOLD) -> float:
    """The lowest threshold ``t >= floor`` at which at most ``target_fpr`` of ``scores`` satisfy ``score >= t``.

    Verdicts call a clip fake when its score is ``>= threshold``, so the threshold sits just above the highest
    score that must stay below it (the next float up, so the comparison is exact).
    """
    if not scores:
        raise InputError("no genuine clip scores to calibrate on")
    if not 0.0 <= target_fpr < 1.0:
        raise InputError(f"target_fpr must be in [0, 1), got {target_fpr}")
    ranked = sorted((float(s) for s in scores), reverse=True)
    if any(not math.isfinite(s) for s in ranked):
        raise InputError("a calibration score is not finite")
    allowed = int(math.floor(target_fpr * len(ranked) + 1e-9))  # clips that may stay at or above the threshold
    if allowed >= len(ranked):
        return floor
    must_pass = ranked[allowed]  # the highest score that must fall below the threshold
    return max(floor, min(1.0, math.nextafter(must_pass, math.inf)))


def false_positive_rate(scores: Sequence[float], threshold: float) -> float:
    return sum(1 for s in scores if s >= threshold) / len(scores) if scores else math.nan


def fit_operating_point(scores: Mapping[str, Sequence[float]], *, target_fpr: float = DEFAULT_TARGET_FPR,
                        data: str = "", stride_seconds: float | None = None,
                        reencodings: Sequence[str] = (), originals: int | None = None,
                        face_crop: bool = True) -> OperatingPoint:
    """``scores`` maps an aggregate to the genuine clips' aggregated P(fake); one threshold per aggregate."""
    unknown = sorted(set(scores) - set(AGGREGATES))
    if unknown:
        raise InputError(f"unknown aggregate(s) {unknown}; choose from {AGGREGATES}")
    thresholds = {agg: threshold_at_fpr(vals, target_fpr, floor=THRESHOLD_FLOORS[agg]) for agg, vals in scores.items()}
    counts = {len(v) for v in scores.values()}
    if len(counts) != 1:
        raise InputError("every aggregate must be scored on the same clips")
    return OperatingPoint(
        thresholds=thresholds, target_fpr=float(target_fpr), clips=counts.pop(), data=data,
        stride_seconds=stride_seconds, reencodings=tuple(reencodings), originals=originals, face_crop=face_crop,
        fpr_at_threshold={agg: false_positive_rate(v, thresholds[agg]) for agg, v in scores.items()},
        fpr_at_default={agg: false_positive_rate(v, DEFAULT_THRESHOLD) for agg, v in scores.items()})


__all__ = ["AGGREGATES", "DEFAULT_TARGET_FPR", "DEFAULT_THRESHOLD", "THRESHOLD_FLOORS", "OperatingPoint",
           "false_positive_rate", "fit_operating_point", "threshold_at_fpr"]
