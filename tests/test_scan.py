"""``python -m pinlite_edge.scan``: folder walk, parallel decode, per-file JSON lines, bad files recorded, resume."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pinlite_edge.contract import TINY_CONTRACT
from pinlite_edge.errors import UsageError
from pinlite_edge.scan import DEFAULT_EXTENSIONS, ScanConfig, find_videos, read_results, scan

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("scan_model") / "best.safetensors", create_student("tiny").eval())


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, grid_clips: list[Path]) -> Path:
    """videos/ with 4 synthetic mp4s (one window each) in nested folders, 1 GRID clip (3 s), 3 bad files and 2
    non-videos. Kept small: inference dominates on a loaded 2-core machine."""
    from pinlite_edge.data.synthetic import write_clip_video

    root = tmp_path_factory.mktemp("scan_tree") / "videos"
    for i, sub in enumerate(["a", "a", "b/c", "b"]):
        write_clip_video(root / sub / f"synth{i}.mp4", seed=i, contract=TINY_CONTRACT, duration_s=0.7)
    (root / "grid").mkdir()
    shutil.copyfile(grid_clips[0], root / "grid" / grid_clips[0].name)
    bad = root / "b" / "bad"
    bad.mkdir()
    (bad / "text.mp4").write_text("not a video\n" * 20)
    (bad / "empty.mkv").write_bytes(b"")
    data = grid_clips[1].read_bytes()
    (bad / "truncated.mpg").write_bytes(data[: len(data) // 2])
    (root / "notes.txt").write_text("ignored")
    (root / ".hidden.mp4").write_bytes(b"ignored")
    return root


BAD = {"text.mp4", "empty.mkv", "truncated.mpg"}


def lines_of(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def cfg_for(tree: Path, model: Path, out: Path, **kw) -> ScanConfig:
    return ScanConfig(root=tree, model=model, out=out, face_crop=False, progress=False, **{"workers": 0, **kw})


def test_find_videos_filters_and_sorts(tree):
    names = [p.name for p in find_videos(tree, [".mp4", ".mkv", ".mpg"])]
    assert len(names) == 8 and ".hidden.mp4" not in names and "notes.txt" not in names
    mpg = find_videos(tree, ["MPG"])  # case-insensitive, with or without the dot
    assert [p.parent.name for p in mpg] == ["bad", "grid"] and all(p.suffix == ".mpg" for p in mpg)


@pytest.fixture(scope="module")
def serial(tree, model, tmp_path_factory) -> tuple[Path, object]:
    """One serial scan of the tree (results file, summary), shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("serial") / "results.jsonl"
    return out, scan(cfg_for(tree, model, out, batch=3))


def test_scan_records_every_file_once_and_bad_files_with_errors(serial):
    out, summary = serial
    recs = lines_of(out)
    assert summary.total == 8 and summary.scored == 5 and summary.failed == 3 and summary.skipped == 0
    assert len(recs) == 8 and len({r["path"] for r in recs}) == 8
    assert len({frozenset(r) for r in recs}) == 1, [sorted(r) for r in recs]  # failed files: the same keys, null
    for r in recs:
        name = Path(r["path"]).name
        assert Path(r["path"]).is_absolute()
        if name in BAD:
            assert r["verdict"] is None and r["error_type"] == "DecodeError" and name in r["error"]
        else:
            assert r["error"] is None and r["verdict"] in ("real", "fake")
            assert 0.0 <= r["fake_prob_mean"] <= r["fake_prob_max"] <= 1.0
            assert r["windows"] == len(r["window_fake_probs"]) == len(r["window_starts"]) >= 1
            assert r["window_face_fractions"] == [1.0] * r["windows"]  # no face crop: every frame counts
            assert -6 <= r["offset_frames"] <= 6 and r["offset_source"] == "offset scan"  # the default scan's range
            assert 0.0 <= r["fake_prob_scan"] <= 1.0 and r["aggregate"] == "scan"
            assert r["fake_prob_max"] == pytest.approx(max(r["window_fake_probs"]), abs=1e-6)


def test_scan_matches_the_detector_api(tree, model, serial):
    from pinlite_edge.detector import Detector

    recs = {Path(r["path"]).name: r for r in lines_of(serial[0])}
    with Detector.load(model, face_crop=False) as det:
        for name in ("synth0.mp4", next((tree / "grid").iterdir()).name):
            path = next(tree.rglob(name))
            res = det.detect(path)
            assert recs[name]["windows"] == len(res.windows)
            assert recs[name]["fake_prob_max"] == pytest.approx(res.fake_prob_max, abs=1e-5)
            assert recs[name]["fake_prob_mean"] == pytest.approx(res.fake_prob_mean, abs=1e-5)
            assert recs[name]["offset_frames"] == res.offset_frames
            assert recs[name]["fake_prob_scan"] == pytest.approx(res.fake_prob_scan, abs=1e-5)


