"""SyncNet-style pairs from in-sync real videos: every window gives a real sample plus generated fakes.

- ``audio_shift``: the audio is delayed by k video frames (k in ``shifts``, default ±1..±5; k > 0 means the window's
  audio is taken from ``start - k / fps``, i.e. sound lags the picture); offset class k + 5.
- ``audio_swap``: the audio of the same time span of another clip of the split; offset undefined (-100).
Window starts keep a margin of ``max |k|`` frames at both ends so shifted audio stays inside the clip.
Which shifts a window gets is drawn deterministically from ``seed`` and the clip id.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pinlite_edge.contract import MAX_OFFSET, OFFSET_IGNORE_INDEX, InputContract
from pinlite_edge.data.sample import IN_SYNC, WindowRef, manipulation_index
from pinlite_edge.errors import DatasetError, InputError
from pinlite_edge.features.windows import window_starts

log = logging.getLogger(__name__)

DEFAULT_SHIFTS = tuple(k for k in range(-MAX_OFFSET, MAX_OFFSET + 1) if k != 0)


@dataclass(frozen=True)
class SyncPairConfig:
    shifts: tuple[int, ...] = DEFAULT_SHIFTS
    shifts_per_window: int = 1  # audio_shift fakes generated per real window
    swaps_per_window: int = 1  # audio_swap fakes per real window (needs >= 2 clips)
    include_real: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [k for k in self.shifts if k == 0 or abs(k) > MAX_OFFSET]
        if bad or not self.shifts:
            raise DatasetError(f"sync-pair shifts must be non-zero within ±{MAX_OFFSET}, got {self.shifts}")
        if self.shifts_per_window < 0 or self.swaps_per_window < 0:
            raise DatasetError("shifts_per_window and swaps_per_window must be >= 0")


@dataclass(frozen=True)
class SourceClip:
    path: Path
    clip_name: str  # stable name used in clip ids (relative path)
    duration: float
    fps: float


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little"))


def sync_pair_refs(sources: list[SourceClip], contract: InputContract, config: SyncPairConfig | None = None,
                   stride_seconds: float | None = None) -> list[WindowRef]:
    """Window references (real + shifted + swapped) for in-sync ``sources``."""
    cfg = config or SyncPairConfig()
    shift_manip, swap_manip = manipulation_index("audio_shift"), manipulation_index("audio_swap")
    max_k = max(abs(k) for k in cfg.shifts)
    swaps = cfg.swaps_per_window if len(sources) >= 2 else 0
    if cfg.swaps_per_window and len(sources) < 2:
        log.warning("audio_swap needs at least 2 clips; generating none for this split")
    refs: list[WindowRef] = []
    for i, src in enumerate(sources):
        margin = max_k / src.fps
        try:
            inner = window_starts(src.duration - 2 * margin, contract, stride_seconds, fps=src.fps,
                                  source=str(src.path))
        except InputError as exc:
            log.warning("skipping %s for sync pairs: %s", src.path, exc)
            continue
        for s in (round(margin + x, 6) for x in inner):
            base = f"{src.clip_name}@{s:.2f}"
            if cfg.include_real:
                refs.append(WindowRef(src.path, s, 0, 0, IN_SYNC, base))
            rng = _rng(cfg.seed, base)
            n_shift = min(cfg.shifts_per_window, len(cfg.shifts))
            for k in rng.choice(np.asarray(cfg.shifts), size=n_shift, replace=False):
                k = int(k)
                refs.append(WindowRef(src.path, s, 1, shift_manip, k + MAX_OFFSET, f"{base}#shift{k:+d}",
                                      audio_shift_frames=k))
            for j in range(swaps):
                other = sources[(i + 1 + int(rng.integers(0, len(sources) - 1))) % len(sources)]
                refs.append(WindowRef(src.path, s, 1, swap_manip, OFFSET_IGNORE_INDEX,
                                      f"{base}#swap{j}:{other.clip_name}", audio_path=other.path))
    return refs
