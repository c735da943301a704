"""The real-faces evaluation harness (benchmarks/real_faces.py) and the classical sync baseline
(benchmarks/sync_baseline.py): offsets recovered on synthetic talking faces, conditions that really shift the audio,
AUC/threshold/offset metrics on hand-made scores, and an end-to-end run on two GRID clips."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import real_faces as rf  # noqa: E402
from benchmarks import sync_baseline as sb  # noqa: E402
from pinlite_edge.contract import TINY_CONTRACT  # noqa: E402
from pinlite_edge.data.synthetic import write_clip_video  # noqa: E402
from pinlite_edge.errors import InputError  # noqa: E402
from pinlite_edge.features.mfcc import compute_mfcc  # noqa: E402
from pinlite_edge.features.windows import PreparedClip, audio_segment, window_at  # noqa: E402
from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS  # noqa: E402
from pinlite_edge.utils.hashing import sha256_file  # noqa: E402

from conftest import GRID_DIR  # noqa: E402


@pytest.fixture(scope="module")
def synthetic_clips(tmp_path_factory) -> list[PreparedClip]:
    """Two 4 s in-sync procedural talking faces (the frames and audio before video compression)."""
    out = []
    for seed in (0, 1):
        clip = write_clip_video(tmp_path_factory.mktemp("syn") / "c.mp4", seed, TINY_CONTRACT, duration_s=4.0,
                                manipulation="real")
        out.append(PreparedClip(frames=clip.frames, fps=clip.fps, audio=clip.audio, sample_rate=clip.sample_rate))
    return out


# --- the baseline -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [-5, -2, 0, 3, 5])
def test_baseline_offset_follows_a_known_shift(synthetic_clips, shift):
    for clip in synthetic_clips:
        res = sb.clip_sync(clip, audio_start_seconds=-shift / clip.fps)  # audio delayed by `shift` frames
        assert abs(res.offset_estimate - shift) <= 1, (shift, res.offset_estimate)


def test_baseline_scores_in_sync_lower_than_shifted(synthetic_clips):
    for clip in synthetic_clips:
        in_sync = sb.clip_sync(clip).sync_score
        for shift in (-5, 5):
            assert sb.clip_sync(clip, audio_start_seconds=-shift / clip.fps).sync_score > in_sync + 0.1


def test_baseline_window_offsets_in_the_harness(synthetic_clips):
    """Window-wise (as the harness runs it): the clip offset of the delay/advance conditions is the shift."""
    clip = synthetic_clips[0]
    starts = rf.condition_starts(clip, TINY_CONTRACT, None)
    motion = sb.mouth_motion(clip.frames)
    for cond in ("original", "delay200", "advance200", "delay80"):
        score = rf.baseline_condition(clip, TINY_CONTRACT, starts, cond, None, sb.BaselineConfig(), motion)
        assert abs(score.offset - rf.CONDITIONS[cond]) <= 1, (cond, score.offset)
        assert len(score.window_scores) == len(starts)


def test_lagged_correlation_sign_convention():
    rng = np.random.default_rng(0)
    video = rng.normal(size=200)
    audio = np.r_[np.zeros(3), video[:-3]]  # audio[t] = video[t - 3]: audio delayed by 3 frames
    lags, corr = sb.lagged_correlation(video, audio, max_lag=6)
    assert lags[int(np.nanargmax(corr))] == 3
    assert corr[lags == 3][0] == pytest.approx(1.0, abs=1e-9)


def test_baseline_rejects_bad_config_and_short_input():
    with pytest.raises(InputError, match="ROI"):
        sb.BaselineConfig(roi_rows=(0.8, 0.2))
    clip = PreparedClip(frames=np.zeros((5, 32, 32, 3), np.uint8), fps=25.0, audio=np.zeros(3200, np.float32),
                        sample_rate=16000)
    with pytest.raises(InputError, match="too short"):
        sb.clip_sync(clip)


# --- conditions -------------------------------------------------------------------------------------------------
def test_condition_windows_shift_the_audio_by_the_requested_frames(synthetic_clips):
    clip, other = synthetic_clips
    c = TINY_CONTRACT
    starts = rf.condition_starts(clip, c, None)
    assert starts[0] == pytest.approx(5 / clip.fps)
    assert starts[-1] + c.window_seconds <= clip.duration - 5 / clip.fps + 1e-6
    assert np.allclose(np.diff(starts)[:-1], c.window_seconds / 2)
    original = rf.condition_windows(clip, c, starts, "original")
    for cond in ("delay200", "advance200", "delay80"):
        k = rf.CONDITIONS[cond]
        shifted = rf.condition_windows(clip, c, starts, cond)
        for s, w, o in zip(starts, shifted, original):
            np.testing.assert_array_equal(w.frames, o.frames)  # the picture is untouched
            # delayed by k frames: the audio heard at s is what the picture showed at s - k / fps
            expected = window_at(clip, c, s - k / clip.fps)
            np.testing.assert_allclose(w.mfcc, expected.mfcc, atol=1e-5)
            assert not np.allclose(w.mfcc, o.mfcc, atol=1e-2)
    swapped = rf.condition_windows(clip, c, starts, "swap", partner=other)
    for s, w in zip(starts, swapped):
        seg = audio_segment(other.audio, int(round(rf.swap_audio_start(s, other, c.window_seconds) * 16000)),
                            c.window_samples)
        np.testing.assert_allclose(w.mfcc, compute_mfcc(seg, c), atol=1e-5)
    with pytest.raises(InputError, match="partner"):
        rf.condition_windows(clip, c, starts, "swap")


def test_short_clip_is_skipped_not_padded():
    fps = 25.0
    n = int(TINY_CONTRACT.window_seconds * fps) + 2 * rf.MARGIN_FRAMES - 1  # one frame short
    clip = PreparedClip(frames=np.zeros((n, 64, 64, 3), np.uint8), fps=fps,
                        audio=np.zeros(int(n / fps * 16000), np.float32), sample_rate=16000)
    assert rf.condition_starts(clip, TINY_CONTRACT, None) is None
    clip.frames = np.zeros((n + 1, 64, 64, 3), np.uint8)
    clip.audio = np.zeros(int((n + 1) / fps * 16000), np.float32)
    assert rf.condition_starts(clip, TINY_CONTRACT, None) == [pytest.approx(0.2)]


def test_swap_partners_have_another_speaker():
    clips = [rf.SplitClip(f"c{i}", Path(f"c{i}"), "0", g) for i, g in enumerate(["a", "a", "b", "c"])]
    assert rf.swap_partners(clips) == [2, 2, 3, 0]
    assert rf.swap_partners(clips[:2]) == [None, None]


# --- metrics ----------------------------------------------------------------------------------------------------
def test_auc_threshold_and_offset_accuracy_on_hand_made_scores():
    assert rf.auc_vs_original([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]) == 1.0
    assert rf.auc_vs_original([0.4, 0.5, 0.6], [0.1, 0.2, 0.3]) == 0.0
    assert rf.auc_vs_original([0.5, 0.5], [0.5, 0.5]) == 0.5
    assert rf.auc_vs_original([0.1, 0.4], [0.3, 0.5]) == 0.75  # 3 of 4 pairs ordered
    assert rf.auc_vs_original([], [0.3]) is None
    assert rf.youden_threshold([0.1, 0.2, 0.3], [0.4, 0.5]) == pytest.approx(0.35)
    assert rf.offset_accuracy([(5, 5), (4, 5), (3, 5), (None, 5)]) == 0.5


def test_summarise_rows():
    def cs(mean, offset=0):
        return rf.ConditionScore(scan=mean, mean=mean, max=mean + 0.1, offset=offset)

    clips = [
        {"original": cs(0.2), "delay200": cs(0.9, 5), "advance200": cs(0.8, -4), "delay80": cs(0.1, 0),
         "swap": cs(0.7, None)},
        {"original": cs(0.6), "delay200": cs(0.7, 1), "advance200": cs(0.9, -5), "delay80": cs(0.5, 2),
         "swap": cs(0.4, None)},
    ]
    row = rf.summarise(clips, threshold=0.5)
    assert row["auc_delay200"] == 1.0 and row["auc_advance200"] == 1.0
    assert row["auc_delay80"] == 0.25 and row["auc_swap"] == 0.75
    assert row["fpr"] == 0.5 and row["fpr_max"] == 0.5 and row["fpr_mean"] == 0.5
    assert row["offset_acc_200"] == 0.75 and row["offset_acc_80"] == 0.5
    assert row["tpr_delay200"] == 1.0 and row["tpr_delay80"] == 0.5 and row["tpr_swap"] == 0.5
    # a model's operating point: one threshold per aggregate
    row = rf.summarise(clips, threshold={"scan": 0.65, "mean": 0.1, "max": 0.95})
    assert (row["threshold"], row["threshold_mean"], row["threshold_max"]) == (0.65, 0.1, 0.95)
    assert row["fpr_mean"] == 1.0
    assert row["fpr"] == 0.0 and row["tpr_delay200"] == 1.0 and row["tpr_swap"] == 0.5
    assert row["fpr_max"] == 0.0 and row["tpr_delay200_max"] == 0.5 and row["tpr_delay80_max"] == 0.0


def test_model_threshold_follows_the_detector():
    from types import SimpleNamespace

    from pinlite_edge.operating_point import fit_operating_point

    point = fit_operating_point({"max": [0.7, 0.8], "mean": [0.55, 0.6], "scan": [0.1, 0.6]}, target_fpr=0.0,
                                data="unit")
    thr, source = rf.model_threshold(SimpleNamespace(operating_point=point), None)
    assert thr == point.thresholds and source.startswith("operating point")
    # a point calibrated before the offset scan existed: its thresholds, and 0.5 (said) for the scan
    old = fit_operating_point({"max": [0.7, 0.8], "mean": [0.55, 0.6]}, target_fpr=0.0, data="unit")
    thr, source = rf.model_threshold(SimpleNamespace(operating_point=old), None)
    assert thr == {**old.thresholds, "scan": 0.5} and "0.5 for scan" in source
    assert rf.model_threshold(SimpleNamespace(operating_point=point), 0.3) == (0.3, "--threshold")
    assert rf.model_threshold(SimpleNamespace(operating_point=None), None)[0] == 0.5


def test_parse_model_spec_errors(tmp_path):
    with pytest.raises(InputError, match="NAME=PATH"):
        rf.parse_model_spec("no-equals-sign")
    with pytest.raises(InputError, match="not a file"):
        rf.parse_model_spec(f"x={tmp_path / 'missing.onnx'}")
    (tmp_path / "m.onnx").write_bytes(b"")
    assert rf.parse_model_spec(f"m={tmp_path / 'm.onnx'}").name == "m"


def test_missing_default_data_is_skipped_with_a_note(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(rf, "DEFAULT_ROOT", tmp_path / "absent")
    assert rf.main(["--baseline-only", "--out-dir", str(tmp_path)]) == 0
    assert "not found" in caplog.text and not list(tmp_path.rglob("*.json"))
    assert rf.main(["--baseline-only", "--root", str(tmp_path / "absent"), "--out-dir", str(tmp_path)]) == 2


# --- end to end on real clips -----------------------------------------------------------------------------------
def test_end_to_end_on_two_grid_clips(grid_clips, tmp_path):
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student

    clips = grid_clips[:2]
    entries = [{"file": f"grid/{p.name}", "sha256": sha256_file(p), "speaker_group": f"g{i}", "split": split}
               for split in ("test", "train") for i, p in enumerate(clips)]
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"clips": entries}))
    ckpt = save_checkpoint(tmp_path / "m" / "tiny.safetensors", create_student("tiny", pretrained=False).eval(),
                           {"note": "random init for the harness test"})
    out = tmp_path / "out"
    rc = rf.main([f"tiny={ckpt}", "--root", str(GRID_DIR.parent), "--split-file", str(split_file),
                  "--baseline-preset", "tiny", "--out-dir", str(out)])
    assert rc == 0
    (json_path,) = (out / "real_faces").glob("*.json")  # benchmarks/results/<bench>/<machine>.json
    report = json.loads(json_path.read_text())
    assert [r["method"] for r in report["table"]] == ["tiny", rf.BASELINE_NAME]
    for row in report["table"]:
        for key in ("auc_delay200", "auc_advance200", "auc_delay80", "auc_swap", "fpr", "offset_acc_200"):
            assert row[key] is None or 0.0 <= row[key] <= 1.0
    assert report["baseline"]["threshold_choice"]["train_clips_scored"] == 2
    assert report["data"]["num_clips"] == 2 and len(report["data"]["fingerprint"]) == 64
    record = report["record"]
    assert record["git"]["commit"] and record["versions"]["torch"] and json_path.stem == record["machine_slug"]
    assert record["command"].startswith("python benchmarks/real_faces.py")
    assert record["data"]["fingerprint"] == report["data"]["fingerprint"]
    for clip in report["clips"]:
        assert clip["sha256_matches_split"] and clip["face_found"] in (True, False)
        assert clip["featurise_s_per_video_s"]["64"] > 0
        for method in ("tiny", rf.BASELINE_NAME):
            conds = clip["scores"][method]
            assert set(conds) == set(rf.CONDITIONS)
            assert len(conds["original"]["window_scores"]) == clip["num_windows"] >= 2
            if method == "tiny":
                assert all(0.0 <= conds[k]["mean"] <= 1.0 and 0.0 <= conds[k]["scan"] <= 1.0 for k in conds)
                # the clip offset is the offset scan's best shift (as Detector gives); the offset head's is beside it
                assert conds["original"]["offset"] in DEFAULT_SCAN_OFFSETS
                assert set(conds["original"]["scan_curve"]) == {str(k) for k in DEFAULT_SCAN_OFFSETS}
                assert -5 <= conds["original"]["offset_head"] <= 5
    md = json_path.with_suffix(".md").read_text()
    assert "| method | AUC delay200 | AUC advance200 | AUC delay80 | AUC swap |" in md
    assert "| tiny |" in md and f"| {rf.BASELINE_NAME} |" in md


def test_a_clip_that_fails_to_decode_is_reported_not_fatal(grid_clips, tmp_path):
    root = tmp_path / "real-av"
    (root / "grid").mkdir(parents=True)
    good = grid_clips[:2]
    for p in good:
        (root / "grid" / p.name).symlink_to(p)
    (root / "grid" / "broken.mpg").write_bytes(b"\x00not a video" * 100)
    entries = [{"file": f"grid/{name}", "sha256": "0" * 64, "speaker_group": name, "split": "test"}
               for name in [good[0].name, "broken.mpg", good[1].name]]
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"clips": entries}))
    rc = rf.main(["--baseline-only", "--baseline-threshold", "0", "--baseline-preset", "tiny", "--root", str(root),
                  "--split-file", str(split_file), "--out-dir", str(tmp_path / "out"), "--no-hash-check"])
    assert rc == 0
    (json_path,) = (tmp_path / "out" / "real_faces").glob("*.json")
    report = json.loads(json_path.read_text())
    assert [s["file"] for s in report["data"]["skipped"]] == ["grid/broken.mpg"]
    assert "DecodeError" in report["data"]["skipped"][0]["reason"]
    assert [c["file"] for c in report["clips"]] == [f"grid/{good[0].name}", f"grid/{good[1].name}"]
    assert report["clips"][0]["swap_partner"] == f"grid/{good[1].name}"
    assert "broken.mpg" in json_path.with_suffix(".md").read_text()


def test_target_checks_report_met_and_missed_targets_with_margins():
    table = [{"method": "distilled", "auc_delay200": 0.9, "auc_advance200": 0.8, "auc_delay80": 0.7,
              "auc_swap": 0.86, "fpr": 0.1, "offset_acc_200": 0.5},
             {"method": "baseline", "auc_delay200": 0.85, "auc_advance200": 0.85, "auc_delay80": 0.6,
              "auc_swap": 0.9, "fpr": 0.2, "offset_acc_200": 0.4},
             {"method": "int8", "auc_delay200": 0.86, "auc_advance200": 0.8, "auc_delay80": 0.7, "auc_swap": 0.86}]
    checks = {c["check"]: c for c in rf.target_checks(table, "distilled", [("int8", "distilled")])}
    assert checks["distilled auc_delay200"]["met"] is True
    assert checks["distilled auc_advance200"]["met"] is False
    assert checks["distilled auc_advance200"]["miss"] == pytest.approx(0.05)
    assert checks["distilled offset_acc_200"]["met"] is False
    assert checks["distilled fpr better than baseline"]["met"] is True
    assert checks["distilled auc_swap better than baseline"]["met"] is False
    assert checks["int8 vs distilled |Δauc_delay200|"]["met"] is False
    assert checks["int8 vs distilled |Δauc_swap|"]["met"] is True


def test_real_clip_verdicts_reports_every_clip_and_the_p09_count(tmp_path):
    from benchmarks import real_clip_verdicts as rcv
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.contract import TINY_CONTRACT
    from pinlite_edge.data.synthetic import write_clip_video
    from pinlite_edge.models import create_model, student_config

    root = tmp_path / "real"
    (root / "talking").mkdir(parents=True)
    write_clip_video(root / "talking" / "a.mp4", seed=1, contract=TINY_CONTRACT, duration_s=1.5, manipulation="real")
    (root / "talking" / "broken.mp4").write_bytes(b"not a video")
    ckpt = save_checkpoint(tmp_path / "m" / "best.safetensors", create_model(student_config("tiny")),
                           {"training_data": {"real_video": False, "kinds": ["synthetic"]}})
    out = tmp_path / "out"
    assert rcv.main([str(ckpt), "--root", str(root), "--out-dir", str(out)]) == 0
    (json_path,) = (out / "real_clip_verdicts").glob("*.json")
    report = json.loads(json_path.read_text())
    assert len(report["record"]["data"]["fingerprint"]) == 64 and report["record"]["data"]["num_clips"] == 2
    by_file = {c["file"]: c for c in report["clips"]}
    assert set(by_file) == {"talking/a.mp4", "talking/broken.mp4"} and "error" in by_file["talking/broken.mp4"]
    assert 0.0 <= by_file["talking/a.mp4"]["fake_prob_max"] <= 1.0
    assert report["training_data"] == "synthetic only"
    md = json_path.with_suffix(".md").read_text()
    clip = by_file["talking/a.mp4"]
    assert clip["aggregate"] == "scan" and clip["fake_prob"] == clip["fake_prob_scan"]  # the Detector's default
    over = int(clip["fake_prob"] >= rcv.LIMIT)
    assert f"{over} of 1 clips reach P(fake) >= 0.9 on the Detector's default verdict (scan aggregate" in md
    assert f"with the max of the window P(fake) instead: {int(clip['fake_prob_max'] >= rcv.LIMIT)}" in md
    assert by_file["talking/a.mp4"]["threshold"] == 0.5 and "no operating point" in md  # uncalibrated model


# --- cross-validation outside the test split (benchmarks/real_faces_cv.py) ---------------------------------------
def test_cv_folds_are_speaker_disjoint_and_never_list_a_test_clip():
    from benchmarks import real_faces_cv as cv

    doc = json.loads(rf.DEFAULT_SPLIT_FILE.read_text())
    folds = cv.make_folds(doc, 5)
    pool = [c["file"] for f in folds for c in f]
    shipped = {c["file"]: c["split"] for c in doc["clips"]}
    assert len(pool) == len(set(pool)) == sum(s != "test" and f.startswith("talking/") for f, s in shipped.items())
    for k in range(len(folds)):
        split = {c["file"]: c["split"] for c in cv.fold_split(doc, folds, k)["clips"]}
        assert not [f for f in split if shipped[f] == "test"]  # the shipped test clips are in no fold file
        assert {f for f, s in split.items() if s == "test"} == {c["file"] for c in folds[k]}
        assert {f for f, s in split.items() if s == "dev"} == {c["file"] for c in folds[(k + 1) % 5]}
        assert all(s == "train" for f, s in split.items() if f.startswith("grid/"))
        groups: dict[str, set[str]] = {}
        for c in cv.fold_split(doc, folds, k)["clips"]:
            groups.setdefault(c["speaker_group"], set()).add(c["split"])
        assert all(len(s) == 1 for s in groups.values())  # no speaker on two sides
    with pytest.raises(ValueError, match="--folds"):
        cv.make_folds(doc, 1)


def test_cv_learning_curve_thins_only_the_talking_training_speakers():
    from benchmarks import real_faces_cv as cv

    doc = json.loads(rf.DEFAULT_SPLIT_FILE.read_text())
    folds = cv.make_folds(doc, 5)
    for k in range(len(folds)):
        full = {c["file"]: c["split"] for c in cv.fold_split(doc, folds, k)["clips"]}
        talking = {f for f, s in full.items() if s == "train" and f.startswith("talking/")}
        kept = {}
        for n in (0, 4, len(talking)):
            thin = {c["file"]: c["split"] for c in cv.fold_split(doc, folds, k, n)["clips"]}
            kept[n] = {f for f, s in thin.items() if s == "train" and f.startswith("talking/")}
            assert len(kept[n]) == n and kept[n] <= talking
            # GRID, dev and the held-out clips are those of the full fold
            assert {f: s for f, s in thin.items() if f not in talking} == {f: s for f, s in full.items()
                                                                          if f not in talking}
        assert kept[0] <= kept[4] <= kept[len(talking)] == talking  # one order: the smaller set is in the larger
        assert cv.fold_split(doc, folds, k, 4) == cv.fold_split(doc, folds, k, 4)  # a fixed choice
        with pytest.raises(ValueError, match="--train-talking"):
            cv.fold_split(doc, folds, k, len(talking) + 1)


def test_cv_pools_held_out_clips_and_counts_fpr_at_each_folds_operating_point():
    from benchmarks import real_faces_cv as cv

    def cond(scan: float, offset: int = 0) -> dict:
        return {"scan": scan, "mean": scan, "max": scan, "offset": offset, "offset_head": 0}

    def clip(orig: float, fake: float, face: bool = True) -> dict:
        conds = {"original": cond(orig), "delay200": cond(fake, 5), "advance200": cond(fake, -5),
                 "delay80": cond(fake, 2), "swap": cond(fake)}
        return {"file": f"talking/{orig}.mp4", "face_found": face, "scores": {"pruned": conds}}

    reports = [{"table": [{"method": "pruned", "threshold": 0.3, "threshold_source": "operating point (3 clips)"}],
                "clips": [clip(0.1, 0.9), clip(0.5, 0.8)]},  # 0.5 >= 0.3: one false positive
               {"table": [{"method": "pruned", "threshold": 0.6, "threshold_source": "operating point (3 clips)"}],
                "clips": [clip(0.5, 0.7), clip(0.99, 0.0, face=False)]}]  # 0.5 < 0.6; the no-face clip is left out
    per_method, fpr_hits, no_face = cv.pooled_clips(reports)
    rows = cv.pooled_rows(per_method, fpr_hits)
    assert no_face == ["talking/0.99.mp4"]
    (row,) = rows
    assert row["num_clips"] == 3 and row["auc_delay200"] == 1.0 and row["offset_acc_200"] == 1.0
    assert row["fpr_at_fold_operating_point"] == pytest.approx(1 / 3)
    assert "tpr_delay200" not in row and "threshold" not in row  # one pooled threshold would mean nothing


def _report(originals: list[float], shifted: list[float], threshold: float) -> dict:
    """A scored group of held-out clips in the shape of ``real_faces.evaluate``: every method gives the same scan
    scores (the baseline via its mean), the pruned student has an operating point."""
    from benchmarks.real_faces_cv import MODELS

    conds = ("original", "delay200", "advance200", "delay80", "swap")
    clips = []
    for i, (o, f) in enumerate(zip(originals, shifted)):
        score = {c: {"scan": o if c == "original" else f, "mean": o if c == "original" else f, "max": 0.0,
                     "offset": 0, "offset_head": None} for c in conds}
        clips.append({"file": f"talking/c{threshold}_{i}.mp4", "sha256": str(i), "face_found": True,
                      "scores": {m: score for m in (*MODELS, rf.BASELINE_NAME)}})
    table = [{"method": "pruned", "threshold": threshold, "threshold_source": "operating point (test)"}]
    return {"clips": clips, "table": table}


def test_pooling_held_out_clips_counts_within_model_pairs_and_false_positives():
    from benchmarks import real_faces_pooled as pooled

    # model A ranks its own clips perfectly, model B too, but B's scores sit far above A's: pooled they mix
    a = _report([0.1, 0.2], [0.3, 0.4], threshold=0.15)
    b = _report([0.7, 0.8], [0.9, 0.95], threshold=0.75)
    assert pooled.within_model_auc([a, b], "distilled", "delay200") == 1.0
    summary = pooled.summarise_variant([a, b])
    row = next(r for r in summary["rows"] if r["method"] == "pruned")
    assert row["clips"] == 4 and row["within_model_auc_mean"] == 1.0
    # pooled: B's originals (0.7, 0.8) outrank A's manipulated (0.3, 0.4): 4 of the 16 pairs are wrong
    assert row["pooled_auc_delay200"] == pytest.approx(12 / 16)
    assert row["false_positives"] == "2 of 4"  # 0.2 >= 0.15 and 0.8 >= 0.75
    with pytest.raises(argparse.ArgumentTypeError, match="NAME=CV_WORK:TEST_RECORD"):
        pooled._variant("no-colon")


def test_the_test_split_is_compared_with_cv_subsets_of_its_size():
    from benchmarks import real_faces_pooled as pooled

    # CV: six clips, every one ranked right (AUC 1 in every subset); test: two clips ranked wrong (AUC 0)
    cv = _report([0.1, 0.2, 0.1, 0.2, 0.1, 0.2], [0.8, 0.9, 0.8, 0.9, 0.8, 0.9], threshold=0.5)
    test = _report([0.9, 0.8], [0.1, 0.2], threshold=0.5)
    got = pooled.test_against_cv([cv, test], "distilled", subsets=50)
    assert got["test_clips"] == 2 and got["cv_clips"] == 6 and got["test_mean_auc"] == 0.0
    assert got["cv_subset_mean_auc_p2_5_p50_p97_5"] == [1.0, 1.0, 1.0]
    assert got["share_of_cv_subsets_at_or_below_test"] == 0.0
    # a test split like the CV is not unusual: every subset is at or below its AUC of 1
    same = pooled.test_against_cv([cv, _report([0.1, 0.2], [0.8, 0.9], threshold=0.5)], "distilled", subsets=50)
    assert same["share_of_cv_subsets_at_or_below_test"] == 1.0
    assert "share at or below" in pooled.render_markdown(
        {"variants": {"v": {"cv_work": "w", "test_record": "t", "sources": 2, **pooled.summarise_variant([cv, test])}}})


def test_recipes_on_the_same_folds_are_compared_clip_by_clip(tmp_path):
    from benchmarks import real_faces_cv_compare as compare

    def work(name: str, reports: list[dict]) -> Path:
        for k, rep in enumerate(reports):
            (tmp_path / name / f"fold{k}").mkdir(parents=True)
            (tmp_path / name / f"fold{k}" / "fold_scores.json").write_text(json.dumps(rep))
        return tmp_path / name

    # two folds (the threshold names the clips: 0.5 -> fold 0's, 0.6 -> fold 1's), the same clips in both recipes
    good = work("good", [_report([0.1, 0.2], [0.8, 0.9], 0.5), _report([0.1, 0.3], [0.7, 0.9], 0.6)])
    bad = work("bad", [_report([0.8, 0.9], [0.1, 0.2], 0.5), _report([0.7, 0.9], [0.1, 0.3], 0.6)])
    ref, var = compare.load_scores(bad), compare.load_scores(good)
    assert len(ref) == 4 and set(ref) == set(var)  # clips matched by file across recipes
    row = compare.paired_difference(ref, var, "pruned", reps=50)
    assert row["difference"] == 1.0 and row["difference_ci95"] == [1.0, 1.0] and row["share_variant_ahead"] == 1.0
    # a recipe against itself, on clips of mixed difficulty (each draw's AUC differs): paired, every difference is 0
    mixed = work("mixed", [_report([0.1, 0.9], [0.5, 0.2], 0.5), _report([0.3, 0.1], [0.6, 0.05], 0.6)])
    same = compare.paired_difference(compare.load_scores(mixed), compare.load_scores(mixed), "pruned", reps=200)
    assert same["difference"] == 0.0 and same["difference_ci95"] == [0.0, 0.0] and same["share_variant_ahead"] == 0.0
    # a clip only one recipe scored is left out
    del var[sorted(var)[0]]
    assert compare.paired_difference(ref, var, "pruned", reps=5)["clips"] == 3
    with pytest.raises(FileNotFoundError, match="fold_scores.json"):
        compare.load_scores(tmp_path / "empty")
    assert compare._named("cue (sync_lags=5)=runs/x") == ("cue (sync_lags=5)", Path("runs/x"))


def test_a_scoring_variant_is_recomputed_from_the_stored_scan_curves(tmp_path):
    from benchmarks import real_faces_cv_compare as compare

    peak = {-2: 0.0, 0: 3.0, 2: 0.0}  # the given alignment fits far better than the others: a genuine clip
    flat = {-2: 1.0, 0: 0.9, 2: 1.1}  # nothing fits better than anything else: swapped audio
    rep = _report([0.5, 0.5], [0.2, 0.2], 0.5)  # recorded scan scores rank every manipulation below its original
    for clip in rep["clips"]:
        clip["scores"] = {m: {c: dict(score, scan_curve={str(k): v for k, v in (peak if c == "original" else
                                                                                  flat).items()})
                              for c, score in conds.items()} for m, conds in clip["scores"].items()}
    (tmp_path / "w" / "fold0").mkdir(parents=True)
    (tmp_path / "w" / "fold0" / "fold_scores.json").write_text(json.dumps(rep))
    recorded = compare.load_scores(tmp_path / "w")
    rescored = compare.load_scores(tmp_path / "w", "confidence")
    clip = sorted(rescored)[0]
    assert recorded[clip]["pruned"]["swap"].scan == 0.2  # the reference keeps its recorded score
    # sigmoid(median - curve[0]): sigmoid(-3) for the peak, sigmoid(0.1) for the flat curve
    assert rescored[clip]["pruned"]["original"].scan == pytest.approx(1 / (1 + np.exp(3.0)))
    assert rescored[clip]["pruned"]["swap"].scan == pytest.approx(1 / (1 + np.exp(-0.1)))
    row = compare.paired_difference(recorded, rescored, "pruned", reps=5)
    assert row["reference_auc"] == {c: 0.0 for c in rf.MANIPULATED} and row["variant_auc"]["swap"] == 1.0
    assert row["difference"] == 1.0
    # the command line: without --reference, each variant is paired with its own recorded scores
    assert compare.main(["--variant", f"v={tmp_path / 'w'}", "--statistic", "confidence", "--stem", "conf",
                         "--out-dir", str(tmp_path / "out")]) == 0
    written = json.loads(next((tmp_path / "out" / "conf").glob("*.json")).read_text())
    assert written["reference"]["work"] is None and written["variants"][0]["statistic"] == "confidence"
    assert {r["method"]: r["difference"] for r in written["variants"][0]["rows"]}["pruned"] == 1.0
    with pytest.raises(SystemExit):
        compare.main(["--variant", f"v={tmp_path / 'w'}"])  # neither a reference nor a statistic
    # a record without curves cannot be rescored, and says so
    del rep["clips"][0]["scores"]["pruned"]["swap"]["scan_curve"]
    (tmp_path / "w" / "fold0" / "fold_scores.json").write_text(json.dumps(rep))
    with pytest.raises(ValueError, match="no scan_curve"):
        compare.load_scores(tmp_path / "w", "confidence")


def test_cv_passes_the_recipe_and_the_seed_to_every_folds_quickstart():
    from benchmarks import real_faces_cv as cv

    args = cv.build_parser().parse_args(["--model-option", "sync_contrast=true", "--pair-weight", "0.5", "--seed", "1",
                                         "--sync-pairs", "rewrites_per_window=1"])
    assert cv.recipe_args(args) == ["--model-option=sync_contrast=true", "--sync-pairs=rewrites_per_window=1",
                                    "--pair-weight=0.5", "--seed=1"]
    assert cv.recipe_args(cv.build_parser().parse_args([])) == []  # the quickstart's own defaults


def test_scan_offsets_are_validated_on_the_command_line(capsys):
    assert rf.build_parser().parse_args(["--scan-offsets=-6,-5,-4,-3,-2,-1,0,1,2,3,4,5,6"]).scan_offsets == \
        tuple(range(-6, 7))
    assert rf.build_parser().parse_args([]).scan_offsets == DEFAULT_SCAN_OFFSETS
    for bad, why in (("1,2,3", "must include 0"), ("0,a", "invalid literal"), ("-40,0,40", "within")):
        with pytest.raises(SystemExit):
            rf.build_parser().parse_args([f"--scan-offsets={bad}"])
        assert why in capsys.readouterr().err


def test_the_harness_scans_the_offsets_it_is_given(synthetic_clips, student):
    from pinlite_edge.runtimes.torch.runner import TorchRunner

    clip = synthetic_clips[0]
    starts = rf.condition_starts(clip, TINY_CONTRACT, None)[:2]
    grid = (-3, -1, 0, 1, 3)
    with TorchRunner.from_model(student) as runner:
        score = rf._model_scorer(runner, TINY_CONTRACT, 4, {}, grid)(clip, starts, "delay200", None)
        default = rf._model_scorer(runner, TINY_CONTRACT, 4, {})(clip, starts, "original", None)
    assert set(score.scan_curve) == set(grid) and score.offset in grid
    assert set(default.scan_curve) == set(DEFAULT_SCAN_OFFSETS)


def test_cv_scores_another_runs_fold_models_without_building(tmp_path, monkeypatch):
    from benchmarks import real_faces_cv as cv

    models = tmp_path / "their-run" / "fold0"
    for m in cv.MODELS:
        (models / m).mkdir(parents=True)
        (models / m / "best.safetensors").write_bytes(b"x")
    seen = {}

    def no_build(*a, **k):
        raise AssertionError("built a fold although its models were given")

    def fake_evaluate(cfg):
        seen["cfg"] = cfg
        return {"table": [], "clips": []}

    monkeypatch.setattr(cv.subprocess, "run", no_build)
    monkeypatch.setattr(cv, "evaluate", fake_evaluate)
    report = cv.run_fold(0, tmp_path / "fold0.json", tmp_path / "mine" / "fold0", tmp_path, False,
                         models_from=models, scan_offsets=(-1, 0, 1))
    assert [s.path for s in seen["cfg"].models] == [models / m / "best.safetensors" for m in cv.MODELS]
    assert seen["cfg"].scan_offsets == (-1, 0, 1) and report["build_seconds"] < 5
    assert (tmp_path / "mine" / "fold0" / "fold_scores.json").is_file()  # the scores are this run's
    (models / "pruned" / "best.safetensors").unlink()
    with pytest.raises(InputError, match="no pruned model"):
        cv.run_fold(0, tmp_path / "fold0.json", tmp_path / "mine2" / "fold0", tmp_path, False, models_from=models)


def test_cv_models_from_refuses_recipe_options_and_other_folds(tmp_path, caplog):
    from benchmarks import real_faces_cv as cv

    root = tmp_path / "real-av"
    root.mkdir()
    assert cv.main(["--models-from", str(tmp_path), "--seed", "1", "--root", str(root)]) == 2
    assert "recipe options (--seed=1) would not apply" in caplog.text
    (tmp_path / "fold0.json").write_text(json.dumps({"clips": []}))
    assert cv.main(["--models-from", str(tmp_path), "--root", str(root), "--work", str(tmp_path / "w"),
                    "--out-dir", str(tmp_path / "o")]) == 2
    assert "is not this run's fold" in caplog.text
