"""The offset scan (pinlite_edge/offset_scan.py): shifted-audio windows, the clip curve, its verdict and offset.

The end-to-end tests use a stand-in runner that "knows" the true alignment (the frames carry their own frame index,
the runner compares each window's MFCCs with those of the original audio at that index), so the scan's sign
convention, offset estimate and verdict are checked exactly, without a trained model.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from pinlite_edge.contract import TINY_CONTRACT, InputContract
from pinlite_edge.errors import InputError
from pinlite_edge.features.mfcc import compute_mfcc
from pinlite_edge.features.windows import PreparedClip, audio_segment, shift_samples, window_at
from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS, ScanCurve, check_scan_offsets, scan_fake_prob

from _standin_runner import StandInRunner  # noqa: E402

C = TINY_CONTRACT
SPF = shift_samples(1, C)  # audio samples per video frame (640)


def test_check_scan_offsets():
    assert check_scan_offsets(None) == () and check_scan_offsets([]) == ()
    assert check_scan_offsets([2, 0, -2]) == (-2, 0, 2)
    assert check_scan_offsets(np.array([0, 1, -1])) == (-1, 0, 1)
    for bad, match in (([1, 2, 3], "include 0"), ([0, 1], "at least two"), ([0, 1, 1, -1], "repeat"),
                       ([0, True, -1], "integers"), ([0, 1.5, -1], "integers"), ("0,1,2", "sequence"),
                       ([0, 1, 99], "within")):
        with pytest.raises(InputError, match=match):
            check_scan_offsets(bad)


def test_scan_fake_prob_is_zero_at_the_best_alignment_and_grows_with_the_gap():
    assert scan_fake_prob(np.array([0.1, 0.5, 0.2]), 1) == 0.0
    assert scan_fake_prob(np.array([1.5, 0.5, 0.2]), 1) == pytest.approx(1 - np.exp(-1.0))
    assert scan_fake_prob(np.array([9.0, 0.0, 0.0]), 1) > 0.999


@pytest.mark.parametrize("zero_index", [3, 5, -1, 1.0, True, None])
def test_scan_fake_prob_needs_the_zero_index_inside_the_curve(zero_index):
    """5 was an IndexError, -1 silently read the last shift as the given alignment."""
    with pytest.raises(InputError, match=r"zero_index inside it \(0\.\.2\)"):
        scan_fake_prob(np.array([0.2, 0.0, 1.0]), zero_index)
    assert scan_fake_prob(np.array([0.2, 0.0, 1.0]), np.int64(2)) == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("at", [0, 1])
def test_scan_fake_prob_refuses_a_curve_that_is_not_finite(bad, at):
    """A NaN in the curve (at the zero index or elsewhere) gave a NaN P(fake), which no threshold calls fake."""
    curve = np.array([0.2, 0.0, 1.0])
    curve[at] = bad
    with pytest.raises(InputError, match=r"scan_fake_prob needs a finite curve, got NaN or inf at 1 of its 3 offsets"):
        scan_fake_prob(curve, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_scan_curve_refuses_margins_that_are_not_finite(bad):
    """A NaN margin gave the clip a scan P(fake) of nan."""
    curve = ScanCurve((-2, 0, 2))
    with pytest.raises(InputError, match="scan margins contain NaN or inf"):
        curve.add(np.array([[bad, 0.0, 1.0]]), [True])
    curve.add(np.array([[0.0, 0.0, 1.0]]), [True])  # nothing of the refused batch was kept
    assert curve.result().windows_used == 1 and math.isfinite(curve.result().fake_prob)


def test_scan_curve_prefers_windows_whose_shifts_stay_in_the_track():
    curve = ScanCurve((-2, 0, 2))
    curve.add(np.array([[5.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), [False, True])
    r = curve.result()
    assert r.complete_only and r.windows_used == 1 and r.offset_frames == 0 and r.fake_prob == 0.0
    curve.add(np.array([[0.0, 0.0, 3.0]]), [True])  # a second batch: every window's row kept, in order
    np.testing.assert_array_equal(curve.result().window_margins,
                                  np.array([[5.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]], np.float32))
    r = curve.result()
    assert r.windows_used == 2 and "window_margins" not in r.to_dict()
    edge_only = ScanCurve((-2, 0, 2))
    edge_only.add(np.array([[5.0, 0.0, 0.0]]), [False])  # a clip too short for a complete window: use what there is
    r = edge_only.result()
    assert not r.complete_only and r.offset_frames == -2 and r.fake_prob == pytest.approx(1 - np.exp(-5.0))
    with pytest.raises(InputError, match="margins"):
        curve.add(np.zeros((2, 2)), [True, True])
    with pytest.raises(InputError, match="no window"):
        ScanCurve((-2, 0, 2)).result()


def test_scan_curve_gives_the_margins_from_any_window_on():
    """A streaming reader (the Detector's explanation) asks for its last few windows: the same rows as slicing the
    whole clip's margins, whatever the batches were."""
    margins = np.arange(30, dtype=np.float32).reshape(10, 3)
    curve = ScanCurve((-2, 0, 2))
    for lo, hi in ((0, 3), (3, 4), (4, 9), (9, 10)):
        curve.add(margins[lo:hi], [True] * (hi - lo))
    for start in range(12):
        np.testing.assert_array_equal(curve.window_margins(start), margins[start:])
    with pytest.raises(InputError, match="start"):
        curve.window_margins(-1)


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise under a syllable-rate envelope: MFCCs that change from frame to frame, as speech does."""
    rng = np.random.default_rng(seed)
    n = int(seconds * C.sample_rate)
    env = np.repeat(rng.uniform(0.05, 1.0, n // 1600 + 1), 1600)[:n]
    return (rng.standard_normal(n) * env).astype(np.float32)


def test_shifted_mfccs_are_the_windows_of_the_shifted_audio():
    audio = _speech_like(3.0)
    frames = np.zeros((75, C.frame_size, C.frame_size, 3), np.uint8)
    clip = PreparedClip(frames=frames, fps=25.0, audio=audio, sample_rate=C.sample_rate)
    w = window_at(clip, C, 1.0, scan_offsets=DEFAULT_SCAN_OFFSETS)
    assert w.mfcc_shifts.shape == (len(DEFAULT_SCAN_OFFSETS), C.mfcc_steps, C.num_mfcc) and w.shifts_in_track
    for i, k in enumerate(DEFAULT_SCAN_OFFSETS):
        expected = compute_mfcc(audio_segment(audio, 16000 + k * SPF, C.window_samples), C)
        np.testing.assert_array_equal(w.mfcc_shifts[i], expected)
    np.testing.assert_array_equal(w.mfcc_shifts[DEFAULT_SCAN_OFFSETS.index(0)], w.mfcc)
    assert not window_at(clip, C, 0.0, scan_offsets=DEFAULT_SCAN_OFFSETS).shifts_in_track  # reads before 0 s
    assert window_at(clip, C, 0.0).mfcc_shifts is None


def test_streamed_windows_carry_the_same_shifts_as_a_prepared_clip(tmp_path):
    """The streaming windower keeps audio before and waits for audio after each window: same shifts as window_at."""
    from pinlite_edge.data.synthetic import write_clip_video
    from pinlite_edge.features.pipeline import open_windows, prepare_file
    from pinlite_edge.features.windows import clip_windows

    path = tmp_path / "clip.mp4"
    write_clip_video(path, seed=5, contract=C, duration_s=3.0)
    for stride in (None, 0.32):
        _, stream = open_windows(path, C, face_crop=False, stride_seconds=stride, scan_offsets=DEFAULT_SCAN_OFFSETS)
        streamed = list(stream)
        whole = clip_windows(prepare_file(path, C, face_crop=False), C, stride, scan_offsets=DEFAULT_SCAN_OFFSETS)
        assert [w.start_seconds for w in streamed] == [w.start_seconds for w in whole]
        assert [w.shifts_in_track for w in streamed] == [w.shifts_in_track for w in whole]
        assert streamed[0].shifts_in_track is False and any(w.shifts_in_track for w in streamed)
        for a, b in zip(streamed, whole):
            np.testing.assert_array_equal(a.mfcc_shifts, b.mfcc_shifts)
            np.testing.assert_array_equal(a.mfcc, b.mfcc)


class AlignmentOracle(StandInRunner):
    """A runner stand-in: logit_real - logit_fake = -10 x the MFCC distance between the window's audio and the
    original audio at the window's frames (the frames' grey level is their frame index)."""

    name = "oracle"

    def __init__(self, audio: np.ndarray, contract: InputContract = C):
        super().__init__(contract)
        self.audio = audio

    def infer(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        frames = self.one_frames_row_per_mfcc_row(frames, mfcc)
        c = self.contract
        grey = frames[:, 0, 0, 0, 0] * c.std[0] + c.mean[0]
        first = np.rint(grey * 255.0).astype(int)
        ref = np.stack([compute_mfcc(audio_segment(self.audio, f * SPF, c.window_samples), c) for f in first])
        margin = -10.0 * np.abs(mfcc - ref).mean(axis=(1, 2))
        b = frames.shape[0]
        logits = np.stack([margin, np.zeros(b)], axis=1).astype(np.float32)
        attention = np.full((b, 16, c.num_frames), 1.0 / c.num_frames, np.float32)
        return {"logits": logits, "offset_logits": np.zeros((b, 11), np.float32), "attention": attention}


def _indexed_frames(n: int) -> np.ndarray:
    return np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], C.frame_size, 1).repeat(C.frame_size, 2) \
        .repeat(3, 3)


@pytest.mark.parametrize("delay", [0, 4, -4, 2])
def test_detector_scan_finds_the_shift_and_calls_a_shifted_clip_fake(delay):
    from pinlite_edge.detector import Detector

    audio = _speech_like(4.0, seed=1)
    given = np.roll(audio, delay * SPF)  # audio delayed by `delay` frames: read at t it holds the original's t - delay
    runner = AlignmentOracle(audio)
    det = Detector(runner, threshold=0.5, face_crop=False)  # default: aggregate "scan", DEFAULT_SCAN_OFFSETS
    r = det.detect_arrays(_indexed_frames(100), given, C.sample_rate, fps=25.0)
    assert r.offset_source == "offset scan" and r.offset_frames == delay
    assert r.aggregate == "scan" and r.fake_prob == r.fake_prob_scan
    assert r.scan is not None and r.scan.complete_only and list(r.scan.curve) == list(DEFAULT_SCAN_OFFSETS)
    if delay == 0:
        assert r.fake_prob_scan == 0.0 and r.verdict == "real"
    else:
        assert r.fake_prob_scan > 0.5 and r.verdict == "fake"
    d = r.to_dict()
    assert d["offset_scan"]["offset_frames"] == delay and d["fake_prob_scan"] == r.fake_prob_scan


def test_scan_off_and_bad_windows():
    from pinlite_edge.detector import Detector

    audio = _speech_like(2.0)
    runner = AlignmentOracle(audio)
    with pytest.raises(InputError, match="aggregate='scan' needs the offset scan"):
        Detector(runner, scan_offsets=None)
    with pytest.raises(InputError, match="scan_offsets"):
        Detector(runner, scan_offsets=(1, 2))
    plain = Detector(runner, aggregate="max", scan_offsets=None, face_crop=False)
    r = plain.detect_arrays(_indexed_frames(50), audio, C.sample_rate)
    assert r.fake_prob_scan is None and r.scan is None and r.offset_source == "offset head"
    calls = runner.calls
    scanning = Detector(runner, face_crop=False, batch_size=8)
    scanning.detect_arrays(_indexed_frames(50), audio, C.sample_rate)
    assert runner.calls > calls + 1  # the shifted alignments cost model calls
    clip = PreparedClip(frames=_indexed_frames(50), fps=25.0, audio=audio, sample_rate=C.sample_rate)
    with pytest.raises(InputError, match="shifted-audio MFCCs"):
        scanning.score_windows([window_at(clip, C, 0.0)], "no-shifts")  # made without scan_offsets


@pytest.mark.parametrize("audio_first", [True, False])
def test_windower_keeps_the_audio_the_shifts_read(audio_first):
    """Audio far ahead of the frames (or behind them): the streaming windower trims only what no shift reads."""
    from pinlite_edge.features.clipstream import Windower
    from pinlite_edge.features.windows import clip_windows

    audio = _speech_like(4.0, seed=2)
    frames = _indexed_frames(100)
    w = Windower(C, 25.0, 0.32, "unit", DEFAULT_SCAN_OFFSETS)
    out = []
    if audio_first:
        w.add_audio(audio)
    for i, f in enumerate(frames):
        w.add_frame(f, 1)
        if not audio_first:
            w.add_audio(audio[i * SPF:(i + 1) * SPF])
        out.extend(w.ready())
    out.extend(w.finish())
    clip = PreparedClip(frames=frames, fps=25.0, audio=audio, sample_rate=C.sample_rate)
    whole = clip_windows(clip, C, 0.32, scan_offsets=DEFAULT_SCAN_OFFSETS)
    assert [x.start_seconds for x in out] == [x.start_seconds for x in whole]
    for a, b in zip(out, whole):
        np.testing.assert_array_equal(a.mfcc_shifts, b.mfcc_shifts)
        assert a.shifts_in_track == b.shifts_in_track


def test_windower_does_not_keep_audio_long_after_the_video_has_ended():
    """A 20 s video with an hour of audio kept the whole hour (0.8 GB with its copies) though only the first 20 s
    are scored: audio more than MAX_LAG_S past the video stream's declared end is counted, not kept, and the windows
    are the same."""
    from pinlite_edge.features.clipstream import MAX_LAG_S, Windower
    from pinlite_edge.features.windows import clip_windows

    audio = _speech_like(4.0, seed=3)
    frames = _indexed_frames(100)
    w = Windower(C, 25.0, 0.32, "unit", DEFAULT_SCAN_OFFSETS, video_seconds=4.0)
    out = []
    for f in frames:
        w.add_frame(f, 1)
    out.extend(w.ready())
    w.add_audio(audio)
    for _ in range(60):  # a minute more audio, a second at a time, after the last frame
        w.add_audio(np.full(C.sample_rate, 0.1, np.float32))
        out.extend(w.ready())
    assert w.n_audio == audio.size + 60 * C.sample_rate
    assert w.kept_audio <= (4.0 + MAX_LAG_S) * C.sample_rate, w.kept_audio / C.sample_rate
    out.extend(w.finish())
    clip = PreparedClip(frames=frames, fps=25.0, audio=np.concatenate([audio, np.full(60 * C.sample_rate, 0.1,
                                                                                        np.float32)]),
                        sample_rate=C.sample_rate)
    whole = clip_windows(clip, C, 0.32, scan_offsets=DEFAULT_SCAN_OFFSETS)
    assert [x.start_seconds for x in out] == [x.start_seconds for x in whole]
    for a, b in zip(out, whole):
        np.testing.assert_array_equal(a.mfcc, b.mfcc)
        np.testing.assert_array_equal(a.mfcc_shifts, b.mfcc_shifts)


def test_local_scan_is_the_scan_of_each_windows_neighbourhood():
    """local_fake_probs(m, zero, R)[i] is scan_fake_prob of the margins averaged over windows i-R..i+R (clipped at
    the ends); R=0 scores each window alone; a window whose neighbours agree best at another shift scores high."""
    from pinlite_edge.offset_scan import local_fake_probs, scan_fake_prob

    rng = np.random.default_rng(0)
    m = rng.normal(size=(9, 7))
    for radius in (0, 1, 3, 20):
        want = [scan_fake_prob(m[max(0, i - radius):i + radius + 1].mean(axis=0), 3) for i in range(9)]
        np.testing.assert_allclose(local_fake_probs(m, 3, radius), want, atol=1e-12)
    half = np.zeros((8, 3))
    half[4:, 0] = 2.0  # the second half agrees best at the first shift: out of sync there
    p = local_fake_probs(half, 1, 1)
    assert p[:3].max() == 0.0 and p[5:].min() == pytest.approx(1 - np.exp(-2.0))
    with pytest.raises(InputError, match="local scan"):
        local_fake_probs(np.zeros(5), 0)
    for zero_index, radius in ((0, 1.5), (0, -1), (0, True), (3, "2"), (7, 1), (-1, 1), (1.0, 1)):
        with pytest.raises(InputError, match="local scan"):  # radius 1.5 was an IndexError, zero index -1 wrapped
            local_fake_probs(m, zero_index, radius)
    for bad in (np.nan, np.inf):  # one NaN margin turned the local P(fake) of its window and all after into NaN
        broken = m.copy()
        broken[2, 1] = bad
        with pytest.raises(InputError, match="local scan needs finite margins, got NaN or inf in 1 of 63"):
            local_fake_probs(broken, 3, 1)



@pytest.mark.parametrize("aggregate", ["scan", "max"])
def test_the_explanation_shows_the_window_behind_the_verdict_however_the_windows_are_batched(aggregate):
    """Audio in sync except from 3.0 to 5.5 s, where it is delayed by 4 frames. With the scan verdict the
    explanation's window is the one with the highest local offset scan (inside the delayed stretch), with 'max' the
    highest window P(fake); its frames are kept while the windows stream past in batches of any size. A window's local
    scan is final only once the 3 windows after it are scored: at the stretch's last window, the 4 windows scored so
    far are all delayed, more than any final neighbourhood of 7, so a tracker that decided early would keep it."""
    from pinlite_edge.detector import Detector

    audio = _speech_like(8.0, seed=2)
    given = audio.copy()
    a, b = 3 * C.sample_rate, int(5.5 * C.sample_rate)
    given[a:b] = np.roll(audio, 4 * SPF)[a:b]
    tops, firsts = set(), set()
    for batch in (1, 2, 3, 64):
        det = Detector(AlignmentOracle(audio), face_crop=False, batch_size=batch, threshold=0.5, aggregate=aggregate)
        r = det.detect_arrays(_indexed_frames(200), given, C.sample_rate, fps=25.0)
        local = np.array([w.fake_prob_local_scan for w in r.windows])
        stat = local if aggregate == "scan" else r.fake_prob_per_window
        top = r.most_suspicious_window
        assert top == int(np.argmax(stat))
        first_frame = int(round(r.windows[top].start_seconds * 25.0))
        assert int(r.explain_frames[0, 0, 0, 0]) == first_frame  # the frames carry their own frame index
        tops.add(top)
        firsts.add(first_frame)
    assert len(tops) == len(firsts) == 1
    if aggregate == "scan":
        assert 3.0 - 0.64 <= r.windows[top].start_seconds <= 5.5 and local[top] > 0.5
