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
import time
from typing import Any, Callable, Generator, Protocol

import numpy as np

from pinlite_edge.errors import DecodeError, NoAudioError
from pinlite_edge.features.deadline import Deadline
from pinlite_edge.features.limits import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    WHOLE_CLIP_MAX_DURATION_S,
    DecodeLimits,
    declared_bound,
)

#: A jump forward in the audio timestamps longer than this (seconds) is filled with silence.
AUDIO_GAP_S = 0.1
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
    declared_seconds: float | None = None  # duration the container's header declares
    audio_samples: int = 0  # decoded audio samples (per channel)

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


@dataclass(frozen=True)
class StreamInfo:
    """What the header says, given to ``on_open`` before anything is decoded."""

    sample_rate: int | None  # the audio stream's rate (None: no audio stream)
    declared_seconds: float | None  # the container's declared duration
    declared_fps: float | None  # the video stream's rate, unchecked
    video_seconds: float | None = None  # the video stream's own declared duration (MP4/MOV have one; MKV often not)
    audio_channels: tuple[str, ...] = ()  # the audio stream's channel names in decoding order (PyAV's: "FL", "LFE")


class AudioConsumer(Protocol):
    """Receives the audio stream while it is decoded."""

    def add_audio(self, samples: np.ndarray, seconds: float | None) -> None:
        """float32 ``(samples, channels)`` of one decoded frame (packed, any channel count) and the container time of
        the stream's first timed frame (None: none seen yet)."""


class _CollectAudio:
    """Audio consumer keeping every sample (the whole-clip API)."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def add_audio(self, samples: np.ndarray, seconds: float | None) -> None:
        self.chunks.append(samples)


def main_streams(container: Any) -> tuple[Any | None, Any | None]:
    """The video and the audio stream a player would play (FFmpeg's ``av_find_best_stream``: the default track, a
    moving picture before a still): not simply the first of each, which may be cover art (an ``attached_pic`` still)
    or a commentary track. None where the container has no stream of that kind."""
    return container.streams.best("video"), container.streams.best("audio")


#: sample aspect ratios beyond these are taken for broken metadata, not anamorphic video, and ignored
SAR_RANGE = (0.25, 4.0)


def square_pixel_size(width: int, height: int, sar: Any, source: str = "video") -> tuple[int, int] | None:
    """For an anamorphic stream (sample aspect ratio ``sar`` not 1: DV, DVD, HDV 1440x1080, some broadcast), the
    even frame size with square pixels, shrinking the side the SAR stretches the other way (never enlarging): faces
    must have their real proportions for the face detector and the crop. None for square pixels or an unknown SAR."""
    try:
        ratio = float(sar) if sar else 1.0
    except (TypeError, ValueError, ZeroDivisionError):
        ratio = 1.0
    if abs(ratio - 1.0) < 1e-3:
        return None
    if not SAR_RANGE[0] <= ratio <= SAR_RANGE[1]:
        log.warning("%s declares a sample aspect ratio of %s; ignored (square pixels assumed)", source, sar)
        return None
    w, h = (width, height / ratio) if ratio > 1 else (width * ratio, height)
    size = (max(2, int(round(w)) // 2 * 2), max(2, int(round(h)) // 2 * 2))
    log.info("%s: sample aspect ratio %s: frames scaled from %dx%d to %dx%d (square pixels)", source, sar, width,
             height, *size)
    return size


def _stream_seconds(stream: Any) -> float | None:
    """The seconds one stream's header declares, or None."""
    if stream is None or stream.duration is None or stream.time_base is None or stream.duration <= 0:
        return None
    return float(stream.duration * stream.time_base)


def declared_duration(container: Any) -> float | None:
    """Seconds the container's header declares (the container's duration, else its longest stream's), or None."""
    values = []
    if container.duration is not None and container.duration > 0:
        values.append(container.duration / 1_000_000)
    values.extend(v for v in map(_stream_seconds, main_streams(container)) if v is not None)
    return max(values) if values else None


def _packed_resampler(av: Any, stream: Any) -> Any:
    """PyAV resampler to packed float32 at the stream's rate and layout. Packed, not planar: PyAV's planar
    ``to_ndarray`` crashes (segfault) on frames with 8 or more channels (7.1, unnamed layouts)."""
    try:
        return av.AudioResampler(format="flt", layout=stream.layout.name, rate=stream.rate)
    except (ValueError, av.error.FFmpegError):
        return av.AudioResampler(format="flt", rate=stream.rate)


