"""Re-encoding (pinlite_edge/data/reencode.py) and its benchmark (benchmarks/real_faces_reencode.py): a re-encoded
copy keeps audio and video where the SDK saw them (also for a file whose streams start at different times), each
transform does what its row says, the summary counts genuine clips called fake and how far their scores moved, and
a run on GRID clips writes a record."""
from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import real_faces as rf  # noqa: E402
from benchmarks import real_faces_reencode as rr  # noqa: E402
from pinlite_edge.data import reencode as reenc  # noqa: E402
from pinlite_edge.contract import TINY_CONTRACT  # noqa: E402
from pinlite_edge.data.synthetic import write_clip_video  # noqa: E402
from pinlite_edge.features.pipeline import prepare_file  # noqa: E402
from pinlite_edge.utils.hashing import sha256_file  # noqa: E402

from conftest import GRID_DIR  # noqa: E402


def _lag(a: np.ndarray, b: np.ndarray, max_lag: int = 800) -> int:
    """Samples by which ``b`` lags ``a`` (best normalised cross-correlation)."""
    n = min(len(a), len(b)) - max_lag
    ref = a[max_lag:n]
    best = max(range(-max_lag, max_lag + 1),
               key=lambda k: float(np.dot(ref, b[max_lag + k:n + k])))
    return best


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "talk.mp4"
    write_clip_video(path, 3, TINY_CONTRACT, duration_s=3.0, manipulation="real", frame_size=96)
    return path


def test_a_reencoded_copy_keeps_audio_and_frames_where_the_sdk_saw_them(source, tmp_path):
    copy = reenc.reencode(source, tmp_path / "copy.mp4", reenc.TRANSFORMS["reencode"])
    a, b = prepare_file(source, TINY_CONTRACT, face_crop=False), prepare_file(copy, TINY_CONTRACT, face_crop=False)
    assert b.fps == a.fps and b.frames.shape == a.frames.shape
    assert abs(_lag(a.audio, b.audio)) <= 2  # 16 kHz samples: the audio did not move against the frames
    assert float(np.abs(a.frames.astype(int) - b.frames.astype(int)).mean()) < 4.0


