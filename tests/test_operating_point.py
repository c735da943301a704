"""Operating point: thresholds measured on genuine clips, stored in the checkpoint, carried to the Detector."""
from __future__ import annotations

import json
import time
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pinlite_edge.checkpoint import read_record, save_checkpoint
from pinlite_edge.contract import TINY_CONTRACT
from pinlite_edge.errors import InputError
from pinlite_edge.models import create_student
from pinlite_edge.operating_point import (THRESHOLD_MARGIN, OperatingPoint, false_positive_rate, fit_operating_point,
                                          threshold_at_fpr)


def test_threshold_sits_just_above_the_scores_that_must_pass():
    scores = [0.9, 0.7, 0.6, 0.55, 0.52, 0.4, 0.3, 0.3, 0.2, 0.1]
    # 10 clips, 10 %: one clip may stay at or above the threshold, the second highest (0.7) must fall below it
    t = threshold_at_fpr(scores, 0.10)
    assert t == pytest.approx(0.7 + THRESHOLD_MARGIN, abs=1e-12)
    # the clip that must pass, scored by an export a float rounding higher (1.4e-8 was seen), still passes
    assert 0.7 + 1.4e-8 < t
    assert sum(s >= t for s in scores) == 1
    # 0 %: every clip below the threshold
    assert sum(s >= threshold_at_fpr(scores, 0.0) for s in scores) == 0


@pytest.mark.parametrize("target_fpr", [0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.9, 0.99])
def test_threshold_never_lets_more_than_the_target_rate_through(target_fpr):
    """For every clip count 5..40 and a range of target rates, the genuine clips at or above the chosen threshold are
    at most the target rate: rounding the clips that may stay above it up instead of down broke the promise (with 31
    clips at 5% the threshold let 2 through, 6.5%). The scores are distinct and further apart than the margin, the
    floor is 0 so it cannot hide the count."""
    for n in range(5, 41):
        scores = [((i * 7) % n + 0.5) / n for i in range(n)]  # distinct, 1/n apart, not sorted
        t = threshold_at_fpr(scores, target_fpr, floor=0.0)
        fpr = false_positive_rate(scores, t)
        assert fpr <= target_fpr, (n, target_fpr, t, fpr)
    scores = [(i + 0.5) / 31 for i in range(31)]
    assert sum(s >= threshold_at_fpr(scores, 0.05, floor=0.0) for s in scores) == 1  # floor(31 * 5%) = 1


def test_threshold_is_never_lowered_below_half():
    assert threshold_at_fpr([0.1, 0.2, 0.3], 0.0) == 0.5
    assert threshold_at_fpr([0.1], 0.99) == 0.5  # every clip may be called fake: nothing to raise


@pytest.mark.parametrize("scores, fpr", [([], 0.05), ([0.5, math.nan], 0.05), ([0.5], 1.0), ([0.5], -0.1)])
def test_threshold_refuses_bad_input(scores, fpr):
    with pytest.raises(InputError):
        threshold_at_fpr(scores, fpr)


@pytest.mark.parametrize("scores", [[-3.0, -1.0, -2.0], [2.0, 5.0, 9.0], [0.2, 0.3, 1.0001]])
def test_calibration_scores_must_be_probabilities(scores):
    """Scan margins (negative) gave the scan a threshold of 0.0 that called every clip fake, logits one of 1.0."""
    with pytest.raises(InputError, match=r"scores must be P\(fake\) in \[0, 1\]"):
        fit_operating_point({"scan": scores}, data="unit")
    with pytest.raises(InputError, match=r"scores must be P\(fake\) in \[0, 1\]"):
        threshold_at_fpr(scores, 0.05, floor=0.0)


def test_calibration_scores_may_be_a_numpy_array():
    """``if not scores`` failed on an array ("truth value of an array is ambiguous")."""
    scores = [0.1, 0.2, 0.3, 0.4, 0.55]
    assert threshold_at_fpr(np.array(scores), 0.0) == threshold_at_fpr(scores, 0.0) == 0.55 + THRESHOLD_MARGIN
    assert false_positive_rate(np.array(scores), 0.5) == 0.2
    assert math.isnan(false_positive_rate(np.array([]), 0.5))
    with pytest.raises(InputError, match="no genuine clip scores"):
        threshold_at_fpr(np.array([]), 0.05)


