"""Synthetic talking faces with LAV-DF-like manipulations (SPEC §5), so every stage runs without downloads.

Each clip has one speaker (voice + face) and independent *content tracks* (syllabic envelopes). The audio is rendered
from one track and the mouth from another:

=================  ==========================================  ==========================================
manipulation       audio follows                               mouth follows
=================  ==========================================  ==========================================
real               base = U1 spliced with U2 in segment        base (same track: in sync)
audio_shift (k)    base, delayed by k frames (k>0: audio late)  base
audio_replace      U1 spliced with U3 in segment               base
visual_replace     base                                        U1 spliced with U3 in segment
both_replace       U1 spliced with U3 in segment               U1 spliced with U4 in segment
audio_swap         U3 spliced with U4 (another utterance)      base
=================  ==========================================  ==========================================

Every track of every clip, real or fake, is "one utterance spliced (cross-faded) with another in a random segment",
drawn from the same processes, and the audio is cut from a longer rendering (context on both sides), so each modality
alone has the same distribution for real and fake clips: only the audio-visual correspondence tells them apart.

Sample ``i`` of a split is a pure function of ``(config, split, i)``; all randomness of a clip comes from one
``numpy.random.Generator``. The labels are drawn first and everything else after them in a fixed order, so
``generate_clip(seed, manipulation="real")`` and ``generate_clip(seed, manipulation="audio_shift", shift=3)`` give the
same face, voice and content: matched pairs that differ only in their manipulation.
"""
from __future__ import annotations

import logging
import math
import operator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pinlite_edge.contract import (
    MANIPULATIONS,
    MAX_OFFSET,
    OFFSET_IGNORE_INDEX,
    InputContract,
)
from pinlite_edge.data import synthetic_render as R
from pinlite_edge.data.options import coerce_option, dataclass_hints
from pinlite_edge.data.sample import canonical_split
from pinlite_edge.data.x264 import x264_options
from pinlite_edge.errors import DatasetError
from pinlite_edge.features.mfcc import compute_mfcc
from pinlite_edge.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

#: Manipulations the generator can make (every fake type of ``MANIPULATIONS``).
FAKE_TYPES = ("audio_shift", "audio_replace", "visual_replace", "both_replace", "audio_swap")
#: Frames of context rendered on each side of the window, so a shift of up to MAX_OFFSET frames never pads.
_CONTEXT_FRAMES = MAX_OFFSET + 1
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
#: frames of the window a replaced segment lies in (``segment_frames``)
_WINDOW_FRAMES = InputContract().num_frames


def _default_mix() -> dict[str, float]:
    return {"audio_shift": 0.4, "audio_replace": 0.2, "visual_replace": 0.2, "both_replace": 0.2, "audio_swap": 0.0}


