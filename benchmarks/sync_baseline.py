"""A training-free audio-visual synchrony score (FaceSync / Hershey & Movellan style): the classical baseline.

For a prepared clip (uint8 face or mouth crops at ``fps`` + 16 kHz mono audio):

1. **Video signal** -- per frame, the mean absolute grey-level difference to the previous frame inside a mouth
   region of interest (ROI) given as fractions of the crop. The default ROI (rows 0.45..0.90, columns 0.25..0.75) is
   the lower centre of the crop: the mouth of today's whole-head crop and most of the lips and chin of a crop centred
   on the mouth, so the baseline works with both crops.
2. **Audio signal** -- per video frame, the log energy in the speech band (300-3000 Hz) of the audio within half a
   frame of the frame's timestamp: the mouth moves while the voice is loud.
3. Both signals are z-normalised and Pearson-correlated over lags ``-max_lag..+max_lag`` frames, each lag on its
   overlapping part. Sign convention as in the rest of the project (``pinlite_edge.data.syncpairs``): lag ``k > 0``
   means the audio is delayed by ``k`` frames, i.e. the audio at frame ``t`` goes with the picture at ``t - k``.

Outputs: ``offset_estimate`` = the lag of the highest correlation, and ``sync_score`` = ``max_{|k| > exclude}
corr(k) - corr(0)``: in-sync speech peaks at lag 0 and scores low; a shifted or foreign track does not, and scores
higher (a fake-likeness score, not a probability; its decision threshold is chosen on the TRAIN split by the
harness, ``benchmarks/real_faces.py``).

It runs on a whole clip (:func:`clip_sync`) or on one model window (:func:`window_sync`) so it can be aggregated
exactly like the model.  The design choices were made on synthetic clips (where the offset is recovered exactly) and
on the TRAIN split of ``pinlite_edge/data/splits/real_av.json`` only (whole-band vs speech-band energy, level vs
differenced energy, ROI variants, head-motion compensation: the speech-band log energy with the plain ROI motion gave
the best train AUCs); nothing was tuned on dev or test.

Command line: ``python benchmarks/sync_baseline.py CLIP [CLIP ...]`` prints the score and offset of each file.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from pinlite_edge.errors import InputError  # noqa: E402
from pinlite_edge.features.facecrop import LUMA_WEIGHTS, MOUTH_ROI_COLS, MOUTH_ROI_ROWS  # noqa: E402
from pinlite_edge.features.windows import PreparedClip, audio_segment  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.sync_baseline")

_GREY = np.asarray(LUMA_WEIGHTS, dtype=np.float32)


@dataclass(frozen=True)
class BaselineConfig:
    """Knobs of the synchrony score (fractions of the crop for the ROI; lags in video frames)."""

    roi_rows: tuple[float, float] = MOUTH_ROI_ROWS
    roi_cols: tuple[float, float] = MOUTH_ROI_COLS
    max_lag: int = 15
    exclude_lag: int = 2  # the off-sync reference is the best correlation at |lag| > exclude_lag
    min_overlap: int = 8  # fewest frame pairs a lag must have to be scored (limits the lags of short windows)
    audio_feature: str = "log_rms"  # "log_rms" (log energy) or "delta_log_rms" (|d log energy|)
    audio_band: tuple[float, float] | None = (300.0, 3000.0)  # Hz; speech band (None: whole spectrum)

    def __post_init__(self) -> None:
        (r0, r1), (c0, c1) = self.roi_rows, self.roi_cols
        if not (0.0 <= r0 < r1 <= 1.0 and 0.0 <= c0 < c1 <= 1.0):
            raise InputError(f"baseline ROI must be fractions 0 <= lo < hi <= 1, got rows {self.roi_rows} cols "
                             f"{self.roi_cols}")
        if self.max_lag < 1 or not 0 <= self.exclude_lag < self.max_lag or self.min_overlap < 3:
            raise InputError(f"need max_lag >= 1, 0 <= exclude_lag < max_lag and min_overlap >= 3; got "
                             f"{self.max_lag}, {self.exclude_lag}, {self.min_overlap}")
        if self.audio_band is not None and not 0.0 <= self.audio_band[0] < self.audio_band[1]:
            raise InputError(f"audio_band must be (lo, hi) Hz with 0 <= lo < hi, got {self.audio_band}")
        if self.audio_feature not in ("delta_log_rms", "log_rms"):
            raise InputError(f"audio_feature must be 'delta_log_rms' or 'log_rms', got {self.audio_feature!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class SyncResult:
    """``corr[i]`` is the correlation at ``lags[i]``; NaN where the overlap is too short."""

    sync_score: float
    offset_estimate: int
    lags: np.ndarray
    corr: np.ndarray

    def to_dict(self) -> dict[str, object]:
        return {"sync_score": self.sync_score, "offset_estimate": self.offset_estimate,
                "lags": self.lags.tolist(), "corr": [None if not np.isfinite(c) else float(c) for c in self.corr]}


def mouth_motion(frames: np.ndarray, config: BaselineConfig | None = None) -> np.ndarray:
    """Per-frame motion ``(N,)`` in the mouth ROI of uint8 RGB crops ``(N, S, S, 3)``; frame 0 copies frame 1."""
    cfg = config or BaselineConfig()
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise InputError(f"mouth_motion needs uint8 RGB frames (N >= 2, H, W, 3), got shape {frames.shape}")
    h, w = frames.shape[1:3]
    r0, r1 = int(round(cfg.roi_rows[0] * h)), max(int(round(cfg.roi_rows[1] * h)), int(round(cfg.roi_rows[0] * h)) + 1)
    c0, c1 = int(round(cfg.roi_cols[0] * w)), max(int(round(cfg.roi_cols[1] * w)), int(round(cfg.roi_cols[0] * w)) + 1)
    grey = frames[:, r0:r1, c0:c1].astype(np.float32) @ _GREY
    diff = np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))
    return np.concatenate([diff[:1], diff]).astype(np.float64)


def audio_envelope(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int,
                   config: BaselineConfig | None = None) -> np.ndarray:
    """Per-video-frame audio feature ``(num_frames,)`` of the intervals ``[t/fps, (t+1)/fps)`` of ``audio``
    (zero-padded past its end): the log energy in ``config.audio_band`` (Hann-windowed spectrum; whole band when
    None), absolutely differenced for ``delta_log_rms`` (frame 0 of the difference copies frame 1)."""
    cfg = config or BaselineConfig()
    spf = sample_rate / fps
    edges = np.round(np.arange(num_frames + 1) * spf).astype(np.int64)
    length = max(int(round(spf)), 2)
    sig = audio_segment(np.asarray(audio, dtype=np.float32), 0, int(edges[-2]) + length)
    frames = sig[edges[:-1, None] + np.arange(length)[None, :]].astype(np.float64)
    if cfg.audio_band is None:
        energy = (frames ** 2).mean(axis=1)
    else:
        power = np.abs(np.fft.rfft(frames * np.hanning(length), axis=1)) ** 2
        freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
        band = (freqs >= cfg.audio_band[0]) & (freqs < cfg.audio_band[1])
        energy = power[:, band].sum(axis=1) / length
    log_energy = 0.5 * np.log(energy + 1e-8)
    if cfg.audio_feature == "log_rms":
        return log_energy
    if num_frames < 2:
        return np.zeros(num_frames)
    d = np.abs(np.diff(log_energy))
    return np.concatenate([d[:1], d])


def lagged_correlation(video: np.ndarray, audio: np.ndarray, max_lag: int,
                       min_overlap: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of ``video[t - k]`` with ``audio[t]`` for ``k`` in ``-max_lag..max_lag``.

    Returns ``(lags, corr)``; a lag whose overlap has fewer than ``min_overlap`` pairs, or a constant side, is NaN.
    """
    video, audio = np.asarray(video, np.float64), np.asarray(audio, np.float64)
    n = min(video.shape[0], audio.shape[0])
    video, audio = video[:n], audio[:n]
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.full(lags.shape, np.nan)
    for i, k in enumerate(lags):
        # pairs (video[j], audio[j + k]) for j with 0 <= j, j + k < n
        v = video[max(0, -k):n - max(0, k)]
        a = audio[max(0, k):n - max(0, -k)]
        if v.shape[0] < min_overlap:
            continue
        v, a = v - v.mean(), a - a.mean()
        den = float(np.sqrt((v * v).sum() * (a * a).sum()))
        if den > 1e-12:
            corr[i] = float((v * a).sum() / den)
    return lags, corr


