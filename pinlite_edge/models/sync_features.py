"""Lagged mouth-motion / audio-energy correlations of one window: the classical synchrony cue as a model input.

The training-free baseline of ``benchmarks/sync_baseline.py`` (FaceSync / Hershey & Movellan style: the mouth moves
while the voice is loud) beats models that must discover lip-audio synchrony from 19-22 real training speakers
(``benchmarks/results/real_faces_cv/``). :class:`LaggedSyncFeatures` computes that cue inside the graph from the
model's own inputs, with no weights, so a model can learn how far to trust it beside its attention evidence:

- **mouth motion** per frame: the mean absolute grey-level change to the previous frame in the lower centre of the
  mouth crop (the baseline's region of interest, ``features.facecrop.MOUTH_ROI_ROWS`` / ``MOUTH_ROI_COLS``). The
  frames arrive normalised per channel (``(x - mean) / std``), so the grey weights are multiplied by ``std``; the
  mean cancels in a difference. Frame 0 copies frame 1.
- **audio energy** per frame: the first MFCC coefficient (python_speech_features' log frame energy) averaged over the
  ``mfcc_steps / num_frames`` MFCC steps of each video frame. With ``learned_audio`` it is a learned weighting of all
  the coefficients instead (one weight per coefficient, starting at the first alone): the baseline's speech-band
  energy correlates better with lip motion than whole-band energy, and the per-window normalised MFCCs cannot give
  that band directly, so the model is let find its own mix.
- the Pearson correlation of ``motion[t]`` with ``energy[t + k]`` on their overlap, for ``k`` in ``-L..L``: lag
  ``k > 0`` pairs the picture with audio ``k`` frames later, the project's sign convention for a delayed track. A
  constant side (a still mouth, digital silence) gives 0, not NaN.

Only element-wise ops, slices and reductions: it exports to ONNX, ExecuTorch and TensorRT as plain float ops and has
nothing a quantiser would make int8.

:class:`SyncPeakContrast` turns those correlations into the baseline's own decision statistic (its ``sync_score``):
the best correlation at a lag beyond ``exclude_lag`` minus the correlation at lag 0. In-sync speech peaks at lag 0 and
scores low; audio shifted by more than ``exclude_lag`` frames, or another speaker's audio, does not. A small MLP on
the correlation vector can only approximate a max over lags from few examples; this gives it to the model as one
number.
"""
from __future__ import annotations

import torch
from torch import nn

from pinlite_edge.contract import InputContract
from pinlite_edge.features.facecrop import LUMA_WEIGHTS, MOUTH_ROI_COLS, MOUTH_ROI_ROWS
from pinlite_edge.models.inputs import share_rows

#: added to the correlation's denominator: a constant signal gives a correlation of 0
_EPS = 1e-6
#: lags within this many frames of 0 do not count as "another alignment" in the peak contrast (the baseline's
#: ``BaselineConfig.exclude_lag``): the correlation of a lip-motion signal with its own audio is broad around 0
EXCLUDE_LAG = 2


