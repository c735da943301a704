"""Bad-input survey: every malformed input gives a PinliteError naming the file/problem, or a defined behaviour
(with a warning where the result degrades).

Inputs are built in a session-scoped temp folder from one GRID clip (MPEG-1 + MP2 44.1 kHz stereo), re-muxed and
transcoded with PyAV into short variants, plus arrays for the Detector and the runners.
"""
from __future__ import annotations

import json
import logging
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from pinlite_edge.contract import TINY_CONTRACT
from pinlite_edge.errors import DecodeError, InputError, NoAudioError, PinliteError
from pinlite_edge.features import decode_audio, decode_video, featurise_arrays, featurise_file

C = TINY_CONTRACT
GRID_RATE = 44100


# --------------------------------------------------------------------------------------------- media helpers
def write_av(path: Path, frames: np.ndarray, audio: np.ndarray | None = None, *, rate: int = 16000,
             layout: str = "mono", fps: int = 25, pts_ms: np.ndarray | None = None, vcodec: str = "mpeg4",
             acodec: str = "aac", pix_fmt: str = "yuv420p", in_fmt: str = "rgb24",
             size: tuple[int, int] | None = None, options: dict[str, str] | None = None) -> Path:
    """Write ``frames`` (N, H, W[, 3]) uint8 and ``audio`` (samples, channels) float32 with PyAV.

    ``size=(width, height)`` upscales each frame while writing (one frame in memory at a time); ``options`` are the
    muxer's (e.g. ``{"movflags": "faststart"}``).
    """
    import av
    import cv2

    tb = Fraction(1, 1000) if pts_ms is not None else Fraction(1, fps)
    with av.open(str(path), "w", options=options or {}) as c:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width, vs.height = size or (frames.shape[2], frames.shape[1])
        vs.pix_fmt = pix_fmt
        vs.time_base = tb
        if pts_ms is not None:  # the encoder keeps the given times (else it rounds them to its 1 / fps grid)
            vs.codec_context.time_base = tb
        astream = c.add_stream(acodec, rate=rate, layout=layout) if audio is not None else None
        for i, img in enumerate(frames):
            if size is not None:
                img = cv2.resize(img, size, interpolation=cv2.INTER_NEAREST)
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format=in_fmt)
            f.pts = int(pts_ms[i]) if pts_ms is not None else i
            f.time_base = tb
            c.mux(vs.encode(f))
        c.mux(vs.encode())
        if astream is not None:
            planar = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).T)  # (channels, samples)
            for s in range(0, planar.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, s:s + 1024]), format="fltp",
                                                layout=layout)
                af.sample_rate, af.pts, af.time_base = rate, s, Fraction(1, rate)
                c.mux(astream.encode(af))
            c.mux(astream.encode())
    return path


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    return resample_poly(audio, rate, GRID_RATE, axis=0).astype(np.float32)


