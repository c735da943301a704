"""One file, decoded once, as model windows in bounded memory (what ``Detector.detect`` runs) or as a whole
:class:`PreparedClip` (``prepare_file``): the same crops, audio and windows either way.

:class:`FileStream` drives :func:`~pinlite_edge.features.decode.iter_media`: after every packet the new mouth crops
(:class:`~pinlite_edge.features.cropstream.CropStream`) are placed on the frame grid
(:class:`~pinlite_edge.features.streams.FramePlacer`) and the new audio
(:class:`~pinlite_edge.features.streams.MonoAudio`) is appended. In streaming mode a :class:`Windower` cuts every
window as soon as the frames and samples it reads have arrived and the clip is certain to contain it, then drops
what no later window can read; the tail window and short clips are settled at the end with
:func:`~pinlite_edge.features.windows.window_starts`, as for a whole clip.
Memory holds the face track's lookahead (about 1.3 s of frames), about one window of crops and samples, and one batch
of windows, whatever the clip's length.
"""
from __future__ import annotations

import bisect
import logging
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from pinlite_edge.contract import InputContract
from pinlite_edge.errors import DecodeError, InputError
from pinlite_edge.features.cropstream import CropStream
from pinlite_edge.features.deadline import Deadline
from pinlite_edge.features.decode import StreamInfo, iter_media
from pinlite_edge.features.facecrop import FaceCropConfig
from pinlite_edge.features.frames import normalise_frames, sample_indices
from pinlite_edge.features.limits import DecodeLimits, check_stride, declared_bound
from pinlite_edge.features.mfcc import compute_mfcc
from pinlite_edge.features.streams import FramePlacer, MonoAudio
from pinlite_edge.features.video import plausible_fps
from pinlite_edge.features.windows import (PreparedClip, Window, audio_segment, shift_samples, shifted_mfccs,
                                           window_starts)

log = logging.getLogger(__name__)

#: Distinct video frames may run this many seconds ahead of the audio in the buffers (muxers interleave streams
#: within a few seconds, FFmpeg's within 10 s, so more means the audio has ended); beyond that they are counted but
#: not kept, and a window that needs them raises a DecodeError (a file interleaved that badly). Audio is kept this far
#: past the end the video stream declares (an hour of audio after a 20 s video used to be kept whole: 0.8 GB with
#: its copies); not by the frames received, since a video may pause for longer (a screen recording, a call with the
#: camera off) while the audio goes on.
MAX_LAG_S = 30.0


def audio_is_silent(peak: float, is_float: bool) -> bool:
    """Digital silence: a peak of 0 (below 1e-6 for float audio). No lip-sync evidence at all: ``Detector`` gives the
    verdict ``"silent-audio"``."""
    return peak == 0.0 or (is_float and peak < 1e-6)


def warn_on_degraded_audio(audio_seconds: float, video_seconds: float, peak: float, is_float: bool,
                           contract: InputContract, source: str) -> None:
    """Warn when the result degrades: tracks of very different length, or a digitally silent audio track."""
    if abs(audio_seconds - video_seconds) > contract.window_seconds:
        log.warning("%s: audio lasts %.2f s but video %.2f s; only the %.2f s covered by both are scored",
                    source, audio_seconds, video_seconds, min(audio_seconds, video_seconds))
    if audio_is_silent(peak, is_float):
        log.warning("%s: the audio track is digitally silent; the lip-sync evidence is missing, so scores on this "
                    "clip say little", source)