class LaggedSyncFeatures(nn.Module):
    """``(frames (B, T, 3, S, S), mfcc (B, M, C)) -> (B, 2 * max_lag + 1)``: correlations at lags
    ``-max_lag..max_lag``."""

    def __init__(self, contract: InputContract, max_lag: int, learned_audio: bool = False):
        super().__init__()
        t = contract.num_frames
        if not 1 <= max_lag <= t - 4:
            raise ValueError(f"sync_lags must be between 1 and {t - 4} for {t}-frame windows (each lag needs at "
                             f"least 4 frame pairs), got {max_lag}")
        if contract.mfcc_steps < t:
            raise ValueError(f"need at least one MFCC step per video frame, got {contract.mfcc_steps} for {t} frames")
        self.max_lag = int(max_lag)
        self.num_frames = t
        # learned_audio: the audio signal's weight per MFCC coefficient, starting at the first (log energy) alone
        self.audio_weights = None
        if learned_audio:
            start = torch.zeros(contract.num_mfcc)
            start[0] = 1.0
            self.audio_weights = nn.Parameter(start)
        self.steps_per_frame = contract.mfcc_steps // t
        s = contract.frame_size
        self.rows = (int(round(MOUTH_ROI_ROWS[0] * s)), int(round(MOUTH_ROI_ROWS[1] * s)))
        self.cols = (int(round(MOUTH_ROI_COLS[0] * s)), int(round(MOUTH_ROI_COLS[1] * s)))
        weights = torch.tensor(LUMA_WEIGHTS) * torch.tensor(contract.std, dtype=torch.float32)
        self.register_buffer("grey", weights.reshape(1, 1, 3, 1, 1), persistent=False)
        # every lag at once: row i pairs motion[j] with energy[j + k_i] where 0 <= j + k_i < T (mask), so one
        # gather and a few masked reductions replace a loop of slices (a small graph in every export format)
        lags = torch.arange(-self.max_lag, self.max_lag + 1)
        index = torch.arange(t)[None, :] + lags[:, None]  # (K, T)
        mask = ((index >= 0) & (index < t)).float()
        self.register_buffer("index", index.clamp(0, t - 1).reshape(-1), persistent=False)
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("count", mask.sum(dim=1), persistent=False)
        # frame t's motion is the difference t-1 -> t, frame 0 copies frame 1's: a gather, not a concatenation (the
        # XNNPACK quantizer annotates every cat, float module or not)
        self.register_buffer("motion_index", torch.tensor([0, *range(t - 1)]), persistent=False)

    @property
    def num_features(self) -> int:
        return 2 * self.max_lag + 1

    def mouth_motion(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` mean absolute grey change in the mouth region (frame 0 copies frame 1)."""
        (r0, r1), (c0, c1) = self.rows, self.cols
        roi = frames[:, :, :, r0:r1, c0:c1]
        diff = ((roi[:, 1:] - roi[:, :-1]) * self.grey).sum(dim=2).abs().mean(dim=(2, 3))
        return torch.index_select(diff, 1, self.motion_index)

    def audio_energy(self, mfcc: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` the audio signal (first MFCC coefficient, or the learned mix) averaged over each video frame's
        MFCC steps."""
        b = mfcc.shape[0]
        n = self.num_frames * self.steps_per_frame
        if self.audio_weights is None:
            signal = mfcc[:, :n, 0]
        else:
            signal = (mfcc[:, :n, :] * self.audio_weights).sum(dim=2)
        return signal.reshape(b, self.num_frames, self.steps_per_frame).mean(dim=2)

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor) -> torch.Tensor:
        """Correlations per mfcc row; a frames row may serve several consecutive mfcc rows
        (:func:`pinlite_edge.models.inputs.share_rows`)."""
        motion, energy = share_rows(self.mouth_motion(frames), mfcc.shape[0]), self.audio_energy(mfcc)
        b, t = motion.shape
        a = torch.index_select(energy, 1, self.index).reshape(b, -1, t)  # (B, K, T): energy[j + k]
        v = motion.unsqueeze(1)  # (B, 1, T)
        dv = (v - ((v * self.mask).sum(dim=2) / self.count).unsqueeze(2)) * self.mask
        da = (a - ((a * self.mask).sum(dim=2) / self.count).unsqueeze(2)) * self.mask
        den = torch.sqrt((dv * dv).sum(dim=2) * (da * da).sum(dim=2) + _EPS)
        return (dv * da).sum(dim=2) / den


class SyncPeakContrast(nn.Module):
    """``(B, 2 * max_lag + 1)`` correlations at lags ``-max_lag..max_lag`` -> ``(B, 1)``: the best correlation at
    ``|lag| > exclude_lag`` minus the correlation at lag 0 (``benchmarks/sync_baseline.py``'s ``sync_score``)."""

    def __init__(self, max_lag: int, exclude_lag: int = EXCLUDE_LAG):
        super().__init__()
        if not 0 <= exclude_lag < max_lag:
            raise ValueError(f"the peak contrast needs lags beyond exclude_lag={exclude_lag}: sync_lags must be at "
                             f"least {exclude_lag + 1}, got {max_lag}")
        self.zero = int(max_lag)
        off = [i for i, lag in enumerate(range(-max_lag, max_lag + 1)) if abs(lag) > exclude_lag]
        self.register_buffer("off_index", torch.tensor(off), persistent=False)

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        off = torch.index_select(corr, 1, self.off_index).amax(dim=1, keepdim=True)
        return off - corr[:, self.zero:self.zero + 1]