@pytest.fixture(scope="session")
def grid_media(grid_clips: list[Path]) -> tuple[Path, np.ndarray, np.ndarray]:
    """(path, frames uint8 (75, 288, 360, 3), audio float32 (samples, 2) at 44.1 kHz) of one GRID clip."""
    path = grid_clips[0]
    audio = decode_audio(path)
    assert audio.sample_rate == GRID_RATE
    return path, decode_video(path, max_side=None).frames, audio.samples


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory, grid_media: Any) -> Callable[[str], Path]:
    """``media(name)`` builds (once per session) and returns the named bad-input file."""
    import cv2

    src, fr, au = grid_media
    root = tmp_path_factory.mktemp("bad_media")
    sec = lambda s, rate=GRID_RATE: int(round(s * rate))  # noqa: E731
    data = src.read_bytes()

    def build(name: str) -> Path:
        p = root / name
        if name == "truncated.mpg":
            p.write_bytes(data[: len(data) // 2])
        elif name == "truncated_faststart.mp4":  # the index first, as phones write MP4: cut at 3/4 of its size
            # H.264 decoded with frame threads drops the error on the cut packet: only the index check sees it
            whole = write_av(root / "faststart.mp4", fr[:75], au[:sec(3.0)], rate=GRID_RATE, layout="stereo",
                             vcodec="libx264", options={"movflags": "faststart"})
            full = whole.read_bytes()
            assert full[4:8] == b"ftyp" and full.find(b"moov") < full.find(b"mdat")  # index before the data
            p.write_bytes(full[: len(full) * 3 // 4])
        elif name == "truncated_head.mpg":
            p.write_bytes(data[:2048])
        elif name == "empty.mp4":
            p.write_bytes(b"")
        elif name == "text.mp4":
            p.write_text("this is not a video\n" * 50)
        elif name == "png.mp4":
            ok, buf = cv2.imencode(".png", cv2.cvtColor(fr[0], cv2.COLOR_RGB2BGR))
            assert ok
            p.write_bytes(buf.tobytes())
        elif name == "no_audio.mp4":
            write_av(p, fr[:30])
        elif name == "audio_short.mp4":  # 3 s of video, 1 s of audio
            write_av(p, fr[:75], au[:sec(1.0)], rate=GRID_RATE, layout="stereo")
        elif name == "silent.mp4":
            write_av(p, fr[:40], np.zeros((16000 * 2, 1), np.float32))
        elif name == "frames10.mp4":  # 0.4 s: fewer than 16 frames, more than half a window
            write_av(p, fr[:10], au[:sec(0.4)], rate=GRID_RATE, layout="stereo")
        elif name == "frames5.mp4":  # 0.2 s: less than half a window
            write_av(p, fr[:5], au[:sec(0.2)], rate=GRID_RATE, layout="stereo")
        elif name == "single_frame.mp4":  # one frame, the whole audio track
            write_av(p, fr[:1], au, rate=GRID_RATE, layout="stereo")
        elif name == "uhd.mkv":  # 3840x2160, 8 frames at 12 fps (0.67 s)
            write_av(p, fr[:8], au[:sec(0.7)], rate=GRID_RATE, layout="stereo", fps=12, vcodec="mjpeg", pix_fmt="yuvj420p",
                     size=(3840, 2160))
        elif name == "gray.mkv":
            gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in fr[:40]])
            write_av(p, gray, au[:sec(1.6)], rate=GRID_RATE, layout="stereo", vcodec="ffv1", pix_fmt="gray",
                     in_fmt="gray")
        elif name == "vfr.mkv":  # 40 frames over 2.4 s: every other gap is 80 ms instead of 40 ms
            pts = np.concatenate([[0], np.cumsum([80 if i % 2 else 40 for i in range(39)])])
            write_av(p, fr[:40], au[:sec(pts[-1] / 1000 + 0.04)], rate=GRID_RATE, layout="stereo", pts_ms=pts,
                     vcodec="libx264")
        elif name == "audio8k.mp4":
            write_av(p, fr[:40], resample(au[:sec(1.6)], 8000), rate=8000, layout="stereo")
        elif name == "audio48k.mp4":
            write_av(p, fr[:40], resample(au[:sec(1.6)], 48000), rate=48000, layout="stereo")
        elif name == "audio_stereo.mp4":
            write_av(p, fr[:40], au[:sec(1.6)], rate=GRID_RATE, layout="stereo")
        elif name == "audio51.mp4":
            a48 = resample(au[:sec(1.6)], 48000)
            six = np.concatenate([a48, a48[:, :1], np.zeros_like(a48[:, :1]), a48], axis=1)  # FL FR FC LFE BL BR
            write_av(p, fr[:40], six, rate=48000, layout="5.1", acodec="ac3")
        else:
            raise KeyError(name)
        return p

    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = build(name)
        return cache[name]

    return get


def featurise(path: Path, **kw: Any) -> list:
    return featurise_file(path, C, face_crop=False, **kw)


def assert_valid(windows: list) -> None:
    assert windows, "no windows"
    for w in windows:
        assert w.frames.shape == C.frames_shape() and w.frames.dtype == np.float32
        assert w.mfcc.shape == C.mfcc_shape() and w.mfcc.dtype == np.float32
        assert np.isfinite(w.frames).all() and np.isfinite(w.mfcc).all()


def warnings_of(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING).lower()


# --------------------------------------------------------------------------------------------- broken files
@pytest.mark.parametrize("name, words", [
    ("truncated.mpg", ("truncated", "corrupt")),
    ("truncated_faststart.mp4", ("truncated", "only")),
    ("truncated_head.mpg", ("truncated", "corrupt", "not a readable", "no video")),
    ("empty.mp4", ("empty", "0 bytes")),
    ("text.mp4", ("not a readable", "not a video")),
])
def test_broken_file_is_a_decode_error_naming_it(media, name, words):
    path = media(name)
    with pytest.raises(DecodeError) as info:
        featurise(path)
    msg = str(info.value)
    assert path.name in msg and info.value.path == path
    assert any(w in msg for w in words), msg


def test_png_renamed_mp4_is_refused_naming_the_file(media):
    path = media("png.mp4")
    with pytest.raises(DecodeError) as info:  # a still image: no audio track (NoAudioError is a DecodeError)
        featurise(path)
    assert path.name in str(info.value)


def test_missing_file_and_directory_are_decode_errors(tmp_path):
    with pytest.raises(DecodeError, match="does not exist"):
        featurise(tmp_path / "nope.mp4")
    with pytest.raises(DecodeError, match="not a regular file"):
        featurise(tmp_path)


def test_paths_that_are_no_file_names_are_named_as_such(tmp_path, grid_clips):
    """A name over the OS limit raised a raw OSError; file contents passed as bytes came back as a 200 KB message;
    a URL was mangled into a missing path; an empty string was reported as the folder '.'."""
    from pinlite_edge.errors import InputError

    with pytest.raises(DecodeError, match="File name too long"):
        featurise(tmp_path / ("b" * 300 + ".mp4"))
    with pytest.raises(InputError, match="too many for a file name") as info:
        featurise(grid_clips[0].read_bytes())
    assert len(str(info.value)) < 300
    with pytest.raises(InputError, match="URLs are not opened"):
        featurise("https://example.com/clip.mp4")
    with pytest.raises(InputError, match="the media path is empty"):
        featurise("")
    assert featurise(os.fsencode(str(grid_clips[0]))) is not None  # a bytes file name still works


def test_a_closed_detector_says_so(tmp_path, grid_clips):
    """It used to decode part of the file, then name an internal runner and tell the user to activate it."""
    from pinlite_edge import Detector
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student
    from pinlite_edge.runtimes.base import RunnerStateError

    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    with Detector.load(ckpt, threads=1, face_crop=False) as det:
        result = det.detect(os.fsencode(str(grid_clips[0])))
    assert result.source == str(grid_clips[0])  # not "b'...'"
    with pytest.raises(RunnerStateError, match="this Detector .* is closed"):
        det.detect(grid_clips[0])


def test_video_without_audio_is_no_audio_error(media):
    path = media("no_audio.mp4")
    with pytest.raises(NoAudioError, match="no audio"):
        featurise(path)


def test_decoding_time_limit(grid_clips):
    """A tiny time limit stops decoding with a DecodeError that says it was the time limit."""
    with pytest.raises(DecodeError) as info:
        featurise(grid_clips[0], timeout_s=1e-4)
    assert "time limit" in str(info.value), str(info.value)
    with pytest.raises(InputError, match="time limit must be positive"):  # a nonsensical limit is refused
        featurise(grid_clips[0], timeout_s=-1.0)


def test_decoding_time_limit_mid_stream(grid_clips, monkeypatch):
    """The limit is checked while decoding (between packets/frames), not only when opening."""
    import pinlite_edge.features.deadline as dl

    real = dl.time.monotonic
    calls = {"n": 0}

    def fake_monotonic() -> float:  # time jumps 1 s per call: the deadline passes after a few packets
        calls["n"] += 1
        return real() + calls["n"]

    monkeypatch.setattr(dl.time, "monotonic", fake_monotonic)
    with pytest.raises(DecodeError, match="time limit"):
        featurise(grid_clips[0], timeout_s=5.0)


def test_decoding_time_limit_grows_with_the_media_decoded(grid_clips, monkeypatch):
    """A flat 60 s cut off every 720p clip over about 15 minutes (the documented limit is an hour of media): the
    limit is timeout_s plus 2 s per second of media decoded, counted from the first timestamp and capped, so a file
    that makes no progress still fails after timeout_s."""
    import pinlite_edge.features.deadline as dl

    clock = {"t": 1000.0}
    monkeypatch.setattr(dl.time, "monotonic", lambda: clock["t"])
    deadline = dl.Deadline("clip.mp4", 10.0)
    clock["t"] += 11
    with pytest.raises(DecodeError, match=r"time limit \(10 s, plus 2 s per second of media: 0.0 s decoded\)"):
        deadline.check()  # no progress: the timeout alone
    deadline = dl.Deadline("clip.mp4", 10.0)
    for i in range(751):  # an MPEG-TS clock starting at 10 h: counted from there; 30 s of frames: 10 + 60 s allowed
        deadline.advance(36000.0 + i * 0.04, cap_s=3600.0)
    clock["t"] += 69
    deadline.check()
    clock["t"] += 2
    with pytest.raises(DecodeError, match="30.0 s decoded"):
        deadline.check()
    jump = dl.Deadline("clip.mp4", 10.0)
    jump.advance(0.0, cap_s=3600.0)
    jump.advance(3599.0, cap_s=3600.0)  # one timestamp jump buys what one frame may count (1 s), not two hours
    jump.advance(3599.04, cap_s=3600.0)
    clock["t"] += 13
    with pytest.raises(DecodeError, match="1.0 s decoded"):
        jump.check()
    capped = dl.Deadline("clip.mp4", 10.0)
    for i in range(20):
        capped.advance(i * 0.5, cap_s=5.0)  # 9.5 s of frames, but at most the clip's limit counts
    clock["t"] += 21
    with pytest.raises(DecodeError, match="5.0 s decoded"):
        capped.check()

    seen: list[float] = []  # decoding reports its progress: up to the clip's length
    advance = dl.Deadline.advance
    monkeypatch.setattr(dl.Deadline, "advance", lambda self, t, cap_s: (seen.append(t), advance(self, t, cap_s))[1])
    monkeypatch.setattr(dl.time, "monotonic", time.monotonic)
    featurise(grid_clips[0])
    assert 2.5 < max(seen) - min(seen) < 3.5, (min(seen), max(seen))


# --------------------------------------------------------------------------------------------- degraded media
def test_audio_much_shorter_than_video_scores_the_overlap_and_warns(media, caplog):
    caplog.set_level(logging.WARNING)
    windows = featurise(media("audio_short.mp4"))
    assert_valid(windows)
    # only the ~1 s covered by both tracks is scored (AAC priming may add a few ms of audio)
    assert all(w.start_seconds + C.window_seconds <= 1.1 for w in windows)
    text = warnings_of(caplog)
    assert "audio" in text and "audio_short.mp4" in text, (
        "a 3 s video with 1 s of audio is scored on its first second only: that must be logged as a warning "
        f"naming the file; got warnings: {text!r}")


def test_pure_silence_gives_finite_features_and_warns(media, caplog):
    caplog.set_level(logging.WARNING)
    windows = featurise(media("silent.mp4"))
    assert_valid(windows)
    assert [w.start_seconds for w in windows] == [0.0, 0.64, 0.96]  # 1.6 s: two windows + one aligned to the end
    assert all(np.abs(w.mfcc).max() < 1e-3 for w in windows)  # silence normalises to a constant (zero) map
    text = warnings_of(caplog)
    assert "silen" in text, f"a digitally silent audio track must be reported with a warning; got {text!r}"


def test_fewer_than_16_frames_is_padded_with_a_warning(media, caplog):
    caplog.set_level(logging.WARNING)
    windows = featurise(media("frames10.mp4"))
    assert_valid(windows)
    assert len(windows) == 1
    assert "padding" in warnings_of(caplog)
    # the last real frame is repeated: frames 10..15 of the window are identical
    f = windows[0].frames
    assert np.array_equal(f[-1], f[-2])


def test_too_few_frames_is_an_error_naming_the_file(media):
    path = media("frames5.mp4")
    with pytest.raises(DecodeError, match="too short") as info:
        featurise(path)
    assert path.name in str(info.value)


def test_single_frame_is_an_error_naming_the_file(media):
    path = media("single_frame.mp4")
    with pytest.raises(DecodeError, match="too short"):
        featurise(path)


def test_uhd_resolution_is_downscaled_while_decoding(media):
    path = media("uhd.mkv")
    video = decode_video(path)
    assert max(video.frames.shape[1:3]) <= 640  # bounded memory: 12 frames of 4K would be 300 MB
    assert video.frames.shape[0] == 8 and abs(video.fps - 12) < 1e-6
    windows = featurise(path)
    assert_valid(windows)
    assert len(windows) == 1


def test_grayscale_video_is_converted_to_rgb(media):
    path = media("gray.mkv")
    video = decode_video(path)
    assert video.frames.shape[-1] == 3
    assert np.array_equal(video.frames[..., 0], video.frames[..., 1])
    windows = featurise(path)
    assert_valid(windows)
    assert len(windows) == 3


def test_variable_frame_rate_is_handled_or_warned(media, caplog):
    """40 frames spread over 2.4 s: the frames are placed by their timestamps (the clip lasts ~2.4 s, so 3 windows)
    and the variable rate is reported with a warning."""
    caplog.set_level(logging.WARNING)
    windows = featurise(media("vfr.mkv"))
    assert_valid(windows)
    text = warnings_of(caplog)
    timestamps_used = len(windows) >= 3 and windows[-1].start_seconds > 1.5
    assert timestamps_used and "variable" in text, (
        f"VFR clip read as constant rate without a warning: {len(windows)} windows, "
        f"starts {[w.start_seconds for w in windows]}, warnings {text!r}")


def nearest_level(grey: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index into ``levels`` of the grey level nearest each of ``grey`` (a frame's index read back from the level it
    was drawn with, through the YUV <-> RGB rounding)."""
    return np.abs(grey.astype(int)[:, None] - levels[None, :].astype(int)).argmin(axis=1)


def test_implausible_declared_frame_rate_places_frames_by_their_timestamps(tmp_path, caplog):
    """A 30 fps stream whose container declares 500 fps (browser recordings can declare their time base's rate): the
    rate is not believed, so every frame is placed by its timestamp on the 25 fps fallback grid. Each frame carries
    its own index as its grey level; at every tick the frame shown must be the one a 30 fps player shows then, and
    the clip must keep its 3 s (read in decoding order at 25 fps it would last 3.6 s and drift 0.6 s from its audio)."""
    from pinlite_edge.features import prepare_file

    n = 90  # 3 s at 30 fps
    levels = ((np.arange(n) % 30) * 8).astype(np.uint8)  # frame i's grey level: i mod 30, 8 apart
    frames = np.broadcast_to(levels[:, None, None, None], (n, 48, 64, 3)).copy()
    audio = (0.1 * np.random.default_rng(1).standard_normal((3 * 16000, 1))).astype(np.float32)
    path = write_av(tmp_path / "declared500.mkv", frames, audio, rate=16000, fps=500,
                    pts_ms=np.round(np.arange(n) * 1000 / 30), vcodec="ffv1")
    caplog.set_level(logging.WARNING)
    clip = prepare_file(path, C, face_crop=False)
    assert "implausible frame rate (500.0)" in warnings_of(caplog)
    assert clip.fps == 25.0 and abs(clip.video_seconds - 3.0) <= 0.04 + 1e-9, (clip.fps, clip.video_seconds)
    def shown_index(grey: np.ndarray) -> np.ndarray:  # frame index mod 30
        return nearest_level(grey, levels[:30])

    shown = shown_index(clip.frames[:, 0, 0, 0])
    ticks = np.arange(len(shown)) * 40.0  # ms
    expected = np.minimum(np.floor(ticks * 30 / 1000 + 1e-6).astype(int), n - 1)  # the 30 fps frame shown then
    np.testing.assert_array_equal(shown, expected % 30)
    # decode_video (whole frames) places them the same way (one FramePlacer serves both)
    whole = decode_video(path)
    assert whole.fps == 25.0
    np.testing.assert_array_equal(shown_index(whole.frames[:, 0, 0, 0]), expected % 30)


def test_one_repeated_timestamp_does_not_make_later_timestamps_ignored(tmp_path, caplog):
    """Frame 13 repeats frame 12's timestamp, and 10 frames are missing at 2 s with their timestamps kept (a player
    holds frame 49 over the hole). The repeat used to switch the clip to decoding order for good: every frame after
    the hole played 0.4 s early against the audio, with no warning. Now each tick shows the frame a player shows
    then (but the repeated stamp's own tick), with a warning naming the repeat."""
    from pinlite_edge.features import prepare_file

    kept = [k for k in range(100) if not 50 <= k < 60]
    kept.insert(13, 12)  # decoded frame 13 carries frame 12's timestamp
    levels = ((np.arange(len(kept)) % 30) * 8).astype(np.uint8)  # decoded frame i's grey level: i mod 30
    frames = np.broadcast_to(levels[:, None, None, None], (len(kept), 48, 64, 3)).copy()
    audio = (0.1 * np.random.default_rng(1).standard_normal((4 * 16000, 1))).astype(np.float32)
    path = write_av(tmp_path / "repeat.mkv", frames, audio, rate=16000, fps=25, pts_ms=np.array(kept) * 40.0,
                    vcodec="ffv1")
    caplog.set_level(logging.WARNING)
    clip = prepare_file(path, C, face_crop=False)
    assert "frame 13 repeats the previous frame's timestamp (480 ms)" in warnings_of(caplog)
    shown = nearest_level(clip.frames[:, 0, 0, 0], levels[:30])
    stamps = np.array(kept) * 40.0
    player = np.array([np.flatnonzero(stamps <= t * 40.0)[-1] for t in range(100)])
    assert len(shown) == 100
    differ = np.flatnonzero(shown != player % 30)
    assert list(differ) in ([], [12]), differ


def test_a_declared_rate_the_timestamps_contradict_is_not_followed(tmp_path, caplog):
    """A webcam declared at 30 fps that delivered 24 fps (low light): every gap is regular (41.7 ms, within 1.5 frame
    periods), but one tick per frame would play 3 s of video in 2.4 s, drifting from the audio from the first second
    on. Once the drift passes half a frame period the frames are placed by timestamp. Jitter that does not accumulate
    (a phone's 33 +- 5 ms around 30 fps) keeps one tick per frame, without a warning."""
    from pinlite_edge.features import prepare_file

    n = 72  # 3 s at 24 fps
    levels = ((np.arange(n) % 24) * 10).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (n, 48, 64, 3)).copy()
    audio = (0.1 * np.random.default_rng(1).standard_normal((3 * 16000, 1))).astype(np.float32)
    pts = np.round(np.arange(n) * 1000 / 24)
    slow = write_av(tmp_path / "slow.mkv", frames, audio, rate=16000, fps=30, pts_ms=pts, vcodec="ffv1")
    caplog.set_level(logging.WARNING)
    clip = prepare_file(slow, C, face_crop=False)
    assert "drift from the declared 30 fps" in warnings_of(caplog)
    assert clip.fps == 30.0 and abs(clip.video_seconds - 3.0) <= 1 / 30 + 1e-9, clip.video_seconds
    def shown_ms(grey: np.ndarray) -> np.ndarray:
        """Time of the frame shown at each tick: its index mod 24 from its level, unwrapped (indices only grow)."""
        mod = nearest_level(grey, levels[:24])
        return pts[mod + 24 * np.concatenate([[0], np.cumsum(np.diff(mod) < 0)])]

    # until the drift passes half a tick, frames take one tick each; then each tick shows the frame of its time:
    # never one more than half a tick ahead, never more than one frame plus half a tick behind
    lag = np.arange(len(clip.frames)) * 1000 / 30 - shown_ms(clip.frames[:, 0, 0, 0])
    assert lag.min() >= -500 / 30 and lag.max() <= 42 + 500 / 30, (lag.min(), lag.max())
    whole = decode_video(slow)  # whole frames: the same placement (one FramePlacer serves both)
    np.testing.assert_array_equal(shown_ms(whole.frames[:, 0, 0, 0]), shown_ms(clip.frames[:, 0, 0, 0]))
    caplog.clear()
    jitter = np.round(np.arange(90) * 1000 / 30 + np.random.default_rng(2).uniform(-5, 5, 90))
    jitter[0] = 0
    phone = write_av(tmp_path / "phone.mkv", np.repeat(frames[:1], 90, axis=0), audio, rate=16000, fps=30,
                     pts_ms=jitter, vcodec="ffv1")
    assert len(prepare_file(phone, C, face_crop=False).frames) == 90 and len(decode_video(phone).frames) == 90
    assert warnings_of(caplog) == ""


def test_cover_art_before_the_video_is_not_taken_for_the_video(tmp_path, grid_media):
    """A container whose first video stream is a still (cover art, a thumbnail) and whose second is the clip: the
    clip is decoded, as a player would play it, not the still (before: a one-frame, 1 fps "video" scored silently)."""
    import av

    from pinlite_edge.features import prepare_file
    from pinlite_edge.features.probe import probe_video

    _, fr, au = grid_media
    path = tmp_path / "cover_first.mkv"
    with av.open(str(path), "w") as c:
        still = c.add_stream("mjpeg", rate=1)
        still.width, still.height, still.pix_fmt = 64, 48, "yuvj420p"
        video = c.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = fr.shape[2], fr.shape[1], "yuv420p"
        audio = c.add_stream("aac", rate=GRID_RATE, layout="stereo")
        cover = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 200, np.uint8), format="rgb24")
        cover.pts = 0
        c.mux(still.encode(cover))
        c.mux(still.encode())
        for i, img in enumerate(fr[:50]):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts = i
            c.mux(video.encode(f))
        c.mux(video.encode())
        planar = np.ascontiguousarray(au[:int(2.0 * GRID_RATE)].T)
        for s in range(0, planar.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, s:s + 1024]), format="fltp", layout="stereo")
            af.sample_rate, af.pts = GRID_RATE, s
            c.mux(audio.encode(af))
        c.mux(audio.encode())
    clip = prepare_file(path, C, face_crop=False)
    assert clip.fps == 25.0 and len(clip.frames) == 50
    probe = probe_video(path)
    assert probe.fps == 25.0 and abs(probe.duration - 2.0) < 0.1
    assert len(decode_video(path).frames) == 50