class Windower:
    """Cuts windows out of frames and samples that arrive in order, keeping only what later windows may read."""

    def __init__(self, contract: InputContract, fps: float, stride_seconds: float | None, source: str,
                 scan_offsets: tuple[int, ...] = (), video_seconds: float | None = None):
        self.c = contract
        #: the video stream's declared duration: audio more than MAX_LAG_S past it (and past the frames received) is
        #: counted, not kept; None (not declared): every sample is kept
        self.video_seconds = video_seconds
        #: offset scan: each window also carries the MFCCs of its audio shifted by these frames, so audio is kept
        #: ``lead`` samples before a window and a window waits for ``lag`` samples after it
        self.scan_offsets = scan_offsets
        self.lead = shift_samples(max(0, -min(scan_offsets, default=0)), contract)
        self.lag = shift_samples(max(0, max(scan_offsets, default=0)), contract)
        self.fps = fps
        self.stride = contract.window_seconds if stride_seconds is None else float(stride_seconds)
        self.source = source
        self.frames: list[np.ndarray] = []  # frames fbase.. (references: a frame repeated by placement is shared)
        self.found: list[bool] = []  # per frame fbase..: the face tracker had the face there
        self.fbase = 0
        self.n_frames = 0  # frames received (kept or not)
        self._audio: list[np.ndarray] = []
        self.abase = 0
        self.n_audio = 0  # samples received (kept or not)
        self.kept_frames = 0  # frames kept: n_frames unless the video ran MAX_LAG_S ahead of the audio
        self._new_at: list[int] = []  # frame index where each kept distinct crop starts
        self.kept_audio = 0  # samples kept: n_audio unless the audio ran MAX_LAG_S past the video's declared end
        self.k = 0  # next regular window

    # ------------------------------------------------------------------ input
    def add_frame(self, crop: np.ndarray, count: int, found: bool = True) -> None:
        """``crop`` shown for ``count`` ticks (repeats share the array: a timestamp gap costs references only);
        ``found``: the face tracker had the face in it (windows carry the share of such frames)."""
        if count <= 0:
            return
        if self.kept_frames == self.n_frames:
            # distinct crops kept beyond the audio's end: at most MAX_LAG_S of them
            audio_frame = int(self.n_audio / self.c.sample_rate * self.fps)
            ahead = len(self._new_at) - bisect.bisect_left(self._new_at, audio_frame)
            if ahead <= MAX_LAG_S * self.fps:
                self._new_at.append(self.n_frames)
                self.frames.extend([crop] * count)
                self.found.extend([found] * count)
                self.kept_frames += count
        self.n_frames += count

    def add_audio(self, samples: np.ndarray) -> None:
        """Samples are kept until windows have read them (64 KB per second at 16 kHz), up to :data:`MAX_LAG_S` past
        the end the video stream declares or the frames received, whichever is later; after that they are counted,
        not kept: the video has ended, and a track that outlasts the other is scored where both run."""
        if samples.size:
            end_s = (self.n_audio + samples.size) / self.c.sample_rate
            video_s = max(self.video_seconds or 0.0, self.n_frames / self.fps)
            if self.kept_audio == self.n_audio and (self.video_seconds is None or end_s <= video_s + MAX_LAG_S):
                self._audio.append(samples)
                self.kept_audio += samples.size
            self.n_audio += samples.size

    def _check_kept(self, frames_to: int, audio_to: int) -> None:
        if frames_to > self.kept_frames or audio_to > self.kept_audio:
            raise DecodeError(self.source, f"its audio and video are interleaved more than {MAX_LAG_S:g} s apart in "
                                           "the file; remux it (e.g. ffmpeg -i IN -c copy OUT.mkv)")

    # ------------------------------------------------------------------ windows
    def _window(self, start: float, n_total: int, a_total: int) -> Window:
        c = self.c
        idx = sample_indices(start, self.fps, n_total, c)
        s0 = int(round(start * c.sample_rate))
        self._check_kept(int(idx.max()) + 1, min(s0 + c.window_samples, a_total))
        frames = normalise_frames(np.stack([self.frames[i - self.fbase] for i in idx]), c)
        audio = self._audio_array()
        seg = audio_segment(audio, s0 - self.abase, c.window_samples) if s0 >= self.abase else None
        if seg is None or s0 + c.window_samples > self.abase + audio.size:
            # zero-padded past the end of the track (or before its start: never, see _trim), as audio_segment does
            seg = np.zeros(c.window_samples, np.float32)
            lo, hi = max(s0, self.abase), min(s0 + c.window_samples, self.abase + audio.size)
            if hi > lo:
                seg[lo - s0:hi - s0] = audio[lo - self.abase:hi - self.abase]
        window = Window(frames=frames, mfcc=compute_mfcc(seg, c), start_seconds=float(start),
                        face_fraction=float(np.mean([self.found[i - self.fbase] for i in idx])))
        if self.scan_offsets:
            window.mfcc_shifts, window.shifts_in_track = shifted_mfccs(
                audio, s0, c, self.scan_offsets, window.mfcc, signal_start=self.abase, total_samples=a_total)
        return window

    def _audio_array(self) -> np.ndarray:
        if len(self._audio) != 1:
            self._audio = [np.concatenate(self._audio) if self._audio else np.zeros(0, np.float32)]
        return self._audio[0]

    def ready(self) -> Iterator[Window]:
        """Regular windows certain to exist (the clip lasts past their end) whose frames and samples have arrived."""
        c = self.c
        while True:
            start = round(self.k * self.stride, 6)
            have = min(self.kept_frames / self.fps, self.kept_audio / c.sample_rate)
            if start + c.window_seconds > have - 1e-6:
                break
            idx = sample_indices(start, self.fps, self.kept_frames, c)
            if int(idx.max()) >= self.kept_frames or int(round(start * c.sample_rate)) + c.window_samples + \
                    self.lag > self.kept_audio:
                break
            window = self._window(start, self.kept_frames, self.kept_audio)
            self.k += 1
            self._trim()
            yield window

    def _trim(self) -> None:
        """Drop frames and samples no later window reads: the next regular window starts at ``k * stride``, the
        tail window (added at the end) at ``duration - window`` where duration >= what has arrived."""
        c = self.c
        have = min(self.n_frames / self.fps, self.n_audio / c.sample_rate)
        keep_from = min(round(self.k * self.stride, 6), have - c.window_seconds)
        if keep_from <= 0:
            return
        f_lo = max(self.fbase, int(math.floor(keep_from * self.fps)) - 2)
        if f_lo > self.fbase:
            del self.frames[:f_lo - self.fbase]
            del self.found[:f_lo - self.fbase]
            self.fbase = f_lo
            del self._new_at[:max(0, bisect.bisect_left(self._new_at, f_lo) - 1)]
        a_lo = int(math.floor(keep_from * c.sample_rate)) - 2 - self.lead
        if a_lo > self.abase:
            audio = self._audio_array()
            self._audio = [audio[a_lo - self.abase:].copy()] if a_lo - self.abase < audio.size else []
            self.abase = a_lo

    def finish(self) -> Iterator[Window]:
        """The remaining windows once both tracks have ended (tail window, short-clip padding or error)."""
        duration = min(self.n_frames / self.fps, self.n_audio / self.c.sample_rate)
        starts = window_starts(duration, self.c, self.stride, fps=self.fps, source=self.source)
        for start in starts[self.k:]:
            yield self._window(start, self.n_frames, self.n_audio)