@dataclass
class SyntheticConfig:
    """Size, balance and difficulty of the synthetic dataset.

    Pixel-valued knobs (``jitter``, ``blur``) are given for a 128 px frame and scaled to the contract's frame size.
    Per clip, blur sigma is drawn in ``[0, blur]``, pixel-noise std in ``[0.25, 1] * noise_std`` (0-255 units),
    head motion amplitude in ``[0.5, 1] * jitter``. Shifts ``k`` have ``min_shift <= |k| <= max_shift`` frames
    (1 frame = 40 ms). The default ``min_shift=2`` leaves out 40 ms offsets, which are barely visible in 16 frames.
    """

    seed: int = 0
    num_train: int = 600
    num_val: int = 150
    num_test: int = 200
    fake_fraction: float = 0.5
    manipulation_mix: dict[str, float] = field(default_factory=_default_mix)
    min_shift: int = 2
    max_shift: int = 5
    #: Inclusive range of the length (frames) of the replaced segment. LAV-DF replaces words (~0.2-0.4 s); the
    #: default is longer (0.32-0.56 s of the 0.64 s window) so a small model trained for minutes on CPU learns the
    #: task; ``(5, 10)`` is the harder, word-sized setting.
    segment_frames: tuple[int, int] = (8, 14)
    #: Cross-fade at segment boundaries (s).
    crossfade_s: float = 0.03
    noise_std: float = 3.0
    blur: float = 0.6
    jitter: float = 2.0
    tilt_deg: float = 2.0
    syllable_rate_hz: tuple[float, float] = (3.5, 6.0)
    snr_db: tuple[float, float] = (20.0, 40.0)
    pause_prob: float = 0.1

    def __post_init__(self) -> None:
        # the types first, by the check --data-option values go through (an int is an int, a number is not NaN, a
        # list has its length): one check for both ways in; lists become tuples, whole floats ints
        for name, hint in dataclass_hints(SyntheticConfig).items():
            setattr(self, name, coerce_option(getattr(self, name), hint, name, "SyntheticConfig"))
        problems = []
        if not 1 <= self.min_shift <= self.max_shift <= MAX_OFFSET:
            problems.append(f"need 1 <= min_shift <= max_shift <= {MAX_OFFSET}, got {self.min_shift}..{self.max_shift}")
        if not 0.0 <= self.fake_fraction <= 1.0:
            problems.append(f"fake_fraction must be in [0, 1], got {self.fake_fraction}")
        unknown = set(self.manipulation_mix) - set(FAKE_TYPES)
        if unknown:
            problems.append(f"unknown manipulations {sorted(unknown)}; choose from {FAKE_TYPES}")
        weights = list(self.manipulation_mix.values())
        if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            problems.append(f"manipulation_mix weights must be finite and >= 0 with a positive sum, got "
                            f"{self.manipulation_mix}")
        lo, hi = self.segment_frames
        if not 1 <= lo <= hi <= _WINDOW_FRAMES:
            problems.append(f"segment_frames must satisfy 1 <= lo <= hi <= {_WINDOW_FRAMES} (the window's frames), "
                            f"got {self.segment_frames}")
        if self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        if min(self.num_train, self.num_val, self.num_test) < 0:
            problems.append("clip counts must be >= 0")
        if not all(math.isfinite(x) and x >= 0 for x in (self.noise_std, self.blur, self.jitter, self.tilt_deg,
                                                          self.crossfade_s)):
            problems.append("noise_std, blur, jitter, tilt_deg and crossfade_s must be finite and >= 0")
        if not 0 < self.syllable_rate_hz[0] <= self.syllable_rate_hz[1] < math.inf:
            problems.append(f"syllable_rate_hz must be a positive (lo, hi) range, got {self.syllable_rate_hz}")
        if not -math.inf < self.snr_db[0] <= self.snr_db[1] < math.inf:
            problems.append(f"snr_db must be a finite (lo, hi) range, got {self.snr_db}")
        if not 0.0 <= self.pause_prob < 1.0:
            problems.append(f"pause_prob must be in [0, 1), got {self.pause_prob}")
        if problems:
            raise DatasetError("invalid SyntheticConfig: " + "; ".join(problems))

    def num_clips(self, split: str) -> int:
        """Clips in ``split`` (train, val or test)."""
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["segment_frames"] = list(self.segment_frames)
        d["syllable_rate_hz"] = list(self.syllable_rate_hz)
        d["snr_db"] = list(self.snr_db)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SyntheticConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class SyntheticClip:
    """Raw media and ground truth of one generated clip.

    ``frames``: uint8 RGB ``(n, S, S, 3)``; ``audio``: float32 mono ``(n * sample_rate / fps,)`` aligned with frame 0;
    ``offset``: audio delay in frames (0 for real, ``None`` when undefined); ``segment``: replaced frames
    ``[start, end)`` for replace manipulations; ``mouth_open``: the mouth opening shown per frame (0..1);
    ``audio_envelope``: voiced envelope of the audio heard at each frame's timestamp; ``mouth_centers``: pixels.
    """

    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    fps: float
    manipulation: str
    offset: int | None
    segment: tuple[int, int] | None
    mouth_open: np.ndarray
    audio_envelope: np.ndarray
    mouth_centers: np.ndarray

    @property
    def label(self) -> int:
        return 0 if self.manipulation == "real" else 1

    @property
    def manipulation_index(self) -> int:
        return MANIPULATIONS.index(self.manipulation)

    @property
    def offset_class(self) -> int:
        return OFFSET_IGNORE_INDEX if self.offset is None else self.offset + MAX_OFFSET


def _as_rng(seed_or_rng: int | np.random.Generator | np.random.SeedSequence) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def _draw_manipulation(rng: np.random.Generator, config: SyntheticConfig) -> tuple[str, int | None, int]:
    """Label draws -> ``(manipulation, offset, candidate_shift)``.

    Always consumes the same four numbers, so the rest of the clip does not depend on the outcome;
    ``candidate_shift`` (a shift in the configured range) is what a forced ``audio_shift`` uses by default.
    """
    u_fake, u_type, u_mag, u_sign = rng.random(4)
    n_mags = config.max_shift - config.min_shift + 1
    mag = config.min_shift + min(int(u_mag * n_mags), n_mags - 1)
    shift = mag if u_sign < 0.5 else -mag
    if u_fake >= config.fake_fraction:
        return "real", 0, shift
    names = [n for n in FAKE_TYPES if config.manipulation_mix.get(n, 0.0) > 0]
    weights = np.array([config.manipulation_mix[n] for n in names], dtype=np.float64)
    cum = np.cumsum(weights / weights.sum())
    name = names[min(int(np.searchsorted(cum, u_type, side="right")), len(names) - 1)]
    return name, (shift if name == "audio_shift" else None), shift


