"""Property tests (hypothesis) of the feature pipeline: shapes, finiteness and bounds for random signals and frames
of random lengths, rates and channel counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pinlite_edge.contract import TINY_CONTRACT
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

C = TINY_CONTRACT
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RATES = st.sampled_from([8000, 11025, 16000, 22050, 32000, 44100, 48000]) | st.integers(4000, 96000)


def signals(min_len: int = 1, max_len: int = 12000, max_channels: int = 6) -> st.SearchStrategy[np.ndarray]:
    """float32 (samples, channels) with a random amplitude scale (silence, quiet, loud) and optional DC."""
    @st.composite
    def build(draw: st.DrawFn) -> np.ndarray:
        n = draw(st.integers(min_len, max_len))
        ch = draw(st.integers(1, max_channels))
        seed = draw(st.integers(0, 2**32 - 1))
        scale = draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.3, 1.0, 30.0]))
        dc = draw(st.sampled_from([0.0, 0.5]))
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, ch)) * scale + dc * (scale > 0)
        return x.astype(np.float32)
    return build()


@FAST
@given(audio=signals(), rate=RATES)
def test_resample_shape_finite_bounded(audio, rate):
    out = resample_audio(audio, rate, 16000)
    assert out.ndim == 1 and out.dtype == np.float32
    expected = audio.shape[0] * 16000 / rate
    assert abs(out.shape[0] - expected) <= 1.0
    assert np.isfinite(out).all()
    peak = float(np.abs(audio).max())
    # a polyphase low-pass can overshoot (Gibbs) but stays within a small factor of the input's peak
    assert float(np.abs(out).max(initial=0.0)) <= 2.0 * peak + 1e-6


@FAST
@given(n=st.integers(1, 5000), ch=st.integers(1, 8), seed=st.integers(0, 1000))
def test_to_mono_int16_is_in_unit_range(n, ch, seed):
    x = np.random.default_rng(seed).integers(-32768, 32768, size=(n, ch)).astype(np.int16)
    mono = to_mono(x)
    assert mono.shape == (n,) and mono.dtype == np.float32
    assert np.all(np.abs(mono) <= 1.0 + 1e-6)


@FAST
@given(audio=signals(min_len=400, max_len=2 * C.window_samples, max_channels=1))
def test_mfcc_shape_finite_and_normalised(audio):
    m = compute_mfcc(audio[:, 0], C)
    assert m.shape == C.mfcc_shape() and m.dtype == np.float32
    assert np.isfinite(m).all()
    # per-coefficient z-scores over the T analysis frames are bounded by sqrt(T - 1) (normalisation runs over all
    # frames of the given audio, before padding/trimming to mfcc_steps); padding repeats a row
    frames = 1 + math.ceil(max(0, audio.shape[0] - 400) / 160)
    assert np.abs(m).max() <= math.sqrt(max(frames, C.mfcc_steps) - 1) + 1e-3


@FAST
@given(n=st.integers(0, 399))
def test_mfcc_of_too_short_audio_is_an_input_error_or_valid(n):
    """Less than one 25 ms analysis window: python_speech_features pads the frame; the result must still be valid,
    or refused with InputError (never another exception)."""
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    try:
        m = compute_mfcc(x, C)
    except InputError:
        return
    assert m.shape == C.mfcc_shape() and np.isfinite(m).all()


@FAST
@given(t=st.integers(1, 20), size=st.integers(4, 48), seed=st.integers(0, 1000))
def test_normalise_frames_shape_and_bounds(t, size, seed):
    frames = np.random.default_rng(seed).integers(0, 256, size=(t, size, size, 3), dtype=np.uint8)
    x = normalise_frames(frames, C)
    assert x.shape == (t, 3, size, size) and x.dtype == np.float32 and x.flags.c_contiguous
    mean, std = np.asarray(C.mean), np.asarray(C.std)
    lo, hi = (-mean / std).min(), ((1 - mean) / std).max()
    assert x.min() >= lo - 1e-5 and x.max() <= hi + 1e-5


@FAST
@given(start=st.floats(0, 30), fps=st.floats(1, 240), n=st.integers(1, 3000))
def test_sample_indices_in_range_and_monotonic(start, fps, n):
    idx = sample_indices(start, fps, n, C)
    assert idx.shape == (C.num_frames,)
    assert idx.min() >= 0 and idx.max() <= n - 1
    assert np.all(np.diff(idx) >= 0)


@FAST
@given(duration=st.floats(0.0, 30.0), stride=st.none() | st.floats(0.04, 2.0), fps=st.floats(5, 120))
def test_window_starts_cover_the_clip(duration, stride, fps):
    win = C.window_seconds
    try:
        starts = window_starts(duration, C, stride, fps=fps)
    except InputError:
        assert duration < 0.5 * win + 1e-6
        return
    assert starts and starts[0] == 0.0 and starts == sorted(starts) and len(set(starts)) == len(starts)
    if duration < win:
        assert starts == [0.0]
        return
    assert all(0.0 <= s <= duration - win + 1e-5 for s in starts)
    # the tail is covered to within one video frame
    assert duration - (starts[-1] + win) <= 1.0 / fps + 1e-5
    step = win if stride is None else stride
    assert all(b - a <= step + 1e-5 for a, b in zip(starts, starts[1:]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_frames=st.integers(1, 40), h=st.integers(8, 72), w=st.integers(8, 72), fps=st.sampled_from([12.5, 25.0, 30.0]),
    rate=st.sampled_from([8000, 16000, 44100, 48000]), channels=st.integers(1, 6), seed=st.integers(0, 1000),
    audio_ratio=st.floats(0.2, 1.5),
)
def test_featurise_arrays_valid_windows_or_input_error(n_frames, h, w, fps, rate, channels, seed, audio_ratio):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(n_frames, h, w, 3), dtype=np.uint8)
    n_audio = max(1, int(n_frames / fps * audio_ratio * rate))
    audio = (rng.standard_normal((n_audio, channels)) * 0.1).astype(np.float32)
    duration = min(n_frames / fps, n_audio / rate)
    try:
        windows = featurise_arrays(frames, audio, rate, fps, C, face_crop=False)
    except InputError:
        assert duration < 0.5 * C.window_seconds + 0.05  # only clips too short to score are refused
        return
    assume(windows)
    for win in windows:
        assert win.frames.shape == C.frames_shape() and win.mfcc.shape == C.mfcc_shape()
        assert np.isfinite(win.frames).all() and np.isfinite(win.mfcc).all()
        assert win.start_seconds >= 0.0