@pytest.mark.parametrize("workers", [0, 2])
def test_each_record_carries_the_warnings_about_its_own_file(grid_clips, model, tmp_path, workers, caplog):
    """A clip with digitally silent audio beside a clean GRID clip: the silent clip's record says so in "warnings"
    (logged in a decoding process, or in the scan's own with --workers 0), the GRID clip's record has none. The
    scan's own log has the warning too: a decoding process's warnings are logged again there (with the default
    --workers 2 they had reached only the records)."""
    from test_bad_inputs import write_av

    root = tmp_path / "videos"
    root.mkdir()
    frames = np.random.default_rng(0).integers(0, 255, (25, 48, 64, 3), dtype=np.uint8)
    write_av(root / "silent.mkv", frames, np.zeros((16000, 1), np.float32), vcodec="mpeg4", acodec="pcm_s16le")
    shutil.copyfile(grid_clips[0], root / grid_clips[0].name)
    out = tmp_path / "r.jsonl"
    summary = scan(cfg_for(root, model, out, workers=workers))
    assert summary.scored == 2
    recs = {Path(r["path"]).name: r for r in lines_of(out)}
    assert any("digitally silent" in w for w in recs["silent.mkv"]["warnings"]), recs["silent.mkv"]["warnings"]
    assert recs[grid_clips[0].name]["warnings"] == []
    # no lip-sync evidence, no verdict (it used to be a confident "real", also in a decoding process)
    assert recs["silent.mkv"]["verdict"] == "silent-audio" and summary.silent_audio == 1
    assert recs[grid_clips[0].name]["verdict"] in ("real", "fake")
    # counted for the summary line, and on the console (through the scan's own logging) whichever process decoded
    assert summary.warned == 1
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("digitally silent" in m and "silent.mkv" in m for m in logged) == 1, logged


def test_parallel_workers_give_the_same_results(tree, model, tmp_path, serial):
    parallel = tmp_path / "p.jsonl"
    summary = scan(cfg_for(tree / "b", model, parallel, workers=2, batch=1))  # 2 good + 3 bad files
    assert summary.scored == 2 and summary.failed == 3
    b = {r["path"]: r for r in lines_of(parallel)}
    a = {r["path"]: r for r in lines_of(serial[0]) if r["path"] in b}
    assert a.keys() == b.keys() and len(a) == 5
    for k in a:
        assert a[k]["error_type"] == b[k]["error_type"]
        if a[k]["error"] is None:
            np.testing.assert_allclose(a[k]["window_fake_probs"], b[k]["window_fake_probs"], atol=1e-5)


def test_a_file_that_kills_its_worker_is_recorded_and_the_scan_goes_on(tree, model, tmp_path, monkeypatch, serial):
    """A worker that dies mid-stream: its files are re-run alone; the one that crashes again is a WorkerCrash record,
    the others (including the one queued behind it on the dead worker) are scored as usual."""
    from _crashing_job import crash_on_marked_files

    import pinlite_edge.scan as scan_mod

    root = tmp_path / "videos"
    root.mkdir()
    for p in [*(tree / "a").glob("*.mp4"), tree / "b" / "bad" / "text.mp4", next((tree / "grid").iterdir())]:
        shutil.copyfile(p, root / p.name)
    shutil.copyfile(next((tree / "grid").iterdir()), root / "CRASH.mpg")  # several batches: dies after the first
    monkeypatch.setattr(scan_mod, "featurise_job", crash_on_marked_files)
    out = tmp_path / "o.jsonl"
    summary = scan(cfg_for(root, model, out, workers=2, batch=1, extensions=(".mp4", ".mpg")))
    recs = {Path(r["path"]).name: r for r in lines_of(out)}
    assert len(lines_of(out)) == len(recs) == 5 and summary.scored == 3 and summary.failed == 2  # each file once
    assert recs["CRASH.mpg"]["error_type"] == "WorkerCrash" and "CRASH.mpg" in recs["CRASH.mpg"]["error"]
    assert recs["CRASH.mpg"]["windows"] == 0 and recs["CRASH.mpg"]["verdict"] is None
    assert recs["text.mp4"]["error_type"] == "DecodeError"
    before = {Path(r["path"]).name: r for r in lines_of(serial[0])}
    for name in ("synth0.mp4", "synth1.mp4", next((tree / "grid").iterdir()).name):
        assert recs[name]["error"] is None
        np.testing.assert_allclose(recs[name]["window_fake_probs"], before[name]["window_fake_probs"], atol=1e-5)


def test_a_decoding_worker_stays_a_few_batches_ahead_of_the_scorer(tmp_path):
    """Bounded memory: a decoder faster than the scorer waits once AHEAD_BATCHES batches are ready, and the scorer
    holds one batch at a time."""
    from _crashing_job import many_batches

    from pinlite_edge.scan import AHEAD_BATCHES, JobOptions, _streams

    path = tmp_path / "fast.mp4"
    opts = JobOptions(contract=TINY_CONTRACT.to_dict(), face_crop=False, stride=None, timeout_s=None, batch=1,
                      max_duration_s=3600.0, max_pixels=4096 * 4096)
    streams = _streams([path], opts, 1, job=many_batches)
    try:
        stream = next(streams)
        windows = stream.windows()
        first = next(windows)
        time.sleep(2.0)  # the decoder could produce all 40 batches in this time
        handed_over = int(Path(str(path) + ".progress").read_text())
        # AHEAD_BATCHES waiting, one in the sender thread, one in the pipe, one being made
        assert handed_over <= AHEAD_BATCHES + 3, handed_over
        rest = [w.start_seconds for w in windows]
        assert [first.start_seconds, *rest] == [float(k) for k in range(40)]
        assert stream.info["seconds"] == 0.0 and not stream.crashed
    finally:
        streams.close()


