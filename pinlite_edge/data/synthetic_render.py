"""Drawing primitives of the synthetic talking-face generator: speech-like content tracks, audio, faces.

A clip is made of one *speaker* (voice and face, fixed for the clip) and *content tracks* (what is said: a syllabic
voiced envelope, fricative bursts and a vowel colour), sampled on a control grid of ``CTRL_RATE`` Hz. The audio is
rendered from one content track and the mouth from another; in a real clip they are the same track, so the mouth
opening in frame ``t`` equals the voiced envelope at the frame's timestamp. Every function here is vectorised numpy
or a handful of OpenCV primitives per frame, and draws all randomness from the generator it is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

from pinlite_edge.utils.opencv import cv2

#: Control rate of the content tracks (Hz). 2 ms resolution is far finer than a 40 ms video frame or 10 ms MFCC hop.
CTRL_RATE = 500.0
#: Sub-pixel precision of OpenCV drawing (coordinates are multiplied by 2**_SHIFT).
_SHIFT = 4
_SCALE = float(1 << _SHIFT)


@dataclass
class ContentTrack:
    """What is said, on the control grid: voiced envelope in [0, 1], fricative bursts, vowel colour in [0, 1]."""

    voiced: np.ndarray
    burst: np.ndarray
    vowel: np.ndarray

    def mix(self, other: "ContentTrack", weight: np.ndarray) -> "ContentTrack":
        """``(1 - weight) * self + weight * other`` for every component (a cross-faded splice)."""
        w = weight.astype(np.float32)
        return ContentTrack(
            voiced=self.voiced + w * (other.voiced - self.voiced),
            burst=self.burst + w * (other.burst - self.burst),
            vowel=self.vowel + w * (other.vowel - self.vowel),
        )


@dataclass
class Speaker:
    """Per-clip voice parameters, shared by every content track of the clip."""

    f0_hz: float
    pitch_depth: float
    syllable_rate_hz: float
    formants_a: tuple[tuple[float, float], ...]
    formants_b: tuple[tuple[float, float], ...]
    snr_db: float
    gain: float


def draw_speaker(rng: np.random.Generator, syllable_rate: tuple[float, float], snr_db: tuple[float, float]) -> Speaker:
    """A random voice: pitch, speaking rate, two vowel formant sets, background-noise level."""
    f0 = float(rng.uniform(90.0, 240.0))
    # Open vowel (high F1) and a closed one (low F1, F2 front or back): the vowel track mixes between them.
    fa = ((float(rng.uniform(650, 850)), 90.0), (float(rng.uniform(1100, 1400)), 110.0),
          (float(rng.uniform(2400, 2800)), 160.0))
    f2b = float(rng.uniform(1900, 2300)) if rng.random() < 0.5 else float(rng.uniform(750, 950))
    fb = ((float(rng.uniform(280, 400)), 70.0), (f2b, 110.0), (float(rng.uniform(2500, 3000)), 160.0))
    return Speaker(
        f0_hz=f0,
        pitch_depth=float(rng.uniform(0.05, 0.15)),
        syllable_rate_hz=float(rng.uniform(*syllable_rate)),
        formants_a=fa,
        formants_b=fb,
        snr_db=float(rng.uniform(*snr_db)),
        gain=float(rng.uniform(0.3, 0.8)),
    )


def draw_content(rng: np.random.Generator, n_ctrl: int, speaker: Speaker, pause_prob: float = 0.15) -> ContentTrack:
    """A stationary syllabic content track of ``n_ctrl`` control samples (vectorised).

    Syllable onsets form a renewal process (intervals 0.6-1.4x the mean at the speaker's rate) started before the
    track so that every position is statistically alike; each syllable is a smooth attack/decay bump shorter than its
    interval (so syllables never overlap), some are silent (pauses), some are preceded by a fricative noise burst.
    """
    period = CTRL_RATE / speaker.syllable_rate_hz
    n_syl = int(np.ceil((n_ctrl + 1.4 * period) / (0.6 * period))) + 1
    u = rng.random((7, n_syl))
    intervals = period * (0.6 + 0.8 * u[0])
    onsets = -1.4 * period * u[1, 0] + np.concatenate([[0.0], np.cumsum(intervals[:-1])])
    amp = np.where(u[2] < pause_prob, 0.0, 0.35 + 0.65 * u[3])
    dur = intervals * (0.55 + 0.4 * u[4])
    attack = dur * (0.2 + 0.2 * u[5])
    vowel_val = u[6]
    ub = rng.random((3, n_syl))
    burst_amp = np.where((ub[0] < 0.4) & (amp > 0), 0.1 + 0.3 * ub[1], 0.0)
    burst_len = CTRL_RATE * (0.03 + 0.04 * ub[2])

    grid = np.arange(n_ctrl, dtype=np.float64)
    j = np.clip(np.searchsorted(onsets, grid, side="right") - 1, 0, n_syl - 1)
    x = grid - onsets[j]
    a_j, d_j = attack[j], dur[j]
    rise = np.sin(0.5 * np.pi * np.clip(x / a_j, 0.0, 1.0)) ** 2
    fall = np.cos(0.5 * np.pi * np.clip((x - a_j) / (d_j - a_j), 0.0, 1.0)) ** 2
    voiced = amp[j] * np.where(x < a_j, rise, fall) * (x >= 0)
    # Bursts start burst_len before an onset and end 0.3*attack after it; each sample belongs to the latest start.
    b_start = onsets - burst_len
    b_total = burst_len + 0.3 * attack
    order = np.argsort(b_start, kind="stable")
    jb = order[np.clip(np.searchsorted(b_start[order], grid, side="right") - 1, 0, n_syl - 1)]
    xb = (grid - b_start[jb]) / b_total[jb]
    burst = np.where((xb >= 0) & (xb <= 1), burst_amp[jb] * np.sin(np.pi * np.clip(xb, 0.0, 1.0)), 0.0)
    # Vowel colour: per-syllable value, box-smoothed over ~30 ms (articulators move continuously).
    half = max(int(0.015 * CTRL_RATE), 1)
    csum = np.concatenate([[0.0], np.cumsum(np.pad(vowel_val[j], half, mode="edge"))])
    vowel = (csum[2 * half + 1:] - csum[:-2 * half - 1]) / (2 * half + 1)
    return ContentTrack(voiced=voiced.astype(np.float32), burst=burst.astype(np.float32),
                        vowel=vowel.astype(np.float32))


def segment_weight(n_ctrl: int, start_s: float, end_s: float, ramp_s: float) -> np.ndarray:
    """A smooth indicator of ``[start_s, end_s)`` on the control grid (raised-cosine ramps of ``ramp_s``)."""
    t = np.arange(n_ctrl, dtype=np.float32) / CTRL_RATE
    ramp = max(ramp_s, 1e-3)
    up = np.clip((t - start_s) / ramp + 0.5, 0.0, 1.0)
    down = np.clip((end_s - t) / ramp + 0.5, 0.0, 1.0)
    w = np.minimum(up, down)
    return (0.5 - 0.5 * np.cos(np.pi * w)).astype(np.float32)


def _resonator_sos(formants: tuple[tuple[float, float], ...], sr: int) -> np.ndarray:
    """Cascade of two-pole resonators (centre frequency, bandwidth) as second-order sections."""
    sos = []
    for freq, bw in formants:
        r = np.exp(-np.pi * bw / sr)
        theta = 2 * np.pi * freq / sr
        a1, a2 = -2 * r * np.cos(theta), r * r
        sos.append([1.0 + a1 + a2, 0.0, 0.0, 1.0, a1, a2])  # unity gain at DC
    return np.asarray(sos, dtype=np.float64)


_NOISE_BANK_SIZE = 1 << 21
_NOISE_BANK_SCALE = 64.0
_noise_bank: np.ndarray | None = None


def noise_bank() -> np.ndarray:
    """A fixed bank of standard-normal noise (int16, times ``_NOISE_BANK_SCALE``) built once from a fixed seed.

    Clips take random slices of it: drawing fresh Gaussian noise for every pixel and sample is the slowest part of
    generation, and a slice at a random offset is just as good for a noise floor.
    """
    global _noise_bank
    if _noise_bank is None:
        bank = np.random.default_rng(0x5EED).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32) * _NOISE_BANK_SCALE
        _noise_bank = np.clip(np.round(bank), -32767, 32767).astype(np.int16)
    return _noise_bank


def noise_slice(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` values of the noise bank (int16, std ``_NOISE_BANK_SCALE``) from a random offset."""
    bank = noise_bank()
    if n > bank.size:
        reps = int(np.ceil(n / bank.size))
        return np.tile(bank, reps)[:n]
    off = int(rng.integers(0, bank.size - n + 1))
    return bank[off:off + n]


def render_audio(rng: np.random.Generator, track: ContentTrack, speaker: Speaker, n_samples: int,
                 sr: int) -> np.ndarray:
    """Speech-like audio for ``n_samples`` samples at ``sr`` Hz following ``track`` (on the control grid).

    Voiced part: a sawtooth glottal source at a slowly wandering pitch, shaped by two vowel formant filters mixed by
    the vowel track, times the voiced envelope. Plus high-passed noise times the burst track, plus background noise at
    the speaker's SNR. Returns float32 in [-1, 1].
    """
    n_ctrl = track.voiced.shape[0]
    t_ctrl = np.arange(n_ctrl, dtype=np.float64) / CTRL_RATE
    t_audio = np.arange(n_samples, dtype=np.float64) / sr
    env = np.interp(t_audio, t_ctrl, track.voiced)
    bur = np.interp(t_audio, t_ctrl, track.burst)
    vow = np.interp(t_audio, t_ctrl, track.vowel)
    # Pitch contour (on the control grid): a few slow random sinusoids plus a gentle declination.
    freqs = rng.uniform(0.5, 3.0, size=(3, 1))
    phases = rng.uniform(0, 2 * np.pi, size=(3, 1))
    wander = np.sin(2 * np.pi * freqs * t_ctrl[None, :] + phases).mean(axis=0)
    f0_ctrl = speaker.f0_hz * np.exp(speaker.pitch_depth * wander) * (1.0 - 0.05 * t_ctrl / max(t_ctrl[-1], 1e-3))
    phase = np.cumsum(np.interp(t_audio, t_ctrl, f0_ctrl) / sr) + rng.random()
    noise = noise_slice(rng, 3 * n_samples).astype(np.float32) * np.float32(1.0 / _NOISE_BANK_SCALE)
    source = 2.0 * (phase % 1.0) - 1.0 + 0.05 * noise[:n_samples]  # glottal sawtooth + aspiration
    ya = sps.sosfilt(_resonator_sos(speaker.formants_a, sr), source)
    yb = sps.sosfilt(_resonator_sos(speaker.formants_b, sr), source)
    ya /= np.sqrt(np.mean(ya * ya)) + 1e-9
    yb /= np.sqrt(np.mean(yb * yb)) + 1e-9
    voiced = (ya + vow * (yb - ya)) * env
    fric = np.diff(noise[n_samples:2 * n_samples], prepend=np.float32(0.0))  # first difference: a cheap high-pass
    fric /= np.sqrt(np.mean(fric * fric)) + 1e-9
    speech = voiced + 1.5 * fric * bur
    # Background noise relative to the loudness of an active syllable, so the SNR does not depend on the content.
    bg = noise[2 * n_samples:] * (10.0 ** (-speaker.snr_db / 20.0)) * 0.5
    out = speaker.gain * 0.25 * (speech + bg)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


@dataclass
class Face:
    """Per-clip look: background, skin, face geometry, eye/mouth colours."""

    background: np.ndarray  # (S, S, 3) uint8, RGB
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lips: tuple[float, float, float]
    cavity: tuple[float, float, float]
    center: tuple[float, float]
    axes: tuple[float, float]
    mouth_width: float
    mouth_max_open: float
    brightness: float


def draw_face(rng: np.random.Generator, size: int) -> Face:
    """A random face on a random textured background, in pixels of a ``size`` x ``size`` frame."""
    # Background: a base colour plus low-frequency colour texture plus a linear gradient.
    base = rng.uniform(20, 235, size=3)
    grid = int(rng.integers(2, 7))
    tex = rng.uniform(-1, 1, size=(grid, grid, 3)).astype(np.float32)
    tex = cv2.resize(tex, (size, size), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    grad = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    bg = base[None, None, :] + rng.uniform(10, 45) * tex + rng.uniform(0, 30) * grad[:, :, None]
    if rng.random() < 0.4:  # stripes
        period = rng.uniform(0.08, 0.3) * size
        stripes = np.sin(2 * np.pi * (np.arange(size) / period))[None, :, None] * rng.uniform(5, 25)
        bg = bg + (stripes if rng.random() < 0.5 else stripes.transpose(1, 0, 2))
    background = np.clip(bg, 0, 255).astype(np.uint8)
    # Skin tone: interpolate between a dark and a light tone, with a little hue noise.
    tone = rng.random()
    skin = np.array([95, 60, 45]) + tone * np.array([150, 150, 140]) + rng.uniform(-12, 12, size=3)
    hair = rng.uniform(10, 120, size=3) * rng.uniform(0.3, 1.0)
    lips = skin * np.array([0.8, 0.5, 0.5]) + np.array([40, 0, 10])
    cavity = rng.uniform(10, 40) * np.array([1.0, 0.35, 0.45])
    # A talking-head crop is mostly lower face: a large face centred above the frame centre, so the mouth sits at
    # about 2/3 of the height and spans roughly a third of the width (the cue the detector needs stays visible at
    # the tiny preset's 64 px).
    ax = size * rng.uniform(0.40, 0.46)
    ay = ax * rng.uniform(1.15, 1.3)
    cx = size * (0.5 + rng.uniform(-0.04, 0.04))
    cy = size * (0.38 + rng.uniform(-0.03, 0.03))
    return Face(
        background=background,
        skin=tuple(np.clip(skin, 0, 255).tolist()),
        hair=tuple(np.clip(hair, 0, 255).tolist()),
        lips=tuple(np.clip(lips, 0, 255).tolist()),
        cavity=tuple(np.clip(cavity, 0, 255).tolist()),
        center=(float(cx), float(cy)),
        axes=(float(ax), float(ay)),
        mouth_width=float(ax * rng.uniform(0.42, 0.52)),
        mouth_max_open=float(ay * rng.uniform(0.32, 0.40)),
        brightness=float(rng.uniform(0.85, 1.12)),
    )


def smooth_motion(rng: np.random.Generator, n: int, amplitude: float, fps: float) -> np.ndarray:
    """``(n, 2)`` head offsets in pixels: slow random sinusoids (0.2-1.5 Hz) with peak about ``amplitude``."""
    if amplitude <= 0:
        return np.zeros((n, 2), np.float32)
    t = np.arange(n, dtype=np.float32)[:, None, None] / fps
    freqs = rng.uniform(0.2, 1.5, size=(1, 2, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(1, 2, 3))
    weights = rng.uniform(0.3, 1.0, size=(1, 2, 3))
    motion = (weights * np.sin(2 * np.pi * freqs * t + phases)).sum(axis=2) / weights.sum(axis=2)
    return (amplitude * motion).astype(np.float32)


def blink_track(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """``(n,)`` eye openness in [0.1, 1]: closed for 2-3 frames at random blink times (~0.3 Hz)."""
    open_ = np.ones(n, np.float32)
    t = -float(rng.uniform(0, 4.0)) * fps
    while t < n:
        t += float(rng.exponential(3.0)) * fps + 2
        start = int(t)
        length = int(rng.integers(2, 4))
        if start < n:
            open_[max(start, 0):min(start + length, n)] = 0.1
    return open_


def _ellipse(img: np.ndarray, center: tuple[float, float], axes: tuple[float, float],
             color: tuple[float, ...], angle: float = 0.0) -> None:
    cv2.ellipse(img, (int(center[0] * _SCALE + 0.5), int(center[1] * _SCALE + 0.5)),
                (int(axes[0] * _SCALE + 0.5), int(axes[1] * _SCALE + 0.5)), angle, 0, 360, color, -1, cv2.LINE_AA,
                _SHIFT)


def render_frames(face: Face, mouth_open: np.ndarray, mouth_shape: np.ndarray, motion: np.ndarray,
                  blinks: np.ndarray, tilt_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` frames; returns ``(frames uint8 (n, S, S, 3) RGB, mouth centres (n, 2) in pixels)``.

    ``mouth_open`` in [0, 1] sets the lip opening, ``mouth_shape`` in [0, 1] (vowel colour) widens/narrows the mouth.
    """
    n = mouth_open.shape[0]
    size = face.background.shape[0]
    frames = np.empty((n, size, size, 3), np.uint8)
    mouth_centers = np.empty((n, 2), np.float32)
    ax, ay = face.axes
    for i in range(n):
        img = face.background.copy()
        cx, cy = face.center[0] + float(motion[i, 0]), face.center[1] + float(motion[i, 1])
        tilt = float(tilt_deg[i])
        rad = np.deg2rad(tilt)
        cos_t, sin_t = np.cos(rad), np.sin(rad)

        def at(dx: float, dy: float) -> tuple[float, float]:
            return cx + dx * cos_t - dy * sin_t, cy + dx * sin_t + dy * cos_t

        _ellipse(img, at(0, -0.12 * ay), (ax * 1.08, ay * 1.0), face.hair, tilt)  # hair behind the face
        _ellipse(img, (cx, cy), (ax, ay), face.skin, tilt)
        eye_open = float(blinks[i])
        for side in (-1.0, 1.0):
            ec = at(side * 0.38 * ax, -0.22 * ay)
            _ellipse(img, ec, (0.2 * ax, 0.11 * ay * eye_open), (235, 235, 230), tilt)
            _ellipse(img, ec, (0.09 * ax, 0.09 * ay * eye_open), (30, 25, 20), tilt)
        _ellipse(img, at(0, 0.12 * ay), (0.07 * ax, 0.13 * ay), tuple(0.85 * c for c in face.skin), tilt)
        mc = at(0, 0.52 * ay)
        mouth_centers[i] = mc
        width = face.mouth_width * (1.12 - 0.24 * float(mouth_shape[i]))
        opening = face.mouth_max_open * float(mouth_open[i])
        lip = 0.06 * ay
        _ellipse(img, mc, (width, opening * 0.5 + lip), face.lips, tilt)
        if opening > 0.05:
            _ellipse(img, mc, (width - 0.6 * lip, opening * 0.5), face.cavity, tilt)
        frames[i] = img
    if face.brightness != 1.0:
        frames = cv2.convertScaleAbs(frames.reshape(n * size, size, 3), alpha=face.brightness).reshape(frames.shape)
    return frames, mouth_centers


def degrade_frames(rng: np.random.Generator, frames: np.ndarray, blur_sigma: float, noise_std: float) -> np.ndarray:
    """Gaussian blur (sigma in pixels, kernel truncated at 2 sigma) and additive Gaussian pixel noise (std in 0-255
    units, from the noise bank)."""
    if blur_sigma >= 0.3:
        ksize = 2 * int(np.ceil(2.0 * blur_sigma)) + 1
        for i in range(frames.shape[0]):
            frames[i] = cv2.GaussianBlur(frames[i], (ksize, ksize), blur_sigma)
    if noise_std > 0:
        noise = noise_slice(rng, frames.size).reshape(frames.shape)
        # int32 fixed point: noise * round(std * 256 / scale) >> 8
        gain = int(round(noise_std * 256.0 / _NOISE_BANK_SCALE))
        noisy = frames.astype(np.int32) + ((noise.astype(np.int32) * gain) >> 8)
        frames = np.clip(noisy, 0, 255).astype(np.uint8)
    return frames