def _resolve(manipulation: str | None, shift: int | None, drawn: tuple[str, int | None, int]) -> tuple[str, int | None]:
    if manipulation is None:
        if shift is not None:
            raise DatasetError("shift= needs manipulation='audio_shift'")
        return drawn[0], drawn[1]
    if manipulation not in MANIPULATIONS:
        raise DatasetError(f"unknown manipulation {manipulation!r}; choose from {MANIPULATIONS}")
    if manipulation == "audio_shift":
        shift = drawn[2] if shift is None else coerce_option(shift, int, "shift", "generate_clip")
        if not 1 <= abs(shift) <= MAX_OFFSET:
            raise DatasetError(f"audio_shift needs 1 <= |shift| <= {MAX_OFFSET}, got {shift}")
        return manipulation, shift
    if shift is not None:
        raise DatasetError(f"shift= only applies to audio_shift, not {manipulation!r}")
    return manipulation, (0 if manipulation == "real" else None)


def _frames_per_ctrl(fps: float) -> float:
    return R.CTRL_RATE / fps


def _render(rng: np.random.Generator, contract: InputContract, config: SyntheticConfig, num_frames: int,
            frame_size: int, manipulation: str | None, shift: int | None) -> SyntheticClip:
    fps, sr = contract.fps, contract.sample_rate
    spf = sr / fps
    if abs(spf - round(spf)) > 1e-9:
        raise DatasetError(f"synthetic clips need an integer number of audio samples per frame, got {spf}")
    spf = int(round(spf))
    manipulation, offset = _resolve(manipulation, shift, _draw_manipulation(rng, config))

    # Segment (drawn for every clip: real clips are spliced too, in both modalities).
    seg_lo, seg_hi = config.segment_frames
    seg_len = int(rng.integers(min(seg_lo, num_frames), min(seg_hi, num_frames) + 1))
    seg_start = int(rng.integers(0, num_frames - seg_len + 1))
    ctx = _CONTEXT_FRAMES
    total_frames = num_frames + 2 * ctx
    cpf = _frames_per_ctrl(fps)
    n_ctrl = int(np.ceil(total_frames * cpf)) + 2
    # Boundaries half-way between frames: frames seg_start..seg_end-1 are fully replaced, the others untouched.
    weight = R.segment_weight(n_ctrl, (ctx + seg_start - 0.5) / fps, (ctx + seg_start + seg_len - 0.5) / fps,
                              min(config.crossfade_s, 0.9 / fps))

    speaker = R.draw_speaker(rng, config.syllable_rate_hz, config.snr_db)
    # Four independent utterances; each has its own seed so unused ones cost nothing and never shift the stream.
    track_seeds = rng.integers(0, 2**63, size=4)

    def utterance(n: int) -> R.ContentTrack:
        return R.draw_content(np.random.default_rng(int(track_seeds[n])), n_ctrl, speaker, config.pause_prob)

    u1 = utterance(0)
    base = u1.mix(utterance(1), weight)
    audio_track, video_track = base, base
    if manipulation == "audio_replace":
        audio_track = u1.mix(utterance(2), weight)
    elif manipulation == "visual_replace":
        video_track = u1.mix(utterance(2), weight)
    elif manipulation == "both_replace":
        audio_track, video_track = u1.mix(utterance(2), weight), u1.mix(utterance(3), weight)
    elif manipulation == "audio_swap":
        audio_track = utterance(2).mix(utterance(3), weight)

    scale = frame_size / 128.0
    face = R.draw_face(rng, frame_size)
    motion = R.smooth_motion(rng, num_frames, config.jitter * scale * float(rng.uniform(0.5, 1.0)), fps)
    tilt = R.smooth_motion(rng, num_frames, config.tilt_deg * float(rng.uniform(0.3, 1.0)), fps)[:, 0]
    blinks = R.blink_track(rng, num_frames, fps)
    blur_sigma = config.blur * scale * float(rng.uniform(0.0, 1.0))
    noise_std = config.noise_std * float(rng.uniform(0.25, 1.0))

    # Frame t is shown at time t/fps; its mouth is the video track there.
    idx = np.round((ctx + np.arange(num_frames)) * cpf).astype(np.int64)
    mouth_open = video_track.voiced[idx]
    frames, mouth_centers = R.render_frames(face, mouth_open, video_track.vowel[idx], motion, blinks, tilt)
    frames = R.degrade_frames(rng, frames, blur_sigma, noise_std)

    k = offset or 0  # audio delayed by k frames: the audio at time t is the track at time t - k/fps
    rendered = R.render_audio(rng, audio_track, speaker, total_frames * spf, sr)
    start = (ctx - k) * spf
    audio = np.ascontiguousarray(rendered[start:start + num_frames * spf])
    audio_env = audio_track.voiced[np.round((ctx - k + np.arange(num_frames)) * cpf).astype(np.int64)]
    segment = (seg_start, seg_start + seg_len) if manipulation in ("audio_replace", "visual_replace",
                                                                   "both_replace") else None
    return SyntheticClip(
        frames=frames, audio=audio, sample_rate=sr, fps=fps, manipulation=manipulation, offset=offset,
        segment=segment, mouth_open=mouth_open.astype(np.float32), audio_envelope=audio_env.astype(np.float32),
        mouth_centers=mouth_centers,
    )