def test_decoding_workers_exit_when_the_scan_is_killed(tmp_path):
    """SIGKILL of the scanning process mid-stream: its decoding worker (blocked sending a batch) exits too."""
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r}); from _crashing_job import hold_one_window; "
            f"hold_one_window({str(tmp_path / 'fast.mp4')!r})")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        (worker,) = map(int, proc.stdout.readline().split())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 20
    while Path(f"/proc/{worker}").exists() and "zombie" not in Path(f"/proc/{worker}/status").read_text():
        if time.monotonic() > deadline:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the decoding worker outlived the killed scan")
        time.sleep(0.1)


def test_a_clip_longer_than_the_whole_clip_limit_is_scored_like_detect(tree, model, tmp_path, monkeypatch):
    """Scan streams each file (as Detector.detect does): a clip whose windows exceed the whole-clip limit
    (MAX_WINDOW_BYTES, lowered here to 1.5 windows so that a 3 s clip is "too long") is scored, with the results of
    Detector.detect, serially and with worker processes."""
    import pinlite_edge.features.limits as limits
    from pinlite_edge.detector import Detector

    contract = TINY_CONTRACT
    per_window = 4 * (int(np.prod(contract.frames_shape())) + int(np.prod(contract.mfcc_shape())))
    monkeypatch.setattr(limits, "MAX_WINDOW_BYTES", int(1.5 * per_window))
    grid = tree / "grid"
    out = tmp_path / "o.jsonl"
    summary = scan(cfg_for(grid, model, out, batch=2))
    (rec,) = lines_of(out)
    assert summary.scored == 1 and rec["error"] is None, rec["error"]
    with Detector.load(model, face_crop=False) as det:
        res = det.detect(next(grid.iterdir()))
    assert rec["windows"] == len(res.windows) >= 3
    assert rec["fake_prob_max"] == pytest.approx(res.fake_prob_max, abs=1e-5)
    assert rec["fake_prob_mean"] == pytest.approx(res.fake_prob_mean, abs=1e-5)
    assert rec["offset_frames"] == res.offset_frames
    np.testing.assert_allclose(rec["window_fake_probs"], [w.fake_prob for w in res.windows], atol=1e-5)


