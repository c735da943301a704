"""The face/mouth pipeline and one-pass decoding: stream-timestamp alignment, display rotation, no-face clips, tracking
stability and crop scale on real clips, one container open per file.

Media are built with PyAV in temporary folders from one GRID clip of ../shared (tests skip when it is absent).
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from pinlite_edge.contract import TINY_CONTRACT
from pinlite_edge.errors import DecodeError
from pinlite_edge.features import (
    CROP_SOURCE_MAX_SIDE,
    FaceCropConfig,
    decode_audio,
    decode_video,
    featurise_file,
    prepare_arrays,
    prepare_file,
    track_frames,
)
from pinlite_edge.features.facetrack import FaceTrack, TrackParams, detect_faces, detection_size, equalised_grey
from pinlite_edge.features.rotation import display_turns, quarter_turns, rotate, stream_rotation

from conftest import NO_ROTATION_WRITER, SHARED, pyav_writes_rotation

C = TINY_CONTRACT
TALKING = SHARED / "data" / "real-av" / "talking"


def write_clip(path: Path, frames: np.ndarray, audio: np.ndarray, rate: int, *, fmt: str = "matroska",
               vcodec: str = "mpeg4", acodec: str = "pcm_s16le", audio_start_s: float = 0.0,
               video_start_frames: int = 0, rotation: int = 0) -> Path:
    """Frames (N, H, W, 3) at 25 fps and stereo float audio; the audio stream's first pts at ``audio_start_s``, the
    video's at ``video_start_frames`` / 25 s; ``rotation``: display matrix, degrees counter-clockwise."""
    import av

    with av.open(str(path), "w", format=fmt) as c:
        vs = c.add_stream(vcodec, rate=25)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if rotation:
            if not pyav_writes_rotation():
                pytest.skip(NO_ROTATION_WRITER)
            vs.set_display_rotation(rotation)
        ast = c.add_stream(acodec, rate=rate, layout="stereo")
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts, f.time_base = i + video_start_frames, Fraction(1, 25)
            c.mux(vs.encode(f))
        c.mux(vs.encode())
        offset = int(round(audio_start_s * rate))
        for s in range(0, audio.shape[0], 1024):
            chunk = audio[s:s + 1024]
            if acodec == "pcm_s16le":
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="s16", layout="stereo")
            else:
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.T.astype(np.float32)), format="fltp",
                                                layout="stereo")
            af.sample_rate, af.pts, af.time_base = rate, s + offset, Fraction(1, rate)
            c.mux(ast.encode(af))
        c.mux(ast.encode())
    return path


@pytest.fixture(scope="module")
def grid(grid_clips):
    """(path, frames uint8 (75, 288, 360, 3), audio float32 (samples, 2), rate) of one GRID clip."""
    path = grid_clips[0]
    audio = decode_audio(path)
    return path, decode_video(path, max_side=None).frames, audio.samples, audio.sample_rate


def _mfcc_corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# --------------------------------------------------------------------------------------------- timestamps
@pytest.mark.parametrize("fmt, acodec, ext, bar", [("matroska", "pcm_s16le", "mkv", 0.999), ("mp4", "aac", "mp4", 0.9)],
                         ids=["mkv-pcm", "mp4-aac"])
def test_audio_stream_starting_late_gives_the_same_features(grid, tmp_path, fmt, acodec, ext, bar):
    """The audio stream starts 0.5 s after the video (its first 0.5 s missing): aligned by timestamps, every window
    after 0.5 s has the features of the original clip (AAC: up to codec noise), and the first 0.5 s is silence.
    Read as if both streams started together, the audio would be 0.5 s early and the MFCCs unrelated (corr < 0.3)."""
    _, frames, audio, rate = grid
    half = int(0.5 * rate)
    ref = write_clip(tmp_path / f"aligned.{ext}", frames, audio, rate, fmt=fmt, acodec=acodec)
    late = write_clip(tmp_path / f"late.{ext}", frames, audio[half:], rate, fmt=fmt, acodec=acodec,
                      audio_start_s=0.5)
    a = featurise_file(ref, C, face_crop=False)
    b = featurise_file(late, C, face_crop=False)
    assert [w.start_seconds for w in a][:4] == [w.start_seconds for w in b][:4] == [0.0, 0.64, 1.28, 1.92]
    for wa, wb in zip(a[1:4], b[1:4]):  # windows wholly after 0.5 s
        assert np.array_equal(wa.frames, wb.frames)
        assert _mfcc_corr(wa.mfcc, wb.mfcc) > bar, (wa.start_seconds, _mfcc_corr(wa.mfcc, wb.mfcc))
    clip = prepare_file(late, C, face_crop=False)
    assert np.abs(clip.audio[:int(0.45 * C.sample_rate)]).max() < 1e-3  # zeros where the audio stream had nothing


