"""Audio channel mixing and resampling to the contract's rate (16 kHz mono)."""
from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

from pinlite_edge.errors import InputError


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``(samples,)`` or ``(samples, channels)`` -> float32 ``(samples,)`` (mean of all channels, LFE included).

    A ``(channels, samples)`` array with a few channels and many samples is recognised and transposed.
    """
    audio = np.asarray(audio)
    if audio.ndim == 1:
        mono = audio
    elif audio.ndim == 2:
        if audio.shape[0] <= 8 and audio.shape[1] > audio.shape[0] * 16:
            audio = audio.T  # (channels, samples) as decoders often return it
        mono = audio.mean(axis=1)
    else:
        raise InputError(f"audio must be (samples,) or (samples, channels), got shape {audio.shape}")
    if np.issubdtype(audio.dtype, np.signedinteger):
        mono = mono / -float(np.iinfo(audio.dtype).min)  # PCM full scale 2^(bits-1): -32768 maps to exactly -1
    elif np.issubdtype(audio.dtype, np.integer):
        mono = mono / float(np.iinfo(audio.dtype).max)
    return np.asarray(mono, dtype=np.float32)


def resample_audio(audio: np.ndarray, sample_rate: int, target_rate: int = 16000) -> np.ndarray:
    """Any channel layout at ``sample_rate`` -> float32 mono at ``target_rate`` (scipy ``resample_poly``)."""
    if not sample_rate or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if int(sample_rate) != sample_rate:
        raise InputError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    mono = to_mono(audio)
    sample_rate = int(sample_rate)
    if sample_rate == target_rate or mono.size == 0:
        return mono
    g = gcd(sample_rate, target_rate)
    out = resample_poly(mono.astype(np.float64), target_rate // g, sample_rate // g)
    return out.astype(np.float32)
