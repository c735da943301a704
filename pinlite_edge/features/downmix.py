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

Low-frequency effects channels (LFE, LFE2) are left out of a file's mix when its layout names them, as standard
downmixes do (ITU-R BS.775; FFmpeg's ``lfe_mix_level`` 0): they carry sub-bass effects, not speech, and would add
rumble to the low MFCC bands. A layout of LFE channels alone keeps them. Arrays an app passes carry no layout: all
their channels are mixed. :class:`BlockMixer` cuts a track into those blocks and mixes them, for a
streamed file (chunk by chunk) and for an app's whole array alike.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: source samples per mixing decision (0.17 s at 48 kHz, 0.5 s at 16 kHz)
BLOCK = 8192
#: a channel whose correlation with the reference channel is below this is out of phase. In-phase and unrelated
#: channels correlate near +1 and near 0; an inverted copy near -1.
OUT_OF_PHASE_CORRELATION = -0.5
#: channel names (PyAV ``AudioLayout.channels[i].name``, FFmpeg's) of low-frequency effects channels
LFE_CHANNELS = frozenset({"LFE", "LFE2"})


def speech_channels(names: Sequence[str]) -> np.ndarray | None:
    """Indices of the channels of a layout named ``names`` to mix: all but the LFE channels (:data:`LFE_CHANNELS`);
    None for all of them (no LFE channel, or nothing but LFE channels)."""
    keep = [i for i, name in enumerate(names) if name not in LFE_CHANNELS]
    return np.array(keep, np.intp) if keep and len(keep) < len(names) else None


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

    def signs(self, block: np.ndarray, channels: np.ndarray | None = None) -> np.ndarray | None:
        """:func:`polarity_signs` of the next block of the track, counted. ``channels``: the track's channel number of
        each column of ``block`` (the warning names those), None: column ``i`` is channel ``i``."""
        signs = polarity_signs(block)
        self.blocks += 1
        if signs is not None:
            self.flipped_blocks += 1
            flipped = np.flatnonzero(signs < 0)
            self.flipped_channels.update(int(c) for c in (flipped if channels is None else channels[flipped]))
        return signs

    def warning(self) -> str | None:
        """The message for a track with flipped blocks, None without."""
        if not self.flipped_blocks:
            return None
        names = ", ".join(str(c) for c in sorted(self.flipped_channels))
        return (f"{self.source}: audio channel(s) {names} out of phase in {self.flipped_blocks} of {self.blocks} "
                f"blocks of {BLOCK} samples; a plain mix cancels what the channels share (speech), so there they "
                "are mixed in with their polarity flipped")


def mix_block(block: np.ndarray, signs: np.ndarray | None, silence: float = 0.0) -> np.ndarray:
    """The unscaled mono mix of one ``(samples, channels)`` block: the channel mean, with the channels ``signs``
    flips (:func:`polarity_signs`) flipped about ``silence`` (the sample value of silence: 2^(bits-1) for unsigned
    PCM). float32 blocks are mixed in float32, others in float64."""
    if signs is None:
        return block.mean(axis=1)
    work = block if block.dtype == np.float32 else block.astype(np.float64) - silence
    return (work * signs.astype(work.dtype)).mean(axis=1) + silence


class BlockMixer:
    """Multichannel ``(samples, channels)`` chunks of one track -> mono, mixed per block of :data:`BLOCK` samples
    counted from the track's first sample (:func:`polarity_signs`, counted by :attr:`polarity`). :meth:`add` and
    :meth:`flush` return ``(mono, block)`` pairs: the unscaled mix and the samples it was mixed from (the LFE
    channels left out once :meth:`set_layout` has named them)."""

    def __init__(self, source: str = "audio", silence: float = 0.0):
        self.polarity = PolarityMix(source)
        self.silence = silence
        self._layout = 0  # channels of the layout set_layout named (0: none named)
        self._keep: np.ndarray | None = None  # the channels of that layout mixed (None: all)
        self._held: list[np.ndarray] = []  # samples of the block being filled
        self._held_n = 0

    def set_layout(self, names: Sequence[str]) -> None:
        """The track's channel names (a file's layout): its LFE channels are left out of the mix
        (:func:`speech_channels`) in blocks with that many channels."""
        self._layout, self._keep = len(names), speech_channels(names)

    def add(self, samples: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Take the next chunk of the track; return the blocks it completes, mixed."""
        out = self.flush() if self._held and self._held[0].shape[1] != samples.shape[1] else []  # layout changed
        self._held.append(samples)
        self._held_n += samples.shape[0]
        while self._held_n >= BLOCK:
            pending = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
            self._held = [pending[BLOCK:]] if pending.shape[0] > BLOCK else []
            self._held_n -= BLOCK
            out.append(self._mixed(pending[:BLOCK]))
        return out

    def flush(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Mix the samples held (the track ended, or its layout changed): at most one block."""
        if not self._held:
            return []
        pending = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        self._held, self._held_n = [], 0
        return [self._mixed(pending)]

    def _mixed(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = self._keep if block.shape[1] == self._layout else None
        if keep is not None:
            block = block[:, keep]
        centred = block if not self.silence else block.astype(np.float64) - self.silence
        return mix_block(block, self.polarity.signs(centred, keep), self.silence), block
