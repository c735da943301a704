"""Feature maths on in-memory arrays: MFCC per SPEC §1, resampling, windows, frame sampling, input validation."""
from __future__ import annotations

import numpy as np
import pytest
import python_speech_features

from pinlite_edge.contract import PAPER_CONTRACT, TINY_CONTRACT
from pinlite_edge.errors import InputError
from pinlite_edge.features import (
    compute_mfcc,
    featurise_arrays,
    normalise_frames,
    resample_audio,
    sample_indices,
    to_mono,
    window_starts,
)

RNG = np.random.default_rng(0)


def test_mfcc_equals_direct_python_speech_features_call_plus_normalisation():
    sig = RNG.standard_normal(PAPER_CONTRACT.window_samples).astype(np.float32)
    direct = python_speech_features.mfcc(sig, 16000, winlen=0.025, winstep=0.01, numcep=13)
    assert direct.shape == (63, 13)  # what python_speech_features gives for 10240 samples
    expected = (direct - direct.mean(0)) / direct.std(0)
    got = compute_mfcc(sig, PAPER_CONTRACT)
    assert got.shape == (64, 13) and got.dtype == np.float32
    np.testing.assert_allclose(got[:63], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got[63], got[62])  # padded by repeating the last frame


def test_mfcc_of_silence_is_finite():
    got = compute_mfcc(np.zeros(PAPER_CONTRACT.window_samples, np.float32), PAPER_CONTRACT)
    assert np.all(np.isfinite(got))


def test_mfcc_rejects_nan():
    sig = np.zeros(PAPER_CONTRACT.window_samples)
    sig[5] = np.nan
    with pytest.raises(InputError):
        compute_mfcc(sig, PAPER_CONTRACT)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 16000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_resample_any_rate_and_layout_to_16k_mono(rate, channels):
    t = np.arange(rate) / rate  # one second
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    audio = tone if channels == 1 else np.repeat(tone[:, None], channels, axis=1)
    out = resample_audio(audio, rate, 16000)
    assert out.ndim == 1 and out.dtype == np.float32
    assert abs(out.shape[0] - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / out.shape[0] - 440) < 3  # the tone survives at the same pitch


def test_to_mono_accepts_channels_first_and_int16():
    stereo = np.stack([np.full(4000, 16384, np.int16), np.zeros(4000, np.int16)])  # (channels, samples)
    mono = to_mono(stereo)
    assert mono.shape == (4000,)
    np.testing.assert_allclose(mono, 0.25, atol=1e-3)


def test_window_starts_stride_tail_and_short_clips(caplog):
    c = PAPER_CONTRACT
    assert window_starts(1.28, c) == [0.0, 0.64]
    assert window_starts(3.0, c, 0.32)[:3] == [0.0, 0.32, 0.64]
    starts = window_starts(2.98, c)
    assert starts[-1] == pytest.approx(2.98 - 0.64)  # tail window aligned to the end
    assert window_starts(0.5, c) == [0.0]  # padded, with a warning
    assert "shorter than one" in caplog.text
    with pytest.raises(InputError, match="too short"):
        window_starts(0.2, c)
    with pytest.raises(InputError):
        window_starts(2.0, c, 0.0)


def test_sample_indices_25fps_are_16_consecutive_frames():
    idx = sample_indices(0.64, 25.0, 100, PAPER_CONTRACT)
    np.testing.assert_array_equal(idx, np.arange(16, 32))
    idx30 = sample_indices(0.0, 30.0, 100, PAPER_CONTRACT)
    assert len(idx30) == 16 and np.all(np.diff(idx30) >= 1) and idx30[-1] <= 19


def test_normalise_frames_imagenet():
    frames = np.full((16, 8, 8, 3), 255, np.uint8)
    out = normalise_frames(frames, TINY_CONTRACT)
    assert out.shape == (16, 3, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], (1 - np.array(TINY_CONTRACT.mean)) / np.array(TINY_CONTRACT.std),
                               rtol=1e-6)


