"""Issue #15, decode / features / detector side: no input crashes the process, memory does not grow with a clip's
length, and no input gives a silent wrong answer (docs/input-handling.md, "Limits and reliability").

Media are generated with PyAV in temporary folders; the thread-safety test uses the GRID clips of ../shared.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import tracemalloc
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from pinlite_edge.contract import TINY_CONTRACT
from pinlite_edge.errors import DecodeError, InputError, PinliteError

from _standin_runner import StandInRunner  # noqa: E402
from conftest import NO_ROTATION_WRITER, pyav_writes_rotation  # noqa: E402

C = TINY_CONTRACT
REPO = Path(__file__).resolve().parents[1]

SAMPLE_FORMATS = {"pcm_s16le": "s16", "pcm_s32le": "s32", "pcm_u8": "u8", "pcm_f32le": "flt", "aac": "flt",
                  "flac": "s16", "libopus": "flt", "mp3": "flt"}


def write_av(path: Path, *, seconds: float = 2.0, size: tuple[int, int] = (64, 48), fps: int = 25,
             rate: int = 16000, layout: str = "stereo", codec: str = "pcm_s16le", rotation: int = 0,
             video_gap: tuple[float, float] | None = None, audio_gap: tuple[float, float] | None = None,
             frames: np.ndarray | None = None, audio: np.ndarray | None = None, vcodec: str | None = None,
             inverted: Sequence[int] = ()) -> Path:
    """A clip written with PyAV: moving-square frames (or ``frames``) and a tone (or ``audio``, float (n,) mono)
    copied to every channel of ``layout`` (the channels in ``inverted`` with their polarity flipped; or ``audio``
    (n, channels) as it is). ``video_gap`` / ``audio_gap`` = (at_s, gap_s): the stream's timestamps
    jump forward by ``gap_s`` from ``at_s`` on. ``rotation``: display matrix, degrees counter-clockwise."""
    import av

    fmt = {".mkv": "matroska", ".mp4": "mp4", ".mov": "mov"}[Path(path).suffix.lower()]
    with av.open(os.fsdecode(path) if isinstance(path, bytes) else str(path), "w", format=fmt) as c:
        vs = c.add_stream(vcodec or ("libx264" if fmt != "matroska" else "mpeg4"), rate=fps)
        w, h = size if frames is None else (frames.shape[2], frames.shape[1])
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.time_base = Fraction(1, 1000)
        if rotation:
            if not pyav_writes_rotation():
                pytest.skip(NO_ROTATION_WRITER)
            vs.set_display_rotation(rotation)
        ast = c.add_stream(codec, rate=rate, layout=layout)
        ast.time_base = Fraction(1, rate)
        channels = len(ast.layout.channels)
        sample_fmt = SAMPLE_FORMATS[codec]
        n = int(round(seconds * fps)) if frames is None else frames.shape[0]
        total = int(round(seconds * rate)) if audio is None else audio.shape[0]
        block = 1024
        s = 0

        def mux_audio(until: int) -> int:  # audio blocks up to sample ``until`` (streams interleaved by time)
            nonlocal s
            while s < min(total, until):
                k = min(block, total - s)
                if audio is None:
                    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(s, s + k) / rate) * \
                        (0.5 + 0.5 * np.sin(np.arange(s, s + k) / rate * 7))
                else:
                    x = audio[s:s + k]
                x = np.asarray(x, np.float64)
                data = x.copy() if x.ndim == 2 else np.repeat(x[:, None], channels, axis=1)
                data[:, list(inverted)] *= -1.0
                data = data.reshape(1, -1)
                if sample_fmt == "s16":
                    data = (np.clip(data, -1, 1) * 32767).astype(np.int16)
                elif sample_fmt == "s32":
                    data = (np.clip(data, -1, 1) * 2147483000).astype(np.int32)
                elif sample_fmt == "u8":
                    data = (np.clip(data, -1, 1) * 127 + 128).astype(np.uint8)
                else:
                    data = data.astype(np.float32)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=sample_fmt, layout=layout)
                af.sample_rate = rate
                shift = int(round(audio_gap[1] * rate)) if audio_gap and s / rate >= audio_gap[0] else 0
                af.pts, af.time_base = s + shift, Fraction(1, rate)
                c.mux(ast.encode(af))
                s += k
            return s

        for i in range(n):
            t = i / fps
            if frames is None:
                img = np.full((h, w, 3), 30, np.uint8)
                x = int((w - 8) * (0.5 + 0.5 * np.sin(3 * t)))
                img[h // 3:h // 3 + 8, x:x + 8] = 220
            else:
                img = frames[i]
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            shift = video_gap[1] if video_gap and t >= video_gap[0] else 0.0
            f.pts, f.time_base = int(round((t + shift) * 1000)), Fraction(1, 1000)
            c.mux(vs.encode(f))
            mux_audio(int((t + 1.0 / fps) * rate))
        c.mux(vs.encode())
        mux_audio(total)
        c.mux(ast.encode())
    return Path(os.fsdecode(path)) if isinstance(path, bytes) else Path(path)


def run_isolated(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (a decoder crash kills that process, not the test run)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=REPO)


# --------------------------------------------------------------------------------------------- crash isolation
@pytest.mark.parametrize("layout, codec, ext", [("7.1", "pcm_s16le", "mkv"), ("7.1", "pcm_f32le", "mkv"),
                                                ("7.1", "aac", "mp4"), ("hexadecagonal", "pcm_f32le", "mkv")],
                         ids=["7.1-s16", "7.1-f32", "7.1-aac", "16ch"])
def test_many_channel_audio_decodes_without_a_crash(tmp_path, layout, codec, ext):
    """7.1 and 16-channel audio (PyAV's planar conversion used to segfault on 8+ channels): decoded in a child
    process that must exit normally, with every channel, and featurised to the same mono as the channel mean."""
    path = write_av(tmp_path / f"many.{ext}", layout=layout, codec=codec, rate=48000)
    proc = run_isolated(
        "import json; from pinlite_edge.features import decode_audio, featurise_file;"
        "from pinlite_edge.contract import TINY_CONTRACT as C;"
        f"a = decode_audio({str(path)!r}); w = featurise_file({str(path)!r}, C, face_crop=False);"
        "print(json.dumps([a.samples.shape[1], len(w)]))")
    assert proc.returncode == 0, f"decoding {layout} audio died ({proc.returncode}): {proc.stderr[-800:]}"
    channels, windows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert channels == {"7.1": 8, "hexadecagonal": 16}[layout] and windows == 4  # 2 s: 3 + the tail window


def test_non_utf8_file_name_end_to_end(tmp_path):
    """A file name that is not valid UTF-8: as bytes and as the str Python makes of it (surrogate escapes), through
    featurise_file (face crop on, in a child process that must exit normally)."""
    src = write_av(tmp_path / "src.mkv")
    raw = os.path.join(os.fsencode(tmp_path), b"clip\xff\xfe name.mkv")
    os.rename(src, raw)
    from pinlite_edge.features import featurise_file

    for arg in (raw, os.fsdecode(raw), Path(os.fsdecode(raw))):
        assert len(featurise_file(arg, C, face_crop=False)) == 4
    with pytest.raises(DecodeError, match="does not exist"):
        featurise_file(os.fsencode(tmp_path) + b"/missing\xff.mkv", C)
    proc = run_isolated(
        "import os, sys; from pinlite_edge.features import featurise_file;"
        "from pinlite_edge.contract import TINY_CONTRACT as C;"
        f"print(len(featurise_file({raw!r}, C)))")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("4"), proc.stderr[-800:]


def test_opencv_never_gets_a_file_name(monkeypatch):
    """The Haar cascades are read by Python and loaded from memory: cv2.CascadeClassifier is never given a path
    (OpenCV's C++ side crashed on a non-UTF-8 one)."""
    import cv2

    from pinlite_edge.features import facetrack

    real = cv2.CascadeClassifier

    def guarded(*args: Any) -> Any:
        assert not args, f"cv2.CascadeClassifier was given a path: {args!r}"
        return real()

    monkeypatch.setattr(cv2, "CascadeClassifier", guarded)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(facetrack.load_cascade(facetrack.FRONTAL_CASCADE)))
    t.start()
    t.join()
    assert got and not got[0].empty()


# --------------------------------------------------------------------------------------------- bounded memory
class _StubRunner(StandInRunner):
    """A runner following BaseRunner's interface that scores without a model (fast; memory is what is measured)."""

    name = "stub"

    def __init__(self, outputs: Any = None):
        super().__init__(C, active=True)
        self.outputs = outputs

    def infer(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        frames = self.one_frames_row_per_mfcc_row(frames, mfcc)
        b = frames.shape[0]
        if self.outputs is not None:
            return self.outputs(b)
        return {"logits": np.stack([frames.mean(axis=(1, 2, 3, 4)), mfcc.mean(axis=(1, 2))], axis=1).astype(np.float32),
                "offset_logits": np.zeros((b, 11), np.float32),
                "attention": np.full((b, 16, 16), 1 / 16, np.float32)}


def _peak_numpy_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_detect_memory_does_not_grow_with_clip_length(tmp_path):
    """Detector.detect streams windows: the peak of Python/numpy allocations (crops, samples, windows) for a 40 s
    clip is within 25% of a 10 s clip's (before: the whole clip and all its windows were held, about 4x)."""
    from pinlite_edge.detector import Detector

    det = Detector(_StubRunner(), face_crop=False)
    short = write_av(tmp_path / "short.mkv", seconds=10, rate=48000)
    long = write_av(tmp_path / "long.mkv", seconds=40, rate=48000)
    det.detect(short)  # warm-up: imports, caches
    p_short = _peak_numpy_bytes(lambda: det.detect(short))
    p_long = _peak_numpy_bytes(lambda: det.detect(long))
    assert p_long < 1.25 * p_short, (p_short, p_long)


def test_video_timestamp_gap_costs_neither_memory_nor_a_wrong_length(tmp_path):
    """A 3 s clip whose video timestamps jump 20 minutes after 1.5 s (the audio goes on normally): only the 3 s the
    two tracks cover together are scored, in bounded memory (before: 9.4 GB to score 3 s)."""
    from pinlite_edge.detector import Detector

    gap = write_av(tmp_path / "gap.mkv", seconds=3, video_gap=(1.5, 1200.0))
    det = Detector(_StubRunner(), face_crop=False)
    peak = _peak_numpy_bytes(lambda: det.detect(gap))
    result = det.detect(gap)
    assert len(result.windows) <= 5 and result.windows[-1].start_seconds < 3.0
    assert peak < 64 * 2**20, peak


def test_timestamp_gap_bounded_by_the_declared_duration(caplog):
    """Frames placed past the container's declared duration (plus slack) are not used, with a warning."""
    from pinlite_edge.features.streams import FramePlacer

    caplog.set_level(logging.WARNING)
    placer = FramePlacer(25.0, bound_s=3.0, max_duration_s=3600.0, source="clip.mkv")
    for i in range(40):
        placer.stamp(i * 0.04)
    placer.stamp(1200.0)  # a 20-minute jump
    placer.stamp(1200.04)
    placer.finish()
    assert sum(placer.counts()) == 75 and "declares" in caplog.text
    placer = FramePlacer(25.0, bound_s=None, max_duration_s=60.0, source="clip.mkv")
    placer.stamp(0.0)
    with pytest.raises(DecodeError, match="max_duration_s"):
        placer.stamp(3600.0)


def test_limits_are_checked_before_decoding(tmp_path):
    """max_duration_s (from the container's declared duration) and max_pixels (from the stream header) refuse a
    file with a DecodeError naming the limit, before frames are decoded."""
    from pinlite_edge.detector import Detector
    from pinlite_edge.features import featurise_file

    clip = write_av(tmp_path / "big.mkv", seconds=3, size=(256, 192))
    with pytest.raises(DecodeError, match="max_duration_s"):
        featurise_file(clip, C, max_duration_s=2.0)
    with pytest.raises(DecodeError, match="max_pixels"):
        featurise_file(clip, C, max_pixels=128 * 128)
    det = Detector(_StubRunner(), face_crop=False, max_duration_s=2.0)
    with pytest.raises(DecodeError, match="max_duration_s"):
        det.detect(clip)
    assert len(Detector(_StubRunner(), face_crop=False).detect(clip).windows) == 5


@pytest.mark.parametrize("kwargs, match", [
    (dict(sample_rate=10**9), "sample_rate"), (dict(sample_rate=16000.5), "sample_rate"),
    (dict(sample_rate=True), "sample_rate"), (dict(fps=1e-6), "fps"), (dict(fps=1e9), "fps"),
], ids=["rate-1e9", "rate-float", "rate-bool", "fps-tiny", "fps-huge"])
def test_array_arguments_out_of_range_are_refused_up_front(kwargs, match):
    """Arguments that size an allocation (a resampling filter for a 1e9 Hz rate, windows for a 1e-6 fps clip) raise
    InputError before anything is allocated."""
    from pinlite_edge.detector import Detector

    frames = np.zeros((30, 32, 32, 3), np.uint8)
    audio = np.zeros(20000, np.float32)
    args = dict(sample_rate=16000, fps=25.0) | kwargs
    with pytest.raises(InputError, match=match):
        Detector(_StubRunner(), face_crop=False).detect_arrays(frames, audio, **args)


@pytest.mark.parametrize("option, value", [
    ("threshold", 2.0), ("threshold", float("nan")), ("threshold", "0.5"), ("aggregate", "median"),
    ("threshold", np.complex128(0.5 + 1j)), ("threshold", 10**400),  # taken as 0.5 / an OverflowError
    ("batch_size", 0), ("batch_size", 10**9), ("batch_size", True), ("stride_seconds", 1e-9),
    ("stride_seconds", float("inf")), ("face_crop", "yes"), ("max_duration_s", -1.0), ("max_pixels", 10),
])
def test_detector_options_are_pinlite_errors_naming_the_option(option, value):
    from pinlite_edge.detector import Detector

    with pytest.raises(InputError, match=option):
        Detector(_StubRunner(), **{option: value})


def test_runner_options_are_checked(tmp_path):
    """threads=100000 (it used to hang creating threads), an unknown device or batch policy: a PinliteError naming
    the option, raised when the Detector is loaded."""
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.detector import Detector
    from pinlite_edge.models import create_student

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m" / "best.safetensors", create_student("tiny", pretrained=False), {})
    for option, value in (("threads", 100000), ("device", "gpu7"), ("batch_policy", "drop")):
        with pytest.raises(PinliteError, match=option):
            Detector.load(ckpt, **{option: value})


# --------------------------------------------------------------------------------------------- silent wrong answers
def test_audio_timestamp_gap_is_silence_not_a_shift(tmp_path):
    """Audio whose timestamps jump 1 s at 1.0 s (a dropped stretch): the audio after the gap stays in sync with the
    video (silence fills the gap) instead of being glued on early."""
    from pinlite_edge.features import prepare_file

    rate = 16000
    t = np.arange(4 * rate) / rate
    audio = 0.3 * np.sin(2 * np.pi * 300 * t) * (t % 0.5 < 0.25)  # 250 ms bursts every 500 ms
    ref = prepare_file(write_av(tmp_path / "ref.mkv", seconds=4, audio=audio, rate=rate), C, face_crop=False)
    kept = np.concatenate([audio[:rate], audio[2 * rate:]])  # the second 1..2 s never recorded
    gap = prepare_file(write_av(tmp_path / "gap.mkv", seconds=4, audio=kept, rate=rate, audio_gap=(1.0, 1.0)), C,
                       face_crop=False)
    assert abs(gap.audio.shape[0] - ref.audio.shape[0]) < 0.05 * rate
    assert np.abs(gap.audio[int(1.05 * rate):int(1.95 * rate)]).max() < 1e-3  # the gap is silent
    after = slice(int(2.1 * rate), int(3.9 * rate))
    np.testing.assert_allclose(gap.audio[after], ref.audio[after], atol=2e-3)  # in sync after the gap


@pytest.mark.parametrize("codec, ext", [("pcm_s16le", ".mkv"), ("aac", ".mp4")])
def test_a_channel_out_of_phase_does_not_cancel_the_speech(tmp_path, caplog, codec, ext):
    """Right = -left plays as speech on two speakers; the plain channel mean was exact silence (PCM) and the clip got
    a confident "real" with no warning: an evasion as much as a fault. The channel is now flipped, with a warning,
    and the features equal those of the in-phase track, on the file path and the arrays path."""
    from pinlite_edge.features import prepare_file, to_mono

    rate = 16000
    t = np.arange(3 * rate) / rate
    audio = 0.3 * np.sin(2 * np.pi * 300 * t) * (t % 0.5 < 0.25)
    ref = prepare_file(write_av(tmp_path / f"ref{ext}", seconds=3, audio=audio, rate=rate, codec=codec), C,
                       face_crop=False)
    with caplog.at_level("WARNING", logger="pinlite_edge"):
        inv = prepare_file(write_av(tmp_path / f"inv{ext}", seconds=3, audio=audio, rate=rate, codec=codec,
                                    inverted=(1,)), C, face_crop=False)
    assert any("channel(s) 1 out of phase in " in r.getMessage() for r in caplog.records)
    assert np.abs(ref.audio).max() > 0.2
    n = min(inv.audio.size, ref.audio.size)  # AAC codes the channels' mix and difference: near, not equal
    assert np.corrcoef(inv.audio[:n], ref.audio[:n])[0, 1] > 0.999
    assert np.std(inv.audio[:n]) == pytest.approx(np.std(ref.audio[:n]), rel=0.02)
    stereo = np.stack([audio, -audio], axis=1).astype(np.float32)
    np.testing.assert_allclose(to_mono(stereo), audio.astype(np.float32), atol=1e-6)
    pcm = (stereo * 32767).astype(np.int16)
    np.testing.assert_allclose(to_mono(pcm), to_mono(pcm[:, :1]), atol=1e-6)
    offset_binary = (stereo * 127 + 128).astype(np.uint8)
    np.testing.assert_allclose(to_mono(offset_binary), to_mono(offset_binary[:, :1]), atol=1 / 128)  # 1 LSB


@pytest.mark.parametrize("pattern", ["from 1 s on", "every other second"])
def test_a_channel_out_of_phase_in_stretches_is_flipped_only_there_alike_on_both_paths(tmp_path, caplog, pattern):
    """A decision over the whole track (or a running one) left speech cancelled: in the stretches before it was
    reached, or everywhere when in-phase and inverted seconds alternate (the correlation over the track is then near
    0). Each block is decided on its own, with the same blocks for a file and for arrays."""
    from pinlite_edge.features import prepare_arrays, prepare_file

    rate = 16000
    t = np.arange(6 * rate) / rate
    speech = 0.3 * np.sin(2 * np.pi * 300 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    inverted = (t >= 1.0) if pattern == "from 1 s on" else (np.floor(t) % 2 == 1)
    stereo = np.stack([speech, np.where(inverted, -speech, speech)], axis=1)
    with caplog.at_level("WARNING", logger="pinlite_edge"):
        clip = prepare_file(write_av(tmp_path / "stretches.mkv", seconds=6, audio=stereo, rate=rate), C,
                            face_crop=False)
    assert any("channel(s) 1 out of phase in " in r.getMessage() for r in caplog.records)
    frames = np.zeros((150, 48, 64, 3), np.uint8)
    arrays = prepare_arrays(frames, stereo.astype(np.float32), rate, 25.0, C, face_crop=False)
    for mono in (clip.audio, arrays.audio):
        rms = [float(np.sqrt(np.mean(mono[k * 16000:(k + 1) * 16000] ** 2))) for k in range(5)]
        assert min(rms) > 0.6 * max(rms), rms  # no second cancelled (a block across a switch loses part)
    n = min(clip.audio.size, arrays.audio.size)
    assert np.corrcoef(clip.audio[:n], arrays.audio[:n])[0, 1] > 0.999


def test_a_brief_anti_phase_start_does_not_flip_an_in_phase_track(tmp_path, caplog):
    """A streamed file's first chunk alone (1024 samples, anti-phase) decided the whole track's mix and its warning."""
    from pinlite_edge.features import prepare_file, to_mono

    rng = np.random.default_rng(1)
    speech = (0.1 * rng.standard_normal(48000)).astype(np.float32)
    stereo = np.stack([speech, speech], axis=1)
    stereo[:1024, 1] *= -1.0
    with caplog.at_level("WARNING", logger="pinlite_edge"):
        np.testing.assert_array_equal(to_mono(stereo), stereo.mean(axis=1))
        prepare_file(write_av(tmp_path / "start.mkv", seconds=3, audio=stereo, rate=16000), C, face_crop=False)
    assert not [r for r in caplog.records if "out of phase" in r.getMessage()]


def test_channels_in_phase_or_unrelated_keep_the_plain_mean():
    """The mix the model was trained on is unchanged for every ordinary track (and for all 17 multichannel clips of
    ../shared/data/real-av, checked when this was written)."""
    from pinlite_edge.features import to_mono

    rng = np.random.default_rng(0)
    speech, other = rng.standard_normal((2, 48000)).astype(np.float32) * 0.1
    for stereo in (np.stack([speech, 0.5 * speech], 1), np.stack([speech, other], 1),
                   np.stack([speech, 0.3 * other - 0.1 * speech], 1), np.stack([speech, np.zeros_like(speech)], 1)):
        np.testing.assert_array_equal(to_mono(stereo), stereo.mean(axis=1))


def _speech_51(seconds: float, rate: int, lfe: float) -> np.ndarray:
    """(n, 6) 5.1 audio (FL FR FC LFE BL BR): speech-like harmonics with a syllable rhythm on the five full-range
    channels (each its own gain, a delay on the back pair), a 40 Hz tone of amplitude ``lfe`` in LFE."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    voice = 0.25 * voice / np.abs(voice).max()
    late = np.concatenate([np.zeros(240), voice[:-240]])
    return np.stack([0.8 * voice, 0.7 * voice, voice, lfe * np.sin(2 * np.pi * 40 * t), 0.3 * late, 0.3 * late], 1)


@pytest.mark.parametrize("codec, ext", [("flac", ".mkv"), ("aac", ".mp4")])
def test_the_lfe_channel_is_left_out_of_a_files_mix(tmp_path, caplog, codec, ext):
    """A file's LFE channel (sub-bass effects, not speech; standard downmixes drop it) was averaged into the mono mix:
    a loud low tone in LFE moved the low MFCC bands. A 5.1 file with a loud 40 Hz tone in LFE now gives the features of
    the same file with LFE silent (FLAC: the same samples; AAC: near). Arrays carry no
    layout: every channel, LFE included, is still mixed."""
    from pinlite_edge.features import featurise_file, to_mono

    rate = 48000
    quiet, loud = _speech_51(3.0, rate, 0.0), _speech_51(3.0, rate, 0.9)
    ref = featurise_file(write_av(tmp_path / f"ref{ext}", seconds=3, audio=quiet, rate=rate, layout="5.1",
                                  codec=codec), C, face_crop=False)
    with caplog.at_level("WARNING", logger="pinlite_edge"):
        lfe = featurise_file(write_av(tmp_path / f"lfe{ext}", seconds=3, audio=loud, rate=rate, layout="5.1",
                                      codec=codec), C, face_crop=False)
    assert not [r for r in caplog.records if "out of phase" in r.getMessage()]
    assert len(lfe) == len(ref) > 1
    for a, b in zip(lfe, ref):
        if codec == "flac":
            np.testing.assert_array_equal(a.mfcc, b.mfcc)
        else:  # the LFE tone shares the encoder's bits: correlation 0.98 or more with the fix, 0.43..0.59 without
            assert np.corrcoef(a.mfcc.ravel(), b.mfcc.ravel())[0, 1] > 0.95
    loud32 = loud.astype(np.float32)
    np.testing.assert_array_equal(to_mono(loud32), loud32.mean(axis=1))


def test_lfe_channels_named_by_a_layout_are_left_out_unless_alone():
    """Which channels a file's mix keeps, and the channel an out-of-phase warning names once LFE is left out."""
    from pinlite_edge.features.downmix import BLOCK, BlockMixer, speech_channels

    assert speech_channels(("FL", "FR", "FC", "LFE", "BL", "BR")).tolist() == [0, 1, 2, 4, 5]
    assert speech_channels(("FL", "FR", "LFE")).tolist() == [0, 1]
    assert speech_channels(("FL", "FR")) is None and speech_channels(("NONE",) * 6) is None
    assert speech_channels(("LFE",)) is None and speech_channels(("LFE", "LFE2")) is None  # nothing but LFE: kept
    voice = np.random.default_rng(2).standard_normal(BLOCK).astype(np.float32)
    block = np.stack([voice, voice, voice, np.ones_like(voice), voice, -voice], 1)
    mixer = BlockMixer("unit")
    mixer.set_layout(("FL", "FR", "FC", "LFE", "BL", "BR"))
    (mono, mixed), = mixer.add(block)
    assert mixed.shape == (BLOCK, 5)
    np.testing.assert_allclose(mono, voice, atol=1e-6)  # BR flipped back, LFE left out
    assert "channel(s) 5 out of phase in 1 of 1 blocks" in mixer.polarity.warning()


def test_audio_dtype_rules():
    """Complex audio is refused (it used to be cut to its real part); unsigned PCM is centred (uint8 128 = 0);
    signed PCM is scaled by 2^(bits-1); float audio far beyond any PCM full scale is refused."""
    from pinlite_edge.features import featurise_arrays, to_mono

    assert to_mono(np.array([128, 255, 0], np.uint8)).tolist() == pytest.approx([0.0, 127 / 128, -1.0])
    assert to_mono(np.array([32768, 0], np.uint16)).tolist() == [0.0, -1.0]
    assert to_mono(np.array([-32768, 16384], np.int16)).tolist() == [-1.0, 0.5]
    frames = np.full((40, 32, 32, 3), 90, np.uint8)
    tone = 0.4 * np.sin(2 * np.pi * 440 * np.arange(25600) / 16000)
    ref = featurise_arrays(frames, tone.astype(np.float32), 16000, 25.0, C, face_crop=False)
    pcm = np.round(tone * 127 + 128).astype(np.uint8)
    same = ((pcm.astype(np.float64) - 128) / 128).astype(np.float32)  # what the uint8 samples mean
    u8 = featurise_arrays(frames, pcm, 16000, 25.0, C, face_crop=False)
    for a, b in zip(featurise_arrays(frames, same, 16000, 25.0, C, face_crop=False), u8):
        np.testing.assert_allclose(a.mfcc, b.mfcc, atol=1e-4)
    assert abs(float(to_mono(pcm).mean())) < 0.01  # no DC offset (it was 0.5 of full scale)
    assert len(u8) == len(ref)
    for bad, match in ((tone.astype(np.complex64), "complex"), (np.full(25600, 3e38, np.float32), "PCM"),
                       (tone > 0, "numeric")):
        with pytest.raises(InputError, match=match):
            featurise_arrays(frames, bad, 16000, 25.0, C, face_crop=False)


def test_out_of_range_windows_never_reach_the_model():
    """Finite but huge float32 features (they overflow inside the model to NaN logits) are refused before the
    runner is called; NaN outputs from a runner raise a PinliteError instead of becoming a verdict."""
    from pinlite_edge.detector import Detector
    from pinlite_edge.features import Window

    runner = _StubRunner()
    det = Detector(runner)
    ok = Window(frames=np.zeros(C.frames_shape(), np.float32), mfcc=np.zeros(C.mfcc_shape(), np.float32),
                start_seconds=0.0)
    huge = Window(frames=np.full(C.frames_shape(), 3e38, np.float32), mfcc=ok.mfcc, start_seconds=0.0)
    with pytest.raises(InputError, match="normalised"):
        det.score_windows([ok, huge])
    assert runner.calls == 0
    def nan_outputs(b: int) -> dict[str, np.ndarray]:
        return {"logits": np.full((b, 2), np.nan, np.float32), "offset_logits": np.zeros((b, 11), np.float32),
                "attention": np.zeros((b, 16, 16), np.float32)}

    with pytest.raises(PinliteError, match="NaN"):
        Detector(_StubRunner(nan_outputs), aggregate="max", scan_offsets=None).score_windows([ok])
    ok.mfcc_shifts = np.zeros((7, *C.mfcc_shape()), np.float32)  # what the offset scan scores besides
    with pytest.raises(PinliteError, match="NaN"):
        Detector(_StubRunner(nan_outputs)).score_windows([ok])


def test_detector_is_thread_safe(grid_clips, tmp_path):
    """P(fake) of the same clips from 8 threads sharing one Detector equals one thread's (the cached face detector
    used to be shared by all threads without a lock)."""
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.detector import Detector
    from pinlite_edge.export import export_model
    from pinlite_edge.models import create_student

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m" / "best.safetensors", create_student("tiny", pretrained=False), {})
    onnx = export_model(ckpt, "onnx", tmp_path / "onnx").artifact
    clips = grid_clips[:4]
    with Detector.load(onnx, threads=1) as det:
        ref = {c: (det.detect(c).fake_prob_per_window.tolist(), det.detect(c).face_coverage) for c in clips}
        got: dict[tuple[int, Path], Any] = {}
        errors: list[BaseException] = []

        def work(k: int) -> None:
            try:
                for c in clips[k % 2:] + clips[:k % 2]:
                    r = det.detect(c)
                    got[(k, c)] = (r.fake_prob_per_window.tolist(), r.face_coverage)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    for (k, c), value in got.items():
        assert value == ref[c], (k, c.name, value, ref[c])


# --------------------------------------------------------------------------------------------- streaming = whole
@pytest.mark.parametrize("case", ["plain", "vfr", "late_audio", "short", "rotated", "video_pause", "long_audio"])
@pytest.mark.parametrize("stride", [None, 0.3])
def test_streamed_windows_equal_whole_clip_windows(tmp_path, case, stride):
    """open_windows (what Detector.detect runs) gives exactly the windows of prepare_windows (whole clip).
    video_pause: no frames for 35 s while the audio goes on (a screen recording, a call with the camera off);
    long_audio: 37 s more audio than video (not kept while streaming, and not needed)."""
    from pinlite_edge.features import open_windows, prepare_windows

    def tone(seconds: float) -> np.ndarray:
        t = np.arange(int(seconds * 44100)) / 44100
        return (0.3 * np.sin(2 * np.pi * 440 * t) * (0.5 + 0.5 * np.sin(7 * t))).astype(np.float32)

    kw: dict[str, Any] = {"plain": {}, "vfr": {"video_gap": (1.0, 0.3)}, "late_audio": {"audio_gap": (0.0, 0.4)},
                          "short": {"seconds": 0.5}, "rotated": {"rotation": 90},
                          "video_pause": {"video_gap": (1.0, 35.0), "audio": tone(39.0)},
                          "long_audio": {"audio": tone(40.0)}}[case]
    path = write_av(tmp_path / f"{case}.mp4", rate=44100, **({"seconds": 3} | kw))
    clip, whole = prepare_windows(path, C, stride_seconds=stride)
    stream, windows = open_windows(path, C, stride_seconds=stride)
    streamed = list(windows)
    assert [w.start_seconds for w in streamed] == [w.start_seconds for w in whole]
    for a, b in zip(streamed, whole):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.mfcc, b.mfcc)
    assert (stream.face_found, stream.face_coverage) == (clip.face_found, clip.face_coverage)


def test_stream_resampler_equals_resample_poly():
    """The streaming resampler gives resample_poly's samples exactly, however the signal is cut into pieces."""
    from math import gcd

    from scipy.signal import resample_poly

    from pinlite_edge.features.streamresample import StreamResampler

    rng = np.random.default_rng(0)
    for rate in (8000, 11025, 22050, 44100, 48000, 96000):
        x = rng.standard_normal(int(rng.integers(1, 60000))).astype(np.float32)
        g = gcd(rate, 16000)
        ref = resample_poly(x.astype(np.float64), 16000 // g, rate // g).astype(np.float32)
        r = StreamResampler(rate, 16000)
        pieces, i = [], 0
        while i < x.size:
            k = int(rng.integers(1, 20000))
            pieces.append(r.add(x[i:i + k]))
            i += k
        pieces.append(r.finish())
        assert np.array_equal(np.concatenate(pieces), ref), rate


def test_a_file_with_several_audio_streams_says_which_one_is_scored(tmp_path, caplog):
    """A dub or a commentary track beside the main audio: the verdict is about one stream (the one a player picks),
    and the result used to say nothing about the others."""
    import av

    from pinlite_edge.features import prepare_file

    path = tmp_path / "two_audio.mkv"
    rate, fps, n = 16000, 25, 25
    with av.open(str(path), "w", format="matroska") as c:
        vs = c.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        tracks = [c.add_stream("pcm_s16le", rate=rate, layout="mono") for _ in range(2)]
        tracks[0].metadata["language"] = "eng"
        tracks[1].metadata["title"] = "commentary"
        for i in range(n):
            img = np.full((48, 64, 3), 30 + 8 * i, np.uint8)
            c.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            for k, ast in enumerate(tracks):
                x = (0.2 * np.sin(2 * np.pi * (300 + 200 * k) * np.arange(640) / rate) * 32767).astype(np.int16)
                af = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="s16", layout="mono")
                af.sample_rate, af.pts, af.time_base = rate, i * 640, Fraction(1, rate)
                c.mux(ast.encode(af))
        c.mux(vs.encode())
        for ast in tracks:
            c.mux(ast.encode())
    with caplog.at_level("WARNING", logger="pinlite_edge"):
        prepare_file(path, C, face_crop=False)
    said = [r.getMessage() for r in caplog.records if "audio streams" in r.getMessage()]
    assert len(said) == 1 and "has 2 audio streams; only stream #1 (eng), the one a player picks" in said[0], said
    caplog.clear()
    from pinlite_edge.features import decode_video

    with caplog.at_level("WARNING", logger="pinlite_edge"):
        decode_video(path)  # frames only: no audio is scored, nothing to say
    assert not [r for r in caplog.records if "audio streams" in r.getMessage()]


# --------------------------------------------------------------------------------------------- frame rate and memory
def test_frames_held_for_the_face_track_stay_within_their_budget_at_a_high_frame_rate(tmp_path, monkeypatch):
    """The face track's lookahead is counted in source frames: at 240 fps 1080p it held 1 GB. Frames are now held
    smaller where the lookahead would pass cropstream.PENDING_BYTES (here lowered to 32 MB, with 960x540 frames at
    120 fps: 164 frames of 0.78 MB = 127 MB); a 25 fps clip of the same size is held whole. The windows stay those of
    the whole clip, and crop_squares gives the squares in pixels of the full frame."""
    from pinlite_edge.features import crop_squares, cropstream, open_windows, prepare_windows
    from pinlite_edge.features.cropstream import CropStream
    from pinlite_edge.features.deadline import Deadline
    from pinlite_edge.features.decode import decode_media
    from pinlite_edge.features.facecrop import FaceCropConfig

    budget = 32 * 2**20
    monkeypatch.setattr(cropstream, "PENDING_BYTES", budget)
    peaks: dict[int, int] = {}
    for fps in (25, 120):
        path = write_av(tmp_path / f"{fps}.mp4", seconds=1.5, size=(960, 540), fps=fps)
        stream = CropStream(8, FaceCropConfig(), max_side=1920, source=str(path))
        held = []
        add_yuv = stream.add_yuv

        def spy(yuv, stream=stream, held=held, add_yuv=add_yuv):
            add_yuv(yuv)
            held.append(sum(f.y.nbytes + f.u.nbytes + f.v.nbytes for f in stream._pending))

        stream.add_yuv = spy
        decode_media(path, Deadline(path, None), video=stream, require_video=True)
        stream.finish()
        peaks[fps] = max(held)
        assert stream.bounded_side == 960
        if fps == 25:
            assert stream.frame_side == 960  # 41 frames of 0.78 MB: within the budget, held whole
            continue
        assert stream.frame_side < 960 and peaks[fps] <= budget, (stream.frame_side, peaks)
        clip, whole = prepare_windows(path, C)
        _, windows = open_windows(path, C)
        streamed = list(windows)
        assert [w.start_seconds for w in streamed] == [w.start_seconds for w in whole] and whole
        for a, b in zip(streamed, whole):
            assert np.array_equal(a.frames, b.frames) and np.array_equal(a.mfcc, b.mfcc)
        # no face: the centre square of the 960x540 frame (210, 0, 540), in its pixels, to the held frames' rounding
        squares = crop_squares(path)
        assert all(abs(s["x"] - 210) <= 1 and s["y"] == 0 and abs(s["side"] - 540) <= 1 for s in squares), squares[:2]


# --------------------------------------------------------------------------------------------- API arguments
@pytest.mark.parametrize("field, value", [
    ("num_mfcc", 100), ("num_frames", 0), ("num_frames", -1), ("mfcc_steps", 0), ("frame_size", 64.5),
    ("frame_size", "64"), ("sample_rate", 0), ("fps", 0.0), ("fps", math.nan), ("window_seconds", -0.64),
    ("mfcc_winlen", 0.0), ("mfcc_winstep", math.inf), ("std", (0.0, 0.0, 0.0)), ("mean", (math.nan, 0.0, 0.0)),
])
def test_an_input_contract_that_cannot_work_is_refused_naming_the_field(field, value):
    """InputContract checked nothing: num_mfcc=100 gave (64, 26) MFCCs, num_frames=-1 empty windows, std 0 NaN
    frames, others failed deep in numpy, cv2 or python_speech_features. Manifests are read with the same check."""
    from dataclasses import replace

    from pinlite_edge.errors import ManifestError, UsageError
    from pinlite_edge.manifest import validate_contract

    with pytest.raises(UsageError, match=f"InputContract.{field} must be"):
        replace(C, **{field: value})
    record = C.to_dict() | {field: list(value) if isinstance(value, tuple) else value}
    with pytest.raises(ManifestError, match=f"input_contract.{field} must be"):
        validate_contract(record)
    assert replace(C, num_frames=np.int64(16)) == C  # numpy integers are whole numbers


def test_file_api_size_and_time_arguments_are_checked(tmp_path):
    """max_side 0, -1 or 2.5 found no face and said so (a silently wrong answer); a NaN timeout meant no limit; a
    numpy float stride was refused as "not positive"."""
    from pinlite_edge.features import crop_squares, decode_video, open_windows, prepare_windows

    path = write_av(tmp_path / "a.mp4", seconds=1.0)
    for bad in (0, -1, 2.5, True):
        for call in (lambda: prepare_windows(path, C, max_side=bad), lambda: open_windows(path, C, max_side=bad),
                     lambda: crop_squares(path, max_side=bad), lambda: decode_video(path, max_side=bad)):
            with pytest.raises(InputError, match="max_side must be None"):
                call()
    with pytest.raises(InputError, match="time limit must be positive finite"):
        prepare_windows(path, C, timeout_s=math.nan)
    _, windows = prepare_windows(path, C, stride_seconds=np.float32(0.32), max_side=np.int64(640))
    assert len(windows) == len(prepare_windows(path, C, stride_seconds=0.32)[1])