def test_resume_skips_recorded_files_and_redoes_a_cut_line(tree, model, tmp_path, serial):
    out = tmp_path / "results.jsonl"
    shutil.copyfile(serial[0], out)
    assert scan(cfg_for(tree, model, out)).skipped == 8  # nothing to do
    assert len(lines_of(out)) == 8
    # drop two records and cut the last one in half, as a kill during a write would
    raw = out.read_text().splitlines(keepends=True)
    dropped = {json.loads(raw[3])["path"], json.loads(raw[-1])["path"]}
    out.write_text("".join(raw[:3] + raw[4:-1]) + raw[-1][: len(raw[-1]) // 2])
    assert read_results(out).paths == {json.loads(ln)["path"] for ln in raw} - dropped
    summary = scan(cfg_for(tree, model, out))
    assert summary.skipped == 6 and summary.scored + summary.failed == 2
    recs = lines_of(out)  # every line parses: the half line was removed
    assert sorted(r["path"] for r in recs) == sorted(json.loads(ln)["path"] for ln in raw)


def test_resume_with_other_settings_is_refused_naming_them(tree, model, tmp_path, serial):
    """A resumed scan with another threshold or aggregate used to skip every recorded file silently, leaving one
    results file with verdicts made two ways."""
    from pinlite_edge.errors import UsageError

    out = tmp_path / "results.jsonl"
    shutil.copyfile(serial[0], out)
    settings = {json.dumps(r["settings"], sort_keys=True) for r in lines_of(out)}
    assert len(settings) == 1 and json.loads(settings.pop())["model_sha256"]
    with pytest.raises(UsageError, match=r"threshold .*-> 0\.1.*another --out"):
        scan(cfg_for(tree, model, out, threshold=0.1))
    with pytest.raises(UsageError, match="aggregate 'scan' -> 'max'"):
        scan(cfg_for(tree, model, out, aggregate="max"))
    assert scan(cfg_for(tree, model, out)).skipped == 8  # the same settings resume


def test_a_results_file_that_cannot_be_trusted_is_not_resumed_on_trust(tree, model, tmp_path, serial):
    """Crafted or foreign results files (security audit): records that do not say which model and settings made them
    made a scan skip their files unscored; fake records of paths outside the folder were counted as "already fake";
    a JSON file json.dump wrote (no newline) was taken for a first record cut short and truncated to 0 bytes."""
    from pinlite_edge.errors import UsageError

    out = tmp_path / "results.jsonl"
    videos = sorted(str(v) for v in find_videos(tree, DEFAULT_EXTENSIONS))
    out.write_text("".join(json.dumps({"path": v, "verdict": "real", "error": None}) + "\n" for v in videos))
    with pytest.raises(UsageError, match="do not say which model and settings made them"):
        scan(cfg_for(tree, model, out))
    forced = scan(cfg_for(tree, model, out, force=True))  # what the message offers: --force replaces the file
    assert forced.skipped == 0 and forced.scored + forced.failed == 8
    assert all("settings" in r for r in lines_of(out)) and len(lines_of(out)) == 8
    # fakes recorded for files that are not in this folder are not this scan's skipped fakes
    out.write_text(serial[0].read_text() + "".join(
        json.dumps({"path": f"/elsewhere/{i}.mp4", "verdict": "fake", "error": None,
                    "settings": lines_of(serial[0])[0]["settings"]}) + "\n" for i in range(3)))
    summary = scan(cfg_for(tree, model, out))
    assert summary.skipped == 8 and summary.skipped_fake == sum(
        r["verdict"] == "fake" for r in lines_of(serial[0]))
    notes = tmp_path / "notes.json"
    notes.write_text(json.dumps({"path": "x", "comment": "not a scan"}))  # json.dump: no trailing newline
    with pytest.raises(UsageError, match="is not a scan results file"):
        scan(cfg_for(tree, model, notes))
    assert json.loads(notes.read_text()) == {"path": "x", "comment": "not a scan"}


def test_results_file_swapped_for_a_symlink_after_the_check_is_not_followed(tmp_path):
    """--out is checked before the videos are walked and the model loaded, then opened: a symlink put there in
    between redirected the truncation of a cut-short line and the appends to the file it pointed at (security audit).
    The opens refuse to follow it."""
    from pinlite_edge.errors import WriteError
    from pinlite_edge.scan import JsonlWriter

    victim = tmp_path / "victim.conf"
    victim.write_text("setting = 1\nlast line without newline")
    out = tmp_path / "results.jsonl"
    out.symlink_to(victim)
    with pytest.raises(WriteError, match="symbolic link"):
        read_results(out)
    with pytest.raises(WriteError, match="symbolic link"):
        JsonlWriter(out)
    assert victim.read_text() == "setting = 1\nlast line without newline"


def test_a_second_scan_into_the_same_results_file_is_refused_while_the_first_runs(tree, model, serial, tmp_path):
    """Two scans with one --out both found it empty and recorded every file twice; with --retry-errors one replaced
    the file under the other, whose later records went into the deleted file (concurrency audit). The results file
    is locked while a scan writes it, also across the --retry-errors rewrite."""
    from pinlite_edge.scan import JsonlWriter, drop_error_records

    out = tmp_path / "results.jsonl"
    shutil.copyfile(serial[0], out)
    before = out.read_bytes()
    running = JsonlWriter(out)  # a scan running into it (flock conflicts between two opens, in one process too)
    with pytest.raises(UsageError, match="being written by another scan that is still running"):
        scan(cfg_for(tree, model, out, retry_errors=True))
    assert out.read_bytes() == before
    errors = {json.loads(line)["path"] for line in before.decode().splitlines() if json.loads(line)["error"]}
    drop_error_records(running, errors)  # the running scan's --retry-errors rewrite: the new file stays locked
    with pytest.raises(UsageError, match="another scan"):
        JsonlWriter(out)
    running.write({"path": "/x.mp4", "verdict": "real", "error": None})
    running.close()
    lines = out.read_text().splitlines()
    assert len(lines) == len(before.decode().splitlines()) - len(errors) + 1 and '"/x.mp4"' in lines[-1]
    JsonlWriter(out).close()  # free once the scan is done


def test_retry_errors_scans_a_fixed_file_again_and_keeps_one_line_per_file(model, tmp_path, capsys):
    """A file recorded with an error (since repaired, or timed out on a busy machine) used to stay an error for
    every resumed run: ``--retry-errors`` scans it again and replaces its error line."""
    from pinlite_edge.data.synthetic import write_clip_video
    from pinlite_edge.scan import main

    root = tmp_path / "videos"
    write_clip_video(root / "good.mp4", seed=0, contract=TINY_CONTRACT, duration_s=0.7)
    (root / "later.mp4").write_text("not a video yet\n" * 20)
    out = tmp_path / "results.jsonl"
    args = [str(root), "--model", str(model), "--out", str(out), "--no-face-crop", "--no-progress", "--workers", "0"]
    assert main(args) == 1 and "1 failed" in capsys.readouterr().out  # a file not scored: exit 1
    write_clip_video(root / "later.mp4", seed=1, contract=TINY_CONTRACT, duration_s=0.7)  # repaired
    assert main(args) == 0 and "2 already in" in capsys.readouterr().out  # without the flag: skipped
    assert [r["error_type"] for r in lines_of(out)] == [None, "DecodeError"]
    assert main([*args, "--retry-errors"]) == 0
    printed = capsys.readouterr().out
    assert "1 already in" in printed and "1 recorded with an error scanned again" in printed
    recs = lines_of(out)
    assert sorted(Path(r["path"]).name for r in recs) == ["good.mp4", "later.mp4"]  # one line each
    assert all(r["error"] is None and r["verdict"] in {"real", "fake"} for r in recs)
    assert main([*args, "--retry-errors"]) == 0 and "2 already in" in capsys.readouterr().out  # nothing left


def test_retry_errors_leaves_a_file_that_has_a_verdict_alone(model, tmp_path):
    """A results file holding both a verdict and an error line for one file (written by hand, or by two tools):
    --retry-errors scanned it again and left two verdict lines."""
    from pinlite_edge.data.synthetic import write_clip_video

    root = tmp_path / "videos"
    write_clip_video(root / "good.mp4", seed=0, contract=TINY_CONTRACT, duration_s=0.7)
    out = tmp_path / "results.jsonl"
    scan(cfg_for(root, model, out))
    (good,) = lines_of(out)
    with open(out, "a") as fh:
        fh.write(json.dumps({**good, "verdict": None, "error": "an old failure", "error_type": "DecodeError"}) + "\n")
    summary = scan(cfg_for(root, model, out, retry_errors=True))
    assert summary.retried == 0 and summary.skipped == 1
    assert [r["error"] for r in lines_of(out)] == [None, "an old failure"]


def test_records_say_how_they_were_judged_and_a_resume_cannot_mix_threshold_rules(tmp_path, grid_clips):
    """Every record carries its threshold's source, the windows its verdict rests on and the model's training data
    (failed files too); a resume with a caller's threshold equal to the whole-clip one used to be accepted, though
    short clips had been judged by the operating point's short-clip thresholds."""
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.errors import UsageError
    from pinlite_edge.models import create_student
    from pinlite_edge.operating_point import OperatingPoint

    point = OperatingPoint(thresholds={"max": 0.6, "mean": 0.6, "scan": 0.5}, target_fpr=0.05, clips=9, data="x",
                           short_thresholds={"scan": 0.9}, short_clips={"scan": 4})
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False),
                           {"operating_point": point.to_dict(), "training_data": {"real_video": True}})
    root = tmp_path / "videos"
    root.mkdir()
    shutil.copyfile(grid_clips[0], root / grid_clips[0].name)
    (root / "bad.mp4").write_text("not a video\n" * 20)
    out = tmp_path / "results.jsonl"
    scan(cfg_for(root, ckpt, out))
    recs = {Path(r["path"]).name: r for r in lines_of(out)}
    ok, bad = recs[grid_clips[0].name], recs["bad.mp4"]
    assert ok["threshold_source"].startswith("operating point") and ok["verdict_windows"] >= 1
    assert ok["settings"]["short_thresholds"] == {"scan": 0.9}
    for r in (ok, bad):
        assert r["model_trained_on_real_video"] is True and r["model_training_data"] == "real video"
    (root / "more.mpg").write_bytes(grid_clips[1].read_bytes())
    with pytest.raises(UsageError, match="short_thresholds"):
        scan(cfg_for(root, ckpt, out, threshold=0.5))


