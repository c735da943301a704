"""The decoded streams of one file turned, piece by piece, into what a :class:`PreparedClip` holds: mouth crops placed
on the clip's constant frame grid, and mono audio at the contract's rate aligned to the first video frame.

* :class:`MonoAudio` (an audio consumer of :func:`~pinlite_edge.features.decode.iter_media`): each decoded chunk is
  averaged to mono (any channel count; the LFE channels the stream's layout names are left out, unless it has no
  other; multichannel audio in blocks of :data:`~pinlite_edge.features.downmix.BLOCK` samples, a channel out of phase
  in a block flipped there: :mod:`~pinlite_edge.features.downmix`), shifted so sample 0 plays with the first
  video frame (zeros before an audio stream that starts later, leading samples dropped when it starts earlier) and
  resampled with :class:`~pinlite_edge.features.streamresample.StreamResampler` (the same samples as one
  ``resample_poly`` call over the whole track).
* :class:`FramePlacer`: how many ticks of the constant grid (the stream's frame rate) each decoded frame fills. A
  stream whose frame gaps stay within 0.5..1.5 frame periods is constant-rate: one tick per frame, in decoding order.
  From the first gap outside that range on (or once the timestamps drift more than half a frame period from one
  tick per frame: regular gaps at another rate than the declared one, or frames that carry on after one repeated
  a timestamp), frames are placed by timestamp (the last frame shown at or before each tick: repeated over a gap,
  dropped when two fall within one tick); from the first frame on when the declared rate is not believed. Missing
  timestamps, timestamps that never move, and timestamps that go backwards before that keep decoding order (a
  repeated timestamp used to do so for the rest of the clip: one repeat, then a gap, put every later frame early).
  The grid never runs past the container's declared duration (with slack, so a timestamp gap cannot stretch a clip;
  frames beyond it are not used, with a warning) nor past ``max_duration_s`` (an error).
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Sequence

import numpy as np

from pinlite_edge.errors import DecodeError
from pinlite_edge.features.downmix import BlockMixer
from pinlite_edge.features.streamresample import StreamResampler

log = logging.getLogger(__name__)

#: Audio decoded before the first video frame is kept for at most this many seconds (demuxers interleave streams
#: by time, so only a file whose video starts this much later than its audio, which alignment drops, exceeds it).
PRE_VIDEO_AUDIO_S = 30.0


class MonoAudio:
    """Audio consumer: downmix, align to the first video frame, resample; :meth:`take` returns new output samples."""

    def __init__(self, target_rate: int, source: str = "clip"):
        self.target_rate = int(target_rate)
        self.source = source
        self.rate: int | None = None
        self.start: float | None = None  # container time of the stream's first timed frame
        self.peak = 0.0  # abs peak of the aligned samples (the channels mixed)
        self.samples = 0  # aligned samples at the source rate
        self._pending: deque[np.ndarray] = deque()  # mono chunks before the video start is known
        self._pending_n = 0
        self._dropped = 0  # pending samples dropped (PRE_VIDEO_AUDIO_S)
        self._pending_peak: deque[float] = deque()
        self._video_start: float | None = None
        self._video_known = False
        self._aligned = False
        self._skip = 0  # source samples still to drop (audio starting before the video)
        self._resampler: StreamResampler | None = None
        self._out: list[np.ndarray] = []
        self._mixer = BlockMixer(source)  # multichannel audio, mixed per block (features.downmix)

    def set_rate(self, rate: int) -> None:
        self.rate = int(rate)
        self._resampler = StreamResampler(self.rate, self.target_rate)

    def set_layout(self, names: Sequence[str]) -> None:
        """The stream's channel names: its LFE channels are left out of the mix (and of :attr:`peak`)."""
        self._mixer.set_layout(names)

    def add_audio(self, samples: np.ndarray, seconds: float | None) -> None:
        if self.start is None:
            self.start = seconds
        if samples.ndim == 2 and samples.shape[1] > 1:  # mixed per block of the track (features.downmix)
            for mono, block in self._mixer.add(samples):
                self._add_mono(mono, block)
            return
        self._flush_block()
        self._add_mono(samples.astype(np.float32).reshape(-1), samples)

    def _flush_block(self) -> None:
        for mono, block in self._mixer.flush():
            self._add_mono(mono, block)

    def _add_mono(self, mono: np.ndarray, samples: np.ndarray) -> None:
        peak = float(np.abs(samples).max()) if samples.size else 0.0
        if not self._aligned and self._video_known and self.start is not None:
            self._align()
        if not self._aligned:
            self._pending.append(mono)
            self._pending_peak.append(peak)
            self._pending_n += mono.size
            limit = int(PRE_VIDEO_AUDIO_S * (self.rate or 48000))
            while self._pending_n - self._pending[0].size > limit:
                old = self._pending.popleft()
                self._pending_peak.popleft()
                self._pending_n -= old.size
                self._dropped += old.size
            return
        self._feed(mono, samples)

    def video_started(self, seconds: float | None) -> None:
        """The first video frame's time is known: once the audio's is too, align what is pending and stream on."""
        if self._video_known:
            return
        self._video_known = True
        self._video_start = seconds
        if self.start is not None or seconds is None:
            self._align()

    def _align(self) -> None:
        self._aligned = True
        seconds = self._video_start
        offset = 0
        if self.start is not None and seconds is not None and self.rate:
            start = self.start + self._dropped / float(self.rate)
            offset = int(round((start - seconds) * self.rate))
            if abs(offset) > self.rate // 1000:  # more than 1 ms
                log.info("%s: audio stream starts %+.3f s after the video; aligned by timestamps", self.source,
                         offset / float(self.rate))
            if offset > 0 and self._dropped:
                log.warning("%s: more than %g s of audio came before the first video frame; the dropped part is "
                            "replaced by silence", self.source, PRE_VIDEO_AUDIO_S)
        if offset > 0:
            self._feed(np.zeros(offset, np.float32), None, peak=0.0)
        else:
            self._skip = -offset
        while self._pending:
            chunk = self._pending.popleft()
            self._feed(chunk, None, peak=self._pending_peak.popleft())
        self._pending_n = 0

    def _feed(self, mono: np.ndarray, samples: np.ndarray | None, peak: float | None = None) -> None:
        if self._skip:
            cut = min(self._skip, mono.size)
            self._skip -= cut
            mono = mono[cut:]
            if samples is not None:
                samples = samples[cut:]
            peak = None if samples is not None else peak
            if peak is not None and cut and mono.size:
                peak = None  # a partly dropped pending chunk: recompute from the mono samples (lower bound)
        if not mono.size:
            return
        if peak is None:
            peak = float(np.abs(samples).max()) if samples is not None and samples.size else float(np.abs(mono).max())
        self.peak = max(self.peak, peak)
        self.samples += mono.size
        if self._resampler is None:
            raise RuntimeError("MonoAudio.set_rate must be called before audio is fed")
        out = self._resampler.add(mono)
        if out.size:
            self._out.append(out)

    def finish(self) -> None:
        """The stream ended: mix the last block, align if no video frame came, and flush the resampler."""
        self._flush_block()
        said = self._mixer.polarity.warning()
        if said:
            log.warning("%s", said)
        if not self._aligned:
            self._video_known = True
            self._align()
        if self._resampler is not None:
            out = self._resampler.finish()
            if out.size:
                self._out.append(out)

    def take(self) -> np.ndarray:
        """Output samples (float32, target rate) produced since the last call."""
        if not self._out:
            return np.zeros(0, np.float32)
        out = np.concatenate(self._out) if len(self._out) > 1 else self._out[0]
        self._out = []
        return out

    @property
    def seconds(self) -> float:
        return self.samples / float(self.rate) if self.rate else 0.0