def score_correlation(lags: np.ndarray, corr: np.ndarray, config: BaselineConfig | None = None) -> SyncResult:
    """``sync_score`` (max off-sync correlation minus the lag-0 one) and ``offset_estimate`` from a lag curve."""
    cfg = config or BaselineConfig()
    finite = np.isfinite(corr)
    if not finite.any():  # no motion or silent audio: no evidence either way
        return SyncResult(sync_score=0.0, offset_estimate=0, lags=lags, corr=corr)
    filled = np.where(finite, corr, -np.inf)
    offset = int(lags[int(np.argmax(filled))])
    c0 = corr[lags == 0]
    c0_val = float(c0[0]) if c0.size and np.isfinite(c0[0]) else 0.0
    off = filled[np.abs(lags) > cfg.exclude_lag]
    off_max = float(off.max()) if off.size and np.isfinite(off.max()) else 0.0
    return SyncResult(sync_score=off_max - c0_val, offset_estimate=offset, lags=lags, corr=corr)


def signals_sync(video: np.ndarray, audio: np.ndarray, config: BaselineConfig | None = None) -> SyncResult:
    """Score two per-frame signals of one span (lags limited so each keeps ``min_overlap`` pairs)."""
    cfg = config or BaselineConfig()
    n = min(video.shape[0], audio.shape[0])
    max_lag = max(1, min(cfg.max_lag, n - cfg.min_overlap))
    lags, corr = lagged_correlation(video, audio, max_lag, cfg.min_overlap)
    return score_correlation(lags, corr, cfg)