def _packed(frame: Any) -> np.ndarray:
    """A packed float32 PyAV audio frame -> ``(samples, channels)``."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels) or 1
    return data.reshape(-1, channels)


def decode_media(path: Path, deadline: Deadline, *, video: VideoConsumer | None = None,
                 require_video: bool = False, require_audio: bool = True,
                 limits: DecodeLimits | None = None) -> DecodedMedia:
    """Decode the first audio and first video stream of ``path`` in one demuxing pass.

    ``video`` receives every video frame (frames are decoded for the integrity check either way); the audio comes
    back whole in :attr:`DecodedMedia.audio`. ``limits`` (default: the whole-clip limits) bound the clip.
    Raises :class:`DecodeError` (not a container, no decoder, truncated/corrupt data, time limit, over a limit) and
    :class:`NoAudioError` (``require_audio`` and no audio track) naming the file.
    """
    sink = _CollectAudio()
    it = iter_media(path, deadline, video=video, audio=sink, require_video=require_video,
                    require_audio=require_audio, limits=limits or DecodeLimits(WHOLE_CLIP_MAX_DURATION_S))
    while True:
        try:
            next(it)
        except StopIteration as stop:
            media: DecodedMedia = stop.value
            break
    if media.sample_rate is not None:
        if len({c.shape[1] for c in sink.chunks}) > 1:
            raise DecodeError(path, "its audio track changes its channel count mid-stream (remux it, or use "
                                    "Detector.detect / open_windows, which downmix each chunk to mono)")
        media.audio = np.ascontiguousarray(np.concatenate(sink.chunks))
    return media


def _checked_streams(path: Path, container: Any, limits: DecodeLimits, require_video: bool,
                     scores_audio: bool) -> tuple[Any, Any, list[Any]]:
    """The (video, audio) streams a player would play, each with a decoder that fails on corrupt data, within the
    limits (pixels, sample rate), and the list of those present (audio first) to demux; :class:`DecodeError` naming
    what is wrong. ``scores_audio``: the audio is decoded to be scored, so a file with several audio streams is told
    which one is."""
    video, astream = main_streams(container)
    if require_video and video is None:
        raise DecodeError(path, "not a video (no video stream)")
    streams = [s for s in (astream, video) if s is not None]
    if not streams:
        raise DecodeError(path, "no audio or video stream")
    for s in streams:
        if s.codec_context is None:  # e.g. a fuzzed header naming a codec FFmpeg has no decoder for
            raise DecodeError(path, f"no decoder for its {s.type} stream (codec {getattr(s, 'codec', None)})")
        s.codec_context.options = {"err_detect": "explode"}
    if video is not None:
        _check_pixels(path, video.codec_context.width, video.codec_context.height, limits)
        video.thread_type = "AUTO"  # frame threads on multi-core devices (FFmpeg counts the CPUs it may use)
    if astream is not None and not MIN_SAMPLE_RATE <= (astream.rate or 0) <= MAX_SAMPLE_RATE:
        raise DecodeError(path, f"its audio sample rate {astream.rate} Hz is outside {MIN_SAMPLE_RATE}.."
                                f"{MAX_SAMPLE_RATE} Hz")
    audio_streams = len(container.streams.audio)
    if scores_audio and astream is not None and audio_streams > 1:  # the verdict is about one of them: say which
        log.warning("%s has %d audio streams; only stream #%d%s, the one a player picks by default, is scored "
                    "(a dub or commentary in another stream is not checked)", path, audio_streams, astream.index,
                    _stream_label(astream))
    return video, astream, streams


def _stream_label(stream: Any) -> str:
    """`` (language, "title")`` from a stream's metadata, or ""."""
    meta = getattr(stream, "metadata", None) or {}
    language, title = meta.get("language"), meta.get("title")
    parts = ([str(language)] if language and language != "und" else []) + ([f'"{title}"'] if title else [])
    return f" ({', '.join(parts)})" if parts else ""