def test_anamorphic_video_is_decoded_with_square_pixels(tmp_path):
    """A stream with a 4:3 sample aspect ratio (as DV, DVD and HDV 1440x1080 store widescreen video) holds a patch 36
    pixels wide and 48 high that a player shows square. Faces must keep their real proportions for the face detector
    and the mouth crop, so frames are scaled to square pixels (the height by 3/4: never enlarged). Square-pixel
    streams and nonsense ratios are left as stored."""
    from fractions import Fraction

    import av

    from pinlite_edge.features import prepare_file

    def clip(name: str, sar: Fraction) -> Path:
        img = np.zeros((64, 96, 3), np.uint8)
        img[8:56, 30:66] = 255  # 36 x 48 stored
        path = tmp_path / name
        with av.open(str(path), "w") as c:
            vs = c.add_stream("libx264", rate=25)
            vs.width, vs.height, vs.pix_fmt = 96, 64, "yuv420p"
            vs.codec_context.sample_aspect_ratio = sar
            a = c.add_stream("aac", rate=16000, layout="mono")
            for i in range(25):
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = i
                c.mux(vs.encode(f))
            c.mux(vs.encode())
            tone = (0.1 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)[None]
            for k in range(0, 16000, 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]), format="fltp",
                                                layout="mono")
                af.sample_rate, af.pts = 16000, k
                c.mux(a.encode(af))
            c.mux(a.encode())
        return path

    def patch(frame: np.ndarray) -> tuple[int, int]:
        rows, cols = np.nonzero(frame[..., 0] > 128)
        return cols.max() - cols.min() + 1, rows.max() - rows.min() + 1  # width, height

    wide = clip("sar4x3.mp4", Fraction(4, 3))
    whole = decode_video(wide)
    assert whole.frames.shape[1:3] == (48, 96)
    w, h = patch(whole.frames[0])
    assert abs(w - h) <= 2, (w, h)  # stored 36 x 48: square as shown
    crop = prepare_file(wide, C, face_crop=False).frames[0]  # the centre square of the 96 x 48 frame
    w, h = patch(crop)
    assert abs(w - h) <= 3, (w, h)
    for name, sar in (("sar1.mp4", Fraction(1, 1)), ("sar50.mp4", Fraction(50, 1))):
        assert decode_video(clip(name, sar)).frames.shape[1:3] == (64, 96), name


