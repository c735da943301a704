"""Re-encode a clip the way videos are re-encoded on their way to a user: one table of encodings.

Real clips reach the detector re-encoded, scaled, mirrored, converted to another frame rate, with their audio
resampled or recorded in noise. :func:`reencode` writes such a copy of a file: one decode with the SDK's own decoder
(:mod:`pinlite_edge.features.decode`: display rotation applied, audio placed by the streams' timestamps), the audio
trimmed or padded so that it starts with the first video frame, frames written at the stream's declared rate by
their order (constant frame rate assumed), then the encoding of :data:`TRANSFORMS` (H.264 + AAC in an mp4).

Two users: ``python -m pinlite_edge.calibrate --reencode`` adds re-encoded copies of the genuine calibration clips
to the operating point's measurement (:data:`CALIBRATION_REENCODINGS`), and ``benchmarks/real_faces_reencode.py``
measures how verdicts move under every transform.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pinlite_edge.data.x264 import x264_options
from pinlite_edge.errors import DecodeError, InputError
from pinlite_edge.features.deadline import Deadline
from pinlite_edge.features.resample import resample_rate
from pinlite_edge.utils.atomic import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoding:
    """How one transform re-encodes a clip (``None``: keep the source's)."""

    description: str
    crf: int = 18
    scale: float = 1.0
    mirror: bool = False
    fps: Callable[[float], float] | None = None  # source fps -> output fps
    audio_rate: int | None = None
    audio_channels: int | None = None
    audio_bitrate: int = 128_000
    noise_snr_db: float | None = None
    #: keep only this many seconds from the middle of the clip (a short clip, as users also check)
    excerpt_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fps"] = None if self.fps is None else (self.fps.__doc__ or self.fps.__name__).strip()
        return d


def _swap_25_30(fps: float) -> float:
    """25 fps -> 30 fps; anything else (the 30 and 29.97 fps clips) -> 25 fps."""
    return 30.0 if abs(fps - 25.0) < 0.5 else 25.0


#: The one table of transforms (name -> encoding).
TRANSFORMS: dict[str, Encoding] = {
    "reencode": Encoding("one more generation: H.264 CRF 18, AAC 128 kb/s"),
    "crf35": Encoding("heavy H.264 compression (CRF 35)", crf=35),
    "half-res": Encoding("both sides halved", scale=0.5),
    "fps-convert": Encoding("25 <-> 30 fps by repeating or dropping frames", fps=_swap_25_30),
    "mirror": Encoding("left and right swapped", mirror=True),
    "audio-44k-stereo": Encoding("audio at 44.1 kHz, two channels, AAC 64 kb/s", audio_rate=44_100, audio_channels=2,
                                 audio_bitrate=64_000),
    "audio-noise-10db": Encoding("white noise added to the audio at 10 dB SNR", noise_snr_db=10.0),
    "excerpt-1.2s": Encoding("the middle 1.2 s of the clip (H.264 CRF 18)", excerpt_seconds=1.2),
    "excerpt-2s": Encoding("the middle 2 s of the clip (H.264 CRF 18)", excerpt_seconds=2.0),
}


@dataclass
class DecodedClip:
    """A whole clip decoded for re-encoding: upright RGB frames, the audio from the first frame's time on."""

    frames: list[np.ndarray]
    fps: float
    audio: np.ndarray  # float32 (samples, channels), sample 0 at the first video frame
    sample_rate: int


class _KeepFrames:
    """Video consumer holding every decoded frame upright (full size)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self.frames: list[np.ndarray] = []
        self.declared_fps: float | None = None
        self.bytes = 0

    def start(self, declared_fps: float | None) -> None:
        self.declared_fps = declared_fps

    def add(self, frame: Any, seconds: float, turns: int) -> None:
        from pinlite_edge.features.yuvframe import rgb_frame

        rgb = rgb_frame(frame, turns, None)
        self.bytes += rgb.nbytes
        if self.bytes > self.max_bytes:
            raise InputError(f"{self.path}: too long or too large to re-encode in memory (more than "
                             f"{self.max_bytes / 2**30:.1f} GiB of {rgb.shape[1]}x{rgb.shape[0]} frames after "
                             f"{len(self.frames)} frames); use shorter clips, or calibrate with --reencode none")
        self.frames.append(rgb)


#: the decoded frames one re-encoding may hold (a 10 s 720p clip at 25 fps is 0.7 GB)
MAX_REENCODE_BYTES = 2 * 2**30


def decode_clip(path: Path, max_bytes: int = MAX_REENCODE_BYTES) -> DecodedClip:
    """Decode ``path`` once with the SDK's decoder and line its audio up with its first video frame. The frames are
    held in memory: a clip whose frames exceed ``max_bytes`` is refused (:class:`InputError`) as soon as they do."""
    from pinlite_edge.features.decode import decode_media

    sink = _KeepFrames(path, max_bytes)
    media = decode_media(path, Deadline(path, None), video=sink, require_video=True)
    if not sink.declared_fps or media.audio is None or media.sample_rate is None:
        raise DecodeError(path, "needs a declared frame rate and an audio track to be re-encoded")
    audio = media.audio
    lead = int(round(((media.audio_start or 0.0) - (media.video_start or 0.0)) * media.sample_rate))
    if lead > 0:  # the audio starts after the first frame: silence before it
        audio = np.concatenate([np.zeros((lead, audio.shape[1]), np.float32), audio])
    elif lead < 0:  # the audio starts before the first frame: drop what plays before it
        audio = audio[-lead:]
    return DecodedClip(frames=sink.frames, fps=float(sink.declared_fps), audio=np.ascontiguousarray(audio),
                       sample_rate=int(media.sample_rate))


def transform_audio(audio: np.ndarray, rate: int, enc: Encoding, seed: int = 0) -> tuple[np.ndarray, int]:
    """The audio ``(samples, channels)`` as ``enc`` asks: channels (mean, then repeated), rate, noise."""
    out = audio
    if enc.audio_channels is not None and enc.audio_channels != out.shape[1]:
        out = np.repeat(out.mean(axis=1, keepdims=True), enc.audio_channels, axis=1)
    target = enc.audio_rate or rate
    out = resample_rate(out, rate, target)
    if enc.noise_snr_db is not None:
        power = float(np.mean(out.astype(np.float64) ** 2))
        noise = np.random.default_rng(seed).standard_normal(out.shape) * np.sqrt(power / 10 ** (enc.noise_snr_db / 10))
        out = out + noise.astype(np.float32)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 1.0:  # AAC takes [-1, 1]; the noisy copy is scaled down rather than clipped
        out = out / peak
    return np.ascontiguousarray(out, dtype=np.float32), target


def transform_frames(frames: Sequence[np.ndarray], fps: float, enc: Encoding) -> tuple[list[np.ndarray], float]:
    """The frames as ``enc`` asks (frame-rate conversion, scale, mirror), even-sized for H.264 4:2:0."""
    from pinlite_edge.utils.opencv import cv2

    out_fps = fps if enc.fps is None else enc.fps(fps)
    if out_fps != fps:  # output frame j shows the source frame on screen at the middle of j's display time
        n = int(np.floor(len(frames) * out_fps / fps + 1e-6))
        idx = np.minimum(np.floor((np.arange(n) + 0.5) * fps / out_fps + 1e-6).astype(int), len(frames) - 1)
        frames = [frames[i] for i in idx]
    h, w = frames[0].shape[:2]
    oh, ow = max(2, int(round(h * enc.scale)) // 2 * 2), max(2, int(round(w * enc.scale)) // 2 * 2)
    out = []
    for f in frames:
        if (oh, ow) != f.shape[:2]:
            f = cv2.resize(f, (ow, oh), interpolation=cv2.INTER_AREA if enc.scale < 1 else cv2.INTER_LINEAR)
        if enc.mirror:
            f = f[:, ::-1]
        out.append(np.ascontiguousarray(f))
    return out, out_fps


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: float, audio: np.ndarray, sample_rate: int, *,
              crf: int, audio_bitrate: int) -> Path:
    """H.264 (``crf``) + AAC mp4 written atomically; both streams start at 0."""
    import av

    layout = {1: "mono", 2: "stereo"}.get(audio.shape[1])
    if layout is None:
        raise InputError(f"{path}: can only write mono or stereo audio, got {audio.shape[1]} channels")
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            vstream = container.add_stream("libx264", rate=rate)
            vstream.height, vstream.width = frames[0].shape[:2]
            vstream.pix_fmt = "yuv420p"
            vstream.options = x264_options(crf)  # the same frames give the same stream (pinlite_edge.data.x264)
            astream = container.add_stream("aac", rate=sample_rate, layout=layout)
            astream.bit_rate = audio_bitrate
            for i, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = i, 1 / rate
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode())
            chunk = 1024
            for s in range(0, audio.shape[0], chunk):
                piece = np.ascontiguousarray(audio[s:s + chunk].reshape(1, -1))  # interleaved, as packed "flt" is
                aframe = av.AudioFrame.from_ndarray(piece, format="flt", layout=layout)
                aframe.sample_rate, aframe.pts, aframe.time_base = sample_rate, s, Fraction(1, sample_rate)
                container.mux(astream.encode(aframe))
            container.mux(astream.encode())
    return path


def excerpt(clip: DecodedClip, seconds: float, first: int | None = None, audio_delay_s: float = 0.0) -> DecodedClip:
    """``seconds`` of ``clip`` from frame ``first`` (None: the middle), whole frames, with the audio cut at the same
    times, or ``audio_delay_s`` earlier (the audio delayed). A clip not longer than the excerpt by a frame, or without
    the audio it needs, is refused (:class:`InputError`)."""
    count = int(round(seconds * clip.fps))
    if count < 1 or len(clip.frames) <= count:
        raise InputError(f"the clip is {len(clip.frames) / clip.fps:.2f} s long: no {seconds:g} s excerpt to cut")
    first = (len(clip.frames) - count) // 2 if first is None else first
    a0 = int(round((first / clip.fps - audio_delay_s) * clip.sample_rate))
    a1 = int(round(((first + count) / clip.fps - audio_delay_s) * clip.sample_rate))
    if first < 0 or first + count > len(clip.frames) or a0 < 0 or a1 > clip.audio.shape[0]:
        raise InputError(f"no {seconds:g} s excerpt from frame {first} with the audio {audio_delay_s:g} s earlier in "
                         f"a {len(clip.frames) / clip.fps:.2f} s clip")
    return DecodedClip(frames=clip.frames[first:first + count], fps=clip.fps,
                       audio=np.ascontiguousarray(clip.audio[a0:a1]), sample_rate=clip.sample_rate)


def reencode(src: Path, dst: Path, enc: Encoding, seed: int = 0) -> Path:
    """Write ``src`` re-encoded as ``enc`` asks to ``dst`` (an mp4)."""
    clip = decode_clip(src)
    if enc.excerpt_seconds is not None:
        clip = excerpt(clip, enc.excerpt_seconds)
    frames, fps = transform_frames(clip.frames, clip.fps, enc)
    audio, rate = transform_audio(clip.audio, clip.sample_rate, enc, seed)
    return write_mp4(dst, frames, fps, audio, rate, crf=enc.crf, audio_bitrate=enc.audio_bitrate)


#: the copies of each genuine clip the quickstart's operating point is also measured on: one per path a video takes
#: (compression, resolution, the audio chain), and two short excerpts (the thresholds for short clips,
#: :mod:`pinlite_edge.operating_point`). The other transforms stay out of calibration, so that
#: ``benchmarks/real_faces_reencode.py`` can measure false alarms under transforms calibration never saw.
CALIBRATION_REENCODINGS: tuple[str, ...] = ("crf35", "half-res", "audio-44k-stereo", "excerpt-1.2s", "excerpt-2s")


def check_reencodings(names: Sequence[str]) -> tuple[str, ...]:
    """Validated transform names (:data:`TRANSFORMS`), in the given order without repeats."""
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise InputError(f"unknown re-encoding(s) {unknown}; choose from {sorted(TRANSFORMS)}")
    return tuple(dict.fromkeys(names))


__all__ = ["CALIBRATION_REENCODINGS", "TRANSFORMS", "DecodedClip", "Encoding", "check_reencodings", "decode_clip",
           "excerpt", "reencode", "transform_audio", "transform_frames", "write_mp4"]