class _VideoFrames:
    """The video side of one decoding pass: every frame's timestamp (a frame without one follows the previous at the
    declared rate), and the frames handed to the consumer upright-ready: at the first frame's size, or the size that
    gives an anamorphic stream square pixels, with the first frame's display rotation."""

    def __init__(self, path: Path, stream: Any, consumer: VideoConsumer | None, limits: DecodeLimits,
                 declared_fps: float | None):
        self.path, self.stream, self.consumer, self.limits = path, stream, consumer, limits
        self.step = 1.0 / declared_fps if declared_fps and 1.0 <= declared_fps <= 240.0 else 1.0 / 25.0
        # frames beyond this count exceed max_duration_s whatever their timestamps say
        self.max_frames = int(limits.max_duration_s * 240.0) + 16
        self.stamps: list[float] = []
        self.first: tuple[int, int, int] | None = None  # width, height, quarter turns of the first frame
        self.square: tuple[int, int] | None = None  # the size that gives an anamorphic stream's frames square pixels

    def add(self, frame: Any) -> None:
        path, stamps = self.path, self.stamps
        t = frame.time
        if t is None:
            t = stamps[-1] + self.step if stamps else 0.0
        stamps.append(float(t))
        if len(stamps) > self.max_frames:
            raise DecodeError(path, f"its video track has more than {self.max_frames} frames, more than "
                                    f"max_duration_s = {self.limits.max_duration_s:g} s at 240 fps (the "
                                    "limit on frames per clip)")
        if self.consumer is None:
            return
        if self.first is None:
            _check_pixels(path, frame.width, frame.height, self.limits)
            self.first = (frame.width, frame.height, display_turns(frame, self.stream, str(path)))
            if self.first[2]:
                log.info("%s: display rotation %d degrees applied", path, self.first[2] * 90)
            self.square = square_pixel_size(frame.width, frame.height, self.stream.sample_aspect_ratio, str(path))
        first = self.first
        if self.square is not None or (frame.width, frame.height) != first[:2]:
            if (frame.width, frame.height) != first[:2]:
                _check_pixels(path, frame.width, frame.height, self.limits)
            width, height = self.square or first[:2]
            frame = frame.reformat(width=width, height=height)
        self.consumer.add(frame, float(t), first[2])


def iter_media(path: Path, deadline: Deadline, *, video: VideoConsumer | None = None,
               audio: AudioConsumer | None = None, require_video: bool = False, require_audio: bool = True,
               limits: DecodeLimits | None = None,
               on_open: Callable[[StreamInfo], None] | None = None) -> Generator[None, None, DecodedMedia]:
    """The decoding pass of :func:`decode_media` as a generator: it yields after every demuxed packet (callers
    consume what the consumers received; the time spent outside the generator is not charged to the deadline) and
    returns the :class:`DecodedMedia` (``audio`` None: the samples went to ``audio``)."""
    import av

    limits = limits or DecodeLimits()
    container = open_container(path, deadline)
    try:
        consumer = video
        video, astream, streams = _checked_streams(path, container, limits, require_video, require_audio)
        declared_s = declared_duration(container)
        if declared_s is not None and declared_s > limits.max_duration_s:
            raise DecodeError(path, f"it declares {declared_s:.1f} s, more than max_duration_s = "
                                    f"{limits.max_duration_s:g} s (the limit on frames and samples per clip); cut the "
                                    "clip or pass a larger max_duration_s")
        declared = _rate(video) if video is not None else None
        if on_open is not None:
            names = () if astream is None else tuple(c.name for c in astream.layout.channels)
            on_open(StreamInfo(sample_rate=int(astream.rate) if astream is not None and astream.rate else None,
                               declared_seconds=declared_s, declared_fps=declared,
                               video_seconds=_stream_seconds(video), audio_channels=names))
        # samples beyond this count exceed max_duration_s whatever their timestamps say
        max_samples = int(limits.max_duration_s * (astream.rate or MAX_SAMPLE_RATE)) + 65536 if astream else 0
        frames = _VideoFrames(path, video, consumer, limits, declared)
        stamps = frames.stamps
        audio_samples = 0
        audio_start: float | None = None
        if consumer is not None and video is not None:
            consumer.start(declared)
        resampler = _packed_resampler(av, astream) if astream is not None else None

        bound = declared_bound(declared_s)
        past_bound = False
        channels = max(1, len(astream.layout.channels)) if astream is not None else 1

        def add_audio(out: Any) -> None:
            nonlocal audio_samples, channels
            chunk = out if isinstance(out, np.ndarray) else _packed(out)
            channels = chunk.shape[1]
            audio_samples += chunk.shape[0]
            if audio_samples > max_samples:
                raise DecodeError(path, f"its audio track lasts more than max_duration_s = {limits.max_duration_s:g} s "
                                        "(the limit on samples per clip); cut the clip or pass a larger max_duration_s")
            if audio is not None:
                audio.add_audio(chunk, audio_start)

        video_read = 0  # video packets with data demuxed (the index check below)
        try:
            for packet in container.demux(*streams):
                deadline.check()
                if packet.size and packet.stream is video:
                    video_read += 1
                for frame in packet.decode():
                    time_s = frame.time
                    if time_s is not None:
                        deadline.advance(float(time_s), limits.max_duration_s)
                    if packet.stream is video:
                        frames.add(frame)
                    else:
                        if audio_start is None and time_s is not None:
                            audio_start = float(time_s)
                        elif time_s is not None and audio_start is not None:
                            # a gap in the audio timestamps is silence: without it the audio after the gap would
                            # play early (out of sync with the video)
                            ahead = float(time_s) - audio_start
                            if bound is not None and ahead > bound:
                                if not past_bound:
                                    past_bound = True
                                    log.warning("%s: audio timestamps run past the duration the container declares; "
                                                "samples after %.2f s are not used", path, bound)
                                continue
                            missing = int(round((ahead - audio_samples / astream.rate) * astream.rate))
                            if missing > AUDIO_GAP_S * astream.rate:
                                log.warning("%s: %.3f s gap in the audio timestamps at %.3f s; filled with silence",
                                            path, missing / astream.rate, ahead)
                                piece = int(astream.rate)  # a second at a time: memory does not grow with the gap
                                while missing > 0:
                                    add_audio(np.zeros((min(piece, missing), channels), np.float32))
                                    missing -= piece
                                    paused = time.monotonic()
                                    yield
                                    deadline.extend(time.monotonic() - paused)
                        for out in resampler.resample(frame):
                            add_audio(out)
                paused = time.monotonic()
                yield
                deadline.extend(time.monotonic() - paused)
            if resampler is not None:
                for out in resampler.resample(None):
                    add_audio(out)
        except av.error.FFmpegError as exc:
            raise DecodeError(path, f"truncated or corrupt media data ({exc.strerror or exc})") from None
        if video is not None:
            _check_index(path, video, video_read)
        if require_video and not stamps:
            raise DecodeError(path, "the video stream has no decodable frames")
        if astream is None:
            if require_audio:
                raise NoAudioError(path)
            return DecodedMedia(audio=None, sample_rate=None, audio_start=None, video_stamps=stamps,
                                declared_fps=declared, has_video=video is not None, declared_seconds=declared_s)
        if not audio_samples:
            raise DecodeError(path, "the audio track has no decodable samples")
        return DecodedMedia(audio=None, sample_rate=int(astream.rate), audio_start=audio_start, video_stamps=stamps,
                            declared_fps=declared, has_video=video is not None, declared_seconds=declared_s,
                            audio_samples=audio_samples)
    finally:
        container.close()
        # A caller may keep the exception (a futures list, a retry queue), and with it this frame's locals: drop the
        # decoder's objects now (codec contexts and their threads, the resampler's filter graph, decoded frames), not
        # when the exception goes.
        container = video = astream = streams = resampler = frames = packet = frame = None  # noqa: F841