@pytest.mark.parametrize("name", ["audio8k.mp4", "audio48k.mp4", "audio_stereo.mp4", "audio51.mp4"])
def test_audio_rates_and_layouts_give_16k_mono_features(media, name):
    path = media(name)
    windows = featurise(path)
    assert_valid(windows)
    starts = [w.start_seconds for w in windows]
    assert len(starts) == 3 and starts[:2] == [0.0, 0.64] and abs(starts[2] - 0.96) < 0.02
    # the MFCC must describe speech, not a constant: the GRID speech has energy in every window
    assert all(w.mfcc.std() > 0.1 for w in windows)


def test_rates_agree_on_the_same_speech(media):
    """The same 1.6 s of speech at 8/44.1/48 kHz and in 5.1 gives close MFCCs after resampling to 16 kHz."""
    ref = featurise(media("audio_stereo.mp4"))[0].mfcc
    # 8 kHz has no energy above 4 kHz, so its upper mel bands differ: a lower bar
    for name, bar in (("audio48k.mp4", 0.9), ("audio51.mp4", 0.9), ("audio8k.mp4", 0.6)):
        other = featurise(media(name))[0].mfcc
        corr = np.corrcoef(ref[:, 1:].ravel(), other[:, 1:].ravel())[0, 1]
        assert corr > bar, (name, corr)