def test_scan_threshold_is_the_calibration_quantile_without_the_half_floor():
    """The scan's score has no 50% point: its threshold sits just above the genuine clips that must pass, even
    below 0.5; the window aggregates keep the 0.5 floor; an unknown aggregate is refused."""
    point = fit_operating_point({"scan": [0.0, 0.0, 0.05, 0.2], "max": [0.1, 0.2, 0.3, 0.4]}, target_fpr=0.0,
                                data="unit")
    assert 0.2 < point.threshold("scan") < 0.2001 and point.threshold("max") == 0.5
    assert point.fpr_at_threshold["scan"] == 0.0 and point.fpr_at_default["scan"] == 0.0
    with pytest.raises(InputError, match="unknown aggregate"):
        fit_operating_point({"median": [0.1]}, data="unit")


def test_fit_reports_fpr_before_and_after():
    point = fit_operating_point({"max": [0.8, 0.7, 0.6, 0.55], "mean": [0.45, 0.5, 0.52, 0.4]}, target_fpr=0.0,
                                data="unit test")
    assert point.fpr_at_default == {"max": 1.0, "mean": 0.5}
    assert point.fpr_at_threshold == {"max": 0.0, "mean": 0.0}
    assert point.threshold("max") > 0.8 and point.threshold("mean") > 0.52
    assert OperatingPoint.from_dict(json.loads(json.dumps(point.to_dict()))) == point


@pytest.mark.parametrize("bad", [None, [], {"thresholds": {}}, {"thresholds": {"median": 0.6}},
                                 {"thresholds": {"max": 1.5}}, {"thresholds": {"max": "0.6"}},
                                 {"thresholds": {"max": True}}, {"thresholds": {"max": 0.6}, "clips": "many"}])
def test_stored_record_is_validated(bad):
    with pytest.raises(InputError, match="operating_point"):
        OperatingPoint.from_dict(bad, source="manifest x")


@pytest.mark.parametrize("option, value, match", [
    ("short_clip_windows", 0, r"short_clip_windows must be a whole number in 1\.\.32, got 0"),
    ("short_clip_windows", -1, "short_clip_windows must be a whole number"),
    ("short_clip_windows", math.nan, "short_clip_windows must be a whole number"),
    ("short_clip_windows", "3", "short_clip_windows must be a whole number"),  # was a TypeError
    ("stride_seconds", -1.0, "stride_seconds must be positive"),
    ("stride_seconds", math.nan, "stride_seconds must be positive"),
    ("face_crop", "no", "face_crop must be True or False, got 'no'"),
])
def test_fit_refuses_settings_its_record_cannot_carry(option, value, match):
    """They were stored as given: short_clip_windows=0 made a record OperatingPoint.from_dict refuses, a stride of
    -1 s or face_crop='no' a record no Detector setting matches."""
    with pytest.raises(InputError, match=match):
        fit_operating_point({"max": [0.1, 0.2, 0.3]}, windows={"max": [1, 1, 5]}, **{option: value})
    point = fit_operating_point({"max": [0.1, 0.2, 0.3]}, windows={"max": [1, 1, 5]}, short_clip_windows=5,
                                stride_seconds=0.5, face_crop=False)
    assert OperatingPoint.from_dict(json.loads(json.dumps(point.to_dict()))) == point


@pytest.mark.parametrize("windows, match", [
    ({"max": [0, 5, 5]}, r"windows must be whole numbers >= 1 \(.*\), got 0 for 'max'"),
    ({"max": [5, -3, 5]}, "windows must be whole numbers >= 1 .*got -3"),
    ({"max": [2.5, 5, 5]}, "windows must be whole numbers >= 1 .*got 2.5"),
    ({"max": [True, 5, 5]}, "windows must be whole numbers >= 1 .*got True"),
    ({"max": [math.nan, 5, 5]}, "windows must be whole numbers >= 1 .*got nan"),
    ({"max": ["3", 5, 5]}, "windows must be whole numbers >= 1 .*got '3'"),  # was a TypeError
    ({"max": [5, 5]}, "windows must give one count per score"),
    ({"max": [5, 5, 5, 5]}, "windows must give one count per score"),
    ({"mean": [5, 5, 5]}, "windows must give one count per score"),
    ([1, 5, 5], "windows must give one count per score"),  # was an AttributeError
])
def test_fit_refuses_window_counts_that_are_not_one_count_per_score(windows, match):
    """0, -3, 2.5 or True windows made a score a short clip's (a short-clip threshold from it), NaN a whole clip's."""
    with pytest.raises(InputError, match=match):
        fit_operating_point({"max": [0.1, 0.2, 0.3]}, windows=windows)
    point = fit_operating_point({"max": [0.1, 0.2, 0.3]}, windows={"max": np.array([1, 5, 5])})  # numpy counts
    assert point.short_clips == {"max": 1}


