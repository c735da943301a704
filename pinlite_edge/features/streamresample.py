"""Streaming polyphase resampling that gives the same samples as one ``scipy.signal.resample_poly`` call.

``resample_poly(x, up, down)`` is ``upfirdn(h, x, up, down)`` with a fixed low-pass filter ``h`` (Kaiser window,
zero-padded so the output is centred), cropped to ``ceil(len(x) * up / down)`` samples. Every output sample is a sum
over at most ``len(h) / up`` input samples around its time, so a long signal can be fed in pieces: each call filters
the samples received since the last output that is complete (its taps all inside what has been received), keeps only
the input those later outputs still need, and :meth:`finish` filters the tail with the signal's real end (zeros after
it, as the whole-signal call pads). Memory: the filter plus about one block of input, whatever the signal's length.
The sums are the same float64 sums ``resample_poly`` makes (tested equal to it), so cropped windows do not depend on
how the audio arrived.
"""
from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import firwin, upfirdn

#: Input samples gathered before filtering (fewer, larger upfirdn calls; each call re-reads one filter length).
MIN_BLOCK = 8192


def _output_len(h_len: int, n_in: int, up: int, down: int) -> int:
    return ((n_in - 1) * up + h_len - 1) // down + 1


class StreamResampler:
    """Resample mono float audio from ``rate`` to ``target`` piece by piece (``add``; then ``finish``)."""

    def __init__(self, rate: int, target: int):
        g = gcd(int(rate), int(target))
        self.up, self.down = int(target) // g, int(rate) // g
        self.identity = self.up == self.down == 1
        if not self.identity:
            half_len = 10 * max(self.up, self.down)
            h = firwin(2 * half_len + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)) * self.up
            self.pre_pad = self.down - half_len % self.down
            self.pre_remove = (half_len + self.pre_pad) // self.down
            self.h = np.concatenate([np.zeros(self.pre_pad), h])
        self._buf: list[np.ndarray] = []  # input not yet released, starting at absolute sample self._start
        self._fresh = 0  # input samples received since the last filtering
        self._start = 0  # absolute input index of the buffer's first sample (a multiple of down)
        self._n_in = 0  # input samples received
        self._next = 0  # next raw upfirdn output index (absolute) to emit

    def add(self, samples: np.ndarray) -> np.ndarray:
        """Feed input samples (1-D); returns the output samples that became complete (maybe none)."""
        samples = np.asarray(samples, dtype=np.float64).ravel()
        if self.identity:
            self._n_in += samples.size
            return samples.astype(np.float32)
        if samples.size:
            self._buf.append(samples)
            self._fresh += samples.size
            self._n_in += samples.size
        if self._fresh < MIN_BLOCK:
            return np.zeros(0, np.float32)
        # raw outputs m whose taps all lie in the received input: m * down <= n_in * up - 1
        return self._emit((self._n_in * self.up - 1) // self.down, self.h, final=False)

    def finish(self) -> np.ndarray:
        """The remaining output samples (the signal ends here; zeros after it, as the whole-signal call pads)."""
        if self.identity:
            return np.zeros(0, np.float32)
        if self._n_in == 0:
            return np.zeros(0, np.float32)
        n_out = -(-self._n_in * self.up // self.down)
        h = self.h
        post = 0
        while _output_len(h.size + post, self._n_in, self.up, self.down) < n_out + self.pre_remove:
            post += 1
        if post:
            h = np.concatenate([h, np.zeros(post)])
        return self._emit(self.pre_remove + n_out - 1, h, final=True)

    def _emit(self, last_raw: int, h: np.ndarray, *, final: bool) -> np.ndarray:
        first = max(self._next, self.pre_remove)
        if last_raw < first:
            return np.zeros(0, np.float32)
        x = np.concatenate(self._buf) if len(self._buf) > 1 else self._buf[0]
        offset = self._start * self.up // self.down  # raw index of this segment's raw output 0
        raw = upfirdn(h, x, self.up, self.down)
        out = raw[first - offset:last_raw - offset + 1]
        self._next = last_raw + 1
        self._fresh = 0
        if final:
            self._buf = []
            return out.astype(np.float32)
        # keep the input the next outputs read: from (next * down - len(h) + 1) / up, snapped down to a multiple of
        # down so that the kept segment's outputs fall on the same raw indices
        need = max(0, (self._next * self.down - h.size + 1) // self.up)
        keep_from = need // self.down * self.down
        drop = keep_from - self._start
        if drop > 0:
            x = x[drop:]
            self._start = keep_from
        self._buf = [x]
        return out.astype(np.float32)
