"""Audio channel mixing and resampling to the contract's rate (16 kHz mono)."""
from __future__ import annotations

import logging
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from pinlite_edge.errors import InputError
from pinlite_edge.features.downmix import BlockMixer
from pinlite_edge.features.limits import check_sample_rate

log = logging.getLogger(__name__)

#: Float audio is PCM, nominally within [-1, 1]; integer PCM stored as float reaches 2^31 at most. Beyond that it is
#: not audio, and float32 arithmetic on it overflows (NaN features).
MAX_FLOAT_AUDIO = 2.0 ** 31


def check_audio_dtype(audio: np.ndarray) -> None:
    """The dtype rules for audio arrays: real floats (finite, |x| <= MAX_FLOAT_AUDIO) or integer PCM; complex, bool,
    object and other dtypes raise :class:`InputError`."""
    if np.issubdtype(audio.dtype, np.complexfloating):
        raise InputError(f"audio must be real PCM samples, got complex dtype {audio.dtype} (the imaginary part would "
                         "be dropped); pass np.real(audio) or the magnitude, whichever your data means")
    if audio.dtype == np.bool_ or not (np.issubdtype(audio.dtype, np.floating)
                                       or np.issubdtype(audio.dtype, np.integer)):
        raise InputError(f"audio must be float or integer PCM, got dtype {audio.dtype}")
    if np.issubdtype(audio.dtype, np.floating) and audio.size:
        if not np.isfinite(audio).all():
            raise InputError("audio contains NaN or inf")
        peak = float(np.abs(audio).max())
        if peak > MAX_FLOAT_AUDIO:
            raise InputError(f"float audio reaches |x| = {peak:.3g}: float PCM is nominally within [-1, 1] (at most "
                             f"{MAX_FLOAT_AUDIO:.3g}, integer full scale stored as float)")


def _channels_first(audio: np.ndarray) -> bool:
    """A 2-D ``(channels, samples)`` array as decoders often return it: a few channels, many samples."""
    return audio.ndim == 2 and audio.shape[0] <= 8 and audio.shape[1] > audio.shape[0] * 16


def audio_samples(audio: np.ndarray) -> int:
    """Samples per channel of ``(samples,)``, ``(samples, channels)`` or ``(channels, samples)`` audio (as
    :func:`to_mono` reads it)."""
    return int(audio.shape[1] if _channels_first(audio) else audio.shape[0])


def to_mono(audio: np.ndarray, source: str = "audio") -> np.ndarray:
    """``(samples,)`` or ``(samples, channels)`` -> float32 ``(samples,)`` (mean of all channels: an array carries no
    layout, so an LFE channel in it is mixed in too, where a file's is left out; a channel out of phase is flipped
    first, with a warning naming ``source``: :mod:`~pinlite_edge.features.downmix`).

    Dtype rules (:func:`check_audio_dtype`): float as is; signed integer PCM scaled by 2^(bits-1); unsigned integer
    PCM (offset binary, e.g. uint8 with silence at 128) centred, then scaled by 2^(bits-1). A ``(channels, samples)``
    array with a few channels and many samples is recognised and transposed.
    """
    audio = np.asarray(audio)
    check_audio_dtype(audio)
    if audio.ndim == 1:
        mono = audio
    elif audio.ndim == 2:
        if _channels_first(audio):
            audio = audio.T
        mono = _mixed(audio, source)
    else:
        raise InputError(f"audio must be (samples,) or (samples, channels), got shape {audio.shape}")
    if np.issubdtype(audio.dtype, np.signedinteger):
        mono = mono / -float(np.iinfo(audio.dtype).min)  # PCM full scale 2^(bits-1): -32768 maps to exactly -1
    elif np.issubdtype(audio.dtype, np.unsignedinteger):
        # unsigned PCM (e.g. 8-bit WAV) is offset binary: 2^(bits-1) is silence, so centre before scaling
        half = _silence(audio)
        mono = (mono - half) / half
    return np.asarray(mono, dtype=np.float32)


def _silence(audio: np.ndarray) -> float:
    """The sample value of silence: 2^(bits-1) for unsigned (offset binary) PCM, else 0."""
    return float(np.iinfo(audio.dtype).max // 2 + 1) if np.issubdtype(audio.dtype, np.unsignedinteger) else 0.0


def _mixed(audio: np.ndarray, source: str) -> np.ndarray:
    """``(samples, channels)`` -> the unscaled mono mix: the channel mean, with a channel out of phase flipped in the
    blocks where it is (:class:`~pinlite_edge.features.downmix.BlockMixer`, as for a streamed file)."""
    mixer = BlockMixer(source, _silence(audio))
    blocks = mixer.add(audio) + mixer.flush()
    said = mixer.polarity.warning()
    if said is not None:
        log.warning("%s", said)
    return np.concatenate([mono for mono, _ in blocks])  # flush gives one block at least, if an empty one


def resample_audio(audio: np.ndarray, sample_rate: int, target_rate: int = 16000) -> np.ndarray:
    """Any channel layout at ``sample_rate`` -> float32 mono at ``target_rate`` (scipy ``resample_poly``)."""
    if not sample_rate or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if int(sample_rate) != sample_rate:
        raise InputError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    check_sample_rate(int(sample_rate))
    mono = to_mono(audio)
    if mono.size == 0:
        return mono
    return resample_rate(mono, int(sample_rate), target_rate)


def resample_rate(samples: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """float32 ``samples`` (time along axis 0, any channels) from ``sample_rate`` to ``target_rate``
    (scipy ``resample_poly``; unchanged when the rates are equal)."""
    if sample_rate == target_rate:
        return np.asarray(samples, dtype=np.float32)
    g = gcd(sample_rate, target_rate)
    out = resample_poly(np.asarray(samples, dtype=np.float64), target_rate // g, sample_rate // g, axis=0)
    return out.astype(np.float32)
