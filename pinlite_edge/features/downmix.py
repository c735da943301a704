"""Multichannel audio to mono without losing what the channels share when one of them is out of phase.

A plain mean of the channels is what the model was trained on, and it stays the mix wherever the channels are in
phase. A channel whose polarity is inverted against the reference channel (a wiring or editing fault, or an evasion:
right = -left plays as speech on two speakers and averages to exact silence) cancels the speech in that mean: the
detector heard silence, or only the room tone the channels share, and gave a confident "real" with no warning.

The decision is made per block of :data:`BLOCK` source samples counted from the track's first sample, on that
block's own correlation, so a streamed track and the same samples given at once are mixed alike, and a track cannot
hide inverted stretches among in-phase ones (a running decision over the whole track could be steered that way).
In a block where a channel correlates below :data:`OUT_OF_PHASE_CORRELATION` with the reference (channel 0, or the
loudest channel of a block where channel 0 is silent) it is mixed in flipped. :meth:`PolarityMix.warning` says how
many blocks were, once the track is done.
"""
from __future__ import annotations

import numpy as np

#: source samples per mixing decision (0.17 s at 48 kHz, 0.5 s at 16 kHz)
BLOCK = 8192
#: a channel whose correlation with the reference channel is below this is out of phase. In-phase and unrelated
#: channels correlate near +1 and near 0; an inverted copy near -1.
OUT_OF_PHASE_CORRELATION = -0.5


def polarity_signs(block: np.ndarray) -> np.ndarray | None:
    """The sign to mix each channel of one ``(samples, channels)`` block with (silence at 0), or None for the plain
    mean (one channel, no sound, all in phase)."""
    if block.ndim != 2 or block.shape[1] < 2 or not block.size:
        return None
    x = block.astype(np.float64, copy=False)
    energy = np.einsum("ij,ij->j", x, x)
    ref = 0 if energy[0] > 0.0 else int(np.argmax(energy))
    if not energy[ref] > 0.0:
        return None
    scale = np.sqrt(energy * energy[ref])
    corr = np.divide(x.T @ x[:, ref], scale, out=np.zeros(x.shape[1]), where=scale > 0)
    flipped = corr < OUT_OF_PHASE_CORRELATION
    if not flipped.any():
        return None
    return np.where(flipped, -1.0, 1.0)


class PolarityMix:
    """Counts the blocks of one track mixed with a channel flipped (for the warning)."""

    def __init__(self, source: str = "audio"):
        self.source = source
        self.blocks = 0
        self.flipped_blocks = 0
        self.flipped_channels: set[int] = set()

    def signs(self, block: np.ndarray) -> np.ndarray | None:
        """:func:`polarity_signs` of the next block of the track, counted."""
        signs = polarity_signs(block)
        self.blocks += 1
        if signs is not None:
            self.flipped_blocks += 1
            self.flipped_channels.update(int(c) for c in np.flatnonzero(signs < 0))
        return signs

    def warning(self) -> str | None:
        """The message for a track with flipped blocks, None without."""
        if not self.flipped_blocks:
            return None
        names = ", ".join(str(c) for c in sorted(self.flipped_channels))
        return (f"{self.source}: audio channel(s) {names} out of phase in {self.flipped_blocks} of {self.blocks} "
                f"blocks of {BLOCK} samples; a plain mix cancels what the channels share (speech), so there they "
                "are mixed in with their polarity flipped")
