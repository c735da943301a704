"""Frame sampling, resizing and ImageNet normalisation."""
from __future__ import annotations

import functools

import cv2
import numpy as np

from pinlite_edge.contract import InputContract


def sample_indices(start_seconds: float, fps: float, num_available: int, contract: InputContract) -> np.ndarray:
    """Indices of ``contract.num_frames`` frames spread uniformly over the window starting at ``start_seconds``.

    Frame ``i`` is the one showing the centre of the i-th of ``num_frames`` equal sub-intervals; at 25 fps and the
    standard contract that is exactly 16 consecutive frames. Indices past the end repeat the last frame.
    """
    dt = contract.window_seconds / contract.num_frames
    times = start_seconds + (np.arange(contract.num_frames) + 0.5) * dt
    idx = np.floor(times * fps + 1e-6).astype(np.int64)
    return np.clip(idx, 0, num_available - 1)


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 frame (any aspect; callers crop squares first) to ``size`` x ``size``."""
    interp = cv2.INTER_AREA if min(frame.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interp)


@functools.lru_cache(maxsize=8)
def _normalise_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: the normalised value of every uint8 level per channel (same float32 arithmetic as a direct
    ``(x / 255 - mean) / std``)."""
    levels = np.arange(256, dtype=np.float32)[:, None] / 255.0
    lut = (levels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(lut.T)


def normalise_frames(frames_uint8: np.ndarray, contract: InputContract) -> np.ndarray:
    """uint8 ``(T, S, S, 3)`` RGB -> float32 ``(T, 3, S, S)`` ImageNet-normalised (a lookup table per channel)."""
    lut = _normalise_lut(tuple(contract.mean), tuple(contract.std))
    planes = frames_uint8.transpose(0, 3, 1, 2)
    out = np.empty(planes.shape, dtype=np.float32)
    for c in range(planes.shape[1]):
        out[:, c] = lut[c][planes[:, c]]
    return out