def test_a_file_name_that_is_not_utf8_is_scored_and_resumed(tmp_path, model):
    """``bad\\xff\\xfe.mp4``: the record used to raise UnicodeEncodeError and end the scan, at the same file on
    every re-run."""
    from pinlite_edge.data.synthetic import write_clip_video

    root = tmp_path / "v"
    root.mkdir()
    write_clip_video(root / "ok.mp4", seed=0, contract=TINY_CONTRACT, duration_s=0.7)
    bad = os.fsdecode(bytes(root) + b"/bad\xff\xfe.mp4")
    shutil.copyfile(root / "ok.mp4", bad)
    out = tmp_path / "r.jsonl"
    summary = scan(cfg_for(root, model, out))
    assert summary.scored == 2 and summary.failed == 0
    recs = lines_of(out)
    assert bad in {r["path"] for r in recs} and all(r["verdict"] in ("real", "fake") for r in recs)
    assert scan(cfg_for(root, model, out)).skipped == 2  # read back as the same name


def test_extensions_option(tree, model, tmp_path):
    out = tmp_path / "mkv.jsonl"
    summary = scan(cfg_for(tree, model, out, extensions=("MKV",)))
    assert summary.total == 1 and [Path(r["path"]).name for r in lines_of(out)] == ["empty.mkv"]


def _cli_scan_after_its_first_line(tree: Path, model: Path, out: Path) -> tuple[subprocess.Popen, list[str], dict]:
    """The scan CLI started on ``tree`` and left running once its first result line is written: (process, command,
    environment). Killed if the line does not come."""
    cmd = [sys.executable, "-m", "pinlite_edge.scan", str(tree), "--model", str(model), "--out", str(out),
           "--workers", "0", "--batch", "2", "--no-face-crop", "--no-progress"]
    # each file's scoring takes 0.4 s longer (a sitecustomize wraps Detector.score_stream), so the signal sent
    # after the first line finds the scan running: on an idle machine the 7 files left took less time than the
    # signal needed to arrive, and the Ctrl-C test skipped
    slow = out.parent / f"{out.stem}-slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import time\nfrom pinlite_edge.detector import Detector\n_score = Detector.score_stream\n"
        "def _slow(self, *args, **kwargs):\n    time.sleep(0.4)\n    return _score(self, *args, **kwargs)\n"
        "Detector.score_stream = _slow\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(slow), str(REPO)])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_file() and out.read_text().count("\n") >= 1):
            assert proc.poll() is None, f"scan exited early: {proc.communicate()}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, cmd, env


def test_exit_status_is_1_when_a_file_failed_and_0_when_all_were_scored_or_done(model, tmp_path, capsys):
    """A scan where every file failed ("2 videos: 0 scored (0 fake), 2 failed") exited 0."""
    from pinlite_edge.scan import main

    root = tmp_path / "bad"
    root.mkdir()
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video\n" * 20)
    out = tmp_path / "b.jsonl"
    args = [str(root), "--model", str(model), "--out", str(out), "--no-face-crop", "--no-progress", "--workers", "0"]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "2 videos: 0 scored (0 fake), 2 failed" in printed  # the summary is still printed
    # and says where the errors are: without -v no file name or error reached the console
    assert f'2 failed (their "error" in {out}; --retry-errors scans them again)' in printed
    assert main(args) == 0 and "2 already in" in capsys.readouterr().out  # skipped as already done


