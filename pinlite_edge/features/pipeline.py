"""Public entry points: file or arrays -> prepared clip -> list of :class:`Window`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import DecodeError, InputError
from pinlite_edge.features.audio import check_file
from pinlite_edge.features.clipstream import FileStream, audio_is_silent, warn_on_degraded_audio
from pinlite_edge.features.cropstream import CropStream
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S, Deadline
from pinlite_edge.features.facecrop import FaceCropConfig
from pinlite_edge.features.limits import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_PIXELS,
    WHOLE_CLIP_MAX_DURATION_S,
    MAX_WINDOW_BYTES,
    DecodeLimits,
    check_fps,
    check_sample_rate,
    check_stride,
)
from pinlite_edge.features.resample import audio_samples, check_audio_dtype, resample_rate, to_mono
from pinlite_edge.features.windows import PreparedClip, Window, clip_windows, window_starts
from pinlite_edge.utils.checks import is_whole
from pinlite_edge.features.yuvframe import YuvFrame

log = logging.getLogger(__name__)

#: Longest side (px) of the frames crops are cut from in :func:`prepare_file` (larger ones are scaled down while
#: decoding): full HD is kept, so a mouth crop has enough pixels; only a few frames are held at a time.
CROP_SOURCE_MAX_SIDE = 1920


def validate_arrays(frames: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float,
                    limits: DecodeLimits | None = None) -> None:
    """Raise :class:`InputError` for arrays an app passes that cannot be featurised, or that go over ``limits``
    (default :class:`DecodeLimits`: one hour, :data:`DEFAULT_MAX_PIXELS`)."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be a numpy array (N, H, W, 3) RGB, got "
                         f"{getattr(frames, 'shape', type(frames).__name__)}")
    if min(frames.shape[:3]) == 0:
        raise InputError(f"frames is empty: shape {frames.shape}")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.number) or not np.all(np.isfinite(frames)):
            raise InputError("frames contain NaN/inf or are not numeric; pass uint8 RGB")
        raise InputError(f"frames must be uint8 RGB (0..255), got dtype {frames.dtype}")
    if not isinstance(audio, np.ndarray) or audio.ndim not in (1, 2) or audio.size == 0:
        raise InputError(f"audio must be a non-empty numpy array (samples,) or (samples, channels), got "
                         f"{getattr(audio, 'shape', type(audio).__name__)}")
    if not np.issubdtype(audio.dtype, np.number):
        raise InputError(f"audio must be numeric, got dtype {audio.dtype}")
    check_audio_dtype(audio)
    if not is_whole(sample_rate, 1, numpy=True):
        raise InputError(f"sample_rate must be a positive int, got {sample_rate!r}")
    check_sample_rate(sample_rate)
    fps = check_fps(fps)
    limits = limits or DecodeLimits()
    seconds = max(frames.shape[0] / fps, audio_samples(audio) / float(sample_rate))
    if seconds > limits.max_duration_s:
        raise InputError(f"the arrays last {seconds:.1f} s, more than max_duration_s = {limits.max_duration_s:g} s "
                         "(the limit on frames and samples per clip); score the clip in parts")
    if frames.shape[1] * frames.shape[2] > limits.max_pixels:
        raise InputError(f"frames of {frames.shape[2]}x{frames.shape[1]} exceed max_pixels = {limits.max_pixels}; "
                         "scale them down")


def _check_crop_memory(n: int, contract: InputContract) -> None:
    need = n * contract.frame_size ** 2 * 3
    if need > MAX_WINDOW_BYTES:
        raise InputError(f"{n} frames would need {need / 2**30:.1f} GiB of {contract.frame_size} px crops (more than "
                         f"{MAX_WINDOW_BYTES / 2**30:.0f} GiB); score the clip in parts")