@pytest.fixture(scope="module")
def genuine_folder(tmp_path_factory) -> Path:
    from pinlite_edge.data.synthetic import write_clip_video

    root = tmp_path_factory.mktemp("genuine")
    for seed in range(3):
        write_clip_video(root / f"clip{seed}.mp4", seed=seed, contract=TINY_CONTRACT, duration_s=1.5)
    return root


def test_calibrate_cli_writes_the_record_and_keeps_the_weights(genuine_folder, tmp_path, capsys):
    from pinlite_edge.calibrate import main
    from pinlite_edge.checkpoint import load_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {"epoch": 3})
    before, _ = load_checkpoint(ckpt)
    assert main([str(ckpt), "--data", str(genuine_folder), "--target-fpr", "0", "--threads", "1", "--splits", "all",
                 "--no-face-crop", "--reencode", "none"]) == 0
    record = read_record(ckpt)
    point = OperatingPoint.from_dict(record["operating_point"])
    assert point.clips == 3 and point.fpr_at_threshold == {"max": 0.0, "mean": 0.0, "scan": 0.0}
    assert point.reencodings == ()
    assert record["epoch"] == 3  # the rest of the record is kept
    after, _ = load_checkpoint(ckpt)
    for (k, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        assert torch.equal(a, b), k
    assert "threshold" in capsys.readouterr().out

    # export copies it into the manifest, the runner exposes it, and it is covered by the manifest's content hash
    from pinlite_edge.errors import ManifestError
    from pinlite_edge.export import export_model
    from pinlite_edge.runtimes import load_runner

    onnx = export_model(ckpt, "onnx", tmp_path / "onnx").artifact
    runner = load_runner(onnx)
    assert runner.operating_point == point
    manifest_file = onnx.with_name(onnx.name + ".manifest.json")
    manifest = json.loads(manifest_file.read_text())
    assert manifest["operating_point"]["thresholds"] == point.thresholds
    manifest["operating_point"]["thresholds"]["max"] = 0.99
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError):
        load_runner(onnx)


def test_calibrate_no_progress_and_copies_named_after_their_clip(genuine_folder, tmp_path, capsys, monkeypatch):
    """--no-progress was missing (the bar was always drawn), and a re-encoded copy was a temporary "5.mp4", so a
    warning about it ("no face found in /tmp/pinlite-calibrate-x/5.mp4") did not say which clip it was."""
    from pinlite_edge import calibrate

    copies: list[Path] = []
    real_reencode = calibrate.reencode

    def reencode(src: Path, dst: Path, *args, **kwargs):
        copies.append(dst)
        return real_reencode(src, dst, *args, **kwargs)

    monkeypatch.setattr(calibrate, "reencode", reencode)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {"epoch": 3})
    assert calibrate.main([str(ckpt), "--data", str(genuine_folder), "--splits", "all", "--no-face-crop",
                           "--threads", "1", "--reencode", "crf35", "--dry-run", "--no-progress"]) == 0
    assert "scoring genuine clips" not in capsys.readouterr().err
    assert sorted(p.name.split("-", 1)[1] for p in copies) == [f"clip{i}-crf35.mp4" for i in range(3)]


def test_calibrate_cli_errors_are_one_line(tmp_path, capsys):
    from pinlite_edge.calibrate import main

    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    assert main([str(ckpt), "--data", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(ckpt), "--data", str(tmp_path / "empty")]) == 2


