"""Crash safety: a kill at any moment never leaves a broken file in place of a good one.

SIGKILL tests run in a separate worker process (a fresh interpreter, torch limited to one thread so that forking is
safe): the worker forks a child that writes checkpoints / exports / atomic files in a loop, kills it after a random
delay, and checks that whatever is at the final path still loads and matches its manifest / record hash. Besides
the random kills, "worst moment" tests kill the child exactly when the artefact has been replaced and its
manifest / record has not been written yet.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pinlite_edge.utils import atomic
from pinlite_edge.utils.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def temp_leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".part"))


# --------------------------------------------------------------------------------------------- atomic.py unit tests
def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert temp_leftovers(target.parent) == []


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_exception_inside_keeps_old_file_and_removes_temp(tmp_path, exc):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"good old artefact")
    with pytest.raises(type(exc)):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_bytes(b"half a new art")
            raise exc
    assert target.read_bytes() == b"good old artefact"
    assert temp_leftovers(tmp_path) == []


def test_exception_inside_without_old_file_creates_nothing(tmp_path):
    target = tmp_path / "new.json"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise ValueError("serialiser failed")
    assert list(tmp_path.iterdir()) == []


def test_writer_that_deletes_or_replaces_the_temp_path(tmp_path):
    """Some writers (e.g. exporters) unlink the path they are given and create it again."""
    target = tmp_path / "a.bin"
    with atomic_path(target) as tmp:
        tmp.unlink()
        tmp.write_bytes(b"recreated")
    assert target.read_bytes() == b"recreated"
    assert temp_leftovers(tmp_path) == []


def test_json_and_text_roundtrip(tmp_path):
    import numpy as np

    atomic_write_json(tmp_path / "m.json", {"a": np.arange(3), "p": Path("x/y"), "s": "é"})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [0, 1, 2], "p": "x/y", "s": "é"}
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists() and temp_leftovers(tmp_path) == []


def _strict_json(text: str) -> Any:
    """Parse as JSON.parse / Go would: NaN, Infinity and -Infinity are not JSON."""
    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_undefined_numbers_are_written_as_null_not_nan(tmp_path):
    """An AUC over one class is NaN; bench.json and the checkpoint records wrote it as NaN, which JSON.parse, Go
    and jq refuse, so the whole report could not be read. Every JSON file the SDK writes is strict JSON."""
    import numpy as np

    from pinlite_edge.checkpoint import read_record, save_checkpoint
    from pinlite_edge.models import create_student

    atomic_write_json(tmp_path / "m.json", {"auc": float("nan"), "rows": [{"x": np.float32("inf"), "y": 0.5}],
                                            "t": (float("-inf"), np.array([1.0, np.nan]))})
    assert _strict_json((tmp_path / "m.json").read_text()) == {"auc": None, "rows": [{"x": None, "y": 0.5}],
                                                                "t": [None, [1.0, None]]}
    ckpt = save_checkpoint(tmp_path / "c" / "best.safetensors", create_student("tiny", pretrained=False),
                           {"best": {"auc": float("nan"), "loss": 0.7}})
    assert _strict_json(ckpt.with_suffix(".json").read_text())["best"] == {"auc": None, "loss": 0.7}
    assert math.isnan(read_record(ckpt)["best"]["auc"])  # the embedded record, read by Python, keeps the NaN


def test_atomic_write_is_fsynced_before_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write_bytes(tmp_path / "f", b"data")
    assert events[:2] == ["fsync", "replace"], events


def test_new_files_get_normal_permissions(tmp_path):
    """Artefacts are shared (copied to devices, served by another user): an atomic write must create files with the
    permissions a plain ``open(path, "w")`` gives (0o666 & ~umask), not mkstemp's private 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------------------------- write only regular files
def test_atomic_write_refuses_a_symlink_and_leaves_its_target_alone(tmp_path):
    """The old writer replaced the symlink itself (and, as root, a device node) with a regular file."""
    from pinlite_edge.errors import WriteError

    target = tmp_path / "real.txt"
    target.write_text("precious")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with pytest.raises(WriteError, match="symbolic link"):
        atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "precious" and temp_leftovers(tmp_path) == []