class FileStream:
    """Decode ``path`` once (see the module doc). Iterate :meth:`windows` (streaming) or call :meth:`prepare`
    (whole clip); afterwards ``face_found``, ``face_coverage``, ``faces_in_view``, ``fps`` describe the clip."""

    def __init__(self, path: Path, contract: InputContract, *, face_crop: bool = True,
                 face_config: FaceCropConfig | None = None, deadline: Deadline, max_side: int | None,
                 limits: DecodeLimits):
        self.path = path
        self.contract = contract
        self.deadline = deadline
        self.limits = limits
        cfg = (face_config or FaceCropConfig()) if face_crop else None
        self.crops = CropStream(contract.frame_size, cfg, max_side=max_side, source=str(path), keep_boxes=False)
        self.audio = MonoAudio(contract.sample_rate, source=str(path))
        self.placer: FramePlacer | None = None
        self.face_found: bool | None = None
        self.face_coverage: float | None = None
        self.faces_in_view: int | None = None
        self.audio_silent: bool | None = None  # known once the stream has ended: the track is digitally silent
        self.fps = 0.0
        self._declared: float | None = None
        self._video_seconds: float | None = None  # the video stream's declared duration
        self._rate_believed = False  # the container's declared frame rate is plausible (set by start)
        self._pending: list[tuple[np.ndarray, bool]] = []  # (crop, face found) waiting for their tick count
        self._counts: list[int] = []

    def _opened(self, info: StreamInfo) -> None:
        self._declared = info.declared_seconds
        self._video_seconds = info.video_seconds
        if info.sample_rate:
            self.audio.set_rate(info.sample_rate)
            self.audio.set_layout(info.audio_channels)

    # a VideoConsumer for iter_media: frames go to the crop stream, their times to the placer and the audio
    def start(self, declared_fps: float | None) -> None:
        self.crops.start(declared_fps)
        self.fps = self.crops.fps
        self._rate_believed = plausible_fps(declared_fps)

    def add(self, frame: object, seconds: float, turns: int) -> None:
        if self.placer is None:
            if not self.fps:
                self.start(None)
            self.placer = FramePlacer(self.fps, bound_s=declared_bound(self._declared), max_duration_s=
                                      self.limits.max_duration_s, source=str(self.path),
                                      by_timestamps=not self._rate_believed)
            self.audio.video_started(seconds)
        self.placer.stamp(seconds)
        self.crops.add(frame, seconds, 0 if turns is None else turns)

    def _placed(self) -> Iterator[tuple[tuple[np.ndarray, bool], int]]:
        """``(crop, face found)`` paired with their tick counts, as both become known."""
        self._pending.extend(self.crops.drain())
        if self.placer is not None:
            self._counts.extend(self.placer.counts())
        n = min(len(self._pending), len(self._counts))
        if n:
            pairs = list(zip(self._pending[:n], self._counts[:n]))
            del self._pending[:n], self._counts[:n]
            yield from pairs

    # ------------------------------------------------------------------ the two modes
    def windows(self, stride_seconds: float | None = None, scan_offsets: tuple[int, ...] = ()) -> Iterator[Window]:
        """Every window of the clip, in order, cut while decoding (bounded memory); ``scan_offsets``: each window
        also carries its shifted-audio MFCCs (:mod:`pinlite_edge.offset_scan`)."""
        stride = check_stride(stride_seconds)
        windower: Windower | None = None
        try:
            for _ in self._decode():
                if windower is None and self.fps:
                    windower = Windower(self.contract, self.fps, stride, str(self.path), scan_offsets,
                                        video_seconds=self._video_seconds)
                if windower is not None:
                    for (crop, found), count in self._placed():
                        windower.add_frame(crop, count, found)
                    windower.add_audio(self.audio.take())
                    yield from windower.ready()
            self._finish_streams()
            if windower is None:  # no frame at all: decode raised already
                raise DecodeError(self.path, "the video stream has no decodable frames")
            for (crop, found), count in self._placed():
                windower.add_frame(crop, count, found)
            windower.add_audio(self.audio.take())
            yield from windower.ready()
            self._check_audio(windower.n_frames)
            try:
                yield from windower.finish()
            except InputError as exc:
                raise DecodeError(self.path, str(exc)) from None
        finally:  # ended, failed or closed by the caller: a kept exception's traceback holds this frame and stream
            windower = None
            self.release()

    def prepare(self) -> PreparedClip:
        """The whole prepared clip (every crop and sample kept)."""
        frames: list[np.ndarray] = []
        audio: list[np.ndarray] = []
        try:
            for _ in self._decode():
                for (crop, _found), count in self._placed():
                    frames.extend([crop] * count)
                audio.append(self.audio.take())
            self._finish_streams()
            for (crop, _found), count in self._placed():
                frames.extend([crop] * count)
            audio.append(self.audio.take())
            self._check_audio(len(frames))
        except BaseException:
            frames = audio = []  # a kept exception's traceback holds this frame
            raise
        finally:
            self.release()
        size = self.contract.frame_size
        return PreparedClip(frames=np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8),
                            fps=self.fps, audio=np.concatenate(audio), sample_rate=self.contract.sample_rate,
                            face_found=self.face_found, face_coverage=self.face_coverage,
                            faces_in_view=self.faces_in_view)

    def release(self) -> None:
        """Drop what decoding buffered (frames waiting for the face track, crops and samples not yet windowed): called
        when :meth:`windows` or :meth:`prepare` ends, fails or is closed, so an exception a caller keeps does not keep
        them. The clip's summary (``face_found``, ``fps``, ...) stays."""
        self.crops.release()
        self._pending.clear()
        self._counts.clear()

    # ------------------------------------------------------------------ shared steps
    def _decode(self) -> Iterator[None]:
        it = iter_media(self.path, self.deadline, video=self, audio=self.audio, require_video=True,
                        limits=self.limits, on_open=self._opened)
        while True:
            try:
                next(it)
            except StopIteration as stop:
                self.media = stop.value
                return
            yield None

    def _finish_streams(self) -> None:
        self.audio.finish()
        if self.placer is not None:
            self.placer.finish()
        try:
            _, faces = self.crops.finish()
        except InputError as exc:  # require_face and no face
            raise DecodeError(self.path, str(exc)) from None
        self._pending.extend(self.crops.drain())
        if faces is not None:
            self.face_found, self.face_coverage, self.faces_in_view = faces.found, faces.coverage, faces.faces_in_view

    def _check_audio(self, n_frames: int) -> None:
        media = self.media
        if self.audio.samples == 0:
            raise DecodeError(self.path, f"the audio track ends before the first video frame "
                                         f"({media.audio_start:.3f} s vs {media.video_start:.3f} s)")
        self.audio_silent = audio_is_silent(self.audio.peak, True)
        warn_on_degraded_audio(self.audio.seconds, n_frames / self.fps, self.audio.peak, True, self.contract,
                               str(self.path))