def test_calibrate_sigterm_is_one_line_exit_143_and_the_checkpoint_unchanged(tmp_path, capsys, monkeypatch):
    """SIGTERM (kill, a scheduler) said "interrupted" and exited 130 like Ctrl-C; the shared CLI ending says
    "terminated", exit 143."""
    import os
    import signal
    import time

    import pinlite_edge.calibrate as calibrate

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    monkeypatch.setattr(calibrate, "calibrate_checkpoint", killed)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    before = ckpt.read_bytes()
    assert calibrate.main([str(ckpt), "--data", str(tmp_path)]) == 143
    err = capsys.readouterr().err.strip()
    assert err == f"python -m pinlite_edge.calibrate: terminated; {ckpt} is unchanged (it is written only at the end)"
    assert ckpt.read_bytes() == before


def test_calibrate_checks_its_arguments_before_scoring_any_clip(genuine_folder, tmp_path, capsys, monkeypatch):
    """A bad --target-fpr and an exported artefact given as the checkpoint used to be refused only after every clip
    (and its re-encoded copies) had been scored; the artefact as 'a corrupt safetensors file'."""
    import pinlite_edge.calibrate as calibrate

    def never(*args, **kwargs):
        raise AssertionError("clips were scored before the arguments were checked")

    monkeypatch.setattr(calibrate, "score_clips", never)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    assert calibrate.main([str(ckpt), "--data", str(genuine_folder), "--target-fpr", "1.5"]) == 2
    assert "--target-fpr must be a fraction in [0, 1), got 1.5" in capsys.readouterr().err
    onnx = tmp_path / "student.onnx"
    onnx.write_bytes(b"\x08\x07" * 64)
    assert calibrate.main([str(onnx), "--data", str(genuine_folder)]) == 2
    err = capsys.readouterr().err
    assert "not a training checkpoint (.safetensors)" in err and "source_checkpoint" in err
    assert calibrate.main([str(tmp_path / "missing.safetensors"), "--data", str(genuine_folder)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_calibrate_refuses_to_write_into_a_checkpoint_replaced_while_it_scored(genuine_folder, tmp_path,
                                                                               monkeypatch):
    """The checkpoint is read again at the end to store the record: a file replaced meanwhile (a training run's
    new best, another calibration) used to receive the thresholds of the model that was scored."""
    import pinlite_edge.calibrate as calibrate
    from pinlite_edge.errors import PinliteError

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    scored = calibrate.score_clips
    torch.manual_seed(1)
    other = create_student("tiny", pretrained=False)

    def score_then_replace(*args, **kwargs):
        out = scored(*args, **kwargs)
        save_checkpoint(ckpt, other, {"epoch": 9})
        return out

    monkeypatch.setattr(calibrate, "score_clips", score_then_replace)
    with pytest.raises(PinliteError, match="changed while its clips were being scored"):
        calibrate.calibrate_checkpoint(ckpt, genuine_folder, splits=None, target_fpr=0.0, face_crop=False,
                                       progress=False)
    record = read_record(ckpt)
    assert record["epoch"] == 9 and "operating_point" not in record  # the other model, untouched


def test_calibrate_checks_and_rewrites_the_checkpoint_as_one_step(genuine_folder, tmp_path, monkeypatch):
    """Two calibrations of one checkpoint both said "written" and one operating point was lost: each checked the
    file was unchanged, then both wrote (concurrency audit). The check and the rewrite now hold the checkpoint
    folder's lock, so another calibration waits for it and then finds the file changed."""
    import fcntl
    import os

    import pinlite_edge.calibrate as calibrate
    from pinlite_edge import checkpoint as checkpoint_module

    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    held = []
    save = checkpoint_module.save_checkpoint

    def save_checking_the_lock(path, *a, **k):  # what another process would meet while the rewrite runs
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(fd)
        return save(path, *a, **k)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save_checking_the_lock)
    calibrate.calibrate_checkpoint(ckpt, genuine_folder, splits=None, target_fpr=0.0, face_crop=False, progress=False)
    assert held == [True] and "operating_point" in read_record(ckpt)


def test_calibrate_warns_when_too_few_clips_to_measure_the_target_rate(genuine_folder, tmp_path, caplog):
    from pinlite_edge.calibrate import calibrate_checkpoint

    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    with caplog.at_level("WARNING", logger="pinlite_edge.calibrate"):
        point = calibrate_checkpoint(ckpt, genuine_folder, splits=None, target_fpr=0.05, face_crop=False,
                                     progress=False, write=False)
    assert point.originals == 3 and not point.face_crop
    from pinlite_edge.calibrate import needed_clips

    assert needed_clips(0.05) == 20 and needed_clips(0.0) == needed_clips(1e-320) == 1  # 1e-320 overflowed
    assert "only 3 genuine clip(s) with a face: a false-positive rate of 0.05 cannot be measured on fewer than 20" \
        in caplog.text


def test_calibrate_interrupted_is_one_line_and_sigterm_cleans_up_like_ctrl_c(genuine_folder, tmp_path, capsys,
                                                                              monkeypatch):
    import os
    import signal

    import pinlite_edge.calibrate as calibrate
    from pinlite_edge.utils.cli import interrupt_on_sigterm

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(calibrate, "calibrate_checkpoint", interrupted)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    assert calibrate.main([str(ckpt), "--data", str(genuine_folder)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "unchanged" in err and "Traceback" not in err
    # a kill (SIGTERM) inside the block unwinds like Ctrl-C, so temporary folders are removed; the handler is restored
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_on_sigterm():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                cleaned.append(True)
    assert cleaned == [True] and signal.getsignal(signal.SIGTERM) is before


def test_an_operating_point_measured_with_other_detector_settings_is_used_with_a_warning(genuine_folder, tmp_path,
                                                                                         caplog):
    """Thresholds measured at another stride or without the face crop were applied silently."""
    from pinlite_edge import Detector
    from pinlite_edge.calibrate import calibrate_checkpoint

    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    calibrate_checkpoint(ckpt, genuine_folder, splits=None, target_fpr=0.0, face_crop=False, progress=False)
    with Detector.load(ckpt, threads=1, face_crop=False) as det:
        assert "measured" not in det.threshold_source  # the same settings
    with caplog.at_level("WARNING", logger="pinlite_edge.detector"):
        with Detector.load(ckpt, threads=1, stride_seconds=0.32) as det:
            source = det.threshold_source
    assert "at the default stride (this Detector: stride 0.32 s)" in source
    assert "without the face crop (this Detector: with)" in source and "recalibrate" in caplog.text
    # the default stride given explicitly (one window, 0.64 s) is the same stride, not a difference
    with Detector.load(ckpt, threads=1, face_crop=False, stride_seconds=0.64) as det:
        assert "measured" not in det.threshold_source


def test_calibration_clips_follow_the_split(tmp_path):
    """Without a split file, the clips folder: training assigns to train/dev by hash; the rest are left out."""
    from pinlite_edge.calibrate import genuine_clips
    from pinlite_edge.data.folder import hash_split

    names = [f"c{i}.mp4" for i in range(40)]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    picked = {p.name for p in genuine_clips(tmp_path, None, ("train", "dev"))}
    assert picked == {n for n in names if hash_split(n) in ("train", "dev")}
    assert 0 < len(picked) < len(names)
    assert {p.name for p in genuine_clips(tmp_path, None, None)} == set(names)
    with pytest.raises(InputError, match="unknown split"):
        genuine_clips(tmp_path, None, ("trian",))


def test_calibration_clips_of_known_speakers_follow_the_speaker_groups_split(tmp_path):
    """Without a split file, a clip whose PROVENANCE.json names its speaker group is calibrated on when its GROUP
    hashes into the requested splits, as folder: training splits it; hashing the file name instead picked clips of
    speakers training had put in test (and left out dev clips), so the operating point was measured on test speakers.
    A clip without a group falls back to its path's hash."""
    from pinlite_edge.calibrate import genuine_clips
    from pinlite_edge.data.folder import hash_split

    groups = ("spk0", "spk2", "spk11")  # train, test, dev by hash
    assert [hash_split(g) for g in groups] == ["train", "test", "dev"]
    folder = tmp_path / "talking"
    folder.mkdir()
    group_of = {f"talking/c{i:02d}.mp4": groups[i % 3] for i in range(30)}
    for rel in [*group_of, "talking/solo.mp4"]:
        (tmp_path / rel).write_bytes(b"")
    (folder / "PROVENANCE.json").write_text(json.dumps([{"file": Path(rel).name, "speaker_group": g}
                                                        for rel, g in group_of.items()]))
    for splits in (("train", "dev"), ("test",), ("dev",)):
        picked = {p.relative_to(tmp_path).as_posix() for p in genuine_clips(tmp_path, None, splits)}
        expected = {rel for rel, g in group_of.items() if hash_split(g) in splits}
        expected |= {"talking/solo.mp4"} if hash_split("talking/solo.mp4") in splits else set()
        assert picked == expected
        # the test means something: hashing the file names would pick other clips
        assert picked != {rel for rel in [*group_of, "talking/solo.mp4"] if hash_split(rel) in splits}


def test_detector_threshold_comes_from_the_operating_point(genuine_folder, tmp_path):
    """No threshold given: the model's operating point for the chosen aggregate; a caller's threshold wins; a model
    without one uses 0.5 and says so."""
    from pinlite_edge import Detector
    from pinlite_edge.calibrate import calibrate_checkpoint

    torch.manual_seed(1)
    plain = save_checkpoint(tmp_path / "plain" / "best.safetensors", create_student("tiny", pretrained=False), {})
    clip = sorted(genuine_folder.glob("*.mp4"))[0]
    with Detector.load(plain, threads=1, face_crop=False) as det:
        r = det.detect(clip)
    assert r.threshold == 0.5 and "no operating point" in r.threshold_source

    calibrated = save_checkpoint(tmp_path / "cal" / "best.safetensors", create_student("tiny", pretrained=False), {})
    point = calibrate_checkpoint(calibrated, genuine_folder, splits=None, target_fpr=0.0, face_crop=False,
                                 progress=False)
    assert set(point.thresholds) == {"max", "mean", "scan"}
    for aggregate in ("max", "mean", "scan"):
        with Detector.load(calibrated, threads=1, face_crop=False, aggregate=aggregate) as det:
            r = det.detect(clip)
        assert r.threshold == point.threshold(aggregate) and r.threshold_source.startswith("operating point")
        assert r.verdict == "real"  # a calibration clip, at target FPR 0
        assert r.to_dict()["threshold_source"] == r.threshold_source
    with Detector.load(calibrated, threads=1, face_crop=False, threshold=0.0) as det:
        r = det.detect(clip)
    assert (r.threshold, r.threshold_source, r.verdict) == (0.0, "caller", "fake")


def test_scan_uses_the_operating_point_by_default(genuine_folder, tmp_path):
    from pinlite_edge.calibrate import calibrate_checkpoint
    from pinlite_edge.scan import ScanConfig, scan

    torch.manual_seed(2)
    ckpt = save_checkpoint(tmp_path / "m" / "best.safetensors", create_student("tiny", pretrained=False), {})
    point = calibrate_checkpoint(ckpt, genuine_folder, splits=None, target_fpr=0.0, face_crop=False, progress=False)
    out = tmp_path / "scan.jsonl"
    scan(ScanConfig(root=genuine_folder, model=ckpt, out=out, workers=0, face_crop=False, progress=False))
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    records = [r for r in records if "path" in r]
    assert len(records) == 3
    # the scan decides as Detector does by default: the offset scan's P(fake) at the model's "scan" threshold
    assert all(r["threshold"] == round(point.threshold("scan"), 6) and r["verdict"] == "real" for r in records)
    assert all(r["aggregate"] == "scan" and r["offset_source"] == "offset scan" and 0.0 <= r["fake_prob_scan"] <= 1
               for r in records)


def test_calibration_also_scores_re_encoded_copies(genuine_folder, tmp_path, capsys):
    """Each clip and each of its copies is one calibration score; the copies are named in the record, and the
    threshold sits above all of them at a 0 % target."""
    from pinlite_edge.calibrate import calibrate_checkpoint, main, score_clips

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    files = sorted(genuine_folder.glob("*.mp4"))[:2]
    scores = score_clips(ckpt, files, threads=1, face_crop=False, reencodings=("crf35", "mirror"), progress=False)
    assert [(Path(s.file).name, s.reencoding) for s in scores] == [
        (f.name, name) for f in files for name in (None, "crf35", "mirror")]
    assert len({round(s.fake_prob_mean, 6) for s in scores}) > 2  # the copies are other videos, not the clip again
    point = calibrate_checkpoint(ckpt, genuine_folder, splits=None, target_fpr=0.0, threads=1, face_crop=False,
                                 reencodings=("crf35", "mirror"), progress=False, write=False)
    assert point.clips == 9 and point.reencodings == ("crf35", "mirror")
    assert "each clip also re-encoded (crf35, mirror)" in point.data
    assert point.fpr_at_threshold["scan"] == 0.0
    assert OperatingPoint.from_dict(json.loads(json.dumps(point.to_dict()))) == point
    assert main([str(ckpt), "--data", str(genuine_folder), "--splits", "all", "--reencode", "crf35,blur"]) == 2
    assert "unknown re-encoding(s) ['blur']" in capsys.readouterr().err


def test_a_record_from_before_re_encoded_calibration_loads_without_copies():
    point = OperatingPoint.from_dict({"thresholds": {"scan": 0.6}, "clips": 25, "data": "folder x"})
    assert point.reencodings == ()


def test_the_quickstart_measures_the_operating_point_again_when_its_copies_change(tmp_path, monkeypatch):
    import pinlite_edge.calibrate as calibrate
    from pinlite_edge.quickstart import QuickstartConfig, _calibrate_stage

    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {
        "operating_point": fit_operating_point({a: [0.1, 0.2] for a in ("max", "mean", "scan")}, data="old").to_dict()})
    asked = []

    def fake(checkpoint, real, **kw):
        asked.append(kw["reencodings"])
        return fit_operating_point({a: [0.1] for a in ("max", "mean", "scan")}, reencodings=kw["reencodings"])

    monkeypatch.setattr(calibrate, "calibrate_checkpoint", fake)
    cfg = QuickstartConfig(progress=False)
    assert _calibrate_stage(ckpt, tmp_path, cfg, redo=False) is True  # stored without copies: measured again
    assert asked == [cfg.calibration_reencodings] and cfg.calibration_reencodings
    same = QuickstartConfig(progress=False, calibration_reencodings=())
    assert _calibrate_stage(ckpt, tmp_path, same, redo=False) is False  # the stored one was made without copies


def test_short_clips_get_thresholds_measured_on_short_scores():
    """Scores whose verdict rests on fewer than SHORT_CLIP_WINDOWS windows are calibrated apart: the audit's short
    genuine clips were called fake 4-6 times as often as the whole-clip thresholds were measured to allow."""
    from pinlite_edge.operating_point import SHORT_CLIP_WINDOWS

    long_scan, short_scan = [0.1, 0.2, 0.3, 0.4], [0.5, 0.9]
    scores = {"max": [0.6] * 6, "mean": [0.55] * 6, "scan": long_scan + short_scan}
    windows = {agg: [5, 5, 4, 3, 1, 2] for agg in scores}
    point = fit_operating_point(scores, target_fpr=0.0, windows=windows)
    assert point.threshold("scan") == pytest.approx(0.4, abs=2e-5)  # the long scores alone
    assert point.short_thresholds["scan"] == pytest.approx(0.9, abs=2e-5) and point.short_clips["scan"] == 2
    # the rates printed side by side are over the same scores (the whole-clip ones)
    assert point.fpr_at_threshold["scan"] == 0.0 and point.fpr_at_default["scan"] == 0.0
    assert point.short_threshold("scan", SHORT_CLIP_WINDOWS - 1) == point.short_thresholds["scan"]
    assert point.short_threshold("scan", SHORT_CLIP_WINDOWS) is None  # not short
    # never below the whole-clip threshold (a handful of short scores must not make short clips easier to call fake)
    low = fit_operating_point({"scan": [0.5, 0.6, 0.1, 0.1]}, target_fpr=0.0, windows={"scan": [4, 4, 1, 1]})
    assert low.short_thresholds["scan"] == low.thresholds["scan"]
    # only short scores, or no window counts: one threshold for every clip, as before
    only_short = fit_operating_point({"scan": [0.2, 0.3]}, target_fpr=0.0, windows={"scan": [1, 2]})
    assert only_short.short_thresholds == {} and only_short.threshold("scan") == pytest.approx(0.3, abs=2e-5)
    assert fit_operating_point(scores, target_fpr=0.0).short_thresholds == {}
    assert OperatingPoint.from_dict(json.loads(json.dumps(point.to_dict()))) == point
    with pytest.raises(InputError, match="short_thresholds"):
        OperatingPoint.from_dict({**point.to_dict(), "short_thresholds": {"scan": 2.0}})
    # a hand-edited record: a short threshold below the whole-clip one, or for an aggregate without one, and window
    # counts that are no count, are refused (they were used as given)
    with pytest.raises(InputError, match="never judged more readily"):
        OperatingPoint.from_dict({**point.to_dict(), "short_thresholds": {"scan": 0.1}})
    with pytest.raises(InputError, match="never judged more readily"):
        OperatingPoint.from_dict({**point.to_dict(), "thresholds": {"max": 0.6}, "short_thresholds": {"scan": 0.9}})
    for bad in (0, -5, True, 2.7, 10 ** 9):
        with pytest.raises(InputError, match="short_clip_windows"):
            OperatingPoint.from_dict({**point.to_dict(), "short_clip_windows": bad})


def test_the_detector_decides_a_short_clip_with_the_short_clip_threshold(tmp_path):
    from pinlite_edge import Detector
    from pinlite_edge.data.synthetic import write_clip_video

    short_clip, long_clip = tmp_path / "short.mp4", tmp_path / "long.mp4"
    write_clip_video(short_clip, seed=0, contract=TINY_CONTRACT, duration_s=1.5)  # 2 windows, no complete one
    write_clip_video(long_clip, seed=0, contract=TINY_CONTRACT, duration_s=4.5)  # 5 complete scan windows
    point = OperatingPoint(thresholds={"max": 0.5, "mean": 0.5, "scan": 0.0}, target_fpr=0.05, clips=10, data="x",
                           short_thresholds={"scan": 1.0}, short_clips={"scan": 4})
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False),
                           {"operating_point": point.to_dict()})
    with Detector.load(ckpt, threads=1, face_crop=False) as det:
        short, whole = det.detect(short_clip), det.detect(long_clip)
    assert short.evidence_windows() < 3 <= whole.evidence_windows()
    assert (short.threshold, short.verdict) == (1.0, "real")
    assert short.threshold_source.startswith("operating point for short clips (the verdict rests on")
    assert short.to_dict()["verdict_windows"] == short.evidence_windows()
    assert (whole.threshold, whole.verdict) == (0.0, "fake") and "short" not in whole.threshold_source
    with Detector.load(ckpt, threads=1, face_crop=False, threshold=0.0) as det:  # a caller's threshold decides all
        assert det.detect(short_clip).verdict == "fake"
    # the caveats of the whole-clip source (here: another stride) are kept for short clips (they were dropped)
    with Detector.load(ckpt, threads=1, face_crop=False, stride_seconds=0.32) as det:
        short = det.detect(short_clip)
    assert short.threshold == 1.0 and "for short clips" in short.threshold_source
    assert "stride 0.32 s" in short.threshold_source and "recalibrate" in short.threshold_source


