"""The Video-Rewrite-style lip-sync fake (pinlite_edge/data/lip_rewrite.py) and its benchmark
(benchmarks/real_faces_rewrite.py): retrieval that follows the driving audio, an exact path search, a blend that keeps
the upper face, and an end-to-end run on two GRID clips."""
from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import real_faces_rewrite as rw  # noqa: E402
from pinlite_edge.contract import TINY_CONTRACT  # noqa: E402
from pinlite_edge.data import lip_rewrite as lr  # noqa: E402
from pinlite_edge.errors import InputError  # noqa: E402
from pinlite_edge.features.windows import PreparedClip  # noqa: E402
from pinlite_edge.utils.hashing import sha256_file  # noqa: E402

from conftest import GRID_DIR  # noqa: E402

SR, FPS, SEG = 16000, 25.0, 10
FREQS = (300.0, 700.0, 1500.0, 3000.0)


def _tones(order: tuple[int, ...]) -> np.ndarray:
    """Segments of SEG video frames, each a pure tone of FREQS[k] for k in ``order``."""
    n = int(SR / FPS) * SEG
    t = np.arange(n) / SR
    return np.concatenate([0.3 * np.sin(2 * np.pi * FREQS[k] * t) for k in order]).astype(np.float32)


@pytest.fixture(scope="module")
def tone_clip() -> PreparedClip:
    """Four segments with distinct tones and random (distinct) frames: each segment's frames 'say' its tone."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (SEG * len(FREQS), 64, 64, 3), dtype=np.uint8)
    return PreparedClip(frames=frames, fps=FPS, audio=_tones((0, 1, 2, 3)), sample_rate=SR)


def test_viterbi_finds_the_cheapest_path():
    rng = np.random.default_rng(1)
    for _ in range(5):
        unary, trans = rng.random((5, 4)), rng.random((4, 4))

        def cost(p: tuple[int, ...]) -> float:
            return sum(unary[t, p[t]] for t in range(5)) + sum(trans[p[t - 1], p[t]] for t in range(1, 5))

        best = min(itertools.product(range(4), repeat=5), key=cost)
        assert cost(tuple(lr.viterbi_path(unary, trans))) == pytest.approx(cost(best))


def test_the_clip_own_audio_gives_back_the_clip(tone_clip):
    res = lr.rewrite_clip(tone_clip, tone_clip.audio, TINY_CONTRACT)
    assert np.array_equal(res.source_frames, np.arange(len(tone_clip.frames)))
    assert np.array_equal(res.clip.frames, tone_clip.frames) and res.jump_rate == 0.0
    assert res.match_cost == pytest.approx(0.0, abs=1e-9)


def test_retrieval_follows_reordered_audio(tone_clip):
    """Driving audio = the clip's segments in another order: the frames come from the segment that made each tone."""
    order = (2, 0, 3, 1)
    res = lr.rewrite_clip(tone_clip, _tones(order), TINY_CONTRACT)
    want = np.repeat(order, SEG)
    assert np.mean(res.source_frames // SEG == want) >= 0.9, res.source_frames // SEG
    assert res.match_cost < 0.5 * res.swap_match_cost
    assert 0.0 < res.jump_rate < 0.2  # runs of consecutive frames, a few jumps
    assert np.array_equal(res.clip.audio, lr.driving_track(_tones(order), len(tone_clip.audio)))


def test_the_blend_pastes_the_band_and_keeps_the_rest(tone_clip):
    cfg = lr.RewriteConfig(paste_top=0.25, paste_bottom=0.75, ramp=0.125)
    res = lr.rewrite_clip(tone_clip, _tones((3, 2, 1, 0)), TINY_CONTRACT, cfg)
    src = tone_clip.frames[res.source_frames]
    h = tone_clip.frames.shape[1]  # 64 rows: 0-7 and 56-63 original, 16-47 pasted, ramps between
    assert np.array_equal(res.clip.frames[:, :8], tone_clip.frames[:, :8])
    assert np.array_equal(res.clip.frames[:, 56:], tone_clip.frames[:, 56:])
    assert np.array_equal(res.clip.frames[:, 16:48], src[:, 16:48])
    for ramp in (slice(8, 16), slice(48, 56)):
        got = res.clip.frames[:, ramp].astype(int)
        lo = np.minimum(tone_clip.frames, src)[:, ramp].astype(int)
        hi = np.maximum(tone_clip.frames, src)[:, ramp].astype(int)
        assert np.all((got >= lo) & (got <= hi))  # a blend of the two, nothing else
    assert h == 64 and not np.array_equal(res.clip.frames, tone_clip.frames)


def test_the_default_band_is_the_face_box_lower_half_in_crop_coordinates():
    from pinlite_edge.features.facecrop import FaceCropConfig

    # crop side 0.6 box sides, centred 0.32 below the box centre: the crop starts 0.02 below the centre, and the
    # box's bottom edge (0.5 below the centre) is 0.48 / 0.6 = 0.8 of the way down
    assert lr.lower_face_rows(FaceCropConfig(crop_size=0.6, crop_centre_y=0.32)) == pytest.approx((0.0, 0.8))
    assert lr.lower_face_rows(FaceCropConfig(crop_size=1.0, crop_centre_y=0.0)) == pytest.approx((0.5, 1.0))
    cfg = lr.RewriteConfig()
    assert (cfg.paste_top, cfg.paste_bottom) == pytest.approx(lr.lower_face_rows())


def test_driving_track_cuts_or_repeats():
    a = np.arange(5, dtype=np.float32)
    assert lr.driving_track(a, 3).tolist() == [0, 1, 2]
    assert lr.driving_track(a, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    with pytest.raises(InputError, match="driving audio"):
        lr.driving_track(np.zeros((2, 3), np.float32), 4)


def test_bad_config_and_input_are_named():
    with pytest.raises(InputError, match="paste_top"):
        lr.RewriteConfig(paste_top=0.9, paste_bottom=0.5)
    with pytest.raises(InputError, match="jump_cost"):
        lr.RewriteConfig(jump_cost=-1)
    one = PreparedClip(frames=np.zeros((1, 8, 8, 3), np.uint8), fps=FPS, audio=np.zeros(640, np.float32),
                       sample_rate=SR)
    with pytest.raises(InputError, match="at least 2 RGB frames"):
        lr.rewrite_clip(one, one.audio, TINY_CONTRACT)
    other_rate = PreparedClip(frames=np.zeros((4, 8, 8, 3), np.uint8), fps=FPS, audio=np.zeros(800, np.float32),
                              sample_rate=8000)
    with pytest.raises(InputError, match="8000 Hz"):
        lr.rewrite_clip(other_rate, other_rate.audio, TINY_CONTRACT)


# --- the benchmark ----------------------------------------------------------------------------------------------
def test_bootstrap_and_aucs_on_hand_made_scores():
    rows = [{"original": 0.1 * i, "swap": 0.5 + 0.1 * i, "rewrite": 0.05 * i} for i in range(5)]
    a = rw.aucs(rows)
    assert a["swap"] == pytest.approx(1.0) and a["rewrite"] < 0.5
    ci = rw.bootstrap(rows, reps=200)
    assert ci["rewrite_minus_swap"][1] < 0 and ci["swap"] == [1.0, 1.0]


def test_nothing_to_score_is_an_error(tmp_path, caplog):
    assert rw.main(["--root", str(GRID_DIR.parent), "--out-dir", str(tmp_path)]) == 2
    assert "nothing to score" in caplog.text
    with pytest.raises(InputError, match="foldK.json"):
        rw.cv_sources(tmp_path)


def test_end_to_end_on_two_grid_clips(grid_clips, tmp_path):
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student

    entries = [{"file": f"grid/{p.name}", "sha256": sha256_file(p), "speaker_group": f"g{i}", "split": "test"}
               for i, p in enumerate(grid_clips[:2])]
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"clips": entries}))
    ckpt = save_checkpoint(tmp_path / "m" / "tiny.safetensors", create_student("tiny", pretrained=False).eval(),
                           {"note": "random init for the harness test"})
    out = tmp_path / "out"
    assert rw.main(["--model", f"tiny={ckpt}", "--root", str(GRID_DIR.parent), "--split-file", str(split_file),
                    "--out-dir", str(out)]) == 0
    (json_path,) = (out / rw.STEM).glob("*.json")
    report = json.loads(json_path.read_text())
    (rows,) = report["groups"].values()
    assert [r["method"] for r in rows] == ["tiny", rw.BASELINE_NAME]
    assert all(r["clips"] == 2 and 0.0 <= r["auc_rewrite"] <= 1.0 for r in rows)
    for clip in report["sources"]["split-test"]:
        assert set(clip["scores"]["tiny"]) == set(rw.CONDITIONS)
        assert clip["swap_partner"] != clip["file"]
        assert set(clip["rewrite"]) == {"64", "128"}  # the student's crop and the baseline's
    assert report["record"]["command"].startswith("python benchmarks/real_faces_rewrite.py")
    assert "| tiny | 2 |" in json_path.with_suffix(".md").read_text()


def test_pairwise_distances_in_chunks_equal_the_direct_ones(monkeypatch):
    rng = np.random.default_rng(2)
    x, y = rng.random((37, 65)), rng.random((41, 65))
    monkeypatch.setattr(lr, "_CHUNK_ELEMENTS", 1000)  # several chunks
    assert np.array_equal(lr.pairwise_mean(x, y, 1), np.abs(x[:, None] - y[None]).mean(axis=2))
    assert np.array_equal(lr.pairwise_mean(x, y, 2), ((x[:, None] - y[None]) ** 2).mean(axis=2))