class FramePlacer:
    """Ticks of the constant frame grid filled by each decoded frame (see the module doc).

    Call :meth:`stamp` for every decoded frame in decoding order and :meth:`finish` at the end; :meth:`counts`
    returns, in decoding order, the tick counts decided since the last call (a frame's count is known when the next
    frame arrives).
    """

    def __init__(self, fps: float, *, bound_s: float | None, max_duration_s: float, source: str = "clip",
                 by_timestamps: bool = False):
        self.fps = float(fps)
        self.step = 1000.0 / self.fps  # ms
        self.bound_ticks = None if bound_s is None else int(np.floor(bound_s * self.fps + 1e-6))
        self.max_ticks = int(np.floor(max_duration_s * self.fps + 1e-6))
        self.max_duration_s = max_duration_s
        self.source = source
        #: "constant" (1 tick per frame), "order" (timestamps unusable), "timestamps". ``by_timestamps``: from the
        #: first frame on (``fps`` is a fallback, not the stream's rate: :func:`~pinlite_edge.features.video.sane_fps`)
        self.mode = "timestamps" if by_timestamps else "constant"
        #: why frames are placed by timestamp: "declared" (by_timestamps), "gaps" (a gap outside 0.5..1.5 frame
        #: periods) or the drift message (regular gaps at another rate than the declared one); None: they are not
        self._why: str | None = "declared" if by_timestamps else None
        self.ticks = 0  # ticks given to frames so far
        self.frames = 0
        self._t0: float | None = None
        self._prev: float | None = None
        self._ready: list[int] = []
        self._gap_min = np.inf
        self._gap_max = -np.inf
        self._truncated = False
        self._repeat: tuple[int, float] | None = None  # (frame, ms from the first) of the first repeated timestamp

    def _give(self, n: int) -> None:
        if self.bound_ticks is not None and self.ticks + n > self.bound_ticks:
            if not self._truncated:
                self._truncated = True
                log.warning("%s: video timestamps run past the duration the container declares; frames after "
                            "%.2f s are not used", self.source, self.bound_ticks / self.fps)
            n = max(0, self.bound_ticks - self.ticks)
        if self.ticks + n > self.max_ticks:
            raise DecodeError(self.source, f"its video lasts more than max_duration_s = {self.max_duration_s:g} s "
                                           "(the limit on frames per clip); cut the clip or pass a larger "
                                           "max_duration_s")
        self.ticks += n
        self._ready.append(n)

    def _timestamp_ticks(self, until_ms: float) -> int:
        """Ticks not yet given whose time is before ``until_ms`` (the next frame takes over there)."""
        t0 = self._t0 if self._t0 is not None else 0.0
        last = int(np.ceil((until_ms - 1e-6 - t0) / self.step))  # ticks t with t0 + t * step + 1e-6 < until_ms
        while last > 0 and t0 + (last - 1) * self.step + 1e-6 >= until_ms:
            last -= 1
        while t0 + last * self.step + 1e-6 < until_ms:
            last += 1
        return max(0, last - self.ticks)

    def stamp(self, seconds: float) -> None:
        ms = float(seconds) * 1000.0
        if self.frames == 0:
            self._t0 = ms
        else:
            gap = ms - self._prev
            if self.mode == "constant":
                expected = self._t0 + self.frames * self.step  # where one tick per frame puts this frame
                if gap < 0:
                    self.mode = "order"
                elif gap == 0:  # a repeated timestamp: one tick for now; timestamps that go on decide (drift below)
                    if self._repeat is None:
                        self._repeat = (self.frames, ms - self._t0)
                elif not 0.5 * self.step <= gap <= 1.5 * self.step:
                    self.mode, self._why = "timestamps", "gaps"
                elif abs(ms - expected) > 0.5 * self.step:  # regular gaps, another rate, or after a repeated stamp
                    self.mode = "timestamps"
                    self._why = (f"frame {self._repeat[0]} repeats the previous frame's timestamp "
                                 f"({self._repeat[1]:.0f} ms)" if self._repeat is not None else
                                 f"its frame timestamps drift from the declared {self.fps:.4g} fps (frame "
                                 f"{self.frames} at {ms - self._t0:.0f} ms, {expected - self._t0:.0f} ms at that "
                                 "rate)")
                elif self._repeat is not None:  # back in line after the repeat: a later drift is not its doing
                    self._repeat = None
            self._gap_min, self._gap_max = min(self._gap_min, gap), max(self._gap_max, gap)
            self._give(self._timestamp_ticks(ms) if self.mode == "timestamps" else 1)
        self._prev = ms
        self.frames += 1

    def finish(self) -> None:
        if self.frames == 0:
            return
        if self.mode == "timestamps":
            self._give(max(1, self._timestamp_ticks(self._prev + self.step)))
            if self._why == "gaps":
                log.warning("%s has a variable frame rate (frame gaps %.0f..%.0f ms); frames resampled by timestamp "
                            "to %.3g fps", self.source, self._gap_min, self._gap_max, self.fps)
            elif self._why != "declared":  # sane_fps has said why for "declared"
                log.warning("%s: %s; frames resampled by timestamp to %.3g fps", self.source, self._why, self.fps)
        else:
            self._give(1)

    def counts(self) -> list[int]:
        out, self._ready = self._ready, []
        return out


def place_frames(stamps_s: Sequence[float], fps: float, *, bound_s: float | None, max_duration_s: float,
                 source: str = "clip", by_timestamps: bool = False) -> np.ndarray:
    """Index of the frame shown at each tick of the constant ``fps`` grid, for frames decoded at ``stamps_s``
    (seconds, decoding order): :class:`FramePlacer` over a whole clip at once (``decode_video``'s whole frames)."""
    placer = FramePlacer(fps, bound_s=bound_s, max_duration_s=max_duration_s, source=source,
                         by_timestamps=by_timestamps)
    for t in stamps_s:
        placer.stamp(t)
    placer.finish()
    counts = placer.counts()
    return np.repeat(np.arange(len(counts)), counts)
