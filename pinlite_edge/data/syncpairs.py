"""SyncNet-style self-supervision from in-sync real videos: every window gives a real sample plus generated fakes.

Per in-sync window (kinds as the balancing sampler sees them, :func:`ref_kind`):

- ``real``: the window as recorded (offset class 5).
- ``near_shift``: the audio moved by k video frames for k in ``shifts`` (default every k in -5..+5 except 0;
  ``shifts_per_window`` of them per window, default all). k > 0 means the window's audio is taken from
  ``start - k / fps``, i.e. sound lags the picture; offset class k + 5.
- ``far_shift``: the audio moved by k frames with ``far_shift_range[0] <= |k| <= far_shift_range[1]`` (default 6..25
  frames, 0.24-1 s, either way), ``far_per_window`` of them; label fake, offset undefined (``OFFSET_IGNORE_INDEX``:
  beyond the offset head's ±5 classes). Only shifts whose audio stays inside the clip are drawn.
- ``swap``: the audio of another clip of the split (another speaker when speaker groups are known),
  ``swaps_per_window`` of them; offset undefined.
- ``rewrite`` (off by default): a lip-sync-style fake, the window of the clip rewritten to follow another clip's
  audio (:mod:`pinlite_edge.data.lip_rewrite`: the speaker's own lower-face images re-ordered by audio), with that
  audio; ``rewrites_per_window`` of them, each from one of as many partner clips fixed per clip (so each clip is
  rewritten that many times, not once per window); manipulation ``both_replace``, offset undefined.

Window starts keep a margin of ``max |k|`` near-shift frames at both ends so near-shifted audio stays inside the clip.
What a window gets is drawn deterministically from ``seed`` and the window id. The fake:real ratio is far from 1
(default 14:1); training balances the classes with a sampler (``pinlite_edge.training.sampling``), not by luck.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pinlite_edge.contract import MAX_OFFSET, OFFSET_IGNORE_INDEX, InputContract
from pinlite_edge.data.sample import IN_SYNC, WindowRef, manipulation_index, ref_kind  # noqa: F401 (re-export)
from pinlite_edge.errors import DataOptionError, InputError
from pinlite_edge.features.windows import window_starts

log = logging.getLogger(__name__)

DEFAULT_SHIFTS = tuple(k for k in range(-MAX_OFFSET, MAX_OFFSET + 1) if k != 0)


@dataclass(frozen=True)
class SyncPairConfig:
    """What fakes every in-sync window gets (see the module docstring). ``--data-option sync_pairs={...}`` sets any
    field; ``sync_pairs=true`` uses the defaults."""

    shifts: tuple[int, ...] = DEFAULT_SHIFTS
    #: near-shift fakes per window (None, the default: every shift in ``shifts``)
    shifts_per_window: int | None = None
    #: inclusive range of |k| (video frames) of far shifts; both directions are used
    far_shift_range: tuple[int, int] = (MAX_OFFSET + 1, 25)
    far_per_window: int = 2
    #: audio-swap fakes per window (needs >= 2 clips in the split)
    swaps_per_window: int = 2
    #: lip-sync-style rewrite fakes per window (needs >= 2 clips in the split; 0: none)
    rewrites_per_window: int = 0
    include_real: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shifts", tuple(int(k) for k in self.shifts))
        object.__setattr__(self, "far_shift_range", tuple(int(k) for k in self.far_shift_range))
        problems = []
        bad = [k for k in self.shifts if k == 0 or abs(k) > MAX_OFFSET]
        if bad:
            problems.append(f"shifts must be non-zero within ±{MAX_OFFSET} frames, got {list(self.shifts)}")
        if len(set(self.shifts)) != len(self.shifts):
            problems.append(f"shifts must not repeat, got {list(self.shifts)}")
        if self.shifts_per_window is not None and not 0 <= self.shifts_per_window <= len(self.shifts):
            problems.append(f"shifts_per_window must be in 0..{len(self.shifts)} (the number of shifts) or null "
                            f"(all), got {self.shifts_per_window}")
        if len(self.far_shift_range) != 2 or not MAX_OFFSET < self.far_shift_range[0] <= self.far_shift_range[1]:
            problems.append(f"far_shift_range must be [lo, hi] with {MAX_OFFSET} < lo <= hi (frames), "
                            f"got {list(self.far_shift_range)}")
        for name in ("far_per_window", "swaps_per_window", "rewrites_per_window"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.include_real, bool):
            problems.append(f"include_real must be true or false, got {self.include_real!r}")
        if problems:
            raise DataOptionError("invalid sync_pairs: " + "; ".join(problems) + "; defaults: "
                                  + ", ".join(f"{k}={v!r}" for k, v in _DEFAULTS.items()))

    @property
    def near_per_window(self) -> int:
        return len(self.shifts) if self.shifts_per_window is None else self.shifts_per_window

    @property
    def max_near_shift(self) -> int:
        return max((abs(k) for k in self.shifts), default=0) if self.near_per_window else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shifts"] = list(self.shifts)
        d["far_shift_range"] = list(self.far_shift_range)
        return d

    @classmethod
    def from_value(cls, value: "bool | dict[str, Any] | SyncPairConfig | None",
                   where: str = "the dataset") -> "SyncPairConfig | None":
        """``True`` -> defaults, ``False``/``None`` -> off, a dict -> validated fields, a config -> itself."""
        from pinlite_edge.data.options import toggle_config

        if value is None or value is False:
            return None
        return toggle_config(cls, value, "sync_pairs", where)


_DEFAULTS = {"shifts": list(DEFAULT_SHIFTS), "shifts_per_window": None,
             "far_shift_range": [MAX_OFFSET + 1, 25], "far_per_window": 2, "swaps_per_window": 2,
             "rewrites_per_window": 0, "include_real": True, "seed": 0}


@dataclass(frozen=True)
class SourceClip:
    path: Path
    clip_name: str  # stable name used in clip ids (relative path)
    duration: float
    fps: float
    speaker_group: str | None = None  # clips of one group are the same speaker (None: unknown)


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little"))


def _swap_candidates(sources: list[SourceClip], i: int, among: list[int] | None = None) -> list[int]:
    """Other clips (of ``among``: the usable ones), preferring another speaker when speaker groups are known."""
    me = sources[i].speaker_group
    others = [j for j in (range(len(sources)) if among is None else among) if j != i]
    if me is None:
        return others
    different = [j for j in others if sources[j].speaker_group != me]
    return different or others


def _far_shifts(cfg: SyncPairConfig, start: float, src: SourceClip, window: float) -> list[int]:
    """Far shifts whose audio window stays inside the clip."""
    lo, hi = cfg.far_shift_range
    tol = 1e-6
    out = []
    for mag in range(lo, hi + 1):
        for k in (mag, -mag):
            a0 = start - k / src.fps
            if a0 >= -tol and a0 + window <= src.duration + tol:
                out.append(k)
    return out


def sync_pair_refs(sources: list[SourceClip], contract: InputContract, config: SyncPairConfig | None = None,
                   stride_seconds: float | None = None) -> list[WindowRef]:
    """Window references (real + near shifts + far shifts + swaps + rewrites) for in-sync ``sources``."""
    cfg = config or SyncPairConfig()
    shift_manip, swap_manip = manipulation_index("audio_shift"), manipulation_index("audio_swap")
    rewrite_manip = manipulation_index("both_replace")
    win = contract.window_seconds
    inners: dict[int, list[float]] = {}  # the usable clips' window starts (a clip too short is skipped entirely:
    for i, src in enumerate(sources):    # neither windows of its own nor audio for another clip's swaps)
        margin = cfg.max_near_shift / src.fps
        try:
            inners[i] = window_starts(src.duration - 2 * margin, contract, stride_seconds, fps=src.fps,
                                      source=str(src.path))
        except InputError as exc:
            log.warning("skipping %s for sync pairs: %s", src.path, exc)
    usable = list(inners)
    swaps = cfg.swaps_per_window if len(usable) >= 2 else 0
    rewrites = cfg.rewrites_per_window if len(usable) >= 2 else 0
    if (cfg.swaps_per_window or cfg.rewrites_per_window) and len(usable) < 2:
        log.warning("audio_swap and rewrite fakes need at least 2 usable clips; generating none for this split")
    refs: list[WindowRef] = []
    no_far = 0
    for i in usable:
        src, inner = sources[i], inners[i]
        margin = cfg.max_near_shift / src.fps
        candidates = _swap_candidates(sources, i, usable)
        partners = ([sources[int(o)] for o in _rng(cfg.seed, f"{src.clip_name}#rewrite").choice(
            np.asarray(candidates), size=min(rewrites, len(candidates)), replace=False)] if rewrites else [])
        for s in (round(margin + x, 6) for x in inner):
            base = f"{src.clip_name}@{s:.2f}"
            if cfg.include_real:
                refs.append(WindowRef(src.path, s, 0, 0, IN_SYNC, base))
            rng = _rng(cfg.seed, base)
            if cfg.near_per_window:
                for k in rng.choice(np.asarray(cfg.shifts), size=cfg.near_per_window, replace=False):
                    k = int(k)
                    refs.append(WindowRef(src.path, s, 1, shift_manip, k + MAX_OFFSET, f"{base}#shift{k:+d}",
                                          audio_shift_frames=k))
            if cfg.far_per_window:
                far = _far_shifts(cfg, s, src, win)
                if len(far) < cfg.far_per_window:
                    no_far += 1
                if far:
                    for k in rng.choice(np.asarray(far), size=min(cfg.far_per_window, len(far)), replace=False):
                        k = int(k)
                        refs.append(WindowRef(src.path, s, 1, shift_manip, OFFSET_IGNORE_INDEX, f"{base}#far{k:+d}",
                                              audio_shift_frames=k))
            if swaps:
                picks = rng.choice(np.asarray(candidates), size=min(swaps, len(candidates)), replace=False)
                for j, o in enumerate(picks):
                    other = sources[int(o)]
                    refs.append(WindowRef(src.path, s, 1, swap_manip, OFFSET_IGNORE_INDEX,
                                          f"{base}#swap{j}:{other.clip_name}", audio_path=other.path))
            for j, other in enumerate(partners):
                refs.append(WindowRef(src.path, s, 1, rewrite_manip, OFFSET_IGNORE_INDEX,
                                      f"{base}#rewrite{j}:{other.clip_name}", audio_path=other.path, rewrite=True))
    if no_far:
        log.info("sync pairs: %d window(s) got fewer than %d far shifts (clip too short for shifts of %d-%d frames)",
                 no_far, cfg.far_per_window, *cfg.far_shift_range)
    return refs
