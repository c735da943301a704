"""Training augmentation of real-video windows that keeps lip motion intact.

Every random draw is made once per window, so the 16 frames of a window get the SAME colour change and the SAME
crop (scale + small translation): what moves between frames is still only the mouth. The audio gets a gain and,
with probability ``noise_prob``, white noise at a drawn SNR, before the MFCC. A window's augmentation is a pure
function of ``(seed, epoch, index)``: a resumed run, or a DataLoader worker, draws the same one.

It is on by default for the train split of real-video datasets (``folder:``, ``lavdf:``) and off for the other
splits: ``--data-option augment=false`` turns it off, ``augment='{"min_scale": 0.9}'`` changes it.
Hooked into :class:`pinlite_edge.data.sample.WindowDataset` (the window is cut by ``features.windows.window_at``
as without augmentation; only the pixels of the cut window and the audio segment are changed).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from pinlite_edge.contract import InputContract
from pinlite_edge.data.options import coerce_option, dataclass_hints, toggle_config
from pinlite_edge.errors import DatasetError

log = logging.getLogger(__name__)

_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation (0 turns one off)."""

    #: brightness / contrast / saturation factors drawn in [1 - x, 1 + x]
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    #: crop side drawn in [min_scale, 1] of the frame, then resized back (1: no scaling)
    min_scale: float = 0.85
    #: crop centre moved by up to this fraction of the frame side (the crop stays inside the frame)
    max_translate: float = 0.05
    #: audio gain in dB, drawn in [-gain_db, +gain_db]
    gain_db: float = 6.0
    #: probability of additive white noise, and its SNR range (dB)
    noise_prob: float = 0.5
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    seed: int = 0

    def __post_init__(self) -> None:
        # the types first, by the check --data-option values go through (a number is not NaN or a string, a list
        # has its length); lists become tuples
        for name, hint in dataclass_hints(AugmentConfig).items():
            object.__setattr__(self, name, coerce_option(getattr(self, name), hint, name, "AugmentConfig"))
        problems = []
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.5 <= self.min_scale <= 1.0:
            problems.append(f"min_scale must be in [0.5, 1], got {self.min_scale}")
        if not 0.0 <= self.max_translate <= 0.25:
            problems.append(f"max_translate must be in [0, 0.25], got {self.max_translate}")
        if not 0.0 <= self.gain_db <= 40.0:
            problems.append(f"gain_db must be in [0, 40], got {self.gain_db}")
        if not 0.0 <= self.noise_prob <= 1.0:
            problems.append(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        if not -math.inf < self.noise_snr_db[0] <= self.noise_snr_db[1] < math.inf:
            problems.append(f"noise_snr_db must be a finite [lo, hi] with lo <= hi, got {list(self.noise_snr_db)}")
        if problems:
            raise DatasetError("invalid augment: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["noise_snr_db"] = list(self.noise_snr_db)
        return d

    @classmethod
    def for_split(cls, value: "bool | dict[str, Any] | AugmentConfig | None", split: str,
                  where: str = "the dataset") -> "AugmentConfig | None":
        """None (the default): on for the train split only; True/False: on/off; a dict: these settings, on."""
        if value is None:
            return cls() if split == "train" else None
        if value is False:
            return None
        return toggle_config(cls, value, "augment", where)


@dataclass(frozen=True)
class WindowAugmentation:
    """The draws of one window (what :func:`draw` returns; applied by :func:`augment_frames` / :func:`augment_audio`).

    ``crop``: ``(top, left, side)`` as fractions of the frame side."""

    brightness: float
    contrast: float
    saturation: float
    crop: tuple[float, float, float]
    gain: float
    noise_snr_db: float | None
    noise_seed: int


def augmentation_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, 0xA06, int(epoch), int(index)])


