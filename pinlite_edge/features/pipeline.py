"""Public entry points: file or arrays -> prepared clip -> list of :class:`Window`."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import DecodeError, InputError
from pinlite_edge.features.audio import decode_audio
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S, Deadline
from pinlite_edge.features.facecrop import FaceCropConfig, centre_box, track_frames
from pinlite_edge.features.frames import resize_square
from pinlite_edge.features.resample import resample_audio
from pinlite_edge.features.video import DEFAULT_MAX_SIDE, decode_video, sane_fps
from pinlite_edge.features.windows import PreparedClip, Window, clip_windows, window_starts

log = logging.getLogger(__name__)


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
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> PreparedClip:
    """Decode a video file (audio + integrity with PyAV, frames with OpenCV) and prepare it.

    Raises :class:`DecodeError` / :class:`NoAudioError` naming the file for every failure.
    """
    path = Path(path)
    deadline = Deadline(path, timeout_s)
    audio = decode_audio(path, require_video=True, deadline=deadline)
    video = decode_video(path, max_side=max_side, deadline=deadline)
    fps = sane_fps(video.fps, source=str(path))
    try:
        return prepare_arrays(video.frames, audio.samples, audio.sample_rate, fps, contract,
                              face_crop=face_crop, face_config=face_config, source=str(path))
    except InputError as exc:
        raise DecodeError(path, str(exc)) from None


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


def featurise_file(
    path: str | Path, contract: InputContract, *, face_crop: bool = True, stride_seconds: float | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S, face_config: FaceCropConfig | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> list[Window]:
    """Decode ``path`` and cut it into model windows (``stride_seconds`` defaults to one window, no overlap)."""
    clip = prepare_file(path, contract, face_crop=face_crop, face_config=face_config, timeout_s=timeout_s,
                        max_side=max_side)
    try:
        return clip_windows(clip, contract, stride_seconds, source=str(path))
    except InputError as exc:
        raise DecodeError(path, str(exc)) from None


__all__ = ["featurise_arrays", "featurise_file", "prepare_arrays", "prepare_file", "validate_arrays",
           "window_starts"]