def test_cli_kill_and_rerun_records_every_file_exactly_once(tree, model, tmp_path):
    """SIGKILL the CLI after its first result line; the rerun completes the scan without duplicates."""
    out = tmp_path / "cli.jsonl"
    proc, cmd, env = _cli_scan_after_its_first_line(tree, model, out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = out.read_text().count("\n")
    assert first < 8, "the scan finished before it could be killed; the test proves nothing"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == (0 if ", 0 failed," in done.stdout else 1), done.stderr  # 1: this run had a bad file
    assert "8 videos" in done.stdout
    paths = [r["path"] for r in lines_of(out)]
    assert len(paths) == 8 and len(set(paths)) == 8


def test_cli_ctrl_c_is_one_line_exit_130_and_resumable(tree, model, tmp_path):
    """SIGINT (Ctrl-C) used to print a 45-line traceback from inside the runner."""
    out = tmp_path / "int.jsonl"
    proc, cmd, env = _cli_scan_after_its_first_line(tree, model, out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the scan finished before the signal arrived")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "resume" in err
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == (0 if ", 0 failed," in done.stdout else 1), done.stderr  # 1: this run had a bad file
    assert len({r["path"] for r in lines_of(out)}) == len(lines_of(out)) == 8


def test_cli_fatal_errors_exit_2(tree, model, tmp_path, capsys):
    from pinlite_edge.scan import main

    assert main([str(tmp_path / "nope"), "--model", str(model), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(tree), "--model", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o.jsonl"),
                 "--no-face-crop", "--no-progress"]) == 2
    assert "missing.onnx" in capsys.readouterr().err
    assert main([str(tree), "--model", str(model), "--out", str(tmp_path / "o.jsonl"), "--no-face-crop",
                 "--timeout", "-5"]) == 2
    assert "--timeout must be positive" in capsys.readouterr().err
    # a device this machine lacks: 2, as from detect and bench (it was 1, "the scan failed")
    assert main([str(tree), "--model", str(model), "--out", str(tmp_path / "o.jsonl"), "--no-face-crop",
                 "--device", "cuda:7", "--no-progress", "--workers", "0"]) == 2
    assert "unavailable" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_scan_config_from_the_api_takes_str_paths_and_bounds_its_workers(tree, model, tmp_path, monkeypatch):
    """ScanConfig as the API takes it: str paths failed (the root "does not exist", AttributeError for the model and
    out); workers=100000 started that many decoding processes, even for no file; now at most MAX_WORKERS, and never
    more processes than files."""
    from pinlite_edge import scan as scan_module
    from pinlite_edge.errors import UsageError
    from pinlite_edge.scan import MAX_WORKERS, ScanConfig, check_config, scan

    out = tmp_path / "o.jsonl"
    cfg = ScanConfig(root=str(tree), model=str(model), out=str(out), workers=MAX_WORKERS + 1, face_crop=False,
                     progress=False)
    assert isinstance(cfg.root, Path) and isinstance(cfg.model, Path) and isinstance(cfg.out, Path)
    for workers in (MAX_WORKERS + 1, 2.5, True, -1):
        with pytest.raises(UsageError, match="--workers must be a whole number"):
            check_config(dataclasses.replace(cfg, workers=workers))
    started: list[int] = []
    real_streams = scan_module._streams
    monkeypatch.setattr(scan_module, "_streams",
                        lambda todo, opts, processes, **kw: (started.append(processes),
                                                             real_streams(todo, opts, 0, **kw))[1])
    scan(dataclasses.replace(cfg, root=tree / "b" / "c", workers=MAX_WORKERS))  # one video in b/c
    assert started == [1] and len(lines_of(out)) == 1


@pytest.mark.parametrize("field,value,words", [
    ("stride", True, "--stride must be positive finite seconds, got True"),  # scanned with a 1 s stride
    ("stride", "0.5", "--stride must be"),  # TypeError
    ("threshold", True, "--threshold must be a probability in 0..1, got True"),  # a threshold of 1.0
    ("threshold", "0.5", "--threshold must be"),  # TypeError
    ("threads", 2.5, "--threads must be in 1..1024, got 2.5"),  # failed later, in the backend
    ("threads", True, "--threads must be"),
    ("timeout_s", True, "--timeout must be positive finite seconds"),  # a 1 s decoding limit
    ("timeout_s", "60", "--timeout must be"),  # TypeError
])
def test_scan_config_refuses_numbers_of_the_wrong_type(tree, model, tmp_path, field, value, words):
    """ScanConfig from the API: a bool counted as 1 and a str was a TypeError from a comparison; now a UsageError
    naming the option. Numpy numbers still pass."""
    import numpy as np

    from pinlite_edge.errors import UsageError
    from pinlite_edge.scan import ScanConfig, check_config

    cfg = ScanConfig(root=tree, model=model, out=tmp_path / "o.jsonl", progress=False)
    with pytest.raises(UsageError, match=words):
        check_config(dataclasses.replace(cfg, **{field: value}))
    check_config(dataclasses.replace(cfg, stride=np.float32(0.5), threshold=np.float64(0.5), threads=np.int64(2),
                                     timeout_s=np.float32(30)))


def test_cli_without_model_uses_the_quickstart_student(tree, model, tmp_path, monkeypatch, capsys):
    """No ``--model``: the quickstart workspace's ONNX student in the working directory, else exit 2 naming it."""
    from pinlite_edge.scan import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o.jsonl"
    assert main([str(tree), "--out", str(out), "--no-face-crop", "--no-progress"]) == 2
    assert "no quickstart model at pinlite-workspace/exports/onnx/pinlite-student.onnx" in capsys.readouterr().err
    assert not out.exists()
    from pinlite_edge.export import export_model

    onnx = export_model(model, "onnx", tmp_path / "pinlite-workspace" / "exports" / "onnx").artifact
    assert onnx.name == "pinlite-student.onnx"  # the quickstart's name for it
    assert main([str(tree), "--out", str(out), "--no-face-crop", "--no-progress", "--workers", "0"]) == 1  # 3 bad
    assert len(out.read_text().splitlines()) == len(find_videos(tree, DEFAULT_EXTENSIONS))  # one record per video


def test_pinlite_errors_survive_pickling():
    """Errors cross process boundaries (multiprocessing pools, as apps parallelise decoding): they must pickle."""
    from pinlite_edge.errors import BackendUnavailableError, DecodeError, NoAudioError

    for exc in (DecodeError("a.mp4", "truncated"), NoAudioError("b.mp4"), BackendUnavailableError("trt", "x", "y")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)


# --------------------------------------------------------------------------------------------- #15: safe --out, CLI errors
def _cli(*argv: str) -> list[str]:
    return [*argv]


def test_out_pointing_at_a_file_the_scan_did_not_write_is_refused(tree, model, tmp_path, capsys):
    """``--out`` naming an existing video or notes file used to truncate and append to it."""
    from pinlite_edge.scan import main

    for name, content in (("notes.txt", b"my notes\nline two\n"), ("clip.mp4", (tree / "a" / "synth0.mp4").read_bytes()),
                          ("half.txt", b"no newline at all")):
        victim = tmp_path / name
        victim.write_bytes(content)
        code = main([str(tree), "--model", str(model), "--out", str(victim), "--no-face-crop", "--no-progress",
                     "--workers", "0"])
        err = capsys.readouterr().err
        assert code == 2 and "--force" in err and str(victim) in err and len(err.strip().splitlines()) == 1, err
        assert victim.read_bytes() == content


def test_force_replaces_a_foreign_out_file_atomically(tree, model, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    summary = scan(cfg_for(tree, model, notes, force=True, extensions=("mkv",)))
    assert summary.total == 1 and [Path(r["path"]).name for r in lines_of(notes)] == ["empty.mkv"]


@pytest.mark.parametrize("kind", ["folder", "symlink", "fifo", "too_long"])
def test_out_that_is_not_a_regular_file_is_a_usage_error(tree, model, tmp_path, capsys, kind):
    from pinlite_edge.scan import main

    out = tmp_path / "out.jsonl"
    if kind == "folder":
        out.mkdir()
    elif kind == "symlink":
        (tmp_path / "real.jsonl").write_text("")
        out.symlink_to(tmp_path / "real.jsonl")
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        out = tmp_path / ("x" * 300 + ".jsonl")
    code = main([str(tree), "--model", str(model), "--out", str(out), "--no-face-crop", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("timeout", ["inf", "nan", "-inf", "-1"])
def test_timeout_that_is_not_positive_and_finite_is_a_usage_error(tree, model, tmp_path, capsys, timeout):
    from pinlite_edge.scan import main

    out = tmp_path / "o.jsonl"
    code = main([str(tree), "--model", str(model), "--out", str(out), "--no-face-crop", f"--timeout={timeout}"])
    err = capsys.readouterr().err
    assert code == 2 and "--timeout" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_bad_option_is_one_line_and_exit_2(tree, model, tmp_path, capsys):
    from pinlite_edge.scan import main

    with pytest.raises(SystemExit) as info:
        main([str(tree), "--model", str(model), "--out", str(tmp_path / "o"), "--workers", "many"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1 and "--workers" in err, err
    # the verdict options detect shares: the default verdict is the offset scan, so skipping it needs another one
    code = main([str(tree), "--model", str(model), "--out", str(tmp_path / "o"), "--no-offset-scan"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--no-offset-scan needs --aggregate" in err, err
    assert not (tmp_path / "o").exists()


def test_full_device_while_writing_results_is_one_line_and_exit_1(tree, model, tmp_path, capsys, monkeypatch):
    """A full device (simulated: fsync raising ENOSPC) stops the scan with a WriteError naming the results file."""
    import errno

    import pinlite_edge.scan as scan_mod

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(scan_mod.os, "fsync", full)
    out = tmp_path / "o.jsonl"
    code = scan_mod.main([str(tree), "--model", str(model), "--out", str(out), "--no-face-crop", "--no-progress",
                          "--workers", "0", "--extensions", "mkv"])
    err = capsys.readouterr().err
    assert code == 1 and "device is full" in err and str(out) in err and len(err.strip().splitlines()) == 1, err


def test_symlink_loop_and_proc_file_in_the_tree_are_recorded_and_the_scan_goes_on(tree, model, tmp_path):
    root = tmp_path / "videos"
    shutil.copytree(tree / "a", root)
    (root / "loop_a.mp4").symlink_to(root / "loop_b.mp4")
    (root / "loop_b.mp4").symlink_to(root / "loop_a.mp4")
    (root / "dirloop").symlink_to(root, target_is_directory=True)  # a folder loop: never followed
    (root / "proc.mp4").symlink_to("/proc/self/status")
    for i in range(3):  # links to a file in the tree: it is scored once, not once per link
        (root / f"link{i}.mp4").symlink_to(root / "synth0.mp4")
    out = tmp_path / "o.jsonl"
    summary = scan(cfg_for(root, model, out))
    recs = {Path(r["path"]).name: r for r in lines_of(out)}
    assert summary.total == len(recs) == len(lines_of(out)) == 5, sorted(recs)
    for name in ("loop_a.mp4", "loop_b.mp4"):
        assert recs[name]["error_type"] == "DecodeError" and "symbolic links" in recs[name]["error"]
    assert "not a regular file" in recs["status"]["error"]  # resolved to /proc/self/status
    assert all(recs[n]["error"] is None for n in ("synth0.mp4", "synth1.mp4"))


def test_any_failure_while_scoring_one_file_is_recorded(tree, model, tmp_path, monkeypatch):
    from pinlite_edge.detector import Detector

    real = Detector.score_stream

    def flaky(self, windows, source, **kw):
        if source.endswith("synth0.mp4"):
            raise ZeroDivisionError("boom")
        return real(self, windows, source, **kw)

    monkeypatch.setattr(Detector, "score_stream", flaky)
    out = tmp_path / "o.jsonl"
    summary = scan(cfg_for(tree / "a", model, out))
    recs = {Path(r["path"]).name: r for r in lines_of(out)}
    assert summary.failed == 1 and summary.scored == 1
    assert "ZeroDivisionError" in recs["synth0.mp4"]["error"] and recs["synth1.mp4"]["error"] is None


def test_scoring_failure_mid_stream_with_workers_leaves_the_other_files_right(tree, model, tmp_path, monkeypatch,
                                                                              serial):
    """Scoring stops after one window of a multi-window file: the rest of its stream is read off, so the next
    files' windows are not mixed up with it."""
    from pinlite_edge.detector import Detector

    real = Detector.score_stream

    def flaky(self, windows, source, **kw):
        if source.endswith(".mpg"):
            next(iter(windows))
            raise ZeroDivisionError("boom")
        return real(self, windows, source, **kw)

    monkeypatch.setattr(Detector, "score_stream", flaky)
    root = tmp_path / "videos"
    root.mkdir()
    for p in [next((tree / "grid").iterdir()), *(tree / "a").glob("*.mp4")]:
        shutil.copyfile(p, root / p.name)
    out = tmp_path / "o.jsonl"
    summary = scan(cfg_for(root, model, out, workers=2, batch=1))
    recs = {Path(r["path"]).name: r for r in lines_of(out)}
    before = {Path(r["path"]).name: r for r in lines_of(serial[0])}
    assert summary.failed == 1 and summary.scored == 2
    assert "ZeroDivisionError" in next(r for n, r in recs.items() if n.endswith(".mpg"))["error"]
    for name in ("synth0.mp4", "synth1.mp4"):
        assert recs[name]["window_starts"] == before[name]["window_starts"]
        np.testing.assert_allclose(recs[name]["window_fake_probs"], before[name]["window_fake_probs"], atol=1e-5)


def test_decoding_time_limit_is_recorded(tree, model, tmp_path):
    out = tmp_path / "o.jsonl"
    summary = scan(cfg_for(tree / "grid", model, out, timeout_s=1e-4))
    (rec,) = lines_of(out)
    assert summary.failed == 1 and rec["error_type"] == "DecodeError" and "time limit" in rec["error"], rec


def test_a_results_file_whose_only_record_was_cut_short_can_be_resumed(tmp_path):
    """A kill while writing the first record left a file the resume refused ("not a scan results file ... --force"),
    although a cut last line is allowed everywhere else."""
    from pinlite_edge.scan import unresumable

    out = tmp_path / "results.jsonl"
    out.write_bytes(b'{"path": "/videos/clip.mp4", "verd')
    assert unresumable(out) is None
    out.write_bytes(b"hello, not a scan")
    assert unresumable(out) is not None
    out.write_bytes(b'{"path": "/videos/clip.mp4"}\n{"path": "/v')  # a complete line must be a whole record
    assert unresumable(out) is not None


def test_a_model_without_its_manifest_is_a_usage_error_as_in_detect_and_bench(tree, model, tmp_path, capsys):
    """The same bad --model (an artefact whose manifest is missing) exited 2 from detect and bench, 1 from scan."""
    from pinlite_edge.detect import main as detect_main
    from pinlite_edge.scan import main as scan_main

    from pinlite_edge.export import export_model

    onnx = export_model(model, "onnx", tmp_path / "onnx").artifact
    bare = tmp_path / "bare" / onnx.name
    bare.parent.mkdir()
    shutil.copyfile(onnx, bare)  # the artefact alone, without the manifest beside it
    code = scan_main([str(tree), "--model", str(bare), "--out", str(tmp_path / "out.jsonl"), "--workers", "0",
                      "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--model:" in err and len(err.strip().splitlines()) == 1, err
    video = next(p for p in Path(tree).rglob("*") if p.suffix in (".mkv", ".mp4"))
    assert detect_main([str(video), "--model", str(bare)]) == 2