def generate_clip(seed_or_rng: int | np.random.Generator | np.random.SeedSequence, contract: InputContract,
                  config: SyntheticConfig | None = None, manipulation: str | None = None,
                  shift: int | None = None) -> SyntheticClip:
    """One window of raw media: ``contract.num_frames`` frames of ``contract.frame_size`` px and
    ``contract.window_samples`` samples of 16 kHz audio.

    ``manipulation=None`` draws it from ``config`` (``fake_fraction``, ``manipulation_mix``, shift range);
    a name from ``contract.MANIPULATIONS`` forces it (``shift`` in frames, only with ``"audio_shift"``; positive means
    the audio lags the video; left out, a shift is drawn from the configured range).
    """
    config = config or SyntheticConfig()
    return _render(_as_rng(seed_or_rng), contract, config, contract.num_frames, contract.frame_size,
                   manipulation, shift)


def clip_to_sample(clip: SyntheticClip, contract: InputContract, clip_id: str) -> dict[str, Any]:
    """The shared sample dict (docs/architecture.md) of a generated window."""
    mean = np.asarray(contract.mean, np.float32)
    std = np.asarray(contract.std, np.float32)
    frames = (clip.frames.astype(np.float32) * np.float32(1.0 / 255.0) - mean) / std
    frames = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
    return {
        "frames": torch.from_numpy(frames),
        "mfcc": torch.from_numpy(compute_mfcc(clip.audio, contract)),
        "label": torch.tensor(clip.label, dtype=torch.int64),
        "manipulation": torch.tensor(clip.manipulation_index, dtype=torch.int64),
        "offset_class": torch.tensor(clip.offset_class, dtype=torch.int64),
        "clip_id": clip_id,
    }


class SyntheticDataset(Dataset):
    """Synthetic clips of one split: ``train``, ``val`` (alias ``dev``), ``test`` or ``all`` (the three in order).

    Sample ``i`` of a split is a pure function of ``(config, split, i)``; splits use disjoint seed streams
    (``SeedSequence([seed, split_code, i])``), so no clip appears in two splits.
    """

    def __init__(self, split: str, contract: InputContract, config: SyntheticConfig | None = None):
        canonical = canonical_split(split)
        self.split = "val" if canonical == "dev" else canonical
        self.contract = contract
        self.config = config or SyntheticConfig()
        names = list(_SPLIT_CODES) if self.split == "all" else [self.split]
        self._parts = [(name, self.config.num_clips(name)) for name in names]
        self._length = sum(n for _, n in self._parts)

    def __len__(self) -> int:
        return self._length

    def _locate(self, index: int) -> tuple[str, int]:
        try:
            i = operator.index(index)  # an int, numpy integer or integer tensor; not 1.5 (was item 1)
        except TypeError:
            raise DatasetError(f"synthetic {self.split} index must be an integer, got {index!r}") from None
        if i < 0:
            i += self._length
        if not 0 <= i < self._length:
            raise IndexError(f"synthetic {self.split} index {index} out of range (len {self._length})")
        for name, n in self._parts:
            if i < n:
                return name, i
            i -= n
        raise AssertionError("unreachable")

    def rng(self, index: int) -> np.random.Generator:
        """The generator that sample ``index`` is drawn from."""
        name, i = self._locate(index)
        return np.random.default_rng(np.random.SeedSequence([self.config.seed, _SPLIT_CODES[name], i]))

    def clip_id(self, index: int) -> str:
        name, i = self._locate(index)
        return f"synthetic:{name}:{self.config.seed}:{i:06d}"

    def sample_info(self, index: int) -> tuple[int, str, int | None]:
        """``(label, manipulation, offset)`` of sample ``index`` without rendering it."""
        name, offset, _ = _draw_manipulation(self.rng(index), self.config)
        return (0 if name == "real" else 1), name, offset

    def clip(self, index: int) -> SyntheticClip:
        """Raw media (uint8 frames, audio) of sample ``index``."""
        return generate_clip(self.rng(index), self.contract, self.config)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return clip_to_sample(self.clip(index), self.contract, self.clip_id(index))

    def strata(self) -> tuple[list[int], list[str]]:
        """``(labels, kinds)`` of every sample without rendering (kind: the manipulation's name)."""
        info = [self.sample_info(i) for i in range(len(self))]
        return [label for label, _, _ in info], [name for _, name, _ in info]

    def balance_by_default(self) -> bool:
        return False  # ``fake_fraction`` already sets the class balance

    def provenance(self) -> dict[str, Any]:
        """Source summary for :func:`pinlite_edge.data.provenance.training_data_summary`."""
        splits = {("dev" if name == "val" else name): {"clips": n, "speakers": n, "speakers_known": True}
                  for name, n in (("train", self.config.num_train), ("val", self.config.num_val),
                                  ("test", self.config.num_test))}
        return {"kind": "synthetic", "root": None, "split_file": None, "real_video": False, "sync_pairs": None,
                "seed": self.config.seed, "splits": splits}


