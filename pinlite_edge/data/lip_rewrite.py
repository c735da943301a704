"""A classical audio-driven lip-sync fake made from one real clip: "Video Rewrite" by retrieval.

Lip-sync generators (Wav2Lip and its successors) redraw a speaker's mouth to follow new audio, so their fakes are
roughly *in sync*: an audio shift or a swapped track, the manipulations the rest of the evaluation uses, is the easy
case. No generator ships here and nothing may be downloaded, but the oldest one can be built from the footage
itself: Video Rewrite (Bregler, Covell & Slaney, SIGGRAPH 1997) re-orders a speaker's own mouth images so that they
follow new audio, and blends them into the original face. This module does that on prepared clips
(:class:`~pinlite_edge.features.windows.PreparedClip`: face crops at the clip's rate plus 16 kHz audio):

1. **Audio features per video frame** -- MFCCs as SPEC §1 computes them (``python_speech_features``), normalised
   over the whole track (so two speakers' tracks are comparable), averaged over each frame's 1/fps and stacked over
   ``context_frames`` frames on each side (about the span of a phoneme and its neighbours, as Video Rewrite's
   triphones).
2. **Retrieval** -- for every output frame ``t``, one of the clip's own frames is chosen: the path through the
   clip's frames that minimises the audio-match cost (driving features at ``t`` against the clip's features at the
   chosen frame) plus a concatenation cost at every jump (``jump_cost``, plus ``visual_cost`` times how different
   the jumped-to mouth looks from the natural next frame), found exactly by dynamic programming (Viterbi: time
   grows with the cube of the clip's frames, about 0.5 s for an 8 s clip; memory with their square). Runs of
   consecutive frames cost nothing extra, so the mouth moves naturally between jumps. Costs are in units of their
   medians, so the defaults do not depend on the clip's loudness or resolution.
3. **Blending** -- the chosen frame's pixels replace the original's over the rows that a Wav2Lip-style generator
   redraws: the lower half of the face box (from the box's centre to its bottom edge, :func:`lower_face_rows`, in
   the mouth crop's coordinates: rows 0 to 0.8 of today's crop, so every row but the chin's bottom and the neck),
   with a linear ramp over ``ramp`` of the crop's height beyond each edge. What lies below the face box stays the
   original's at its own time, so the seam moves with the head as a generator's does.

The result is a new clip with the driving audio and the rewritten frames (:func:`rewrite_clip`), plus diagnostics
(:class:`RewriteResult`): how well the chosen frames' own audio matches the driving audio compared with the
original frames (the "swap" fake that uses the same audio), and how often the path jumps.

It is a crude generator: the database is one clip's frames (a few seconds), so visemes the speaker never made are
approximated, and jumps are not morphed. It is an honest lower bound of what a lip-sync fake can look like, not a
stand-in for any modern generator. The defaults were set from these principles, not from any detector's scores.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import InputError
from pinlite_edge.features.facecrop import LUMA_WEIGHTS, FaceCropConfig
from pinlite_edge.features.mfcc import normalise_mfcc, raw_mfcc
from pinlite_edge.features.windows import PreparedClip

log = logging.getLogger(__name__)

_GREY = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
#: side (px) of the grey thumbnails of the mouth region that the concatenation cost compares
_THUMB = 16
#: bump when the algorithm changes in a way its config does not show, so cached rewrites are not reused
REWRITE_VERSION = 1


def lower_face_rows(crop: FaceCropConfig | None = None) -> tuple[float, float]:
    """The lower half of the face box (its centre to its bottom edge), as fractions of the mouth crop's height,
    clipped to the crop: where a generator that redraws the lower face (Wav2Lip) pastes, in crop coordinates."""
    crop = crop or FaceCropConfig()
    top_of_crop = crop.crop_centre_y - crop.crop_size / 2  # in face-box sides below the box centre
    rows = ((0.0 - top_of_crop) / crop.crop_size, (0.5 - top_of_crop) / crop.crop_size)
    return (min(max(rows[0], 0.0), 1.0), min(max(rows[1], 0.0), 1.0))


_LOWER_FACE = lower_face_rows()


@dataclass(frozen=True)
class RewriteConfig:
    """Knobs of the retrieval and the blend (see the module docstring)."""

    #: video frames of audio context on each side of a frame when matching audio (2: about 200 ms in all at 25 fps)
    context_frames: int = 2
    #: cost of a jump (any step but "the next frame"), in units of the median audio-match cost
    jump_cost: float = 1.0
    #: weight of the appearance difference between the jumped-to frame and the natural next one (units: its median)
    visual_cost: float = 1.0
    #: the band of crop rows (fractions of its height) that is pasted: by default the face box's lower half
    paste_top: float = _LOWER_FACE[0]
    paste_bottom: float = _LOWER_FACE[1]
    #: fraction of the crop's height beyond each edge of the band over which the blend ramps down to the original
    ramp: float = 0.05

    def __post_init__(self) -> None:
        problems = []
        if self.context_frames < 0:
            problems.append(f"context_frames must be >= 0, got {self.context_frames}")
        if self.jump_cost < 0 or self.visual_cost < 0:
            problems.append(f"jump_cost and visual_cost must be >= 0, got {self.jump_cost}, {self.visual_cost}")
        if not 0.0 <= self.paste_top < self.paste_bottom <= 1.0 or not 0.0 <= self.ramp <= 0.5:
            problems.append(f"need 0 <= paste_top < paste_bottom <= 1 and 0 <= ramp <= 0.5, got paste_top="
                            f"{self.paste_top}, paste_bottom={self.paste_bottom}, ramp={self.ramp}")
        if problems:
            raise InputError("invalid RewriteConfig: " + "; ".join(problems))


@dataclass
class RewriteResult:
    """A rewritten clip and how it was made.

    ``source_frames[t]``: the clip frame whose lower face was pasted at ``t``. ``match_cost``: the mean audio-match
    cost along that path, and ``swap_match_cost`` the same for the original frames (``source_frames[t] = t``, the
    swapped-audio fake): lower means the mouth follows the driving audio more closely (units: the median cost).
    ``jump_rate``: fraction of steps that are not "the next frame".
    """

    clip: PreparedClip
    source_frames: np.ndarray
    match_cost: float
    swap_match_cost: float
    jump_rate: float


def driving_track(audio: np.ndarray, num_samples: int) -> np.ndarray:
    """``audio`` cut, or repeated end to end, to exactly ``num_samples`` samples (float32)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise InputError(f"driving audio must be non-empty mono (samples,), got shape {audio.shape}")
    if num_samples <= 0:
        raise InputError(f"num_samples must be positive, got {num_samples}")
    reps = -(-num_samples // audio.size)
    return np.tile(audio, reps)[:num_samples]


def frame_audio_features(audio: np.ndarray, contract: InputContract, fps: float, num_frames: int,
                         context_frames: int) -> np.ndarray:
    """Per video frame, the track-normalised MFCCs averaged over the frame's 1/fps, stacked with ``context_frames``
    neighbours on each side (edges repeated): ``(num_frames, (2 * context_frames + 1) * num_mfcc)``."""
    mfcc = normalise_mfcc(raw_mfcc(audio, contract))  # (steps, num_mfcc) at 1 / winstep Hz
    rate = 1.0 / contract.mfcc_winstep
    per_frame = np.empty((num_frames, mfcc.shape[1]), np.float64)
    for i in range(num_frames):
        lo = min(int(round(i / fps * rate)), mfcc.shape[0] - 1)
        hi = max(min(int(round((i + 1) / fps * rate)), mfcc.shape[0]), lo + 1)
        per_frame[i] = mfcc[lo:hi].mean(axis=0)
    c = context_frames
    padded = np.concatenate([np.repeat(per_frame[:1], c, 0), per_frame, np.repeat(per_frame[-1:], c, 0)])
    return np.concatenate([padded[k:k + num_frames] for k in range(2 * c + 1)], axis=1)


def mouth_thumbnails(frames: np.ndarray, config: RewriteConfig) -> np.ndarray:
    """Grey ``_THUMB x _THUMB`` thumbnails of each crop's pasted band (float32, 0..1)."""
    n, h, w = frames.shape[:3]
    lower = frames[:, int(h * config.paste_top):max(int(np.ceil(h * config.paste_bottom)), int(h * config.paste_top) + 1)]
    grey = lower.astype(np.float32) @ _GREY / 255.0
    rows = np.linspace(0, grey.shape[1] - 1, _THUMB).round().astype(int)
    cols = np.linspace(0, w - 1, _THUMB).round().astype(int)
    return grey[:, rows][:, :, cols].reshape(n, -1)


#: elements of the largest temporary array a pairwise distance makes (rows are done in chunks below it)
_CHUNK_ELEMENTS = 1 << 24


def pairwise_mean(x: np.ndarray, y: np.ndarray, power: int) -> np.ndarray:
    """``d[i, j] = mean(|x[i] - y[j]| ** power)`` for row vectors (power 1 or 2), a chunk of rows at a time so that
    no temporary holds more than ``_CHUNK_ELEMENTS`` values (a long clip's frames squared would not fit)."""
    out = np.empty((x.shape[0], y.shape[0]), np.result_type(x, y, np.float32))
    step = max(1, _CHUNK_ELEMENTS // max(1, y.shape[0] * y.shape[1]))
    for lo in range(0, x.shape[0], step):
        diff = np.abs(x[lo:lo + step, None, :] - y[None, :, :])
        out[lo:lo + step] = (diff if power == 1 else diff ** 2).mean(axis=2)
    return out


def _median_scaled(x: np.ndarray) -> np.ndarray:
    m = float(np.median(x))
    return x / m if m > 1e-12 else x


def transition_costs(thumbs: np.ndarray, config: RewriteConfig) -> np.ndarray:
    """``cost[i, j]`` of showing frame ``j`` after frame ``i``: 0 for ``j = i + 1``; otherwise ``jump_cost`` plus
    ``visual_cost`` times the (median-scaled) difference between ``j`` and ``i``'s natural successor."""
    n = thumbs.shape[0]
    diff = pairwise_mean(thumbs, thumbs, 1)  # (n, n) mean absolute grey difference
    off = diff[~np.eye(n, dtype=bool)]
    scale = float(np.median(off)) if off.size else 1.0
    diff = diff / scale if scale > 1e-12 else diff
    successor = np.minimum(np.arange(n) + 1, n - 1)
    cost = config.jump_cost + config.visual_cost * diff[successor]  # row i compares j with i's successor
    idx = np.arange(n - 1)
    cost[idx, idx + 1] = 0.0
    return cost


def viterbi_path(unary: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """The state sequence minimising ``sum_t unary[t, s_t] + sum_t transition[s_{t-1}, s_t]`` (exact)."""
    steps, n = unary.shape
    cost = unary[0].copy()
    back = np.empty((steps, n), np.int32)
    cols = np.arange(n)
    for t in range(1, steps):
        total = cost[:, None] + transition
        back[t] = np.argmin(total, axis=0)
        cost = total[back[t], cols] + unary[t]
    path = np.empty(steps, np.int64)
    path[-1] = int(np.argmin(cost))
    for t in range(steps - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def blend_mask(height: int, config: RewriteConfig) -> np.ndarray:
    """Per-row weight of the retrieved frame, ``(height, 1, 1)``: 1 inside the pasted band, falling linearly to 0
    over ``ramp`` beyond each of its edges."""
    rows = (np.arange(height) + 0.5) / height
    outside = np.maximum(config.paste_top - rows, rows - config.paste_bottom)  # > 0 outside the band
    if config.ramp > 0:
        w = np.clip(1.0 - outside / config.ramp, 0.0, 1.0)
    else:
        w = (outside <= 0).astype(np.float64)
    return w.astype(np.float32)[:, None, None]


def rewrite_clip(clip: PreparedClip, driving_audio: np.ndarray, contract: InputContract,
                 config: RewriteConfig | None = None) -> RewriteResult:
    """``clip``'s speaker made to follow ``driving_audio`` (same sample rate as the clip; cut or repeated to the
    clip's length), by retrieval from the clip's own frames (module docstring). Deterministic."""
    config = config or RewriteConfig()
    frames = np.asarray(clip.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise InputError(f"rewrite needs at least 2 RGB frames (N, H, W, 3), got shape {frames.shape}")
    if clip.sample_rate != contract.sample_rate:
        raise InputError(f"clip audio is {clip.sample_rate} Hz but the contract's MFCCs need {contract.sample_rate} Hz")
    n = frames.shape[0]
    num_samples = int(round(n / clip.fps * clip.sample_rate))
    own = driving_track(clip.audio, num_samples)
    driving = driving_track(driving_audio, num_samples)
    a = frame_audio_features(own, contract, clip.fps, n, config.context_frames)
    b = frame_audio_features(driving, contract, clip.fps, n, config.context_frames)
    unary = pairwise_mean(b, a, 2)  # (t, source frame)
    unary = _median_scaled(unary)
    path = viterbi_path(unary, transition_costs(mouth_thumbnails(frames, config), config))
    mask = blend_mask(frames.shape[1], config)
    out = frames.astype(np.float32) * (1.0 - mask) + frames[path].astype(np.float32) * mask
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    steps = np.arange(1, n)
    result = RewriteResult(
        clip=dataclasses.replace(clip, frames=out, audio=driving),
        source_frames=path,
        match_cost=float(unary[np.arange(n), path].mean()),
        swap_match_cost=float(unary[np.arange(n), np.arange(n)].mean()),
        jump_rate=float(np.mean(path[steps] != path[steps - 1] + 1)),
    )
    log.debug("rewrite: %d frames, match cost %.3f (original frames %.3f), jumps %.2f", n, result.match_cost,
              result.swap_match_cost, result.jump_rate)
    return result