def prepare_arrays(
    frames_uint8: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float, contract: InputContract, *,
    face_crop: bool = True, face_config: FaceCropConfig | None = None, source: str = "clip",
    limits: DecodeLimits | None = None,
) -> PreparedClip:
    """Validate (``limits``: see :func:`validate_arrays`), crop (tracked mouth crop, or centre crop with
    ``face_crop=False``) as :func:`prepare_file` crops a file's frames, resize to ``contract.frame_size`` and resample
    audio to the contract's rate."""
    validate_arrays(frames_uint8, audio, sample_rate, fps, limits)
    n = frames_uint8.shape[0]
    _check_crop_memory(n, contract)
    mono = to_mono(audio, source)  # PCM scaled to [-1, 1], channels-first arrays recognised
    peak = float(np.abs(mono).max())
    warn_on_degraded_audio(mono.size / float(sample_rate), n / float(fps), peak, True, contract, source)
    # the file path's crop: frames as the 4:2:0 planes a decoder gives, face tracked on the luma plane
    crops = CropStream(contract.frame_size, (face_config or FaceCropConfig()) if face_crop else None, max_side=None,
                       source=source, keep_boxes=False)
    crops.start(float(fps))
    for frame in frames_uint8:
        crops.add_yuv(YuvFrame.from_rgb(frame))
    out, faces = crops.finish()
    mono16k = resample_rate(mono, int(sample_rate), contract.sample_rate)
    return PreparedClip(frames=out, fps=float(fps), audio=mono16k, sample_rate=contract.sample_rate,
                        face_found=None if faces is None else faces.found,
                        face_coverage=None if faces is None else faces.coverage,
                        faces_in_view=None if faces is None else faces.faces_in_view,
                        audio_silent=audio_is_silent(peak, True))