# --------------------------------------------------------------------------------------------- arrays
@pytest.fixture(scope="session")
def good_arrays(grid_media) -> tuple[np.ndarray, np.ndarray]:
    _, fr, au = grid_media
    return fr[:40], au[: int(1.6 * GRID_RATE)]


def _bad_array_case(fr: np.ndarray, au: np.ndarray, case: str) -> tuple[Any, Any, Any]:
    """One malformed (frames, audio, sample_rate) triple; built lazily (the arrays are large)."""
    if case == "nan_frames":
        f = fr.astype(np.float32)
        f[0, 0, 0, 0] = np.nan
        return f, au, GRID_RATE
    if case in ("nan_audio", "inf_audio"):
        a = au.copy()
        a[100, 0] = np.nan if case == "nan_audio" else np.inf
        return fr, a, GRID_RATE
    return {
        "float_frames": lambda: (fr.astype(np.float32) / 255.0, au, GRID_RATE),
        "gray_frames": lambda: (fr[..., 0], au, GRID_RATE),
        "rgba_frames": lambda: (np.concatenate([fr, fr[..., :1]], axis=-1), au, GRID_RATE),
        "no_frames": lambda: (fr[:0], au, GRID_RATE),
        "empty_audio": lambda: (fr, au[:0], GRID_RATE),
        "3d_audio": lambda: (fr, au[None], GRID_RATE),
        "string_audio": lambda: (fr, au[:2000].astype(str), GRID_RATE),
        "zero_rate": lambda: (fr, au, 0),
        "negative_rate": lambda: (fr, au, -16000),
        "float_rate": lambda: (fr, au, 16000.5),
        "list_frames": lambda: (fr[:2, :4, :4].tolist(), au, GRID_RATE),
    }[case]()