#: video packets an index may list beyond those demuxed before the file counts as truncated: at least this many, and
#: this share of the listed ones (an MP4 edit list can leave a few listed packets unread in a whole file)
INDEX_SLACK_PACKETS = 2
INDEX_SLACK_SHARE = 0.02


def _check_index(path: Path, stream: Any, read: int) -> None:
    """A container with an index (MP4/MOV: ``stream.frames``, the frames its sample table lists) cut short; video
    only, since for PCM audio the table counts samples, not packets.

    A file whose index comes first (``movflags=faststart``, how phones and web uploads write MP4) still opens when
    its end is cut off; the demuxer stops at the end of the data, and with frame threading FFmpeg drops the error on
    the last, partial packet, so ``err_detect=explode`` never fires. Without this check such a file was scored on
    what survived. Containers without an index (``stream.frames`` 0: MPEG-PS/TS, Matroska, fragmented MP4) are
    checked by the decoders alone."""
    listed = int(getattr(stream, "frames", 0) or 0)
    missing = listed - read
    if listed > 0 and missing > max(INDEX_SLACK_PACKETS, INDEX_SLACK_SHARE * listed):
        raise DecodeError(path, f"truncated or corrupt media data (its index lists {listed} {stream.type} packets, "
                                f"only {read} could be read)")


def _check_pixels(path: Path, width: int, height: int, limits: DecodeLimits) -> None:
    if width and height and width * height > limits.max_pixels:
        raise DecodeError(path, f"its frames are {width}x{height} = {width * height} pixels, more than max_pixels = "
                                f"{limits.max_pixels} (the limit on frame size); scale the video down or pass a larger "
                                "max_pixels")