def test_video_stream_starting_late_drops_the_leading_audio(grid, tmp_path):
    """The video stream starts 0.48 s (12 frames) after the audio: audio sample 0 of the prepared clip is the one
    played with the first video frame."""
    _, frames, audio, rate = grid
    ref = prepare_file(write_clip(tmp_path / "aligned.mkv", frames, audio, rate), C, face_crop=False)
    late = prepare_file(write_clip(tmp_path / "late_video.mkv", frames[12:], audio, rate, video_start_frames=12),
                        C, face_crop=False)
    assert late.frames.shape[0] == 63
    skip = int(0.48 * C.sample_rate)
    n = min(late.audio.shape[0], ref.audio.shape[0] - skip) - 200
    assert abs(late.audio.shape[0] - (ref.audio.shape[0] - skip)) <= 2
    np.testing.assert_allclose(late.audio[200:n], ref.audio[skip + 200:skip + n], atol=2e-3)


# --------------------------------------------------------------------------------------------- rotation
@pytest.mark.parametrize("degrees", [90, -90])
def test_rotated_phone_video_comes_out_upright(grid, tmp_path, degrees):
    """Frames stored turned, with a display matrix saying how to turn them back (as phones write them): decoded
    upright, the face is found and the crops match the upright clip's."""
    _, frames, audio, rate = grid
    frames, audio = frames[:40], audio[:int(1.6 * rate)]
    stored = np.stack([np.rot90(f, -degrees // 90) for f in frames])  # turned the other way
    upright = write_clip(tmp_path / "upright.mp4", frames, audio, rate, fmt="mp4", acodec="aac")
    turned = write_clip(tmp_path / f"turned{degrees}.mp4", stored, audio, rate, fmt="mp4", acodec="aac",
                        rotation=degrees)
    video = decode_video(turned, max_side=None)
    assert video.frames.shape == frames.shape
    assert np.abs(video.frames.astype(int) - frames).mean() < 8  # codec noise only
    a, b = prepare_file(upright, C), prepare_file(turned, C)
    assert b.face_found and b.face_coverage > 0.8
    assert np.abs(a.frames.astype(int) - b.frames).mean() < 12


def test_rotation_metadata_parsing_and_turns():
    assert [quarter_turns(d) for d in (0, 90, -90, 180, -180, 270, -270)] == [0, 1, 3, 2, 2, 3, 1]
    tagged = SimpleNamespace(metadata={"rotate": "90"})  # old-style tag: clockwise degrees
    assert stream_rotation(tagged) == -90.0
    assert display_turns(SimpleNamespace(rotation=0), tagged) == 3
    assert display_turns(SimpleNamespace(rotation=90), tagged) == 1  # the frame's display matrix wins
    assert display_turns(SimpleNamespace(rotation=0), SimpleNamespace(metadata={"rotate": "x"})) == 0
    img = np.zeros((2, 3), np.uint8)
    img[0, 0] = 1  # top-left
    assert rotate(img, 1).shape == (3, 2) and rotate(img, 1)[2, 0] == 1  # counter-clockwise: to bottom-left


# --------------------------------------------------------------------------------------------- no face
@pytest.fixture(scope="module")
def faceless(grid, tmp_path_factory) -> Path:
    """A 1.6 s clip of coloured noise with the GRID speech."""
    _, frames, audio, rate = grid
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(40, 96, 128, 3), dtype=np.uint8)
    noise = np.stack([cv2.resize(f, (256, 192), interpolation=cv2.INTER_NEAREST) for f in noise])
    return write_clip(tmp_path_factory.mktemp("noface") / "noise.mkv", noise, audio[:int(1.6 * rate)], rate)


def test_clip_without_a_face_says_so(faceless, caplog, tmp_path):
    import torch

    from pinlite_edge import Detector
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student

    caplog.set_level(logging.WARNING)
    clip = prepare_file(faceless, C)
    assert clip.face_found is False and clip.face_coverage == 0.0
    assert clip.frames.shape == (40, C.frame_size, C.frame_size, 3)  # centre crop fallback, still scored
    assert any("no face found" in r.getMessage() and "noise.mkv" in r.getMessage() for r in caplog.records)
    with pytest.raises(DecodeError, match="no face"):
        prepare_file(faceless, C, face_config=FaceCropConfig(require_face=True))
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    with Detector.load(ckpt, threads=1) as det:
        result = det.detect(faceless)
    assert result.verdict == "no-face" and result.face_found is False and result.face_coverage == 0.0
    assert 0.0 <= result.fake_prob <= 1.0 and result.to_dict()["verdict"] == "no-face"


def test_windows_without_the_face_do_not_count_in_the_verdict(grid, tmp_path, caplog):
    """2 s of noise, then the GRID speaker (audio of the whole clip kept). The tracker holds the first face's box
    back over the lead-in, so those windows used to be scored as if they showed lips, and could decide the verdict.
    Now they carry their face share, do not count in the max / mean / scan, and a warning says so."""
    import torch

    from pinlite_edge import Detector
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.features import open_windows
    from pinlite_edge.models import create_student

    _, frames, audio, rate = grid
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, size=(50, 36, 45, 3), dtype=np.uint8)
    noise = np.stack([cv2.resize(f, (360, 288), interpolation=cv2.INTER_NEAREST) for f in noise])
    clip = write_clip(tmp_path / "leadin.mkv", np.concatenate([noise, frames]),
                      np.concatenate([audio[:2 * rate], audio]), rate)
    _, windows = open_windows(clip, C)
    fractions = [w.face_fraction for w in windows]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and any(f < 0.5 for f in fractions[1:3]), fractions
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    caplog.set_level(logging.WARNING)
    with Detector.load(ckpt, threads=1) as det:
        result = det.detect(clip)
    counted = [w for w in result.windows if w.face_fraction >= 0.5]
    assert 0 < len(counted) < len(result.windows)
    assert result.fake_prob_max == pytest.approx(max(w.fake_prob for w in counted))
    assert result.fake_prob_mean == pytest.approx(np.mean([w.fake_prob for w in counted]))
    complete_with_face = [w for w in counted if w.start_seconds > 0.3 and w.start_seconds + 0.64 < 4.7]
    assert result.scan.windows_used == len(complete_with_face)
    assert any("lost the face in" in w for w in result.warnings)


def test_census_counts_faces_and_ignores_a_lone_false_positive(monkeypatch):
    """Faces are counted in whole-image searches every CENSUS_SECONDS, beside the track: the most seen at once in two
    searches (a single Haar false positive does not make a second person). The track itself is unchanged."""
    from pinlite_edge.features import facetrack

    box = np.array([10.0, 10.0, 40.0, 40.0])
    other = np.array([120.0, 10.0, 40.0, 40.0])
    per_search: list[int] = []
    calls: list[dict] = []

    def fake_detect(gray, **kw):
        calls.append(kw)
        n = per_search.pop(0) if per_search else 1
        return [box * 200 / 160, other * 200 / 160][:n]  # detection-image pixels (160 px wide frames -> 200)

    monkeypatch.setattr(facetrack, "detect_faces", fake_detect)
    monkeypatch.setattr(facetrack.FaceTrack, "_near", lambda self, luma, b: [b.copy()])  # follow: always found
    params = TrackParams(search_every=10, follow_every=4, redetect_every=None, max_gap=25, smooth_radius=0,
                         census_every=50)
    luma = np.zeros((160, 160), np.uint8)

    def run(counts: list[int], frames: int = 160) -> FaceTrack:
        per_search[:] = counts
        track = FaceTrack(params, (200, 200))
        for i in range(frames):
            track.observe(i, luma)
        return track

    one_fp = run([1, 2, 1, 1])  # search at 0, censuses at 50, 100, 150: the 2 at frame 50 is alone
    assert len(one_fp._census) == 4 and one_fp.faces_in_view == 1
    # the search places the track (all cascades, fine steps); the censuses only count, with the cheaper pass
    assert calls[0].get("profiles", True) is True and calls[0].get("scale_factor", 1.1) == 1.1
    assert all(k["profiles"] is False and k["scale_factor"] == facetrack.CENSUS_SCALE_FACTOR for k in calls[1:])
    two = run([1, 2, 2, 1])
    assert two.faces_in_view == 2
    assert np.allclose(two.boxes(0, 160), one_fp.boxes(0, 160))  # the census never moves the track
    assert run([2], frames=40).faces_in_view == 2  # a short clip: its one search decides
    # a close-up the cheaper census misses (0 faces counted) while the track holds the face: at least 1, not 0
    # (PC-AVS Input__00098 reported face_found true, coverage 1.0 and faces_in_view 0)
    assert run([1, 0, 0, 0]).faces_in_view == 1


def test_the_census_never_changes_a_crop(grid_clips, monkeypatch):
    """Counting faces runs the cascade on extra frames with other settings; the crops stay those of the track alone
    (a CascadeClassifier keeps scratch state between calls, so this is checked, not assumed)."""
    from pinlite_edge.features import facetrack

    path = grid_clips[2]
    monkeypatch.setattr(facetrack, "CENSUS_SECONDS", None)
    alone = prepare_file(path, C)
    monkeypatch.setattr(facetrack, "CENSUS_SECONDS", 1.0)  # a census every second of this 3 s clip
    counted = prepare_file(path, C)
    assert alone.faces_in_view == 1 and counted.faces_in_view == 1
    np.testing.assert_array_equal(counted.frames, alone.frames)


def test_two_people_in_view_are_reported(grid_clips, tmp_path, capsys, caplog):
    """Two real speakers side by side (two GRID clips, the left one's audio), as in a split-screen interview: the
    result says 2 faces are in view, through the file and the array paths, and the CLI says what it means; one
    speaker alone says 1."""
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.data.reencode import decode_clip
    from pinlite_edge.detect import main as detect_main
    from pinlite_edge.detector import Detector
    from pinlite_edge.models import create_student

    left, right = decode_clip(grid_clips[0]), decode_clip(grid_clips[1])
    n = min(len(left.frames), len(right.frames))
    pair = np.stack([np.concatenate([a, b], axis=1) for a, b in zip(left.frames[:n], right.frames[:n])])
    path = write_clip(tmp_path / "two.mkv", pair, left.audio, left.sample_rate)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    with Detector.load(ckpt, threads=1) as det:
        both = det.detect(path)
        arrays = det.detect_arrays(pair, left.audio, left.sample_rate, fps=left.fps)
        alone = det.detect(grid_clips[0])
    assert both.faces_in_view == 2 and arrays.faces_in_view == 2 and both.to_dict()["faces_in_view"] == 2
    assert alone.faces_in_view == 1 and not any("faces in view" in w for w in alone.warnings)
    for result in (both, arrays):  # an app reads it in the result's warnings, not only the CLI
        assert any("2 faces in view; the crop follows one of them" in w for w in result.warnings), result.warnings
    caplog.clear()
    assert detect_main([str(path), "--model", str(ckpt), "--threads", "1"]) == 0
    assert "2 faces in view; the crop follows one of them" in caplog.text  # the CLI logs it to stderr
    caplog.clear()
    assert detect_main([str(grid_clips[0]), "--model", str(ckpt), "--threads", "1"]) == 0
    assert "faces in view" not in caplog.text
    from pinlite_edge.scan import main as scan_main

    (tmp_path / "videos").mkdir()
    path.rename(tmp_path / "videos" / "two.mkv")
    out = tmp_path / "scan.jsonl"
    assert scan_main([str(tmp_path / "videos"), "--model", str(ckpt), "--out", str(out), "--workers", "1",
                      "--no-progress"]) == 0
    assert json.loads(out.read_text().splitlines()[0])["faces_in_view"] == 2
    assert "1 with several faces in view" in capsys.readouterr().out


def test_face_coverage_survives_the_feature_cache(grid, tmp_path):
    from pinlite_edge.data.cache import FeatureCache

    path = grid[0]
    clip = prepare_file(path, C)
    cache = FeatureCache(tmp_path)
    cache.put("ab" * 32, "cd" * 8, clip)
    back = cache.get("ab" * 32, "cd" * 8)
    assert back.face_found is True and back.face_coverage == pytest.approx(clip.face_coverage)
    assert clip.faces_in_view == 1 and back.faces_in_view == 1


# --------------------------------------------------------------------------------------------- tracking and crop
def _centre_steps(boxes) -> np.ndarray:
    """Frame-to-frame movement of the crop centre, as a fraction of the mean crop side."""
    c = np.array([[b.x + b.size / 2.0, b.y + b.size / 2.0] for b in boxes])
    return np.linalg.norm(np.diff(c, axis=0), axis=1) / np.mean([b.size for b in boxes])


def _real_clips(grid_path: Path) -> list[Path]:
    clips = [grid_path]
    talking = TALKING / "OpenTalker_SadTalker__test__examples__source_image__RD_Radio34_000.mp4"
    if talking.exists():
        clips.append(talking)
    return clips


def test_tracked_crop_does_not_jitter(grid):
    """On real clips the crop centre moves less than 2% of the crop per frame in median and 5% at most (without the
    temporal smoothing the raw Haar boxes jump 3-4% in median and over 10%)."""
    for path in _real_clips(grid[0]):
        video = decode_video(path, max_side=None)
        faces = track_frames(video.frames, video.fps)
        steps = _centre_steps(faces.boxes)
        assert faces.found and faces.coverage > 0.9, path.name
        assert np.median(steps) < 0.02 and steps.max() < 0.05, (path.name, np.median(steps), steps.max())


def test_crop_is_centred_on_the_mouth(grid):
    """GRID: the crop is 0.5-0.7 of the Haar face box, centred about 0.3 of it below the face centre (nose to
    chin); in the prepared frames the lips (the reddest row) lie near the middle, 35-65% down."""
    path, frames, _, _ = grid
    faces = track_frames(frames, 25.0)
    h, w = frames.shape[1:3]
    size = detection_size(h, w, FaceCropConfig().detect_side)
    scale = size[0] / float(w)
    checked = 0
    for i in range(0, len(frames), 8):
        found = detect_faces(equalised_grey(cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY), size))
        if not found:
            continue
        fx, fy, fw, fh = max(found, key=lambda b: b[2] * b[3]) / scale
        box = faces.boxes[i]
        assert 0.5 < box.size / fw < 0.7
        assert 0.2 < (box.y + box.size / 2.0 - (fy + fh / 2.0)) / fw < 0.45
        assert abs(box.x + box.size / 2.0 - (fx + fw / 2.0)) / fw < 0.1
        checked += 1
    assert checked >= 5
    clip = prepare_file(path, C)
    rgb = clip.frames.astype(np.float64)
    s = C.frame_size
    redness = (rgb[..., 0] - rgb[..., 1])[:, :, s // 4:3 * s // 4].mean(axis=2)  # (frames, rows)
    rows = redness.argmax(axis=1) / float(s)
    assert 0.35 < np.median(rows) < 0.65, np.median(rows)


def test_streaming_boxes_equal_whole_clip_boxes(grid):
    """The crop of frame i is placed once frame i + lookahead_frames() is decoded: with misses (frames 20-39 blanked,
    so the track interpolates and holds), the boxes computed block by block equal those computed after the whole clip."""
    _, frames, _, _ = grid
    frames = frames.copy()
    frames[20:40] = 0
    h, w = frames.shape[1:3]
    cfg = FaceCropConfig()
    size = detection_size(h, w, cfg.detect_side)
    greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    params = TrackParams.from_config(cfg, 25.0)
    whole = FaceTrack(params, size)
    for i, g in enumerate(greys):
        whole.observe(i, g)
    expected = whole.boxes(0, len(frames))
    stream = FaceTrack(params, size)
    hold = stream.lookahead_frames()
    got, done = [], 0
    for i, g in enumerate(greys):
        stream.observe(i, g)
        if i + 1 - done > hold:
            got.append(stream.boxes(done, i + 1 - hold, final=False))
            done = i + 1 - hold
    got.append(stream.boxes(done, len(frames)))
    np.testing.assert_allclose(np.concatenate(got), expected, rtol=0, atol=1e-9)
    assert 0 < whole.coverage < 1 and whole.found


def test_file_and_arrays_give_the_same_crops(grid):
    """The crops cut while decoding (face track on the decoder's luma plane, crop from its YUV planes) and those of
    prepare_arrays (RGB frames in memory, converted back to 4:2:0 planes) are the same squares up to detector noise:
    centres within 6% and sides within 6% of the crop side on average."""
    from pinlite_edge.features.cropstream import CropStream
    from pinlite_edge.features.deadline import Deadline
    from pinlite_edge.features.decode import decode_media

    path, frames, audio, rate = grid
    stream = CropStream(C.frame_size, FaceCropConfig(), max_side=None, source=str(path))
    decode_media(path, Deadline(path, None), video=stream, require_video=True)
    crops, faces = stream.finish()
    arrays = track_frames(frames, 25.0)
    a = np.array([[b.x + b.size / 2, b.y + b.size / 2, b.size] for b in stream.boxes], dtype=float)
    b = np.array([[b.x + b.size / 2, b.y + b.size / 2, b.size] for b in arrays.boxes], dtype=float)
    assert a.shape == b.shape and faces.found and arrays.found
    side = b[:, 2].mean()
    assert np.abs(a[:, :2] - b[:, :2]).mean() < 0.06 * side and np.abs(a[:, 2] - b[:, 2]).mean() < 0.06 * side
    clip = prepare_arrays(frames, audio, rate, 25.0, C)
    assert clip.frames.shape == crops.shape and clip.face_found


def test_arrays_are_cropped_as_files_are(grid):
    """With the same crop squares (centre crops), an app's RGB frames give the crops the file path cuts from the
    decoder's 4:2:0 planes, within the rounding of the RGB round trip (1.3 grey levels on average; cropping the RGB
    frames directly differed by 3.2, chroma at another resolution than the model was trained and calibrated on)."""
    path, frames, audio, rate = grid
    from_file = prepare_file(path, C, face_crop=False).frames.astype(int)
    from_arrays = prepare_arrays(frames, audio, rate, 25.0, C, face_crop=False).frames
    assert from_file.shape == from_arrays.shape
    assert np.abs(from_file - from_arrays).mean() < 2.0


# --------------------------------------------------------------------------------------------- one decode
def test_one_container_open_and_no_opencv_decode_per_file(grid, monkeypatch):
    import av

    opened: list[str] = []
    real_open = av.open

    def counting_open(*args, **kwargs):
        opened.append(str(args[0]))
        return real_open(*args, **kwargs)

    def no_capture(*args, **kwargs):
        raise AssertionError("OpenCV must not decode the file a second time")

    monkeypatch.setattr(av, "open", counting_open)
    monkeypatch.setattr(cv2, "VideoCapture", no_capture)
    clip = prepare_file(grid[0], C)
    assert opened == [str(grid[0])]
    assert clip.frames.shape[0] == 75 and clip.face_found


def test_config_changes_are_honoured(grid):
    """FaceCropConfig fields reach the crop: a larger crop_size gives a larger crop."""
    _, frames, _, _ = grid
    small = track_frames(frames[:30], 25.0).boxes[15].size
    large = track_frames(frames[:30], 25.0, replace(FaceCropConfig(), crop_size=1.2)).boxes[15].size
    assert large > 1.7 * small


@pytest.mark.parametrize("field, value", [
    ("detect_side", 0), ("detect_side", 200.0), ("search_seconds", 0), ("follow_every", 0), ("redetect_seconds", 0),
    ("max_gap_seconds", -1), ("max_gap_seconds", 1e6), ("smooth_seconds", float("nan")), ("crop_size", 0),
    ("crop_centre_y", float("inf")), ("min_neighbors", -1), ("require_face", 1),
])
def test_a_face_crop_setting_that_cannot_work_is_refused_naming_it(grid, field, value):
    """FaceCropConfig values used to pass unchecked: detect_side=0 said "no face found" on a clip full of face,
    crop_size=0 cut 2-pixel crops, min_neighbors=-1 saw 91 faces in view, NaN failed deep in the tracker, and a max
    gap of hours held the whole clip for the lookahead. Each is now a UsageError naming the field, before decoding."""
    from pinlite_edge.errors import UsageError

    with pytest.raises(UsageError, match=f"FaceCropConfig.{field} must be"):
        prepare_file(grid[0], C, face_config=replace(FaceCropConfig(), **{field: value}))
    assert replace(FaceCropConfig(), follow_every=np.int64(2)).follow_every == 2  # numpy integers are integers


def test_detect_writes_the_crop_squares_a_port_can_check_against(grid, tmp_path, capsys):
    """docs/android.md: a port of the face track checks its squares against the SDK's (the scores move with a few
    pixels of crop placement); ``detect --crops`` writes the square of every decoded frame."""
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.detect import main as detect_main
    from pinlite_edge.features import crop_squares
    from pinlite_edge.features.cropstream import CropStream
    from pinlite_edge.features.deadline import Deadline
    from pinlite_edge.features.decode import decode_media
    from pinlite_edge.models import create_student

    path = grid[0]
    stream = CropStream(C.frame_size, FaceCropConfig(), max_side=CROP_SOURCE_MAX_SIDE, source=str(path))
    decode_media(path, Deadline(path, None), video=stream, require_video=True)
    crops, _ = stream.finish()
    squares = crop_squares(path)
    assert [(s["x"], s["y"], s["side"]) for s in squares] == [(b.x, b.y, b.size) for b in stream.boxes]
    assert len(squares) == len(crops) == 75 and any(s["face"] for s in squares)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    assert detect_main([str(path), "--model", str(ckpt), "--threads", "1", "--crops", str(tmp_path / "c.json")]) == 0
    written = json.loads((tmp_path / "c.json").read_text())
    assert written["squares"] == squares and written["video"] == str(path)


@pytest.mark.parametrize("pix_fmt, color_range", [("yuv420p", 2), ("yuvj420p", 2), ("yuvj420p", 0), ("yuv420p", 1)])
def test_a_frame_scaled_down_for_tracking_keeps_its_colour_range(pix_fmt, color_range):
    """Frames wider than the tracking limit are scaled by swscale, which keeps a full-range flag's values full range;
    they were then read as limited range (crushed blacks, too much contrast, no warning). The scaled frame's crop
    must match the unscaled frame's crop."""
    import av

    from pinlite_edge.features.facecrop import FaceBox
    from pinlite_edge.features.yuvframe import YuvFrame

    h, w = 64, 96
    planes = np.full((h * 3 // 2, w), 128, np.uint8)
    planes[:h] = np.repeat(np.linspace(0, 255, w).astype(np.uint8)[None], h, axis=0)  # luma ramp, black to white
    planes[h:] = np.repeat(np.linspace(60, 200, h // 2).astype(np.uint8)[:, None], w, axis=1)  # smooth chroma
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    if pix_fmt != "yuv420p":
        frame = frame.reformat(format=pix_fmt)
    frame.color_range = color_range
    box = FaceBox(0, 0, h, True)
    direct = YuvFrame.from_av(frame, 0, max_side=None).crop_rgb(box, 32)
    scaled_frame = YuvFrame.from_av(frame, 0, max_side=w // 2)
    scaled = scaled_frame.crop_rgb(FaceBox(0, 0, h // 2, True), 32)
    assert np.abs(direct.astype(int) - scaled.astype(int)).mean() < 2.0  # 5.4-5.8 when read as limited range