def draw(cfg: AugmentConfig, rng: np.random.Generator) -> WindowAugmentation:
    """All random choices of one window, in a fixed order."""
    b = float(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness))
    c = float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast))
    s = float(rng.uniform(1 - cfg.saturation, 1 + cfg.saturation))
    side = float(rng.uniform(cfg.min_scale, 1.0))
    room = (1.0 - side) / 2
    dy, dx = (float(v) for v in rng.uniform(-cfg.max_translate, cfg.max_translate, size=2))
    top = min(max(room + dy, 0.0), 1.0 - side)
    left = min(max(room + dx, 0.0), 1.0 - side)
    gain = float(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
    noisy = bool(rng.random() < cfg.noise_prob)
    snr = float(rng.uniform(*cfg.noise_snr_db))
    return WindowAugmentation(b, c, s, (top, left, side), gain, snr if noisy else None,
                              int(rng.integers(0, 2**31 - 1)))


def augment_frames(frames: np.ndarray, aug: WindowAugmentation, contract: InputContract) -> np.ndarray:
    """Normalised float32 ``(T, 3, S, S)`` frames -> the same with one colour change and one crop for all T."""
    mean = np.asarray(contract.mean, np.float32)[None, :, None, None]
    std = np.asarray(contract.std, np.float32)[None, :, None, None]
    x = frames * std + mean  # [0, 1] RGB
    x = x * np.float32(aug.brightness)
    grey = np.einsum("tchw,c->thw", x, _LUMA)[:, None]
    x = (x - grey.mean()) * np.float32(aug.contrast) + grey.mean()
    grey = np.einsum("tchw,c->thw", x, _LUMA)[:, None]
    x = grey + (x - grey) * np.float32(aug.saturation)
    x = np.clip(x, 0.0, 1.0)
    size = x.shape[-1]
    top, left, side = aug.crop
    if side < 1.0 or top > 0 or left > 0:
        y0, x0 = int(round(top * size)), int(round(left * size))
        n = max(2, min(int(round(side * size)), size - max(y0, x0)))
        t = torch.from_numpy(np.ascontiguousarray(x[:, :, y0:y0 + n, x0:x0 + n]))
        x = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=False).numpy()
    return np.ascontiguousarray(((x - mean) / std).astype(np.float32))


def augment_audio(segment: np.ndarray, aug: WindowAugmentation) -> np.ndarray:
    """A window's audio (float32 samples) with the gain and, if drawn, white noise at the drawn SNR."""
    out = segment.astype(np.float32) * np.float32(aug.gain)
    if aug.noise_snr_db is not None:
        rms = float(np.sqrt(np.mean(out.astype(np.float64) ** 2))) if out.size else 0.0
        if rms > 0:
            noise = np.random.default_rng(aug.noise_seed).standard_normal(out.shape).astype(np.float32)
            out = out + noise * np.float32(rms / 10 ** (aug.noise_snr_db / 20))
    return out


def _nested_datasets(dataset: Any) -> Iterator[Any]:
    """``dataset`` and every dataset under it (through training wrappers' ``base``/``source`` and mixes' ``parts``),
    each once."""
    stack, seen = [dataset], set()
    while stack:
        d = stack.pop()
        if d is None or id(d) in seen:
            continue
        seen.add(id(d))
        yield d
        stack.extend(getattr(d, "parts", None) or [])
        for attr in ("base", "source"):
            inner = getattr(d, attr, None)
            if inner is not None and not isinstance(inner, (str, bytes)):
                stack.append(inner)


def set_data_epoch(dataset: Any, seed: int, epoch: int) -> None:
    """Tell every augmenting dataset under ``dataset`` (through training wrappers and mixes) the epoch and seed."""
    for d in _nested_datasets(dataset):
        setter = getattr(d, "set_epoch", None)
        if callable(setter):
            setter(epoch, seed)


def is_augmented(dataset: Any) -> bool:
    """True when some dataset under ``dataset`` augments its samples (they change from epoch to epoch)."""
    return any(getattr(d, "augment", None) is not None and not callable(getattr(d, "augment"))
               for d in _nested_datasets(dataset))
