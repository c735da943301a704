"""Multichannel audio to mono without losing what the channels share when one of them is out of phase.

A plain mean of the channels is what the model was trained on, and it stays the mix for every track whose channels
are in phase. A channel whose polarity is inverted against the loudest channel (a wiring or editing fault, or an
evasion: right = -left plays as speech on two speakers and averages to exact silence) cancels the speech in that
mean: the detector heard silence, or only the room tone the channels share, and gave a confident "real" with no
warning. Such a channel is mixed in with its polarity flipped, with a warning.

The decision is cumulative over the chunks seen so far (correlation of each channel with the loudest, from running
sums), so a streamed track and the same samples given at once are mixed alike once the first chunk with sound is in.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: a channel whose correlation with the loudest channel is below this is out of phase (mixed in flipped). In-phase
#: and unrelated channels correlate near +1 and near 0; an inverted copy near -1.
OUT_OF_PHASE_CORRELATION = -0.5


class ChannelPolarity:
    """Running per-channel statistics of one audio track; :meth:`signs` says how to mix each new chunk."""

    def __init__(self, source: str = "audio"):
        self.source = source
        self._energy: np.ndarray | None = None  # sum of squares per channel
        self._cross: np.ndarray | None = None  # channel x channel sums of products
        #: the channels mixed in flipped (after the last chunk), against the loudest channel so far
        self.flipped: tuple[int, ...] = ()
        self._warned = False

    def signs(self, centred: np.ndarray) -> np.ndarray | None:
        """``centred``: ``(samples, channels)`` with silence at 0. Updates the statistics; returns the sign per
        channel to mix this chunk with, or None for the plain mean (one channel, no sound yet, all in phase)."""
        if centred.ndim != 2 or centred.shape[1] < 2:
            return None
        x = centred.astype(np.float64, copy=False)
        channels = x.shape[1]
        if self._energy is None or self._energy.size != channels:  # a new layout mid-stream: start over
            self._energy, self._cross = np.zeros(channels), np.zeros((channels, channels))
        assert self._cross is not None
        self._cross += x.T @ x
        self._energy = np.diag(self._cross).copy()
        ref = int(np.argmax(self._energy))
        if not self._energy[ref] > 0.0:
            return None
        scale = np.sqrt(self._energy * self._energy[ref])
        corr = np.divide(self._cross[:, ref], scale, out=np.zeros(channels), where=scale > 0)
        self.flipped = tuple(int(c) for c in np.flatnonzero(corr < OUT_OF_PHASE_CORRELATION))
        if not self.flipped:
            return None
        if not self._warned:
            self._warned = True
            names = ", ".join(str(c) for c in self.flipped)
            log.warning("%s: audio channel(s) %s are out of phase with channel %d (correlation %s); a plain mix "
                        "cancels what they share (speech), so they are mixed in with their polarity flipped",
                        self.source, names, ref, ", ".join(f"{corr[c]:.2f}" for c in self.flipped))
        signs = np.ones(channels)
        signs[list(self.flipped)] = -1.0
        return signs
