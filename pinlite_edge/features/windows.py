"""A prepared clip (cropped frames + 16 kHz audio) and the windows cut from it.

Window placement: starts at 0, ``stride`` apart, while a whole window fits; if the last window ends more than one
video frame before the clip's end, one more window aligned to the clip's end is added so the tail is scored.
A clip shorter than one window is padded (last frame repeated; the audio track read on to the window's end, zeros
where it ends) with a warning when it lasts at least ``MIN_FRACTION`` of a window; shorter than that is an error.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import InputError
from pinlite_edge.features.frames import normalise_frames, sample_indices
from pinlite_edge.features.mfcc import compute_mfcc

log = logging.getLogger(__name__)

#: A clip must last at least this fraction of one window to be padded rather than rejected.
MIN_FRACTION = 0.5


#: a window counts as showing the face when the tracker had it in at least this share of the window's frames
FACE_WINDOW_MIN = 0.5


@dataclass
class Window:
    """One model input: ``frames`` float32 (num_frames, 3, S, S), ``mfcc`` float32 (mfcc_steps, num_mfcc)."""

    frames: np.ndarray
    mfcc: np.ndarray
    start_seconds: float
    #: offset scan (:mod:`pinlite_edge.offset_scan`): float32 (len(offsets), mfcc_steps, num_mfcc), the MFCCs of the
    #: window's audio read k video frames later for each scan offset k; None when no scan was asked for
    mfcc_shifts: np.ndarray | None = None
    #: every shifted read stayed inside the audio track (False for the first / last windows of a clip)
    shifts_in_track: bool = True
    #: share of the window's frames in which the face tracker had the face (windows streamed from a file; 1.0
    #: without face crop); None: not known (arrays). Windows below FACE_WINDOW_MIN do not count in a verdict when
    #: the clip has windows with the face (``Detector``)
    face_fraction: float | None = None


@dataclass
class PreparedClip:
    """A decoded clip after face crop + resize: what the feature cache stores.

    ``frames`` uint8 (N, S, S, 3) RGB at ``fps``; ``audio`` float32 mono at the contract's sample rate.
    """

    frames: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int
    face_found: bool | None = None  # None: face crop was off; False: no face anywhere (centre crop)
    face_coverage: float | None = None  # fraction of probed frames where the tracked face was detected
    #: most faces seen at once in the face tracker's whole-image searches (None: face crop off, or not recorded);
    #: more than one: the crop follows one of them
    faces_in_view: int | None = None
    #: the audio track is digitally silent (None: not known)
    audio_silent: bool | None = None

    @property
    def video_seconds(self) -> float:
        return self.frames.shape[0] / self.fps

    @property
    def audio_seconds(self) -> float:
        return self.audio.shape[0] / self.sample_rate

    @property
    def duration(self) -> float:
        """Seconds covered by both modalities."""
        return min(self.video_seconds, self.audio_seconds)


def window_starts(duration: float, contract: InputContract, stride_seconds: float | None = None,
                  *, fps: float | None = None, source: str = "clip") -> list[float]:
    """Window start times (seconds) for a clip of ``duration`` seconds (see module doc for the rules)."""
    win = contract.window_seconds
    stride = win if stride_seconds is None else float(stride_seconds)
    if not stride > 0:
        raise InputError(f"stride_seconds must be positive, got {stride_seconds}")
    eps = 1e-6
    if duration + eps < win:
        if duration + eps < MIN_FRACTION * win:
            raise InputError(f"{source} lasts {duration:.3f} s, less than {MIN_FRACTION:g} of one "
                             f"{win:g} s window; too short to score")
        log.warning("%s lasts %.3f s, shorter than one %.2f s window: padding (last frame repeated; the audio "
                    "track is read on to the window's end, zeros where it ends)", source, duration, win)
        return [0.0]
    n = int(np.floor((duration - win) / stride + eps)) + 1
    starts = [round(i * stride, 6) for i in range(n)]
    frame = 1.0 / (fps or contract.fps)
    if duration - (starts[-1] + win) > frame - eps:
        starts.append(round(duration - win, 6))
    return starts


def audio_segment(audio: np.ndarray, start_sample: int, length: int) -> np.ndarray:
    """``audio[start:start+length]``, zero-padded where the range leaves the signal."""
    out = np.zeros(length, dtype=np.float32)
    lo, hi = max(start_sample, 0), min(start_sample + length, audio.shape[0])
    if hi > lo:
        out[lo - start_sample:hi - start_sample] = audio[lo:hi]
    return out


def shift_samples(offset_frames: int, contract: InputContract) -> int:
    """Audio samples in ``offset_frames`` video frames of the contract (640 at 16 kHz and 25 fps)."""
    return int(round(offset_frames * contract.sample_rate / contract.fps))


def shifted_mfccs(signal: np.ndarray, start_sample: int, contract: InputContract, offsets: tuple[int, ...],
                  base_mfcc: np.ndarray, *, signal_start: int = 0, total_samples: int | None = None
                  ) -> tuple[np.ndarray, bool]:
    """MFCCs of the window's audio read ``k`` frames later for each ``k`` of ``offsets`` (``k = 0`` is
    ``base_mfcc``), each computed exactly as :func:`compute_mfcc` computes a window, and whether every read stayed
    inside ``[0, total_samples)``. ``signal`` holds samples ``signal_start..``; reads outside it are zero-padded."""
    total = signal_start + signal.shape[0] if total_samples is None else total_samples
    out = np.empty((len(offsets), contract.mfcc_steps, contract.num_mfcc), np.float32)
    inside = True
    for i, k in enumerate(offsets):
        if k == 0:
            out[i] = base_mfcc
            continue
        s = start_sample + shift_samples(k, contract)
        inside = inside and s >= 0 and s + contract.window_samples <= total
        out[i] = compute_mfcc(audio_segment(signal, s - signal_start, contract.window_samples), contract)
    return out, inside


def window_at(clip: PreparedClip, contract: InputContract, start_seconds: float, *,
              audio: np.ndarray | None = None, audio_start_seconds: float | None = None,
              scan_offsets: tuple[int, ...] = ()) -> Window:
    """The window starting at ``start_seconds``; audio may come from another signal / another start (sync pairs).
    ``scan_offsets`` (validated by :func:`pinlite_edge.offset_scan.check_scan_offsets`): also the MFCCs of the audio
    shifted by each offset (``Window.mfcc_shifts``)."""
    idx = sample_indices(start_seconds, clip.fps, clip.frames.shape[0], contract)
    frames = normalise_frames(clip.frames[idx], contract)
    sig = clip.audio if audio is None else audio
    a_start = start_seconds if audio_start_seconds is None else audio_start_seconds
    s0 = int(round(a_start * clip.sample_rate))
    mfcc = compute_mfcc(audio_segment(sig, s0, contract.window_samples), contract)
    window = Window(frames=frames, mfcc=mfcc, start_seconds=float(start_seconds))
    if scan_offsets:
        window.mfcc_shifts, window.shifts_in_track = shifted_mfccs(sig, s0, contract, scan_offsets, mfcc)
    return window


def clip_windows(clip: PreparedClip, contract: InputContract, stride_seconds: float | None = None,
                 *, source: str = "clip", scan_offsets: tuple[int, ...] = ()) -> list[Window]:
    """Every window of ``clip`` in a list; refused (:class:`InputError`) when the list would exceed
    :data:`~pinlite_edge.features.limits.MAX_WINDOW_BYTES` (stream with ``open_windows`` or use a larger stride)."""
    from pinlite_edge.features.limits import MAX_WINDOW_BYTES, check_stride

    check_stride(stride_seconds)
    starts = window_starts(clip.duration, contract, stride_seconds, fps=clip.fps, source=source)
    per_window = 4 * (int(np.prod(contract.frames_shape()))
                      + int(np.prod(contract.mfcc_shape())) * max(1, len(scan_offsets)))
    if len(starts) * per_window > MAX_WINDOW_BYTES:
        raise InputError(f"{source}: {len(starts)} windows would need {len(starts) * per_window / 2**30:.1f} GiB "
                         f"(more than {MAX_WINDOW_BYTES / 2**30:.0f} GiB held at once); use a larger stride, or "
                         "pinlite_edge.features.open_windows / Detector.detect, which stream windows")
    return [window_at(clip, contract, s, scan_offsets=scan_offsets) for s in starts]
