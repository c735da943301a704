"""Cheap header-only probe of a video file (duration, fps) used to index datasets without decoding."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pinlite_edge.errors import DecodeError, NoAudioError
from pinlite_edge.features.audio import check_file
from pinlite_edge.features.decode import container_open_error, main_streams
from pinlite_edge.features.video import sane_fps


@dataclass(frozen=True)
class Probe:
    duration: float  # seconds covered by both audio and video (header estimate)
    fps: float


def probe_video(path: str | Path) -> Probe:
    """Header values of ``path``; raises DecodeError / NoAudioError naming the file. Estimates may be off by a frame."""
    import av

    path = check_file(path)
    try:
        with av.open(str(path)) as c:
            video, audio = main_streams(c)
            if video is None:
                raise DecodeError(path, "not a video (no video stream)")
            if audio is None:
                raise NoAudioError(path)
            durations = []
            for s in (video, audio):
                if s.duration is not None and s.time_base is not None:
                    durations.append(float(s.duration * s.time_base))
            if not durations and c.duration is not None:
                durations.append(c.duration / 1_000_000)
            rate = video.average_rate
            fps = sane_fps(float(rate) if rate else None, source=str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise container_open_error(path, exc) from None
    if not durations:
        raise DecodeError(path, "the container reports no duration")
    return Probe(duration=min(durations), fps=fps)