def prepare_file(
    path: str | Path, contract: InputContract, *, face_crop: bool = True,
    face_config: FaceCropConfig | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S,
    max_side: int | None = CROP_SOURCE_MAX_SIDE, max_duration_s: float = WHOLE_CLIP_MAX_DURATION_S,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PreparedClip:
    """Decode a video file in one PyAV pass and prepare it: frames upright (display rotation), tracked mouth crop
    (or centre crop with ``face_crop=False``) made while decoding from frames bounded by ``max_side``; audio aligned
    to the first video frame by the streams' timestamps and resampled to the contract's rate.

    The whole clip is held: ``max_duration_s`` (default five minutes) and ``max_pixels`` bound it (see
    :mod:`pinlite_edge.features.limits`); :func:`iter_windows` streams instead. Raises :class:`DecodeError` /
    :class:`NoAudioError` naming the file for every failure.
    """
    return _file_stream(path, contract, face_crop=face_crop, face_config=face_config, timeout_s=timeout_s,
                        max_side=max_side, max_duration_s=max_duration_s, max_pixels=max_pixels).prepare()


def _file_stream(path: str | Path, contract: InputContract, *, face_crop: bool, face_config: FaceCropConfig | None,
                 timeout_s: float | None, max_side: int | None, max_duration_s: float,
                 max_pixels: int) -> FileStream:
    path = check_file(path)
    limits = DecodeLimits(max_duration_s=max_duration_s, max_pixels=max_pixels)
    return FileStream(path, contract, face_crop=face_crop, face_config=face_config, deadline=Deadline(path, timeout_s),
                      max_side=max_side, limits=limits)


def open_windows(
    path: str | Path, contract: InputContract, *, face_crop: bool = True, stride_seconds: float | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S, face_config: FaceCropConfig | None = None,
    max_side: int | None = CROP_SOURCE_MAX_SIDE, max_duration_s: float = DEFAULT_MAX_DURATION_S,
    max_pixels: int = DEFAULT_MAX_PIXELS, scan_offsets: tuple[int, ...] = (),
) -> tuple[FileStream, Iterator[Window]]:
    """Stream the windows of ``path`` in bounded memory: ``(stream, windows)``; iterate ``windows`` (each window is
    cut as soon as the file has been decoded past its end), then read ``stream.face_found`` / ``face_coverage``.

    The same windows as :func:`prepare_windows`; memory does not grow with the clip's length, so
    ``max_duration_s`` (default one hour) bounds time only. The decoding time limit does not count the time the
    caller spends between windows. Raises :class:`DecodeError` naming the file (while iterating). ``scan_offsets``:
    each window also carries the MFCCs of its audio shifted by those frames (:mod:`pinlite_edge.offset_scan`).
    """
    check_stride(stride_seconds)
    stream = _file_stream(path, contract, face_crop=face_crop, face_config=face_config, timeout_s=timeout_s,
                          max_side=max_side, max_duration_s=max_duration_s, max_pixels=max_pixels)
    return stream, stream.windows(stride_seconds, scan_offsets)


def crop_squares(path: str | Path, *, face_crop: bool = True, face_config: FaceCropConfig | None = None,
                 timeout_s: float | None = DEFAULT_TIMEOUT_S, max_side: int | None = CROP_SOURCE_MAX_SIDE,
                 ) -> list[dict[str, int | bool]]:
    """The crop square :func:`prepare_file` cuts from every decoded frame of ``path``, in decoding order:
    ``{"frame", "x", "y", "side", "face"}`` in pixels of the upright frame bounded by ``max_side`` (``face``: the
    tracker had a detection near that frame). Where frames are held smaller (a high frame rate:
    :meth:`CropStream.held_side`), the squares are scaled back to that frame and rounded (within a pixel or so).
    For checking a port of the face track (docs/android.md) against this one; it decodes the file again."""
    from pinlite_edge.features.decode import decode_media

    path = check_file(path)
    stream = CropStream(2, (face_config or FaceCropConfig()) if face_crop else None, max_side=max_side,
                        source=str(path))
    decode_media(path, Deadline(path, timeout_s), video=stream, require_video=True, require_audio=False)
    try:
        stream.finish()
    except InputError as exc:  # require_face and no face
        raise DecodeError(path, str(exc)) from None
    scale = (stream.bounded_side / stream.frame_side) if stream.frame_side else 1.0
    return [{"frame": i, "x": round(b.x * scale), "y": round(b.y * scale), "side": round(b.size * scale),
             "face": bool(f)} for i, (b, f) in enumerate(zip(stream.boxes, stream.found))]


def featurise_arrays(
    frames_uint8: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float, contract: InputContract, *,
    face_crop: bool = True, stride_seconds: float | None = None, face_config: FaceCropConfig | None = None,
) -> list[Window]:
    """Windows of an in-memory clip: ``frames_uint8`` (N, H, W, 3) RGB uint8, ``audio`` (samples[, channels]).

    Invalid arrays (wrong dims/dtype, NaN/inf, empty, too short) raise :class:`InputError`.
    """
    clip = prepare_arrays(frames_uint8, audio, sample_rate, fps, contract, face_crop=face_crop,
                          face_config=face_config, source="input arrays")
    return clip_windows(clip, contract, stride_seconds, source="input arrays")


def prepare_windows(
    path: str | Path, contract: InputContract, *, face_crop: bool = True, stride_seconds: float | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S, face_config: FaceCropConfig | None = None,
    max_side: int | None = CROP_SOURCE_MAX_SIDE, max_duration_s: float = WHOLE_CLIP_MAX_DURATION_S,
    max_pixels: int = DEFAULT_MAX_PIXELS, scan_offsets: tuple[int, ...] = (),
) -> tuple[PreparedClip, list[Window]]:
    """:func:`prepare_file` and the windows cut from it (callers that report ``face_found`` / ``face_coverage``).
    Holds the whole clip and all its windows; :func:`open_windows` streams them. ``scan_offsets``: as for
    :func:`open_windows`."""
    check_stride(stride_seconds)
    clip = prepare_file(path, contract, face_crop=face_crop, face_config=face_config, timeout_s=timeout_s,
                        max_side=max_side, max_duration_s=max_duration_s, max_pixels=max_pixels)
    try:
        return clip, clip_windows(clip, contract, stride_seconds, source=str(path), scan_offsets=scan_offsets)
    except InputError as exc:
        raise DecodeError(path, str(exc)) from None


def featurise_file(
    path: str | Path, contract: InputContract, *, face_crop: bool = True, stride_seconds: float | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S, face_config: FaceCropConfig | None = None,
    max_side: int | None = CROP_SOURCE_MAX_SIDE, max_duration_s: float = WHOLE_CLIP_MAX_DURATION_S,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Window]:
    """Decode ``path`` and cut it into model windows (``stride_seconds`` defaults to one window, no overlap)."""
    return prepare_windows(path, contract, face_crop=face_crop, stride_seconds=stride_seconds, timeout_s=timeout_s,
                           face_config=face_config, max_side=max_side, max_duration_s=max_duration_s,
                           max_pixels=max_pixels)[1]


__all__ = ["CROP_SOURCE_MAX_SIDE", "crop_squares", "featurise_arrays", "featurise_file", "open_windows",
           "prepare_arrays", "prepare_file", "prepare_windows", "validate_arrays", "window_starts"]