#: the libx264 options of the H.264 containers (.mp4/.mov/.mkv): near-lossless, reproducible (pinlite_edge.data.x264)
MP4_VIDEO_OPTIONS = x264_options(16)

_CONTAINERS = {
    ".mp4": ("mp4", "libx264", "aac"),
    ".mov": ("mov", "libx264", "aac"),
    ".mkv": ("matroska", "libx264", "aac"),
    ".avi": ("avi", "mpeg4", "pcm_s16le"),
}


def write_clip_video(path: str | Path, seed: int | np.random.Generator = 0, contract: InputContract | None = None,
                     config: SyntheticConfig | None = None, duration_s: float = 2.0,
                     manipulation: str | None = None, shift: int | None = None,
                     frame_size: int | None = None) -> SyntheticClip:
    """Write a generated clip of ``duration_s`` seconds as a video file with an audio track (PyAV), atomically.

    The container follows the suffix: .mp4/.mov/.mkv (H.264 + AAC) or .avi (MPEG-4 + PCM). Returns the clip
    that was written (frames before compression). ``frame_size`` defaults to the contract's (must be even).
    """
    import av  # local: only writers need it

    path = Path(path)
    spec = _CONTAINERS.get(path.suffix.lower())
    if spec is None:
        raise DatasetError(f"cannot write {path}: unsupported suffix; use one of {sorted(_CONTAINERS)}")
    contract = contract or InputContract()
    size = int(frame_size or contract.frame_size)
    if size % 2 or size < 16:
        raise DatasetError(f"cannot write {path}: frame_size must be even and >= 16, got {size}")
    num_frames = max(int(round(duration_s * contract.fps)), 1)
    clip = _render(_as_rng(seed), contract, config or SyntheticConfig(), num_frames, size, manipulation, shift)
    fmt, vcodec, acodec = spec
    rate = Fraction(contract.fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=fmt) as container:
            vstream = container.add_stream(vcodec, rate=rate)
            vstream.width = vstream.height = size
            vstream.pix_fmt = "yuv420p"
            if vcodec == "libx264":
                vstream.options = dict(MP4_VIDEO_OPTIONS)
            else:  # MPEG-4 (.avi): its slice threads, one per core by default, change the stream
                vstream.bit_rate = 4_000_000
                vstream.codec_context.thread_count = 1
            astream = container.add_stream(acodec, rate=clip.sample_rate, layout="mono")
            for i, img in enumerate(clip.frames):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, 1) / rate
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode())
            pcm = clip.audio[None, :]
            chunk = 1024
            for s in range(0, pcm.shape[1], chunk):
                aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, s:s + chunk]), format="flt",
                                                    layout="mono")
                aframe.sample_rate = clip.sample_rate
                aframe.pts = s
                aframe.time_base = Fraction(1, clip.sample_rate)
                container.mux(astream.encode(aframe))
            container.mux(astream.encode())
    logger.info("wrote synthetic %s clip (%d frames, %.2f s) to %s", clip.manipulation, num_frames, duration_s, path)
    return clip