def clip_sync(clip: PreparedClip, config: BaselineConfig | None = None, *, audio: np.ndarray | None = None,
              audio_start_seconds: float = 0.0) -> SyncResult:
    """The whole clip at once; ``audio`` (at the clip's sample rate) replaces its track, read from
    ``audio_start_seconds`` (negative: zero-padded before)."""
    cfg = config or BaselineConfig()
    n = int(np.floor(clip.duration * clip.fps + 1e-6))
    if n < cfg.min_overlap + 1:
        raise InputError(f"clip of {clip.duration:.2f} s is too short for the sync baseline "
                         f"({cfg.min_overlap + 1} frames needed)")
    return window_sync(clip, 0.0, n, cfg, audio=audio, audio_start_seconds=audio_start_seconds)


def window_sync(clip: PreparedClip, start_seconds: float, num_frames: int, config: BaselineConfig | None = None, *,
                audio: np.ndarray | None = None, audio_start_seconds: float | None = None,
                motion: np.ndarray | None = None) -> SyncResult:
    """The ``num_frames`` native frames from ``start_seconds`` and the audio of the same span (or of
    ``audio_start_seconds`` in ``audio``), as a model window sees them. ``motion`` is :func:`mouth_motion` of the
    whole clip, passed in to compute it once per clip."""
    cfg = config or BaselineConfig()
    first = int(round(start_seconds * clip.fps))
    if first < 0 or first + num_frames > clip.frames.shape[0] or num_frames < 3:
        raise InputError(f"window of {num_frames} frames at {start_seconds:.3f} s leaves the clip "
                         f"({clip.frames.shape[0]} frames)")
    if motion is None:
        video = mouth_motion(clip.frames[first:first + num_frames], cfg)
    else:
        video = np.asarray(motion[first:first + num_frames], np.float64)
    sig = clip.audio if audio is None else np.asarray(audio, np.float32)
    a_start = start_seconds if audio_start_seconds is None else audio_start_seconds
    spf = clip.sample_rate / clip.fps
    # frame t is shown at t / fps: its audio interval is centred there, [t - 1/2, t + 1/2) frames
    seg = audio_segment(sig, int(round(a_start * clip.sample_rate - spf / 2)), int(round(num_frames * spf)))
    env = audio_envelope(seg, clip.sample_rate, clip.fps, num_frames, cfg)
    # frame 0's motion is the step from the previous frame (outside the span): drop it with the audio's first frame
    return signals_sync(video[1:], env[1:], cfg)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path, help="video files to score")
    parser.add_argument("--preset", default="paper", choices=["paper", "tiny"],
                        help="input contract whose crop size the frames are prepared at (default paper)")
    parser.add_argument("--shift", type=int, default=0,
                        help="delay the audio by this many frames before scoring (negative: advance)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from pinlite_edge.contract import contract_for_preset
    from pinlite_edge.features.pipeline import prepare_file

    contract = contract_for_preset(args.preset)
    for path in args.clips:
        clip = prepare_file(path, contract)
        res = clip_sync(clip, audio_start_seconds=-args.shift / clip.fps)
        print(json.dumps({"file": str(path), "sync_score": round(res.sync_score, 4),
                          "offset_estimate": res.offset_estimate}))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
