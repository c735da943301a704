"""Feature extraction (SPEC §1): decoding, resampling, MFCC, face crop, windows.

Entry points: :func:`featurise_file` and :func:`featurise_arrays` return a list of :class:`Window`
(``frames`` float32 (16, 3, S, S), ``mfcc`` float32 (64, 13), ``start_seconds``).
"""
from pinlite_edge.features.audio import DecodedAudio, decode_audio
from pinlite_edge.features.deadline import DEFAULT_TIMEOUT_S, Deadline
from pinlite_edge.features.facecrop import (
    ClipFaces,
    FaceBox,
    FaceCropConfig,
    detect_face_box,
    face_detector_available,
    track_frames,
)
from pinlite_edge.features.limits import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_PIXELS,
    WHOLE_CLIP_MAX_DURATION_S,
    DecodeLimits,
)
from pinlite_edge.features.frames import normalise_frames, sample_indices
from pinlite_edge.features.mfcc import compute_mfcc, normalise_mfcc, raw_mfcc
from pinlite_edge.features.pipeline import (
    CROP_SOURCE_MAX_SIDE,
    crop_squares,
    featurise_arrays,
    featurise_file,
    open_windows,
    prepare_arrays,
    prepare_file,
    prepare_windows,
    validate_arrays,
)
from pinlite_edge.features.resample import resample_audio, to_mono
from pinlite_edge.features.video import FALLBACK_FPS, DecodedVideo, decode_video
from pinlite_edge.features.windows import PreparedClip, Window, clip_windows, window_at, window_starts

__all__ = [
    "CROP_SOURCE_MAX_SIDE", "ClipFaces", "DEFAULT_MAX_DURATION_S", "DEFAULT_MAX_PIXELS", "DEFAULT_TIMEOUT_S",
    "DecodeLimits", "WHOLE_CLIP_MAX_DURATION_S", "FALLBACK_FPS", "Deadline", "DecodedAudio", "DecodedVideo",
    "FaceBox", "FaceCropConfig", "PreparedClip", "Window", "clip_windows", "compute_mfcc", "crop_squares",
    "decode_audio", "decode_video", "detect_face_box", "face_detector_available", "featurise_arrays", "featurise_file",
    "normalise_frames", "open_windows", "normalise_mfcc", "prepare_arrays", "prepare_file", "prepare_windows",
    "raw_mfcc", "resample_audio", "sample_indices", "to_mono", "track_frames", "validate_arrays", "window_at",
    "window_starts",
]