CASES = ["nan_frames", "nan_audio", "inf_audio", "float_frames", "gray_frames", "rgba_frames", "no_frames",
         "empty_audio", "3d_audio", "string_audio", "zero_rate", "negative_rate", "float_rate", "list_frames"]


@pytest.mark.parametrize("case", CASES)
def test_featurise_arrays_rejects_bad_arrays(good_arrays, case):
    frames, audio, rate = _bad_array_case(*good_arrays, case)
    with pytest.raises(InputError):
        featurise_arrays(frames, audio, rate, 25.0, C, face_crop=False)


@pytest.mark.parametrize("fps", [0.0, -25.0, float("nan"), float("inf")])
def test_featurise_arrays_rejects_bad_fps(good_arrays, fps):
    with pytest.raises(InputError, match="fps"):
        featurise_arrays(*good_arrays, GRID_RATE, fps, C, face_crop=False)


def test_featurise_arrays_int16_audio_is_scaled(good_arrays):
    fr, au = good_arrays
    ref = featurise_arrays(fr, au, GRID_RATE, 25.0, C, face_crop=False)
    pcm = (au * 32767).astype(np.int16)
    got = featurise_arrays(fr, pcm, GRID_RATE, 25.0, C, face_crop=False)
    for a, b in zip(got, ref):
        assert np.corrcoef(a.mfcc.ravel(), b.mfcc.ravel())[0, 1] > 0.99


# --------------------------------------------------------------------------------------------- runners
@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "best.safetensors"
    save_checkpoint(path, create_student("tiny").eval(), {"note": "random init for input tests"})
    return path


@pytest.fixture(scope="session")
def torch_runner(tiny_checkpoint):
    from pinlite_edge.runtimes import load_runner

    runner = load_runner(tiny_checkpoint)
    runner.activate()
    yield runner
    runner.deactivate()


def _good_batch(b: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(C.frames_shape(b)).astype(np.float32),
            rng.standard_normal(C.mfcc_shape(b)).astype(np.float32))


