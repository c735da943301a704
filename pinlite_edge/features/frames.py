"""Frame sampling, resizing and ImageNet normalisation."""
from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=8)
def _normalise_affine(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 ``scale``, ``offset`` with ``(x / 255 - mean) / std == x * scale + offset`` (to ~1 ulp)."""
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    return (1.0 / (255.0 * s)).astype(np.float32), (-m / s).astype(np.float32)


def normalise_frames(frames_uint8: np.ndarray, contract: InputContract) -> np.ndarray:
    """uint8 ``(T, S, S, 3)`` RGB -> float32 ``(T, 3, S, S)`` ImageNet-normalised (one multiply-add per channel)."""
    scale, offset = _normalise_affine(tuple(contract.mean), tuple(contract.std))
    planes = frames_uint8.transpose(0, 3, 1, 2)
    out = np.empty(planes.shape, dtype=np.float32)
    for c in range(planes.shape[1]):
        np.multiply(planes[:, c], scale[c], out=out[:, c], casting="unsafe")
        out[:, c] += offset[c]
    return out
