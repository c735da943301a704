"""``python -m pinlite_edge.quickstart --smoke`` runs every stage and writes a Table-2-shaped summary (CI check)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pinlite_edge.quickstart import SUMMARY_KEYS

REPO = Path(__file__).resolve().parents[1]


def _quickstart(ws: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pinlite_edge.quickstart", "--workspace", str(ws), "--smoke",
                           "--no-progress", *extra], env=env, capture_output=True, text=True, timeout=600)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_quickstart_smoke_runs_every_stage_resumes_and_reuses_them(tmp_path):
    """Killed during its first build (after the teacher), the quickstart finishes the half-built workspace; a
    corrupt checkpoint and a missing manifest are found by content and rebuilt; a complete workspace is reused."""
    from pinlite_edge.quickstart import SMOKE_EXPORT_FORMATS, stage_status, workspace_status

    ws = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pinlite_edge.quickstart", "--workspace", str(ws), "--smoke", "--no-progress",
           "--real-data", "none"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 500
        while not (stage_status(ws / "teacher")[0] == "complete" and (ws / "distilled").is_dir()
                   and any((ws / "distilled").iterdir())):
            assert proc.poll() is None, "the quickstart exited before it could be killed"
            assert time.monotonic() < deadline, "no finished teacher after 500 s"
            time.sleep(0.05)
        assert proc.poll() is None, "the quickstart finished before it could be killed; the test proves nothing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    half = workspace_status(ws, SMOKE_EXPORT_FORMATS)
    assert not half.complete and half.stages["teacher"][0] == "complete"
    assert any(m.startswith("distilled/") for m in half.missing), half.missing

    first = _quickstart(ws, "--real-data", "none")
    assert first.returncode == 0, first.stdout + first.stderr
    log = first.stdout + first.stderr
    assert "stage teacher: reusing" in log and "stage distilled: " in log, log
    assert workspace_status(ws, SMOKE_EXPORT_FORMATS).complete, workspace_status(ws, SMOKE_EXPORT_FORMATS).missing
    for stage in ("teacher", "distilled", "pruned"):
        assert (ws / stage / "best.safetensors").is_file() and (ws / stage / "best.json").is_file()
    rows = json.loads((ws / "summary.json").read_text())
    assert [r["model"] for r in rows] == ["teacher", "distilled", "pruned"]
    for r in rows:
        assert tuple(r) == SUMMARY_KEYS
        for k in ("accuracy", "precision", "recall", "f1"):
            assert 0.0 <= r[k] <= 1.0
        assert r["params"] > 0 and r["size_mb"] > 0 and r["gflops"] > 0 and r["latency_ms"] > 0
    by = {r["model"]: r for r in rows}
    assert abs(by["teacher"]["eps"] - 1.0) < 1e-9
    assert by["pruned"]["params"] < by["distilled"]["params"] < by["teacher"]["params"]
    assert "wall time" in first.stdout and "teacher" in first.stdout
    # a copy that does not keep file times (cp -r, a download) is complete: the summary's rows name their checkpoints
    # by sha256 (compared by time, the bench re-ran the quickstart's evaluation on a copied workspace)
    copy = tmp_path / "copied-workspace"
    shutil.copytree(ws, copy, copy_function=shutil.copy)
    os.utime(copy / "summary.json", (1, 1))
    assert workspace_status(copy, SMOKE_EXPORT_FORMATS).complete, workspace_status(copy, SMOKE_EXPORT_FORMATS).missing
    copied_rows = json.loads((copy / "summary.json").read_text())
    copied_rows[2]["checkpoint_sha256"] = "0" * 64  # a row for another pruned checkpoint than the one there
    (copy / "summary.json").write_text(json.dumps(copied_rows))
    assert workspace_status(copy, SMOKE_EXPORT_FORMATS).summary[0] == "stale"
    copied_rows = json.loads(json.dumps(rows))  # a value of another type was reused, then crashed the table print
    copied_rows[2]["accuracy"] = "0.99 (trust me)"
    (copy / "summary.json").write_text(json.dumps(copied_rows))
    assert workspace_status(copy, SMOKE_EXPORT_FORMATS).summary == (
        "stale", "summary.json row pruned has values that are not numbers: ['accuracy']")
    assert json.loads((ws / "teacher" / "best.json").read_text())["training_data"]["real_video"] is False

    # damage found by content, not by existence: a flipped byte in the pruned weights, a missing manifest
    _flip_last_byte(ws / "pruned" / "best.safetensors")
    (ws / "exports" / "onnx" / "pinlite-student.onnx.manifest.json").unlink()
    damaged = workspace_status(ws, SMOKE_EXPORT_FORMATS)
    assert damaged.stages["pruned"][0] == "corrupt" and damaged.exports["onnx"][0] != "complete"
    again = _quickstart(ws, "--real-data", "none")
    assert again.returncode == 0, again.stdout + again.stderr
    log = again.stdout + again.stderr
    assert "stage teacher: reusing" in log and "stage distilled: reusing" in log, log
    assert "stage pruned: redoing" in log and "export onnx: building" in log, log
    assert workspace_status(ws, SMOKE_EXPORT_FORMATS).complete

    last = _quickstart(ws, "--real-data", "none")
    assert last.returncode == 0, last.stdout + last.stderr
    log = last.stdout + last.stderr
    assert log.count("reusing") >= 5 and "summary: reusing" in log, log


def _names_per_split(counts: dict[str, int]) -> list[str]:
    """Clip names whose hash split (no split file, no PROVENANCE.json) gives ``counts`` clips per split."""
    from pinlite_edge.data.folder import hash_split

    names, have = [], {k: 0 for k in counts}
    for i in range(10_000):
        name = f"speaker{i:04d}.mp4"
        split = hash_split(name)
        if have.get(split, 0) < counts.get(split, 0):
            names.append(name)
            have[split] += 1
        if have == counts:
            return names
    raise AssertionError("no names found")


def test_quickstart_smoke_with_real_data_records_it_in_checkpoints_and_manifests(tmp_path):
    from pinlite_edge.contract import TINY_CONTRACT
    from pinlite_edge.data.synthetic import write_clip_video

    real = tmp_path / "real"
    real.mkdir()
    for seed, name in enumerate(_names_per_split({"train": 3, "dev": 2, "test": 2})):
        write_clip_video(real / name, seed=seed, contract=TINY_CONTRACT, duration_s=1.6, manipulation="real")
    ws = tmp_path / "ws"
    run = _quickstart(ws, "--real-data", str(real))
    assert run.returncode == 0, run.stdout + run.stderr
    record = json.loads((ws / "pruned" / "best.json").read_text())
    summary = record["training_data"]
    assert summary["real_video"] is True
    rows = json.loads((ws / "summary.json").read_text())
    assert all(r["real_auc"] is None or 0.0 <= r["real_auc"] <= 1.0 for r in rows)
    manifest = json.loads((ws / "exports" / "onnx" / "pinlite-student.onnx.manifest.json").read_text())
    assert manifest["training_data"]["real_video"] is True
    # cartoon faces have no face for the Haar detector: no genuine clip to calibrate on, said loudly, threshold 0.5
    assert manifest["operating_point"] is None
    assert "operating point NOT measured" in run.stderr + run.stdout


def test_quickstart_refuses_a_real_data_path_that_is_not_a_folder(tmp_path):
    run = _quickstart(tmp_path / "ws", "--real-data", str(tmp_path / "missing"))
    assert run.returncode == 2 and "not a folder" in run.stderr and "Traceback" not in run.stderr


def test_quickstart_split_file_decides_the_real_split_and_bad_ones_are_refused_before_training(tmp_path):
    """``--split-file`` (e.g. a cross-validation fold): the real clips are split as the file says, which the
    checkpoints record; a split file without real clips, or a malformed one, stops the run before any stage."""
    from pinlite_edge.contract import TINY_CONTRACT
    from pinlite_edge.data.synthetic import write_clip_video

    real = tmp_path / "real"
    real.mkdir()
    splits = {"a.mp4": "train", "b.mp4": "train", "c.mp4": "train", "d.mp4": "dev", "e.mp4": "test"}
    for seed, name in enumerate(splits):
        write_clip_video(real / name, seed=seed, contract=TINY_CONTRACT, duration_s=1.6, manipulation="real")
    split_file = tmp_path / "fold.json"
    split_file.write_text(json.dumps({"clips": [{"file": f, "split": s, "speaker_group": f[0]}
                                                for f, s in splits.items()]}))
    ws = tmp_path / "ws"
    run = _quickstart(ws, "--real-data", str(real), "--split-file", str(split_file), "--no-export")
    assert run.returncode == 0, run.stdout + run.stderr
    source = next(s for s in json.loads((ws / "teacher" / "best.json").read_text())["training_data"]["sources"]
                  if s["real_video"])
    assert source["split_file"] == str(split_file)
    assert {k: v["clips"] for k, v in source["splits"].items()} == {"train": 3, "dev": 1, "test": 1}

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"file": "a.mp4", "split": "train", "speaker_group": "x"},
                               {"file": "b.mp4", "split": "test", "speaker_group": "x"}]))
    for extra, message in ((["--real-data", "none", "--split-file", str(split_file)], "give --real-data DIR"),
                           (["--real-data", str(real), "--split-file", str(bad)], "bad.json")):
        run = _quickstart(tmp_path / "ws2", *extra)
        assert run.returncode != 0 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert not (tmp_path / "ws2" / "teacher").exists()



def test_quickstart_recipe_options_rebuild_stages_built_otherwise_and_bad_options_stop_before_any_stage(tmp_path):
    ws = tmp_path / "ws"
    run = _quickstart(ws, "--real-data", "none", "--no-export")
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads((ws / "teacher" / "best.json").read_text())["model_config"]["appearance_input"] is True
    run = _quickstart(ws, "--real-data", "none", "--no-export", "--model-option", "appearance_input=false")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "built with another recipe (model option appearance_input=True, asked for False)" in run.stderr
    for stage in ("teacher", "distilled", "pruned"):
        assert json.loads((ws / stage / "best.json").read_text())["model_config"]["appearance_input"] is False
    run = _quickstart(ws, "--real-data", "none", "--no-export", "--model-option", "appearance_input=false",
                      "--pair-weight", "0.5")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "built with another recipe (pair_weight=0.0, asked for 0.5)" in run.stderr
    assert "no balanced source" in run.stderr  # synthetic data only: nothing to pair, said out loud
    for stage in ("teacher", "distilled", "pruned"):
        assert json.loads((ws / stage / "best.json").read_text())["config"]["pair_weight"] == 0.5
    before = (ws / "teacher" / "best.safetensors").stat().st_mtime_ns
    for bad, message in ((["--model-option", "no_such_field=1"], "no_such_field"),
                         (["--model-option", "sync_lags=20"], "sync_lags must be between 1 and 12"),
                         (["--pair-weight", "-0.5"], "--pair-weight must be a number >= 0"),
                         (["--sync-pairs", "rewrites_per_window=-1"], "rewrites_per_window must be >= 0"),
                         (["--sync-pairs", "rewrites_per_window=1"], "sets the fakes made from real clips, but there "
                                                                     "are none")):
        run = _quickstart(ws, "--real-data", "none", "--no-export", *bad)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert (ws / "teacher" / "best.safetensors").stat().st_mtime_ns == before  # nothing redone or lost


def test_a_stage_built_with_other_sync_pairs_is_rebuilt(tmp_path):
    """--sync-pairs changes the data options a stage records; such a stage is not reused as if it were asked for."""
    from pinlite_edge.models import teacher_config
    from pinlite_edge.quickstart import _recipe_differs

    out = tmp_path / "teacher"
    out.mkdir()
    options = {"folder.sync_pairs": {"shifts_per_window": 3, "swaps_per_window": 1}, "folder.weight": 0.5}
    (out / "best.json").write_text(json.dumps({"model_config": teacher_config("tiny").to_dict(),
                                               "config": {"data_options": options}}))
    assert _recipe_differs(out, {}, {"data_options": (json.loads(json.dumps(options)), None)}) is None
    asked = {**options, "folder.sync_pairs": {**options["folder.sync_pairs"], "rewrites_per_window": 1}}
    assert "rewrites_per_window" in _recipe_differs(out, {}, {"data_options": (asked, None)})


def test_a_stage_built_before_its_preset_changed_is_rebuilt(tmp_path):
    """A workspace trained before a preset gained a field (here the sync cue, ``sync_lags``) is not reused as if it
    were today's model: the stage's record is compared with the preset, every field but the heads."""
    from dataclasses import replace

    from pinlite_edge.models import student_config, teacher_config
    from pinlite_edge.quickstart import _recipe_differs

    def stage(config) -> Path:
        out = tmp_path / config.kind
        out.mkdir(exist_ok=True)
        d = config.to_dict()
        (out / "best.json").write_text(json.dumps({"model_config": d, "config": {}}))
        return out

    assert _recipe_differs(stage(teacher_config("tiny")), {}, {}, "teacher") is None
    pruned = student_config("tiny").with_heads((2, 3))
    assert _recipe_differs(stage(pruned), {}, {}, "student") is None  # pruning's heads are not a recipe change
    old = teacher_config("tiny").to_dict()
    del old["sync_lags"]  # written before the field existed
    out = tmp_path / "old"
    out.mkdir()
    (out / "best.json").write_text(json.dumps({"model_config": old, "config": {}}))
    assert _recipe_differs(out, {}, {}, "teacher") == "model sync_lags=0, the tiny teacher preset now has 5"
    asked = _recipe_differs(stage(replace(student_config("tiny"), sync_lags=0)), {"sync_lags": 0}, {}, "student")
    assert asked is None  # an option asked for is compared with the option, not with the preset


def test_workspace_status_hashes_each_stage_checkpoint_once(tmp_path, monkeypatch, student):
    """One status call hashed the pruned checkpoint four times (its record, each of the two exports, the summary) and
    the others twice; each is now hashed once per call, with the same verdicts."""
    import types
    from collections import Counter

    import pinlite_edge.checkpoint as checkpoint
    import pinlite_edge.manifest as manifest
    from pinlite_edge import quickstart
    from pinlite_edge.utils.hashing import sha256_file
    from pinlite_edge.workspace_layout import STAGES, export_artifact_path

    ws = tmp_path / "ws"
    rows, shas = [], {}
    for stage in STAGES:
        best = checkpoint.save_checkpoint(ws / stage / "best.safetensors", student, {"complete": True})
        shas[stage] = sha256_file(best)
        rows.append({k: 1.0 for k in SUMMARY_KEYS} | {"model": stage, "checkpoint_sha256": shas[stage]})
    (ws / "summary.json").write_text(json.dumps(rows))
    for fmt, _ in quickstart.EXPORT_FORMATS:
        artefact = export_artifact_path(ws, fmt)
        artefact.parent.mkdir(parents=True)
        artefact.write_bytes(b"stand-in")
    monkeypatch.setattr(manifest, "read_manifest", lambda artefact: types.SimpleNamespace(
        source_checkpoint_sha256=shas["pruned"]))
    hashed: Counter[str] = Counter()

    def counted(path, *args):  # noqa: ANN001, ANN202
        hashed[Path(path).parent.name] += 1
        return sha256_file(path, *args)

    monkeypatch.setattr(quickstart, "sha256_file", counted)
    monkeypatch.setattr(checkpoint, "sha256_file", counted)
    status = quickstart.workspace_status(ws)
    assert status.complete, status.missing
    assert hashed == {stage: 1 for stage in STAGES}, hashed
    rows[0]["checkpoint_sha256"] = "0" * 64
    (ws / "summary.json").write_text(json.dumps(rows))
    assert quickstart.workspace_status(ws).summary[0] == "stale"


def test_quickstart_interrupted_is_one_line_exit_130_and_says_it_resumes(tmp_path, monkeypatch, capsys):
    """Ctrl-C was a traceback and exit 1; the stages' checkpoints are resumable, which it now says."""
    from pinlite_edge import quickstart

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(quickstart, "run_quickstart", interrupted)
    assert quickstart.main(["--workspace", str(tmp_path / "ws"), "--smoke", "--real-data", "none"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m pinlite_edge.quickstart: interrupted;") and len(err.splitlines()) == 1, err
    assert "re-run the same command to resume" in err


def test_quickstart_workspace_that_cannot_be_a_folder_is_one_line_before_any_work(tmp_path, monkeypatch, capsys,
                                                                                   unusable_output_folders):
    """--workspace naming a file, or a place that takes no folder, ended in a FileExistsError / FileNotFoundError
    traceback."""
    from pinlite_edge import quickstart

    monkeypatch.setattr(quickstart, "resolve_real_data", lambda *a: pytest.fail("work started"))
    for ws, code, message in unusable_output_folders:
        assert quickstart.main(["--workspace", str(ws), "--smoke", "--real-data", "none"]) == code
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "--workspace" in err and "Traceback" not in err, err


def test_two_builds_of_one_workspace_take_turns(tmp_path, monkeypatch, caplog):
    """Two quickstarts (or a quickstart and a bench) started in one workspace trained every stage into the same
    folders at once, each resuming the other's half-written checkpoints (seen with two --smoke runs: both built the
    teacher, and one's operating point was refused because the pruned checkpoint changed under it). The second now
    says it waits, and starts only when the first is done (then it reuses what the first built)."""
    import threading

    from pinlite_edge import quickstart
    from pinlite_edge.utils.atomic import folder_lock

    ws = tmp_path / "ws"
    ws.mkdir()
    built: list[bool] = []
    monkeypatch.setattr(quickstart, "_build", lambda cfg, path, real: built.append(other_done.is_set()) or [])
    holding, other_done = threading.Event(), threading.Event()

    def other_build() -> None:
        with folder_lock(ws):
            holding.set()
            time.sleep(1.0)
            other_done.set()

    other = threading.Thread(target=other_build)
    other.start()
    assert holding.wait(10)
    with caplog.at_level(logging.WARNING, logger="pinlite_edge"):
        quickstart.run_quickstart(quickstart.QuickstartConfig(workspace=str(ws), real_data="none", progress=False))
    other.join()
    assert built == [True]  # it waited for the other build to finish
    assert any(f"another process is building {ws}" in r.getMessage() for r in caplog.records), caplog.text