def _runner_bad_inputs() -> dict[str, tuple[Any, Any, str]]:
    f, m = _good_batch()
    nan_f, inf_m = f.copy(), m.copy()
    nan_f[1, 3, 0, 5, 5] = np.nan
    inf_m[0, 10, 2] = -np.inf
    huge = m.astype(np.float64)
    huge[0, 0, 0] = 1e300  # finite in float64, inf once cast to float32
    return {
        "nan_frames": (nan_f, m, "NaN"),
        "inf_mfcc": (f, inf_m, "NaN or inf"),
        "float64_overflow": (f, huge, "NaN or inf"),
        "uint8_frames": ((f * 50).astype(np.uint8), m, "float32"),
        "int_mfcc": (f, m.astype(np.int32), "float32"),
        "no_batch_axis": (f[0], m[0], "batch axis"),
        "wrong_frame_size": (np.zeros((2, 16, 3, 128, 128), np.float32), m, "shape"),
        "channels_last": (np.ascontiguousarray(f.transpose(0, 1, 3, 4, 2)), m, "shape"),
        "wrong_mfcc_steps": (f, np.zeros((2, 63, 13), np.float32), "shape"),
        "empty_batch": (f[:0], m[:0], "empty batch"),
        "batch_mismatch": (f, m[:1], "batch sizes differ"),
        "list_input": (f.tolist(), m, "numpy"),
    }


@pytest.mark.parametrize("case", list(_runner_bad_inputs()))
def test_runner_rejects_bad_inputs(torch_runner, case):
    frames, mfcc, words = _runner_bad_inputs()[case]
    with pytest.raises(InputError, match=words):
        torch_runner.infer(frames, mfcc)


def test_runner_accepts_float64_and_non_contiguous(torch_runner):
    f, m = _good_batch()
    ref = torch_runner.infer(f, m)
    out = torch_runner.infer(f.astype(np.float64), np.asfortranarray(m))
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], atol=1e-5)
        assert out[k].dtype == np.float32


def test_runner_not_activated_is_a_pinlite_error(tiny_checkpoint):
    from pinlite_edge.runtimes import load_runner

    runner = load_runner(tiny_checkpoint)
    with pytest.raises(PinliteError, match="not active"):
        runner.infer(*_good_batch(1))


# --------------------------------------------------------------------------------------------- Detector
@pytest.fixture(scope="session")
def detector(tiny_checkpoint):
    from pinlite_edge.detector import Detector

    det = Detector.load(tiny_checkpoint, face_crop=False)
    yield det
    det.close()