def test_atomic_write_refuses_fifos_folders_and_device_nodes(tmp_path):
    import stat as stat_

    from pinlite_edge.errors import WriteError

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(WriteError, match="FIFO"):
        atomic_write_bytes(fifo, b"x")
    assert stat_.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / "dir").mkdir()
    with pytest.raises(WriteError, match="folder"):
        atomic_write_bytes(tmp_path / "dir", b"x")
    try:
        os.mknod(tmp_path / "null", 0o666 | stat_.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here (not root)")
    with pytest.raises(WriteError, match="device node"):
        atomic_write_bytes(tmp_path / "null", b"x")
    assert stat_.S_ISCHR(os.lstat(tmp_path / "null").st_mode)


def test_temporary_names_are_unique_per_process_and_stale_ones_are_cleaned(tmp_path):
    target = tmp_path / "file.json"
    stale = tmp_path / f".file.json.{2 ** 22 + 777}.deadbeef.part"  # above pid_max: its writer is gone
    stale.write_bytes(b"half written by a killed process")
    live = tmp_path / f".file.json.{os.getppid()}.deadbeef.part"  # a live process's temp: kept
    live.write_bytes(b"in progress")
    names = []
    with atomic_path(target) as tmp:
        names.append(tmp.name)
        tmp.write_text("{}")
    assert f".{os.getpid()}." in names[0] and names[0].endswith(".part")
    assert not stale.exists() and live.exists()
    # a killed export's staging file rewritten atomically leaves a temporary of a temporary: it was never removed
    dead = 2 ** 22 + 778
    nested = tmp_path / f"..model.onnx.{dead}.e6b5ca1f.staging.{dead}.bba19b59.part"
    nested.write_bytes(b"half written")
    assert atomic.clean_stale_temporaries(tmp_path / "model.onnx") == [nested] and not nested.exists()


@pytest.mark.parametrize("err", [28, 30, 13])  # ENOSPC, EROFS, EACCES
def test_write_failures_are_write_errors_naming_the_file(tmp_path, monkeypatch, err):
    """A full device, read-only media, no permission (simulated: the test may run as root): a WriteError naming
    the file and what to do, the old file untouched, no temporary left."""
    from pinlite_edge.errors import WriteError

    target = tmp_path / "out.json"
    target.write_text("old")

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(atomic.os, "replace", fail)
    with pytest.raises(WriteError, match="out.json") as info:
        atomic_write_text(target, "new")
    assert isinstance(info.value, OSError)
    monkeypatch.undo()
    assert target.read_text() == "old" and temp_leftovers(tmp_path) == []


def test_a_name_too_long_is_a_write_error(tmp_path):
    from pinlite_edge.errors import WriteError

    with pytest.raises(WriteError, match="too long"):
        atomic_write_text(tmp_path / ("x" * 300 + ".json"), "{}")


# --------------------------------------------------------------------------------------------- SIGKILL worker
WORKER = textwrap.dedent(r'''
    import json, os, random, signal, sys, time
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pathlib import Path

    modes, root, seed = sys.argv[1].split(","), Path(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    results = {}
    TRIALS = {"atomic": 20, "checkpoint": 25, "export": 5}

    def report(**kw):
        results.setdefault(mode, []).append(kw)

    def fork_loop(body):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                body()
            except BaseException:
                import traceback; traceback.print_exc()
                code = 3
            os._exit(code)
        return pid

    def kill(pid, delay):
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        return status

    def suicide(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)

    for mode in modes:
        out = root / mode
        out.mkdir()
        trials = TRIALS.get(mode, 1)
        if mode == "atomic":
            from pinlite_edge.utils.atomic import atomic_write_bytes
            payloads = [bytes([i]) * (4 << 20) for i in (1, 2)]
            target = out / "blob.bin"
            atomic_write_bytes(target, payloads[0])
            def body():
                i = 0
                while True:
                    atomic_write_bytes(target, payloads[i % 2]); i += 1
            for t in range(trials):
                kill(fork_loop(body), rng.uniform(0.0, 0.15))
                data = target.read_bytes()
                report(trial=t, ok=data in payloads, size=len(data))
        else:
            import torch
            torch.set_num_threads(1)
            from pinlite_edge.checkpoint import load_checkpoint, save_checkpoint
            from pinlite_edge.manifest import read_manifest
            from pinlite_edge.models import create_student
            from pinlite_edge.runtimes.artifact import inspect_artifact
            models = []
            for s in (0, 1):
                torch.manual_seed(s)
                models.append(create_student("tiny").eval())

            def check_checkpoint(path):
                try:
                    inspect_artifact(path)          # record sha256 == weights
                    load_checkpoint(path)
                    return "ok"
                except Exception as exc:
                    return f"{type(exc).__name__}: {exc}"

            def check_export(path):
                try:
                    read_manifest(path, verify=True)
                    import onnx
                    onnx.checker.check_model(onnx.load(str(path)))
                    return "ok"
                except Exception as exc:
                    return f"{type(exc).__name__}: {exc}"

            if mode.startswith("checkpoint"):
                best = out / "best.safetensors"
                save_checkpoint(best, models[0], {"epoch": 0})
                if mode == "checkpoint-worst-moment":
                    def body():
                        import pinlite_edge.checkpoint as ck
                        ck.atomic_write_json = suicide  # killed after the weights were replaced, before the record
                        save_checkpoint(best, models[1], {"epoch": 1})
                    os.waitpid(fork_loop(body), 0)
                    report(trial=0, ok=check_checkpoint(best))
                else:
                    def body():
                        i = 1
                        while True:
                            save_checkpoint(best, models[i % 2], {"epoch": i}); i += 1
                    for t in range(trials):
                        kill(fork_loop(body), rng.uniform(0.0, 0.25))
                        report(trial=t, ok=check_checkpoint(best))
            elif mode.startswith("export"):
                from pinlite_edge.export import export_from_model
                art = export_from_model(models[0], "onnx", out, name="m").artifact
                first_bytes = art.read_bytes()
                if mode == "export-worst-moment":
                    def body():
                        # killed at the publish step that runs today: right after the new artefact was renamed into
                        # place (whatever renames it), before its manifest is in place. If no rename onto the
                        # artefact happens, the child exits normally and the test fails (the kill never happened).
                        real_replace = os.replace
                        def replace_then_die(src, dst, *a, **k):
                            real_replace(src, dst, *a, **k)
                            if os.fspath(dst) == os.fspath(art):
                                os.kill(os.getpid(), signal.SIGKILL)
                        os.replace = replace_then_die
                        export_from_model(models[1], "onnx", out, name="m", force=True)
                    _, status = os.waitpid(fork_loop(body), 0)
                    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                    new_bytes = art.read_bytes() != first_bytes
                    report(trial=0, ok=check_export(art), killed=killed, replaced=new_bytes)
                elif mode == "export-concurrent":
                    # two processes export different models into one folder under one name at the same time
                    def body_for(k):
                        def body():
                            for _ in range(3):
                                export_from_model(models[k], "onnx", out, name="m", force=True)
                        return body
                    pids = [fork_loop(body_for(0)), fork_loop(body_for(1))]
                    codes = [os.waitpid(p, 0)[1] for p in pids]
                    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
                    report(trial=0, ok=check_export(art), codes=codes, leftovers=leftovers)
                else:
                    def body():
                        i = 1
                        while True:
                            export_from_model(models[i % 2], "onnx", out, name="m", force=True); i += 1
                    for t in range(trials):
                        kill(fork_loop(body), rng.uniform(0.2, 3.0))
                        report(trial=t, ok=check_export(art))
    print("RESULTS " + json.dumps(results), flush=True)
''')


def run_worker(root: Path, modes: list[str], seed: int = 0, timeout: float = 400) -> dict[str, list[dict]]:
    """Run the worker once for several modes (one interpreter start, one torch import)."""
    root.mkdir(parents=True, exist_ok=True)
    script = root / "crash_worker.py"
    script.write_text(WORKER)
    # TMPDIR: an export killed mid-way leaves its temporary folder behind; keep it in the test's own folder
    (root / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TMPDIR": str(root / "tmp")}
    proc = subprocess.run([sys.executable, str(script), ",".join(modes), str(root), str(seed)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULTS "):])


@pytest.fixture(scope="module")
def kill_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    modes = ["checkpoint", "checkpoint-worst-moment", "export", "export-worst-moment", "export-concurrent"]
    return run_worker(tmp_path_factory.mktemp("kills"), modes, seed=1)


def test_sigkill_during_atomic_writes_leaves_old_or_new(tmp_path):
    results = run_worker(tmp_path, ["atomic"])["atomic"]
    assert len(results) == 20 and all(r["ok"] for r in results), results


def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(kill_results):
    results = kill_results["checkpoint"]
    bad = [r for r in results if r["ok"] != "ok"]
    assert len(results) == 25 and not bad, (
        f"{len(bad)}/25 kills left best.safetensors that does not load / match its record:\n" +
        "\n".join(r["ok"] for r in bad[:3]))


def test_kill_between_checkpoint_weights_and_record_leaves_a_loadable_checkpoint(kill_results):
    results = kill_results["checkpoint-worst-moment"]
    assert results[0]["ok"] == "ok", results[0]["ok"]


def test_sigkill_during_export_leaves_a_loadable_artefact(kill_results):
    results = kill_results["export"]
    bad = [r for r in results if r["ok"] != "ok"]
    assert len(results) == 5 and not bad, "\n".join(r["ok"] for r in bad)


def test_kill_between_export_artefact_and_manifest_leaves_a_loadable_artefact(kill_results):
    """Killed right after ``publish_artifact`` renamed the new artefact into place, before its manifest: the kill
    must have happened there (it fails if that step is skipped) and the pair must still verify (it fails if the
    manifest is not staged before the artefact is renamed)."""
    result = kill_results["export-worst-moment"][0]
    assert result["killed"] and result["replaced"], f"the kill at the publish step never happened: {result}"
    assert result["ok"] == "ok", result["ok"]


def test_two_concurrent_exports_into_one_folder_publish_a_matching_pair(kill_results):
    """Two processes export different models to the same artefact name at once: both succeed, and the artefact
    left in place matches its manifest (staging names are unique per process, publishing is serialised)."""
    result = kill_results["export-concurrent"][0]
    assert result["codes"] == [0, 0], result
    assert result["ok"] == "ok", result["ok"]
    assert result["leftovers"] == [], result["leftovers"]


# --------------------------------------------------------------------------------------------- real training run
def test_killing_training_keeps_best_checkpoint_loadable(tmp_path):
    """Train the tiny teacher on a few synthetic clips, SIGKILL it once best.safetensors exists (at a random
    moment after that), check best loads, resume, kill again, check again."""
    import random

    from pinlite_edge.runtimes import load_runner

    out = tmp_path / "teacher"
    cmd = [sys.executable, "-m", "pinlite_edge.training.teacher", "--data", "synthetic", "--preset", "tiny",
           "--epochs", "200", "--batch-size", "4", "--device", "cpu", "--output", str(out), "--no-progress",
           "--in-memory", "yes", "--checkpoint-every", "1",
           "--data-option", "num_train=8", "--data-option", "num_val=4", "--data-option", "num_test=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    rng = random.Random(0)
    best = out / "best.safetensors"
    for round_ in range(2):
        args = cmd + (["--resume"] if round_ else [])
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not (best.is_file() and best.with_suffix(".json").is_file()):
                assert proc.poll() is None, f"training exited early: {proc.stderr.read()[-2000:]}"
                assert time.monotonic() < deadline, "no best.safetensors after 120 s"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 2.0))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        runner = load_runner(best)  # verifies the record's sha256 against the weights
        with runner:
            import numpy as np

            out_ = runner.infer(np.zeros(runner.contract.frames_shape(1), np.float32),
                                np.zeros(runner.contract.mfcc_shape(1), np.float32))
        assert np.isfinite(out_["logits"]).all()


def test_stale_temporary_check_does_not_signal_processes_on_windows(monkeypatch):
    """On Windows ``os.kill(pid, 0)`` terminates the process (TerminateProcess) instead of probing it: the cleanup of
    stale temporaries, run by every atomic write, would kill whatever process had the pid in a leftover's name.
    There the probe is psutil's (a stand-in here: on Linux psutil itself probes with signal 0)."""
    import psutil

    from pinlite_edge.utils import atomic

    alive = {4242}
    monkeypatch.setattr(atomic, "_ON_WINDOWS", True)
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: pid in alive)
    monkeypatch.setattr(atomic.os, "kill", lambda *a: pytest.fail(f"os.kill{a} on Windows"))
    assert atomic._pid_alive(4242) is True and atomic._pid_alive(4243) is False
