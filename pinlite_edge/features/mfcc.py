"""MFCC features exactly as SPEC §1 defines them, normalised per clip (per window)."""
from __future__ import annotations

import numpy as np
import python_speech_features

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import InputError

#: Variance below this is treated as zero (e.g. digital silence) so normalisation stays finite.
_VAR_EPS = 1e-8


def raw_mfcc(signal: np.ndarray, contract: InputContract) -> np.ndarray:
    """``python_speech_features.mfcc(signal, sr, winlen, winstep, numcep)`` as float64 ``(T, num_mfcc)``.

    For one 0.64 s window at 16 kHz (10240 samples) python_speech_features yields 63 frames
    (``1 + ceil((10240 - 400) / 160)``); :func:`compute_mfcc` pads that to ``contract.mfcc_steps``.
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise InputError(f"MFCC expects mono audio of shape (samples,), got {signal.shape}")
    if signal.size == 0 or not np.all(np.isfinite(signal)):
        raise InputError("MFCC input audio is empty or contains NaN/inf")
    return python_speech_features.mfcc(
        signal,
        contract.sample_rate,
        winlen=contract.mfcc_winlen,
        winstep=contract.mfcc_winstep,
        numcep=contract.num_mfcc,
    )


def normalise_mfcc(features: np.ndarray) -> np.ndarray:
    """Per-clip mean/variance normalisation over time; a coefficient with ~zero variance is only centred."""
    features = np.asarray(features, dtype=np.float64)
    mean = features.mean(axis=0, keepdims=True)
    std = features.std(axis=0, keepdims=True)
    std = np.where(std < np.sqrt(_VAR_EPS), 1.0, std)
    out = (features - mean) / std
    # python_speech_features takes log(energy) with energy floored at machine eps, so silence stays finite;
    # this is a last guard against anything non-finite leaking into a model.
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def fit_steps(features: np.ndarray, steps: int) -> np.ndarray:
    """Pad (repeating the last frame) or trim ``features`` to exactly ``steps`` rows."""
    n = features.shape[0]
    if n == steps:
        return features
    if n > steps:
        return features[:steps]
    if n == 0:
        raise InputError("MFCC produced no frames (audio shorter than one analysis window)")
    pad = np.repeat(features[-1:], steps - n, axis=0)
    return np.concatenate([features, pad], axis=0)


def compute_mfcc(signal: np.ndarray, contract: InputContract) -> np.ndarray:
    """SPEC §1 MFCC of one window of 16 kHz mono audio -> float32 ``(contract.mfcc_steps, contract.num_mfcc)``.

    Order: python_speech_features MFCC -> normalise over the frames it produced -> pad/trim to
    ``mfcc_steps`` by repeating the last (normalised) frame. For a 0.64 s window that is 63 computed frames
    plus one repeated frame, so the 4-MFCC-frames-per-video-frame alignment holds for the first 63 rows.
    """
    feats = normalise_mfcc(raw_mfcc(signal, contract))
    return fit_steps(feats, contract.mfcc_steps).astype(np.float32)