def test_a_kept_detect_error_keeps_neither_the_file_nor_its_decoder(tiny_checkpoint, media, grid_clips):
    """A service that keeps failures (futures, a retry queue) kept with each exception from detect the decoder's
    threads and memory (a decoding error) and the open file (a scoring error, raised while decoding was suspended):
    the audit measured +133 threads and +274 MB for 36 kept failures, +1 open file per kept scoring error."""
    from pinlite_edge.detector import Detector
    from pinlite_edge.runtimes.base import RunnerOutputError

    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    def open_files() -> set[str]:
        names = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                names.add(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # closed since the listing
                pass
        return names

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs /proc (Linux) to count threads and open files")
    bad, clip = media("truncated.mpg"), grid_clips[0]
    kept: list[BaseException] = []
    with Detector.load(tiny_checkpoint, face_crop=False, batch_size=1) as det:
        with pytest.raises(DecodeError):
            det.detect(bad)  # the first call starts what stays (runtime threads)
        before = threads()
        for _ in range(6):
            with pytest.raises(DecodeError) as info:
                det.detect(bad)
            kept.append(info.value)
        assert threads() <= before + 1, (before, threads())

        def failing(frames: Any, mfcc: Any) -> Any:
            raise RunnerOutputError("the runner failed")

        det.runner.infer = failing
        for _ in range(3):
            with pytest.raises(RunnerOutputError) as info:
                det.detect(clip)  # the first window fails while the rest of the file is still to decode
            kept.append(info.value)
        assert str(clip) not in open_files() and threads() <= before + 1, (open_files(), before, threads())
    assert len(kept) == 9


@pytest.mark.parametrize("case", CASES)
def test_detector_detect_arrays_rejects_bad_arrays(detector, good_arrays, case):
    frames, audio, rate = _bad_array_case(*good_arrays, case)
    with pytest.raises(InputError):
        detector.detect_arrays(frames, audio, rate)


def test_detector_detect_arrays_good_input_is_finite(detector, good_arrays):
    fr, au = good_arrays
    result = detector.detect_arrays(fr, au, GRID_RATE)
    assert len(result.windows) == 3
    assert 0.0 <= result.fake_prob_mean <= result.fake_prob_max <= 1.0
    assert np.isfinite(result.attention).all()


@pytest.mark.parametrize("name", ["empty.mp4", "text.mp4", "truncated.mpg", "truncated_faststart.mp4", "no_audio.mp4",
                                  "frames5.mp4"])
def test_detector_detect_bad_file_raises_pinlite_error_naming_it(detector, media, name):
    path = media(name)
    with pytest.raises(PinliteError) as info:
        detector.detect(path)
    assert path.name in str(info.value)


# --------------------------------------------------------------------------------------------- #15: CLI failures
def _one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_export_output_pointing_at_a_file_is_a_usage_error(tiny_checkpoint, tmp_path, capsys):
    from pinlite_edge.export.__main__ import main

    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code = main(["--checkpoint", str(tiny_checkpoint), "--format", "onnx", "--output", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "is a file, not a folder" in err and _one_line(err), err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("argv, words", [
    (["--opset", "3"], "opset"),
    (["--calib-size", "8"], "calib"),  # an option format onnx does not take
    (["--opset", "x"], "--opset"),  # argparse: one line too
])
def test_export_bad_options_are_one_line_usage_errors(tiny_checkpoint, tmp_path, capsys, argv, words):
    from pinlite_edge.export.__main__ import main

    try:
        code = main(["--checkpoint", str(tiny_checkpoint), "--format", "onnx", "--output", str(tmp_path), *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and words in err and _one_line(err), err
    assert list(tmp_path.iterdir()) == []


def test_export_missing_checkpoint_is_a_usage_error_and_a_broken_one_a_failure(tmp_path, capsys):
    from pinlite_edge.export.__main__ import main

    code = main(["--checkpoint", str(tmp_path / "nope.safetensors"), "--format", "onnx", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "nope.safetensors" in err and _one_line(err), err
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint at all")
    code = main(["--checkpoint", str(broken), "--format", "onnx", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "broken.safetensors" in err and _one_line(err), err


def test_export_interrupted_is_one_line_exit_130_and_leaves_nothing(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """Ctrl-C during an export was a traceback and exit 1."""
    from pinlite_edge.export import api
    from pinlite_edge.export.__main__ import main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "export_model", interrupted)
    code = main(["--checkpoint", str(tiny_checkpoint), "--format", "onnx", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 130 and _one_line(err) and "interrupted" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_detect_explain_into_an_unwritable_place_keeps_the_result(tiny_checkpoint, grid_clips, tmp_path, capsys):
    """The result is printed first; the failed write is one line and exit 1 (it used to lose the result)."""
    from pinlite_edge.detect import main

    folder = tmp_path / "a_folder.png"
    folder.mkdir()
    code = main([str(grid_clips[0]), "--model", str(tiny_checkpoint), "--no-face-crop", "--explain", str(folder)])
    out, err = capsys.readouterr()
    assert code == 1 and "P(fake)" in out and "could not be written" in err and _one_line(err), (out, err)


def test_detect_takes_the_decoding_time_limit_as_scan_does(tiny_checkpoint, grid_clips, capsys, tmp_path,
                                                          monkeypatch):
    """detect had no --timeout ("always 60 s"), so a clip that needed more could not be scored from the CLI; --crops
    decodes again, with the same limit."""
    import pinlite_edge.features as features
    from pinlite_edge.detect import main

    base = [str(grid_clips[0]), "--model", str(tiny_checkpoint), "--no-face-crop"]
    assert main([*base, "--timeout", "1e-4"]) == 1
    err = capsys.readouterr().err
    assert "decoding exceeded the time limit (0.0001 s" in err and _one_line(err), err
    assert main([*base, "--timeout", "-1"]) == 2
    assert "--timeout must be positive finite seconds (0 on the command line: no limit)" in capsys.readouterr().err
    assert main([*base, "--timeout", "0", "--json"]) == 0  # 0: no limit
    assert json.loads(capsys.readouterr().out)["verdict"] in ("real", "fake")
    crop_squares = features.crop_squares
    limits = []
    monkeypatch.setattr(features, "crop_squares", lambda *a, **k: (limits.append(k.get("timeout_s", "default")),
                                                                   crop_squares(*a, **k))[1])
    assert main([*base, "--timeout", "0", "--crops", str(tmp_path / "c.json")]) == 0
    assert main([*base, "--timeout", "90", "--crops", str(tmp_path / "c.json")]) == 0
    assert limits == [None, 90.0]


@pytest.mark.parametrize("name, code", [("empty.mp4", 1), ("text.mp4", 1), ("missing.mp4", 2), ("a_folder.mp4", 2)])
def test_detect_exit_status_a_file_that_cannot_be_decoded_is_1_a_missing_one_2(tiny_checkpoint, media, tmp_path,
                                                                               capsys, name, code):
    """docs/input-handling.md: 1 for a video that cannot be decoded, 2 for a missing video. An empty file failed the
    pre-check before the model was loaded and exited 2, a text file exited 1 from the decoder."""
    from pinlite_edge.detect import main

    if name == "missing.mp4":
        path = tmp_path / name
    elif name == "a_folder.mp4":
        path = tmp_path / name
        path.mkdir()
    else:
        path = media(name)
    assert main([str(path), "--model", str(tiny_checkpoint)]) == code
    err = capsys.readouterr().err
    assert path.name in err and _one_line(err), err


@pytest.mark.parametrize("module, prog", [
    ("pinlite_edge.detect", "python -m pinlite_edge.detect"),
    ("pinlite_edge.scan", "python -m pinlite_edge.scan"),
    ("pinlite_edge.calibrate", "python -m pinlite_edge.calibrate"),
    ("pinlite_edge.bench.cli", "python -m pinlite_edge.bench"),
    ("pinlite_edge.export.__main__", "python -m pinlite_edge.export"),
    ("pinlite_edge.quickstart", "python -m pinlite_edge.quickstart"),
    ("pinlite_edge.training.__main__", "python -m pinlite_edge.training"),
    ("pinlite_edge.training.teacher", "python -m pinlite_edge.training.teacher"),
    ("pinlite_edge.training.distill", "python -m pinlite_edge.training.distill"),
    ("pinlite_edge.training.prune", "python -m pinlite_edge.training.prune"),
])
def test_every_cli_gives_a_usage_error_as_one_line_naming_itself(module, prog, capsys):
    """Every CLI's usage errors read alike: one line ``<prog>: error: ... (see --help)``, exit 2 (detect, bench,
    calibrate and training printed argparse's usage block first, and detect its errors without the program name)."""
    import importlib

    main = importlib.import_module(module).main
    try:
        code = main(["--no-such-option"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    # the unknown option, or first the required arguments it lacks
    assert code == 2 and _one_line(err) and err.startswith(f"{prog}: error: "), err
    assert "--no-such-option" in err or "the following arguments are required" in err, err


def test_detect_errors_name_the_program(tmp_path, capsys):
    from pinlite_edge.detect import main

    assert main([str(tmp_path / "missing.mp4"), "--timeout", "-1"]) == 2
    err = capsys.readouterr().err
    assert _one_line(err) and err.startswith("python -m pinlite_edge.detect: error: --timeout must be positive"), err
    (tmp_path / "m.safetensors").write_bytes(b"x")
    assert main([str(tmp_path / "missing.mp4"), "--model", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert _one_line(err) and err.startswith("python -m pinlite_edge.detect: error: ") and "missing.mp4" in err, err
