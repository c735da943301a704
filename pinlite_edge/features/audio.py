"""Audio decoding: PyAV for containers (mp4/mpg/avi/mkv...), soundfile for wav/flac/ogg.

The PyAV pass also decodes the video stream with ``err_detect=explode`` (frames are discarded), so a truncated or
corrupt file fails here with a :class:`DecodeError` instead of silently yielding a shorter clip: OpenCV, which decodes
the frames we keep, quietly stops at the damage.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pinlite_edge.errors import DecodeError, NoAudioError
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S, Deadline

log = logging.getLogger(__name__)

#: Extensions read with soundfile (audio-only files).
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga"})


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32 (samples, channels)
    sample_rate: int
    video_frames: int | None = None  # frames in the video stream (PyAV count), None for audio files


def check_file(path: str | Path) -> Path:
    """Existence / type / non-empty checks shared by every decoder."""
    path = Path(path)
    if not path.exists():
        raise DecodeError(path, "file does not exist")
    if not path.is_file():
        raise DecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise DecodeError(path, "file is empty (0 bytes)")
    return path


def container_open_error(path: Path, exc: Exception) -> DecodeError:
    """The error for a container PyAV cannot open: FFmpeg's own error, or tags that are not UTF-8 (PyAV decodes the
    container's metadata strings when it opens the file)."""
    if isinstance(exc, UnicodeDecodeError):
        return DecodeError(path, f"corrupt container metadata (not UTF-8: {exc.reason} at byte {exc.start})")
    return DecodeError(path, f"not a readable media container ({getattr(exc, 'strerror', None) or exc})")


def decode_audio(
    path: str | Path, *, timeout_s: float | None = DEFAULT_TIMEOUT_S, require_video: bool = False,
    deadline: Deadline | None = None,
) -> DecodedAudio:
    """Decode every audio sample of ``path`` (first audio stream) as float32 ``(samples, channels)``.

    ``require_video=True`` additionally insists on a decodable video stream (a DecodeError says "not a video").
    Raises :class:`NoAudioError` when the file has no audio track, :class:`DecodeError` for any other failure.
    """
    path = check_file(path)
    deadline = deadline or Deadline(path, timeout_s)
    if path.suffix.lower() in SOUNDFILE_EXTENSIONS and not require_video:
        return _decode_soundfile(path)
    return _decode_pyav(path, require_video, deadline)


def _decode_soundfile(path: Path) -> DecodedAudio:
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError variants
        raise DecodeError(path, f"soundfile could not read it ({exc})") from None
    if data.shape[0] == 0:
        raise DecodeError(path, "audio file contains no samples")
    return DecodedAudio(samples=data, sample_rate=int(rate))


def _decode_pyav(path: Path, require_video: bool, deadline: Deadline) -> DecodedAudio:
    import av

    remaining = deadline.remaining()
    try:
        container = av.open(str(path), timeout=remaining if remaining else None)
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        if isinstance(exc, av.error.FFmpegError):
            deadline.check()  # a demuxer that gave up because the time limit ran out is a timeout, not a bad file
        raise container_open_error(path, exc) from None
    try:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if require_video and video is None:
            raise DecodeError(path, "not a video (no video stream)")
        streams = [s for s in (audio, video) if s is not None]
        if not streams:
            raise DecodeError(path, "no audio or video stream")
        for s in streams:
            if s.codec_context is None:  # e.g. a fuzzed header naming a codec FFmpeg has no decoder for
                raise DecodeError(path, f"no decoder for its {s.type} stream (codec {getattr(s, 'codec', None)})")
            s.codec_context.options = {"err_detect": "explode"}
        chunks: list[np.ndarray] = []
        n_video = 0
        resampler = None
        if audio is not None:
            try:  # format conversion only (planar float); rate and layout are kept, scipy resamples later
                resampler = av.AudioResampler(format="fltp", layout=audio.layout.name, rate=audio.rate)
            except (ValueError, av.error.FFmpegError):
                resampler = av.AudioResampler(format="fltp", rate=audio.rate)
        try:
            for packet in container.demux(*streams):
                deadline.check()
                for frame in packet.decode():
                    if packet.stream is video:
                        n_video += 1
                    else:
                        for out in resampler.resample(frame):
                            chunks.append(out.to_ndarray())
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            raise DecodeError(path, f"truncated or corrupt media data ({exc.strerror or exc})") from None
        if require_video and n_video == 0:
            raise DecodeError(path, "the video stream has no decodable frames")
        if audio is None:
            raise NoAudioError(path)
        if not chunks:
            raise DecodeError(path, "the audio track has no decodable samples")
        samples = np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False)  # (samples, channels)
        return DecodedAudio(samples=np.ascontiguousarray(samples), sample_rate=int(audio.rate),
                            video_frames=n_video if video is not None else None)
    finally:
        container.close()
