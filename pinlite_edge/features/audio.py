"""Audio decoding: PyAV for containers (mp4/mpg/avi/mkv...), soundfile for wav/flac/ogg.

The PyAV pass (:func:`pinlite_edge.features.decode.decode_media`) also decodes the video stream with
``err_detect=explode`` (frames are discarded), so a truncated or corrupt file fails with a :class:`DecodeError`
instead of silently yielding a shorter clip. :func:`pinlite_edge.features.prepare_file` does not call this: it gets
audio and frames from one pass.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pinlite_edge.errors import DecodeError, InputError
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S, Deadline
from pinlite_edge.utils.files import input_file_problem
from pinlite_edge.features.decode import decode_media

log = logging.getLogger(__name__)

#: Extensions read with soundfile (audio-only files).
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga"})


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32 (samples, channels)
    sample_rate: int
    video_frames: int | None = None  # frames in the video stream (PyAV count), None for audio files
    start_seconds: float | None = None  # container time of the first sample (None: unknown / audio file)


#: longer than any path the OS takes (PATH_MAX): bytes this long are file contents passed by mistake, not a name
MAX_PATH_BYTES = 4096
#: ``scheme://`` as URLs start (http, https, rtsp, file...)
URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_file(path: str | bytes | Path) -> Path:
    """Existence / type / non-empty checks shared by every decoder. ``path`` may be bytes (a file name that is not
    valid UTF-8, as ``os.listdir(b".")`` gives it): it becomes a str with surrogate escapes, which PyAV opens."""
    if isinstance(path, (bytes, bytearray)):
        if len(path) > MAX_PATH_BYTES:
            raise InputError(f"got {len(path)} bytes, too many for a file name: pass the video's path (file contents "
                             "are not read from memory; Detector.detect_arrays takes decoded frames and audio)")
        path = os.fsdecode(bytes(path))
    elif not isinstance(path, (str, os.PathLike)):
        raise InputError(f"a media path must be a str, bytes or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text:
        raise InputError("the media path is empty")
    if URL_SCHEME.match(text):
        raise InputError(f"{text[:200]}: URLs are not opened; download the video and pass the file's path")
    path = Path(text)
    problem = input_file_problem(path)
    if problem is not None:
        raise DecodeError(path, problem)
    return path


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
    media = decode_media(path, deadline, require_video=require_video)  # video decoded too: integrity check
    assert media.audio is not None and media.sample_rate is not None  # decode_media raised NoAudioError otherwise
    return DecodedAudio(samples=media.audio, sample_rate=media.sample_rate,
                        video_frames=media.video_frames if media.has_video else None,
                        start_seconds=media.audio_start)