def test_an_excerpt_keeps_frames_and_audio_together(tmp_path):
    import numpy as np

    from pinlite_edge.data.reencode import DecodedClip, excerpt

    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(50)]  # 2 s at 25 fps
    audio = np.arange(32000, dtype=np.float32).reshape(-1, 1)  # 2 s at 16 kHz: sample value = its index
    part = excerpt(DecodedClip(frames, 25.0, audio, 16000), 1.2)
    assert len(part.frames) == 30 and int(part.frames[0][0, 0, 0]) == 10  # the middle 30 frames: 10..39
    assert part.audio.shape[0] == 19200 and part.audio[0, 0] == 10 / 25 * 16000  # cut at the first frame's time
    with pytest.raises(InputError, match="no 2 s excerpt"):
        excerpt(DecodedClip(frames, 25.0, audio, 16000), 2.0)


def test_a_quantised_artefact_says_its_operating_point_was_measured_on_the_fp32_checkpoint():
    """Export copies the checkpoint's operating point into every manifest; an INT8 graph's probabilities differ, so
    the thresholds' false-positive rate is the FP32 checkpoint's (an audit measured 2 of 24 calibration clips over
    the max threshold with INT8, 0 with FP32): the source says so instead of implying it was measured on INT8."""
    from types import SimpleNamespace

    from pinlite_edge.detector import _resolve_threshold

    point = OperatingPoint(thresholds={"scan": 0.7}, target_fpr=0.05, clips=10, data="x")
    for precision, note in (("fp32", False), ("int8", True), ("fp16", True)):
        runner = SimpleNamespace(operating_point=point, precision=precision, name="m")
        threshold, source = _resolve_threshold(None, "scan", runner)
        assert threshold == 0.7 and ("measured on the FP32 checkpoint" in source) == note, (precision, source)