def test_streams_that_start_apart_are_lined_up_as_the_sdk_lines_them_up(source, tmp_path):
    """Video starting 0.48 s after the audio: the copy starts both at 0 with the same pairing of sound and picture."""
    import av

    clip = reenc.decode_clip(source)
    rate = clip.sample_rate
    lead = np.random.default_rng(0).standard_normal((int(0.48 * rate), clip.audio.shape[1])).astype(np.float32) * 0.1
    late = tmp_path / "late.mkv"
    with av.open(str(late), "w", format="matroska") as c:
        vs = c.add_stream("mpeg4", rate=25)
        vs.height, vs.width = clip.frames[0].shape[:2]
        vs.pix_fmt, vs.bit_rate = "yuv420p", 4_000_000
        ast = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        for i, img in enumerate(clip.frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i + 12, Fraction(1, 25)  # 12 frames = 0.48 s after the audio's start
            c.mux(vs.encode(f))
        c.mux(vs.encode())
        audio = np.concatenate([lead, clip.audio])
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        for s in range(0, len(pcm), 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[s:s + 1024].reshape(1, -1)), format="s16",
                                            layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, s, Fraction(1, rate)
            c.mux(ast.encode(af))
        c.mux(ast.encode())
    sdk = prepare_file(late, TINY_CONTRACT, face_crop=False)
    copy = prepare_file(reenc.reencode(late, tmp_path / "late.mp4", reenc.TRANSFORMS["reencode"]), TINY_CONTRACT,
                        face_crop=False)
    assert abs(_lag(sdk.audio, copy.audio)) <= 2
    original = prepare_file(source, TINY_CONTRACT, face_crop=False)
    assert abs(_lag(original.audio, copy.audio)) <= 2  # the 0.48 s of sound before the first frame was dropped


def test_frame_rate_conversion_shows_the_frame_on_screen_mid_frame(source, tmp_path):
    clip = reenc.decode_clip(source)
    frames, fps = reenc.transform_frames(clip.frames, clip.fps, reenc.TRANSFORMS["fps-convert"])
    assert clip.fps == 25.0 and fps == 30.0 and len(frames) == len(clip.frames) * 6 // 5
    for j in (0, 5, 6, 7, 29, len(frames) - 1):
        assert np.array_equal(frames[j], clip.frames[int((j + 0.5) * 25 / 30)])
    back, fps_back = reenc.transform_frames(frames, fps, reenc.TRANSFORMS["fps-convert"])
    assert fps_back == 25.0 and len(back) == len(clip.frames)
    assert all(np.array_equal(x, y) for x, y in zip(back, clip.frames))  # repeat then drop gives the source back
    copy = prepare_file(reenc.reencode(source, tmp_path / "30.mp4", reenc.TRANSFORMS["fps-convert"]), TINY_CONTRACT,
                        face_crop=False)
    assert copy.fps == pytest.approx(30.0) and copy.frames.shape[0] == len(frames)


def test_mirror_and_half_resolution(source):
    clip = reenc.decode_clip(source)
    mirrored, _ = reenc.transform_frames(clip.frames, clip.fps, reenc.TRANSFORMS["mirror"])
    assert np.array_equal(mirrored[3], clip.frames[3][:, ::-1])
    half, _ = reenc.transform_frames(clip.frames, clip.fps, reenc.TRANSFORMS["half-res"])
    assert half[0].shape == (48, 48, 3)
    odd, _ = reenc.transform_frames([np.zeros((101, 77, 3), np.uint8)], 25.0, reenc.TRANSFORMS["half-res"])
    assert odd[0].shape[0] % 2 == 0 and odd[0].shape[1] % 2 == 0  # H.264 4:2:0 needs even sides


def test_audio_transforms(source, tmp_path):
    import av

    clip = reenc.decode_clip(source)
    stereo, rate = reenc.transform_audio(clip.audio, clip.sample_rate, reenc.TRANSFORMS["audio-44k-stereo"])
    assert rate == 44_100 and stereo.shape[1] == 2
    assert stereo.shape[0] == pytest.approx(clip.audio.shape[0] * 44_100 / clip.sample_rate, abs=2)
    copy = reenc.reencode(source, tmp_path / "44k.mp4", reenc.TRANSFORMS["audio-44k-stereo"])
    with av.open(str(copy)) as c:
        assert c.streams.audio[0].rate == 44_100 and c.streams.audio[0].channels == 2
    noisy, rate = reenc.transform_audio(clip.audio, clip.sample_rate, reenc.TRANSFORMS["audio-noise-10db"])
    assert rate == clip.sample_rate
    gain = float(np.dot(noisy[:, 0], clip.audio[:, 0]) / np.dot(clip.audio[:, 0], clip.audio[:, 0]))
    noise = noisy[:, 0] - gain * clip.audio[:, 0]
    snr = 10 * np.log10(np.mean((gain * clip.audio[:, 0]) ** 2) / np.mean(noise ** 2))
    assert snr == pytest.approx(10.0, abs=0.5)  # gain: the copy may be scaled down to stay in [-1, 1]
    assert np.array_equal(reenc.transform_audio(clip.audio, clip.sample_rate, reenc.TRANSFORMS["audio-noise-10db"])[0],
                          noisy)  # seeded: the same noise every run


def _report(split: str, files: dict[str, float], threshold: float) -> dict:
    def cs(scan: float) -> dict:
        return {"scan": scan, "mean": scan, "max": scan, "offset": 0, "offset_head": None}

    clips = [{"file": f, "scores": {"m": {"original": cs(v), **{k: cs(0.95) for k in rf.MANIPULATED}}}}
             for f, v in files.items()]
    return {"table": [{"method": "m", "threshold": threshold, "auc_delay200": 1.0}], "clips": clips,
            "data": {"skipped": [], "fingerprint": split}}


def test_the_harness_summary_pools_every_split_and_measures_moves():
    reports = {"train": _report("train", {"a": 0.1, "b": 0.7}, 0.6), "test": _report("test", {"c": 0.92}, 0.6)}
    out = rr.summarise_transform(reports, {"m": {"a": 0.1, "b": 0.5, "c": 0.3}})["m"]
    assert out["num_clips_all"] == 3 and out["originals_at_threshold"] == 2
    assert out["original_move"]["median_abs"] == pytest.approx(0.2)
    assert out["original_move"]["max_up"] == pytest.approx(0.62) and out["original_move"]["max_down"] == 0.0
    assert out["all"]["auc_delay200"] == pytest.approx(1.0) and out["test"] == reports["test"]["table"][0]
    assert rr.summarise_transform(reports, None)["m"]["original_move"] is None


def test_detector_verdicts_count_false_alarms_the_p09_limit_and_no_face():
    rows = [{"file": "a", "verdict": "real", "fake_prob": 0.2}, {"file": "b", "verdict": "fake", "fake_prob": 0.7},
            {"file": "c", "verdict": "fake", "fake_prob": 0.95}, {"file": "d", "verdict": "no-face", "fake_prob": 0.0},
            {"file": "e", "error": "DecodeError: truncated"}]
    out = rr.verdict_counts(rows, {"a": 0.1, "b": 0.7, "c": 0.5})
    assert (out["num_clips"], out["called_fake"], out["at_p09"], out["no_face"]) == (5, 2, 1, 1)
    assert out["called_fake_files"] == ["b", "c"]
    assert out["errors"] == [{"file": "e", "error": "DecodeError: truncated"}]
    assert out["move"]["median_abs"] == pytest.approx(0.1) and out["move"]["max_up"] == pytest.approx(0.45)


def test_a_run_on_two_grid_clips_writes_a_record(grid_clips, tmp_path):
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student

    clips = grid_clips[:2]
    entries = [{"file": f"grid/{p.name}", "sha256": sha256_file(p), "speaker_group": f"g{i}", "split": split}
               for i, (p, split) in enumerate(zip(grid_clips[:3], rr.SPLITS))]
    entries += [{"file": f"grid/{clips[1].name}", "sha256": sha256_file(clips[1]), "speaker_group": "g9",
                 "split": "test"}]  # the test split needs two clips for the swap condition
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"clips": entries}))
    ckpt = save_checkpoint(tmp_path / "m" / "tiny.safetensors", create_student("tiny", pretrained=False).eval(),
                           {"note": "random init for the benchmark test"})
    rc = rr.main([f"tiny={ckpt}", "--transform", "mirror", "--root", str(GRID_DIR.parent), "--split-file",
                  str(split_file), "--out-dir", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")])
    assert rc == 0
    (json_path,) = (tmp_path / "out" / "real_faces_reencode").glob("*.json")
    report = json.loads(json_path.read_text())
    assert list(report["transforms"]) == [rr.AS_IS, "mirror"]
    assert len(list((tmp_path / "work" / "mirror").glob("*.mp4"))) == 3  # each clip re-encoded once
    mirror = report["transforms"]["mirror"]
    assert mirror["methods"][rf.BASELINE_NAME]["num_clips_all"] == 4
    counts = mirror["detect"]["tiny"]["counts"]
    assert counts["num_clips"] == 4 and counts["move"]["median_abs"] >= 0.0 and not counts["errors"]
    assert {c["file"] for c in mirror["detect"]["tiny"]["clips"]} == {e["file"] for e in entries}
    assert mirror["detect"]["tiny"]["left_out"] == []
    assert report["transforms"][rr.AS_IS]["detect"]["tiny"]["counts"]["move"] is None  # the reference itself
    assert report["record"]["command"].startswith("python benchmarks/real_faces_reencode.py tiny=")
    md = json_path.with_suffix(".md").read_text()
    assert "| mirror |" in md and "genuine called fake (Detector)" in md


def test_a_clip_too_short_for_an_excerpt_is_left_out_not_the_end_of_the_run(source, tmp_path, caplog):
    """A 1.16 s clip has no 2 s excerpt: the Detector pass of the benchmark stopped there, ten minutes into a run,
    with exit 2 and nothing written. The harness already left such a clip out (and lists it as skipped)."""
    from types import SimpleNamespace

    short = tmp_path / "short.mp4"
    write_clip_video(short, 1, TINY_CONTRACT, duration_s=1.0, manipulation="real", frame_size=64)
    clips = [SimpleNamespace(file="x/short.mp4", path=short), SimpleNamespace(file="x/talk.mp4", path=source)]
    with caplog.at_level("WARNING"):
        files, left_out = rr._copies(rr.ReencodedStore("excerpt-2s", tmp_path / "work"), clips)
    assert [f for f, _ in files] == ["x/talk.mp4"] and files[0][1].is_file()
    assert [c["file"] for c in left_out] == ["x/short.mp4"] and "no 2 s excerpt" in left_out[0]["reason"]
    assert "x/short.mp4 left out" in caplog.text


def test_no_model_and_no_baseline_only_is_a_clear_error(tmp_path, caplog):
    root = tmp_path / "real-av"
    root.mkdir()
    assert rr.main(["--root", str(root), "--out-dir", str(tmp_path)]) == 2
    assert "give at least one model" in caplog.text


def test_a_clip_too_large_to_hold_is_refused_before_it_fills_memory(source):
    from pinlite_edge.errors import InputError

    with pytest.raises(InputError, match="too long or too large to re-encode in memory"):
        reenc.decode_clip(source, max_bytes=96 * 96 * 3 * 10)  # ten frames' worth
    assert len(reenc.decode_clip(source).frames) == 75


_WRITE_FIXED_FRAMES = """
import ctypes, hashlib, sys
from pathlib import Path
import numpy as np
from pinlite_edge.data.reencode import write_mp4
yy, xx = np.mgrid[0:64, 0:64]
rng = np.random.default_rng(0)
frames = []
for i in range(25):  # a moving blob over a drifting ramp, with noise
    cx, cy = 32 + 16 * np.sin(i / 5), 32 + 12 * np.cos(i / 7)
    blob = (np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 110.0) * 200).astype(np.uint8)
    img = np.stack([blob, (xx * 2 + i) % 256, (yy * 3) % 256], -1).astype(np.uint8)
    frames.append(np.clip(img.astype(int) + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8))
audio = (0.3 * np.sin(np.arange(16000) / 10)).astype(np.float32)[:, None]
mallopt = ctypes.CDLL(None).mallopt
for perturb in (0, 1, 165, 90):  # M_PERTURB (-6): new heap blocks are filled with perturb ^ 0xff (0: left as they are)
    assert mallopt(-6, perturb) == 1
    out = Path(sys.argv[1]) / f"copy{perturb}.mp4"
    write_mp4(out, frames, 25.0, audio, 16000, crf=35, audio_bitrate=64000)
    print(perturb, hashlib.sha256(out.read_bytes()).hexdigest())
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc",
                    reason="fills new heap blocks through glibc's mallopt(M_PERTURB); this C library is not glibc")
def test_the_same_frames_give_the_same_h264_stream_whatever_the_heap_held(tmp_path):
    """libx264's mbtree read uninitialised memory: what the process had freed before changed the stream, and the
    operating point measured on re-encoded copies moved with it. glibc can fill new heap blocks with a byte of our
    choice (``M_PERTURB``; in a child process): the file written must not depend on it."""
    import subprocess

    run = subprocess.run([sys.executable, "-c", _WRITE_FIXED_FRAMES, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    digests = dict(line.split() for line in run.stdout.splitlines())
    assert len(digests) == 4 and len(set(digests.values())) == 1, f"the same frames gave different streams: {digests}"