def _arrays(seconds=1.72, fps=25, rate=44100):
    n = int(round(seconds * fps))
    frames = RNG.integers(0, 255, size=(n, 72, 96, 3), dtype=np.uint8)
    audio = RNG.standard_normal((int(seconds * rate), 2)).astype(np.float32) * 0.1
    return frames, audio


@pytest.mark.parametrize("contract", [PAPER_CONTRACT, TINY_CONTRACT])
def test_featurise_arrays_shapes(contract):
    frames, audio = _arrays()
    wins = featurise_arrays(frames, audio, 44100, 25.0, contract, face_crop=False, stride_seconds=0.32)
    assert [w.start_seconds for w in wins] == pytest.approx([0.0, 0.32, 0.64, 0.96, 1.72 - 0.64])
    for w in wins:
        assert w.frames.shape == contract.frames_shape() and w.frames.dtype == np.float32
        assert w.mfcc.shape == contract.mfcc_shape() and w.mfcc.dtype == np.float32
        assert np.all(np.isfinite(w.frames)) and np.all(np.isfinite(w.mfcc))


def test_featurise_arrays_short_clip_is_padded():
    frames, audio = _arrays(seconds=0.4)
    (w,) = featurise_arrays(frames, audio, 44100, 25.0, TINY_CONTRACT, face_crop=False)
    np.testing.assert_array_equal(w.frames[-1], w.frames[9])  # frames past the end repeat the last frame
    assert np.all(np.isfinite(w.mfcc))


@pytest.mark.parametrize("bad", ["nan_audio", "inf_audio", "float_frames", "frames_3d", "audio_3d", "empty",
                                 "zero_rate", "nan_fps", "too_short"])
def test_featurise_arrays_rejects_bad_input(bad):
    frames, audio = _arrays()
    rate, fps = 44100, 25.0
    if bad == "nan_audio":
        audio[10, 0] = np.nan
    elif bad == "inf_audio":
        audio[10, 1] = np.inf
    elif bad == "float_frames":
        frames = frames.astype(np.float32)
    elif bad == "frames_3d":
        frames = frames[..., 0]
    elif bad == "audio_3d":
        audio = audio[None]
    elif bad == "empty":
        frames = frames[:0]
    elif bad == "zero_rate":
        rate = 0
    elif bad == "nan_fps":
        fps = float("nan")
    elif bad == "too_short":
        frames, audio = frames[:3], audio[:5000]
    with pytest.raises(InputError):
        featurise_arrays(frames, audio, rate, fps, TINY_CONTRACT, face_crop=False)


def test_audio_more_than_the_pre_video_limit_before_the_video_is_aligned_to_the_first_frame():
    """Audio starting long before the first video frame (more than PRE_VIDEO_AUDIO_S of it, so the oldest pending
    chunks are dropped) still starts at the sample played at the video's first frame: forgetting that the dropped
    samples had moved the kept audio's start cut the alignment short by the dropped length (6 s here), so the clip's
    audio began 6 s late against its frames."""
    from pinlite_edge.features.streams import PRE_VIDEO_AUDIO_S, MonoAudio

    rate, video_at = 1000, PRE_VIDEO_AUDIO_S + 5.0  # 1 kHz in and out: no resampling, sample i holds the value i
    audio = MonoAudio(rate, source="unit")
    audio.set_rate(rate)
    total = int((video_at + 7.0) * rate)
    marks = np.arange(total, dtype=np.float32)
    fed = 0
    while fed < int((video_at + 2.0) * rate):  # the demuxer hands over audio past the first video frame's time
        audio.add_audio(marks[fed:fed + rate], fed / rate)
        fed += rate
    assert fed / rate > PRE_VIDEO_AUDIO_S + 1.0  # more than the limit is pending: the oldest chunks are dropped
    audio.video_started(video_at)
    audio.add_audio(marks[fed:], fed / rate)
    audio.finish()
    out = audio.take()
    first = int(round(video_at * rate))
    assert out.dtype == np.float32 and out.shape == (total - first,)
    np.testing.assert_array_equal(out, marks[first:])
