"""One PyAV pass over a media file: audio and video demuxed together, every packet decoded once.

Both streams are decoded with ``err_detect=explode``, so a truncated or corrupt file fails with a
:class:`~pinlite_edge.errors.DecodeError` naming it instead of silently yielding a shorter clip. Audio comes back as
float32 samples with the time of its first sample; each video frame goes, as it is decoded, to a ``video``
consumer with its presentation time and display rotation (so callers convert, track and crop without a second pass
and without holding a whole clip of full-size frames). A stream that changes resolution mid-way is scaled back to its
first frame's size. The :class:`~pinlite_edge.features.deadline.Deadline` is checked between packets.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pinlite_edge.errors import DecodeError, NoAudioError
from pinlite_edge.features.deadline import Deadline
from pinlite_edge.features.rotation import display_turns

log = logging.getLogger(__name__)


class VideoConsumer(Protocol):
    """Receives the video stream while it is decoded."""

    def start(self, declared_fps: float | None) -> None:
        """Called once before the first frame with the stream's declared frame rate (unchecked, may be None)."""

    def add(self, frame: Any, seconds: float, turns: int) -> None:
        """One decoded PyAV ``VideoFrame`` (presentation order), its time in seconds and the counter-clockwise
        quarter turns that make it upright (the display rotation of the stream's first frame)."""


@dataclass
class DecodedMedia:
    """What one pass over a file gave: audio samples and the video stream's timing (frames went to the sink)."""

    audio: np.ndarray | None  # float32 (samples, channels); None: the file has no audio stream
    sample_rate: int | None
    audio_start: float | None  # seconds (container time) of the first decoded audio sample
    video_stamps: list[float] = field(default_factory=list)  # seconds of every decoded video frame
    declared_fps: float | None = None  # the video stream's average (else guessed) rate, unchecked
    has_video: bool = False  # the file has a video stream

    @property
    def video_frames(self) -> int:
        return len(self.video_stamps)

    @property
    def video_start(self) -> float | None:
        return self.video_stamps[0] if self.video_stamps else None


def container_open_error(path: Path, exc: Exception) -> DecodeError:
    """The error for a container PyAV cannot open: FFmpeg's own error, or tags that are not UTF-8 (PyAV decodes the
    container's metadata strings when it opens the file)."""
    if isinstance(exc, UnicodeDecodeError):
        return DecodeError(path, f"corrupt container metadata (not UTF-8: {exc.reason} at byte {exc.start})")
    return DecodeError(path, f"not a readable media container ({getattr(exc, 'strerror', None) or exc})")


def open_container(path: Path, deadline: Deadline) -> Any:
    """``av.open`` with the deadline's remaining time as I/O timeout; failures are DecodeErrors naming ``path``."""
    import av

    remaining = deadline.remaining()
    try:
        return av.open(str(path), timeout=remaining if remaining else None)
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        if isinstance(exc, av.error.FFmpegError):
            deadline.check()  # a demuxer that gave up because the time limit ran out is a timeout, not a bad file
        raise container_open_error(path, exc) from None


def _rate(stream: Any) -> float | None:
    for name in ("average_rate", "guessed_rate", "base_rate"):
        rate = getattr(stream, name, None)
        if rate:
            return float(rate)
    return None


def decode_media(path: Path, deadline: Deadline, *, video: VideoConsumer | None = None,
                 require_video: bool = False, require_audio: bool = True) -> DecodedMedia:
    """Decode the first audio and first video stream of ``path`` in one demuxing pass.

    ``video`` receives every video frame (frames are decoded for the integrity check either way).
    Raises :class:`DecodeError` (not a container, no decoder, truncated/corrupt data, time limit) and
    :class:`NoAudioError` (``require_audio`` and no audio track) naming the file.
    """
    import av

    container = open_container(path, deadline)
    try:
        consumer = video
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
        if video is not None:
            video.thread_type = "AUTO"  # frame threads on multi-core devices (FFmpeg counts the CPUs it may use)
        declared = _rate(video) if video is not None else None
        step = 1.0 / declared if declared and 1.0 <= declared <= 240.0 else 1.0 / 25.0
        chunks: list[np.ndarray] = []
        stamps: list[float] = []
        audio_start: float | None = None
        first: tuple[int, int, int] | None = None  # width, height, quarter turns of the first video frame
        if consumer is not None and video is not None:
            consumer.start(declared)
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
                        t = frame.time
                        if t is None:
                            t = stamps[-1] + step if stamps else 0.0
                        stamps.append(float(t))
                        if consumer is not None:
                            if first is None:
                                first = (frame.width, frame.height, display_turns(frame, video, str(path)))
                                if first[2]:
                                    log.info("%s: display rotation %d degrees applied", path, first[2] * 90)
                            elif (frame.width, frame.height) != first[:2]:
                                frame = frame.reformat(width=first[0], height=first[1])
                            consumer.add(frame, float(t), first[2])
                    else:
                        if audio_start is None and frame.time is not None:
                            audio_start = float(frame.time)
                        for out in resampler.resample(frame):
                            chunks.append(out.to_ndarray())
            if resampler is not None:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            raise DecodeError(path, f"truncated or corrupt media data ({exc.strerror or exc})") from None
        if require_video and not stamps:
            raise DecodeError(path, "the video stream has no decodable frames")
        if audio is None:
            if require_audio:
                raise NoAudioError(path)
            return DecodedMedia(audio=None, sample_rate=None, audio_start=None, video_stamps=stamps,
                                declared_fps=declared, has_video=video is not None)
        if not chunks:
            raise DecodeError(path, "the audio track has no decodable samples")
        samples = np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False)  # (samples, channels)
        return DecodedMedia(audio=np.ascontiguousarray(samples), sample_rate=int(audio.rate), audio_start=audio_start,
                            video_stamps=stamps, declared_fps=declared, has_video=video is not None)
    finally:
        container.close()


def align_audio(samples: np.ndarray, sample_rate: int, audio_start: float | None, video_start: float | None,
                source: str = "clip") -> np.ndarray:
    """Shift ``samples`` so sample 0 plays with the first video frame: zeros prepended when the audio stream starts
    later than the video, leading samples dropped when it starts earlier (stream timestamps)."""
    if audio_start is None or video_start is None:
        return samples
    offset = int(round((audio_start - video_start) * sample_rate))
    if offset == 0:
        return samples
    if abs(offset) > sample_rate // 1000:  # more than 1 ms
        log.info("%s: audio stream starts %+.3f s after the video; aligned by timestamps", source,
                 offset / float(sample_rate))
    if offset > 0:
        pad = np.zeros((offset,) + samples.shape[1:], dtype=samples.dtype)
        return np.concatenate([pad, samples])
    return samples[-offset:]
