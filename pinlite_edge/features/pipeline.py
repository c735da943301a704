"""Public entry points: file or arrays -> prepared clip -> list of :class:`Window`."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import DecodeError, InputError
from pinlite_edge.features.audio import check_file
from pinlite_edge.features.cropstream import CropStream
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S, Deadline
from pinlite_edge.features.decode import align_audio, decode_media
from pinlite_edge.features.facecrop import FaceCropConfig, centre_box, track_frames
from pinlite_edge.features.frames import resize_square
from pinlite_edge.features.resample import resample_audio
from pinlite_edge.features.video import constant_rate_order
from pinlite_edge.features.windows import PreparedClip, Window, clip_windows, window_starts

log = logging.getLogger(__name__)

#: Longest side (px) of the frames crops are cut from in :func:`prepare_file` (larger ones are scaled down while
#: decoding): full HD is kept, so a mouth crop has enough pixels; only a few frames are held at a time.
CROP_SOURCE_MAX_SIDE = 1920


def validate_arrays(frames: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float) -> None:
    """Raise :class:`InputError` for arrays an app passes that cannot be featurised."""
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
    if np.issubdtype(audio.dtype, np.floating) and not np.all(np.isfinite(audio)):
        raise InputError("audio contains NaN or inf")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if not isinstance(fps, (int, float, np.number)) or not np.isfinite(fps) or fps <= 0:
        raise InputError(f"fps must be a positive finite number, got {fps!r}")


def _warn_on_degraded_audio(audio: np.ndarray, sample_rate: int, video_seconds: float, contract: InputContract,
                            source: str) -> None:
    """Warn when the result degrades: tracks of very different length, or a digitally silent audio track."""
    audio_seconds = audio.shape[0] / float(sample_rate)
    if abs(audio_seconds - video_seconds) > contract.window_seconds:
        log.warning("%s: audio lasts %.2f s but video %.2f s; only the %.2f s covered by both are scored",
                    source, audio_seconds, video_seconds, min(audio_seconds, video_seconds))
    peak = float(np.abs(audio).max())
    if peak == 0.0 or (np.issubdtype(audio.dtype, np.floating) and peak < 1e-6):
        log.warning("%s: the audio track is digitally silent; the lip-sync evidence is missing, so scores on this "
                    "clip say little", source)


def prepare_arrays(
    frames_uint8: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float, contract: InputContract, *,
    face_crop: bool = True, face_config: FaceCropConfig | None = None, source: str = "clip",
) -> PreparedClip:
    """Validate, crop (tracked mouth crop, or centre crop with ``face_crop=False``), resize to
    ``contract.frame_size`` and resample audio to the contract's rate."""
    validate_arrays(frames_uint8, audio, sample_rate, fps)
    n, height, width = frames_uint8.shape[:3]
    _warn_on_degraded_audio(audio, sample_rate, n / float(fps), contract, source)
    face_found: bool | None = None
    face_coverage: float | None = None
    if face_crop:
        faces = track_frames(frames_uint8, float(fps), face_config, source=source)
        boxes = faces.boxes
        face_found, face_coverage = faces.found, faces.coverage
    else:
        boxes = [centre_box(height, width)] * n  # pre-cropped data: square centre crop (a no-op on square frames)
    size = contract.frame_size
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        out[i] = resize_square(boxes[i].crop(frames_uint8[i]), size)
    mono16k = resample_audio(audio, int(sample_rate), contract.sample_rate)
    return PreparedClip(frames=out, fps=float(fps), audio=mono16k, sample_rate=contract.sample_rate,
                        face_found=face_found, face_coverage=face_coverage)


def prepare_file(
    path: str | Path, contract: InputContract, *, face_crop: bool = True,
    face_config: FaceCropConfig | None = None, timeout_s: float | None = DEFAULT_TIMEOUT_S,
    max_side: int | None = CROP_SOURCE_MAX_SIDE,
) -> PreparedClip:
    """Decode a video file in one PyAV pass and prepare it: frames upright (display rotation), tracked mouth crop
    (or centre crop with ``face_crop=False``) made while decoding from frames bounded by ``max_side``; audio aligned
    to the first video frame by the streams' timestamps and resampled to the contract's rate.

    Raises :class:`DecodeError` / :class:`NoAudioError` naming the file for every failure.
    """
    path = check_file(path)
    deadline = Deadline(path, timeout_s)
    cfg = (face_config or FaceCropConfig()) if face_crop else None
    crops = CropStream(contract.frame_size, cfg, max_side=max_side, source=str(path))
    media = decode_media(path, deadline, video=crops, require_video=True)
    assert media.audio is not None and media.sample_rate is not None  # decode_media raised NoAudioError otherwise
    try:
        frames, faces = crops.finish()
    except InputError as exc:  # require_face and no face
        raise DecodeError(path, str(exc)) from None
    fps = crops.fps
    order = constant_rate_order(np.asarray(media.video_stamps) * 1000.0, fps, source=str(path))
    if order is not None:
        frames = frames[order]
    audio = align_audio(media.audio, media.sample_rate, media.audio_start, media.video_start, source=str(path))
    if audio.shape[0] == 0:
        raise DecodeError(path, f"the audio track ends before the first video frame "
                                f"({media.audio_start:.3f} s vs {media.video_start:.3f} s)")
    _warn_on_degraded_audio(audio, media.sample_rate, frames.shape[0] / fps, contract, str(path))
    return PreparedClip(frames=frames, fps=fps, audio=resample_audio(audio, media.sample_rate, contract.sample_rate),
                        sample_rate=contract.sample_rate, face_found=None if faces is None else faces.found,
                        face_coverage=None if faces is None else faces.coverage)


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
    max_side: int | None = CROP_SOURCE_MAX_SIDE,
) -> tuple[PreparedClip, list[Window]]:
    """:func:`prepare_file` and the windows cut from it (callers that report ``face_found`` / ``face_coverage``)."""
    clip = prepare_file(path, contract, face_crop=face_crop, face_config=face_config, timeout_s=timeout_s,
                        max_side=max_side)
    try:
        return clip, clip_windows(clip, contract, stride_seconds, source=str(path))
    except InputError as exc:
        raise DecodeError(path, str(exc)) from None


def featurise_file(
    path: str | Path, contract: InputContract, *, face_crop: bool = True, stride_seconds: float | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S, face_config: FaceCropConfig | None = None,
    max_side: int | None = CROP_SOURCE_MAX_SIDE,
) -> list[Window]:
    """Decode ``path`` and cut it into model windows (``stride_seconds`` defaults to one window, no overlap)."""
    return prepare_windows(path, contract, face_crop=face_crop, stride_seconds=stride_seconds, timeout_s=timeout_s,
                           face_config=face_config, max_side=max_side)[1]


__all__ = ["CROP_SOURCE_MAX_SIDE", "featurise_arrays", "featurise_file", "prepare_arrays", "prepare_file",
           "prepare_windows", "validate_arrays", "window_starts"]
