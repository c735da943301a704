"""The bench CLI on a tiny workspace (random-weight tiny models, a few synthetic clips, a few timed calls)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pinlite_edge.bench.cli import main
from pinlite_edge.bench.plots import pareto_front
from pinlite_edge.bench.timing import LatencyStats
from pinlite_edge.bench.workspace import WorkspaceError, resolve_artefacts
from pinlite_edge.checkpoint import save_checkpoint
from pinlite_edge.models import create_student, create_teacher

FAST = ["--limit", "4", "--eval-batch", "2", "--warmup", "1", "--iters", "3", "--threads", "1", "--no-memory",
        "--no-e2e"]
#: the first test measures memory (each model in a fresh process) and end-to-end time on one video
FULL = ["--limit", "4", "--eval-batch", "2", "--warmup", "1", "--iters", "3", "--threads", "1", "--memory-calls", "2",
        "--e2e-clips", "1"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The quickstart layout (docs/architecture.md) with untrained tiny models."""
    from pinlite_edge.export import export_model

    ws = tmp_path_factory.mktemp("ws")
    torch.manual_seed(0)
    save_checkpoint(ws / "teacher" / "best.safetensors", create_teacher("tiny", pretrained=False), {})
    distilled = save_checkpoint(ws / "distilled" / "best.safetensors", create_student("tiny", pretrained=False), {})
    export_model(distilled, "onnx", ws / "exports" / "onnx" / "pinlite-student")
    return ws


def test_throughput_counts_the_slow_calls():
    """clips/s was batch / median latency: 2 slow calls of 10 left it unchanged (428.9 reported for a run that
    sustained 248)."""
    from pinlite_edge.bench.timing import TimingResult

    calls = [0.01] * 8 + [0.06] * 2  # seconds per batch of 4
    timing = TimingResult(batch=4, host=LatencyStats.from_seconds(calls), device=None)
    assert timing.throughput_clips_per_s == pytest.approx(4 * len(calls) / sum(calls))  # 200 clips/s, not 400


def test_latency_stats_and_pareto():
    s = LatencyStats.from_seconds([0.001 * i for i in range(1, 101)])
    assert s.n == 100 and s.min_ms == pytest.approx(1.0) and s.median_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1) and s.p99_ms == pytest.approx(99.01)
    assert s.scaled(0.5).median_ms == pytest.approx(25.25)
    # lower latency and higher accuracy are better: (3, 0.7) is dominated by (2, 0.8)
    assert pareto_front([(1.0, 0.5), (2.0, 0.8), (3.0, 0.7), (4.0, 0.9)]) == [0, 1, 3]


class _CountingRunner:
    """Stands in for an active runner: records the order of calls (timing only needs ``infer``)."""

    last_device_time_s = None

    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log

    def infer(self, frames, mfcc):
        self.log.append(self.name)


def test_interleaved_timing_runs_turns_with_untimed_warm_calls():
    from pinlite_edge.bench.timing import measure_interleaved

    log: list[str] = []
    a, b = _CountingRunner("a", log), _CountingRunner("b", log)
    frames, mfcc = np.zeros((2, 1)), np.zeros((2, 1))
    res = measure_interleaved([a, b], frames, mfcc, warmup=2, iters=7, block=3, turn_warmup=1)
    assert [r.host.n for r in res] == [7, 7] and res[0].batch == 2
    # warm-up 2 each; then turns of 1 untimed + 3 timed, the last turn 1 untimed + 1 timed
    assert log == ["a"] * 2 + ["b"] * 2 + (["a"] * 4 + ["b"] * 4) * 2 + ["a"] * 2 + ["b"] * 2
    log.clear()
    (only,) = measure_interleaved([a], frames, mfcc, warmup=1, iters=4, block=2, turn_warmup=3)
    assert only.host.n == 4 and log == ["a"] * 5  # a runner alone needs no turn warm-up
    with pytest.raises(ValueError, match="block"):
        measure_interleaved([a], frames, mfcc, warmup=0, iters=1, block=0)


def test_machine_slug_names_the_vector_isa():
    from pinlite_edge.bench.machine import machine_slug

    info = {"machine": "x86_64", "cpu_model": "AMD EPYC", "usable_cores": 2}
    assert machine_slug({**info, "cpu_flags": ["avx2"]}) == "x86_64-amd-epyc-2c-avx2"
    assert machine_slug({**info, "cpu_flags": ["avx2", "avx512f", "avx512_vnni"]}) == "x86_64-amd-epyc-2c-avx512vnni"
    assert machine_slug({**info, "cpu_flags": [], "gpu": {"name": "Orin"}}) == "x86_64-amd-epyc-2c-orin"


def test_bench_cli_writes_reports_and_reuses_teacher_cache(workspace, tmp_path, capsys):
    out = tmp_path / "run1"
    assert main(["--artifacts", str(workspace), "--out", str(out), "--time-teacher", *FULL]) == 0
    table = capsys.readouterr().out
    assert "ort-fp32:pinlite-student.onnx" in table
    result = json.loads((out / "bench.json").read_text())
    (row,) = result["rows"]
    assert row["backend"] == "ort" and row["precision"] == "fp32" and row["preset"] == "tiny"
    lat = row["latency"]
    assert lat["batch"] == 1 and lat["per_batch"]["n"] == 3
    assert 0 < lat["per_clip"]["min_ms"] <= lat["per_clip"]["median_ms"] <= lat["per_clip"]["p99_ms"]
    assert row["throughput_clips_per_s"] > 0
    mem = row["memory"]
    assert mem["calls"] == 2 and mem["samples"] > 0 and mem["gpu"] is None
    assert mem["load_rss_delta_bytes"] > 1e6 and mem["peak_rss_bytes"] >= mem["baseline_rss_bytes"] + \
        mem["load_rss_delta_bytes"] > 0
    e2e, info = row["end_to_end"], result["end_to_end"]
    assert e2e["num_videos"] == info["num_videos"] == 1
    assert e2e["end_to_end_s"]["median"] > e2e["model_s"]["median"] > 0
    assert e2e["rtf"]["median"] == pytest.approx(e2e["end_to_end_s"]["median"] / info["seconds_of_video"]["median"])
    assert row["params"] > 100_000 and row["flops"] > 0 and row["artifact_size_bytes"] > 0
    assert row["metrics"]["num_samples"] == 4
    assert -1.0 <= row["eps_vs_teacher"]["eps_mean"] <= 1.0
    # the artefact is the FP32 export of the distilled checkpoint: its "quantization EPS" is perfect
    assert row["eps_vs_source"]["eps_mean"] > 0.99 and row["eps_vs_source"]["max_abs_diff"]["logits"] < 1e-4
    assert result["teacher"]["latency"]["per_clip"]["median_ms"] > 0
    assert result["machine"]["cpu_model"] and result["data"]["num_clips"] == 4
    for name in ("bench.md", "accuracy_vs_latency.png", "eps_vs_latency.png", "attention_maps.png"):
        assert (out / name).stat().st_size > 0
    report = (out / "bench.md").read_text()
    assert "| ort-fp32:pinlite-student.onnx |" in report
    # one artefact and the teacher (--time-teacher) were timed in turns: it said "one model, timed alone"
    assert "models timed in turns" in report and "timed alone" not in report
    assert "called fake at P(fake) >= 0.5" in report and "MB (artefact size) = 10^6 bytes" in report
    caches = list((workspace / "cache" / "bench").glob("reference-*.npz"))
    assert len(caches) == 2  # teacher + distilled source

    # a device that cannot run the teacher uses the supplied cache; the EPS must be the same
    teacher_sha = result["teacher"]["sha256"]
    (teacher_cache,) = [c for c in caches if c.name.startswith(f"reference-{teacher_sha[:16]}")]
    out2 = tmp_path / "run2"
    artefact = Path(row["artifact"])
    assert main(["--compare", str(artefact), "--teacher-cache", str(teacher_cache), "--out", str(out2),
                 "--no-plots", *FAST]) == 0
    row2 = json.loads((out2 / "bench.json").read_text())["rows"][0]
    assert row2["eps_vs_teacher"]["eps_mean"] == pytest.approx(row["eps_vs_teacher"]["eps_mean"])
    # the source checkpoint's reference is read back from its cache this time (a dropped cached reference left EPS vs
    # source empty), and gives the same EPS vs source
    assert row2["eps_vs_source"]["eps_mean"] == pytest.approx(row["eps_vs_source"]["eps_mean"])
    report2 = (out2 / "bench.md").read_text()  # one artefact, teacher not timed
    assert "one model, timed alone" in report2 and "in turns" not in report2


def test_teacher_cache_for_other_data_is_refused(workspace, tmp_path, capsys):
    cache = next((workspace / "cache" / "bench").glob("reference-*.npz"), None)
    if cache is None:  # the first test did not run (e.g. -k): make one
        main(["--artifacts", str(workspace), "--out", str(tmp_path / "x"), "--no-plots", *FAST])
        cache = next((workspace / "cache" / "bench").glob("reference-*.npz"))
    code = main(["--artifacts", str(workspace), "--teacher-cache", str(cache), "--out", str(tmp_path),
                 "--no-plots", "--limit", "3", "--iters", "1", "--warmup", "0"])
    assert code == 2
    assert "computed on other data" in capsys.readouterr().err
    # the right data's fingerprint but not its clips (a cache cut to 1 of the 4 clips, its meta made to match): it
    # was broadcast against the run's outputs into a wrong agreement and EPS
    from pinlite_edge.bench.references import ReferenceOutputs, load_reference, save_reference
    from pinlite_edge.utils.hashing import sha256_file

    teacher_sha = sha256_file(workspace / "teacher" / "best.safetensors")
    (cache,) = (workspace / "cache" / "bench").glob(f"reference-{teacher_sha[:16]}-*.npz")
    with np.load(cache) as npz:
        meta = json.loads(bytes(npz["meta"]).decode())
    full = load_reference(cache, data_fingerprint=meta["data_fingerprint"], model_sha256=teacher_sha)
    assert full.num_clips == 4
    cut = save_reference(tmp_path / "cut.npz", ReferenceOutputs(full.model_sha256, full.data_fingerprint,
                                                                 {k: v[:1] for k, v in full.outputs.items()},
                                                                 full.clip_ids[:1]))
    code = main(["--artifacts", str(workspace), "--teacher-cache", str(cut), "--out", str(tmp_path / "c"),
                 "--no-plots", *FAST])
    assert code == 2 and "holds 1 clips, not the 4 clips this run evaluated" in capsys.readouterr().err


def test_unreadable_reference_cache_is_one_line_and_the_automatic_one_is_recomputed(workspace, tmp_path, capsys):
    """An empty or truncated .npz used to end the bench in EOFError / BadZipFile tracebacks."""
    from pinlite_edge.bench.references import ReferenceCacheError, load_reference

    empty, garbage = tmp_path / "empty.npz", tmp_path / "garbage.npz"
    empty.write_bytes(b"")
    garbage.write_bytes(b"PK\x03\x04" + b"x" * 100)
    for bad in (empty, garbage):
        with pytest.raises(ReferenceCacheError, match="unreadable"):
            load_reference(bad, data_fingerprint="f")
    code = main(["--artifacts", str(workspace), "--teacher-cache", str(empty), "--out", str(tmp_path / "o"),
                 "--no-plots", *FAST])
    err = capsys.readouterr().err.strip()  # a file that cannot be read: a failure (1), not a usage error
    assert code == 1 and "unreadable" in err and "Traceback" not in err and "allow_pickle" not in err
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    caches = list((ws / "cache" / "bench").glob("reference-*.npz"))
    if not caches:  # the first test did not run (e.g. -k): make them
        assert main(["--artifacts", str(ws), "--out", str(tmp_path / "x"), "--no-plots", *FAST]) == 0
        caches = list((ws / "cache" / "bench").glob("reference-*.npz"))
    for c in caches:
        c.write_bytes(c.read_bytes()[: c.stat().st_size // 2])
    assert main(["--artifacts", str(ws), "--out", str(tmp_path / "y"), "--no-plots", *FAST]) == 0


def test_a_reference_cache_with_damaged_compressed_data_is_unreadable_not_a_zlib_traceback(tmp_path):
    """One flipped byte in a member's deflate stream ended the bench in zlib.error from inside zipfile."""
    import zipfile

    from pinlite_edge.bench.references import ReferenceCacheError, load_reference

    path = tmp_path / "reference.npz"
    np.savez_compressed(path, meta=np.frombuffer(b"{}", np.uint8), logits=np.zeros((64, 2), np.float32))
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("logits.npy")
    data = bytearray(path.read_bytes())
    name_len, extra_len = np.frombuffer(bytes(data[info.header_offset + 26: info.header_offset + 30]), "<u2")
    data[info.header_offset + 30 + int(name_len) + int(extra_len)] = 0x07  # a deflate block of the reserved type
    path.write_bytes(bytes(data))
    with pytest.raises(ReferenceCacheError, match="unreadable .*error"):
        load_reference(path, data_fingerprint="f")


def test_crafted_reference_caches_are_refused_not_a_traceback_or_a_wrong_number(tmp_path, monkeypatch):
    """A reference cache is a file from anywhere (--teacher-cache): meta that is a JSON list or deeply nested ended
    in AttributeError / RecursionError, a 600-byte file declaring 2^40 floats in MemoryError, a zip bomb took GBs
    before any check, and a 1-clip cache against an 8-clip run was broadcast into a wrong agreement (security audit)."""
    import zipfile

    from pinlite_edge.bench import references
    from pinlite_edge.bench.references import ReferenceCacheError, ReferenceOutputs, load_reference, save_reference

    def cache(meta: bytes, **arrays) -> Path:
        path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.npz"
        np.savez_compressed(path, meta=np.frombuffer(meta, np.uint8), **arrays)
        return path

    outs = {"logits": np.zeros((3, 2), np.float32), "offset_logits": np.zeros((3, 11), np.float32),
            "attention": np.zeros((3, 4, 16), np.float32)}
    good = {"model_sha256": "m", "data_fingerprint": "f", "clip_ids": ["a", "b", "c"]}
    assert load_reference(cache(json.dumps(good).encode(), **outs), data_fingerprint="f").clip_ids == ["a", "b", "c"]
    for meta, arrays, match in [
        (b"[1, 2]", outs, "inconsistent"),
        (b"[" * 100000 + b"]" * 100000, outs, "unreadable"),
        (json.dumps({**good, "clip_ids": ["a"]}).encode(), outs, "inconsistent: its arrays hold"),
        (json.dumps({**good, "model_sha256": None}).encode(), outs, "does not name the weights"),
    ]:
        with pytest.raises(ReferenceCacheError, match=match):
            load_reference(cache(meta, **arrays), data_fingerprint="f")
    bomb = tmp_path / "bomb.npz"  # zeros compress 1000:1: the declared size is refused before decompressing
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.npy", b"")
        zf.writestr("logits.npy", bytes(8 << 20))
    assert bomb.stat().st_size * references.MAX_COMPRESSION_RATIO + (1 << 20) < 8 << 20
    with pytest.raises(ReferenceCacheError, match="would decompress to"):
        load_reference(bomb, data_fingerprint="f")
    saved = save_reference(tmp_path / "ok.npz", ReferenceOutputs("m", "f", outs, ["a", "b", "c"]))
    assert load_reference(saved, data_fingerprint="f", model_sha256="m").num_clips == 3


def test_bad_out_wrong_device_and_a_student_as_teacher_fail_before_measuring(workspace, tmp_path, capsys,
                                                                           monkeypatch):
    """Each of these used to cost the whole run first (--out: a traceback at the end) or to pass silently
    (ExecuTorch on the CPU although --device cuda was asked; the student itself taken as the FP32 teacher)."""
    from pinlite_edge.bench import core

    monkeypatch.setattr(core, "load_eval_data", lambda *a, **k: pytest.fail("measured before refusing"))
    a_file = tmp_path / "afile"
    a_file.write_text("")
    assert main(["--artifacts", str(workspace), "--out", str(a_file), *FAST]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["--runtime", "executorch", "--device", "cuda", "--artifacts", str(workspace),
                 "--out", str(tmp_path / "o")]) == 2
    assert "runs on the CPU (XNNPACK) only" in capsys.readouterr().err
    student = resolve_artefacts(workspace, "ort", "fp32")[0]
    assert main(["--artifacts", str(workspace), "--teacher", str(student), "--out", str(tmp_path / "o"),
                 *FAST]) == 2
    assert "is a student, not the FP32 teacher" in capsys.readouterr().err
    assert main(["--artifacts", str(workspace), "--e2e-data", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "--e2e-data" in capsys.readouterr().err


def test_a_teacher_of_another_preset_and_an_unwritable_reference_cache_are_named(workspace, tmp_path, capsys,
                                                                                 monkeypatch):
    """A paper teacher beside tiny artefacts used to end in "frames must have shape (B, 16, 3, 128, 128)" naming
    neither; a read-only workspace failed after the evaluation pass, on the reference cache it writes by default,
    without naming --cache-dir."""
    from pinlite_edge.bench import core

    paper = save_checkpoint(tmp_path / "paper" / "best.safetensors", create_teacher("paper", pretrained=False), {})
    monkeypatch.setattr(core, "load_eval_data", lambda *a, **k: pytest.fail("measured before refusing"))
    assert main(["--artifacts", str(workspace), "--teacher", str(paper), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "was trained for another input contract (preset 'paper', frames (16, 3, 128, 128))" in err, err
    assert "(preset 'tiny', frames (16, 3, 64, 64))" in err, err
    monkeypatch.undo()

    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    shutil.rmtree(ws / "cache", ignore_errors=True)
    (ws / "cache").mkdir()
    (ws / "cache" / "bench").write_text("")  # where the reference outputs would be cached
    monkeypatch.setattr(core, "Comparator", lambda *a, **k: pytest.fail("evaluated before refusing"))
    assert main(["--artifacts", str(ws), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"the reference cache {ws / 'cache' / 'bench'} is a file, not a folder" in err and "give --cache-dir DIR" in err, err
    if Path("/proc/self").is_dir():  # Linux: /proc takes no new folders, not even root's (os.access said it could)
        assert main(["--artifacts", str(ws), "--out", "/proc/pinlite-x", *FAST]) == 1
        assert "--out: cannot create the folder /proc/pinlite-x" in capsys.readouterr().err


def test_half_built_workspace_errors_say_what_to_run_for_that_workspace(workspace, tmp_path, capsys):
    """The hints used to name the default workspace's quickstart, and an ONNX left without its manifest led to
    "pass --force", which the bench does not have."""
    only_teacher = tmp_path / "t"
    shutil.copytree(workspace / "teacher", only_teacher / "teacher")
    assert main(["--artifacts", str(only_teacher), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert f"python -m pinlite_edge.quickstart --workspace {only_teacher}" in capsys.readouterr().err
    cut = tmp_path / "cut"
    shutil.copytree(workspace, cut)
    next((cut / "exports" / "onnx").rglob("*.manifest.json")).unlink()
    assert main(["--artifacts", str(cut), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "has no manifest beside it" in err and "--force" not in err


def test_compare_ort_fp32_agrees_with_torch_fp32(workspace, tmp_path):
    ckpt = workspace / "distilled" / "best.safetensors"
    onnx = resolve_artefacts(workspace, "ort", "fp32")[0]
    fast = [a for a in FAST if a not in ("--no-memory", "--no-e2e")]
    assert main(["--compare", str(ckpt), str(onnx), "--artifacts", str(workspace), "--out", str(tmp_path),
                 "--no-plots", "--memory-calls", "1", "--e2e-data", "synthetic", "--e2e-clips", "1", *fast]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert [r["backend"] for r in result["rows"]] == ["torch", "ort"]
    # each model's memory measured alone: torch (the library and the model) loads far more than onnxruntime; the
    # figures are per model, not the bench process's peak repeated on every row
    torch_mem, ort_mem = (r["memory"] for r in result["rows"])
    assert torch_mem["load_rss_delta_bytes"] > ort_mem["load_rss_delta_bytes"] + 50 * 2**20
    assert torch_mem["peak_rss_bytes"] != ort_mem["peak_rss_bytes"]
    # end to end on a synthetic mp4 written for the purpose
    e2e = result["end_to_end"]
    assert e2e["source"].startswith("synthetic mp4") and Path(e2e["videos"][0]).suffix == ".mp4"
    assert e2e["seconds_of_video"]["median"] == pytest.approx(3.0, abs=0.1)
    assert all(r["end_to_end"]["rtf"]["median"] > 0 for r in result["rows"])
    (cmp,) = result["comparison"]
    assert max(cmp["max_abs_diff"].values()) <= 1e-4
    assert cmp["label_agreement"] == 1.0
    np.testing.assert_allclose(result["rows"][0]["metrics"]["accuracy"], result["rows"][1]["metrics"]["accuracy"])


def test_compare_finds_the_teacher_of_the_workspace_its_artefacts_are_in(workspace, tmp_path):
    """``--compare`` without ``--artifacts`` reported no EPS against the teacher although every artefact sat in one
    workspace beside it (SPEC §7: EPS of every deployed model against the FP32 teacher)."""
    onnx = resolve_artefacts(workspace, "ort", "fp32")[0]
    assert main(["--compare", str(onnx), str(workspace / "distilled" / "best.safetensors"), "--out", str(tmp_path),
                 "--no-plots", *FAST]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["teacher"]["checkpoint"] == str(workspace / "teacher" / "best.safetensors")
    assert all(r["eps_vs_teacher"] is not None for r in result["rows"])


def test_missing_artefact_is_a_clear_error(workspace, tmp_path, capsys):
    from pinlite_edge.bench import BenchConfig, run_bench

    # run_bench never builds: a workspace without a .pte is an error that says how to get one
    with pytest.raises(WorkspaceError, match=r"no executorch fp32 artefact in .*exports/pte.*builds it on first use"):
        run_bench(BenchConfig(runtime="executorch", artifacts=workspace, out=tmp_path))
    assert main(["--runtime", "trt", "--precision", "fp32", "--artifacts", str(workspace)]) == 2
    err = capsys.readouterr().err
    assert "no fp32 artefact format for runtime 'trt'; choose from ['fp16', 'int8']" in err
    assert len(err.strip().splitlines()) == 1


def test_missing_face_detector_fails_before_any_measurement(workspace, tmp_path, capsys, monkeypatch):
    """Seen on a GPU machine with OpenCV 5 (no CascadeClassifier): the end-to-end pass failed only after the accuracy
    and latency passes, losing them. Now it fails first, in one line that names --no-e2e, and --no-e2e runs."""
    from pinlite_edge.bench import core
    from pinlite_edge.errors import BackendUnavailableError
    from pinlite_edge.features import facecrop

    def missing(name):
        raise BackendUnavailableError("opencv-haar (cv2 5.0.0)", "cv2.CascadeClassifier is missing", "hint")

    monkeypatch.setattr(facecrop, "load_cascade", missing)
    monkeypatch.setattr(core, "load_eval_data", lambda *a, **k: pytest.fail("data loaded before the e2e check"))
    assert main(["--runtime", "torch", "--artifacts", str(workspace), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "opencv-haar" in err and "end-to-end timing needs it" in err and "--no-e2e" in err
    assert "face_crop=False" not in err  # not an option of the bench
    monkeypatch.undo()
    assert main(["--runtime", "torch", "--artifacts", str(workspace), "--out", str(tmp_path), *FAST]) == 0


def test_run_bench_never_builds_a_missing_workspace(tmp_path, monkeypatch):
    """``run_bench`` on a missing workspace raises an error that says how to build it, and trains nothing."""
    from pinlite_edge import quickstart
    from pinlite_edge.bench import BenchConfig, run_bench

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(quickstart, "run_quickstart", lambda *a, **k: pytest.fail("run_bench trained"))
    with pytest.raises(WorkspaceError, match=r"no workspace at pinlite-workspace: build it with "
                                             r"`python -m pinlite_edge.quickstart`"):
        run_bench(BenchConfig())
    assert not (tmp_path / "pinlite-workspace").exists()


def test_run_benchmarks_checks_report_the_measured_truth():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run_benchmarks.py"
    spec = importlib.util.spec_from_file_location("run_benchmarks", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def row(model, ms):
        return {"model": model, "batch": 1, "per_clip": {"median_ms": ms}}

    checks = mod.speed_checks([row("teacher torch FP32", 500.0), row("student ORT FP32", 20.0),
                               row("student ORT INT8", 30.0)])
    assert [c["passed"] for c in checks] == [True, False]
    assert checks[0]["ratio"] == pytest.approx(25.0) and checks[1]["speedup"] == pytest.approx(20 / 30)


def test_tegrastats_ram_line():
    from pinlite_edge.bench.memory import parse_tegrastats_ram

    line = ("12-03-2026 15:00:01 RAM 2148/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [3%@729,1%@729] "
            "GR3D_FREQ 0% cpu@45C")
    assert parse_tegrastats_ram(line) == (2148, 7620)
    assert parse_tegrastats_ram("CPU [3%@729]") is None


def test_gpu_memory_figures_are_deltas_read_between_calls(monkeypatch):
    """Stand-in GPU: device-wide used memory (cudaMemGetInfo) 1000 MB before load, 1300 MB loaded, 1500 MB once the
    first call has allocated its workspace. The figures are the deltas around load and the peak after the calls."""
    import shutil

    import pinlite_edge.runtimes as runtimes
    from pinlite_edge.bench import memory

    used = {"mb": 1000}
    reads: list[str] = []

    class Runner:
        backend = "trt"

        def activate(self):
            used["mb"] = 1300

        def infer(self, frames, mfcc):
            reads.append("infer")
            used["mb"] = 1500

        def deactivate(self):
            used["mb"] = 1000

    def read() -> int:
        reads.append("read")
        return used["mb"] * 2**20

    closed = []
    opened = []
    monkeypatch.setattr(runtimes, "load_runner", lambda path, **o: opened.append((path, o)) or Runner())
    monkeypatch.setattr(memory, "_device_memory", lambda device, binding: memory._DeviceMemory(
        read, {"source": f"stand-in cudaMemGetInfo via {binding}", "unified_memory": True},
        lambda: closed.append(True)))
    fig = memory.measure_alone("model.engine", {"device": "cuda", "cuda_binding": "pycuda"}, np.zeros(1),
                               np.zeros(1), calls=2)
    assert opened == [("model.engine", {"device": "cuda", "cuda_binding": "pycuda"})] and closed == [True]
    gpu = fig["gpu"]
    assert gpu["source"].endswith("via pycuda") and gpu["unified_memory"] is True
    assert gpu["device_used_before_load_bytes"] == 1000 * 2**20
    assert gpu["load_delta_bytes"] == 300 * 2**20 and gpu["inference_peak_delta_bytes"] == 500 * 2**20
    assert reads == ["read", "read", "infer", "read", "infer", "read"]  # never inside a call
    assert fig["calls"] == 2 and fig["samples"] > 0
    if shutil.which("tegrastats") is None:  # not a Jetson: no board-wide figure
        assert fig["tegrastats"] is None


def test_the_source_checkpoint_is_found_from_another_folder(tmp_path, monkeypatch):
    """The manifest records the checkpoint path as given to export (relative to that command's folder): bench run
    from elsewhere (--compare without --artifacts) lost 'EPS vs source' although the checkpoint sat in the same
    workspace as the artefact."""
    from pinlite_edge.bench.workspace import source_checkpoint
    from pinlite_edge.export import export_model
    from pinlite_edge.manifest import read_manifest

    monkeypatch.chdir(tmp_path)
    ckpt = save_checkpoint(Path("ws/pruned/best.safetensors"), create_student("tiny", pretrained=False), {})
    onnx = export_model(ckpt, "onnx", Path("ws/exports/onnx")).artifact.resolve()
    assert read_manifest(onnx).source_checkpoint == "ws/pruned/best.safetensors"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    found, why = source_checkpoint(onnx, read_manifest(onnx), None)
    assert why is None and found.resolve() == (tmp_path / "ws" / "pruned" / "best.safetensors")
    # another checkpoint at that place is not taken for it
    save_checkpoint(tmp_path / "ws" / "pruned" / "best.safetensors", create_student("tiny", pretrained=False),
                    {"epoch": 2})
    found, why = source_checkpoint(onnx, read_manifest(onnx), None)
    assert found is None and "does not match the manifest's sha256" in why

    # a manifest is a file from anywhere: a path it names to another kind of file is not even hashed (it answered
    # "matches" or not for /etc/passwd), and a path without a recorded sha256 is not trusted (it became the EPS
    # reference unverified)
    import dataclasses

    passwd = dataclasses.replace(read_manifest(onnx), source_checkpoint="/etc/passwd")
    assert source_checkpoint(onnx, passwd, None) == (None, "the manifest's source checkpoint /etc/passwd is not a "
                                                           ".safetensors checkpoint")
    unhashed = dataclasses.replace(read_manifest(onnx), source_checkpoint_sha256=None)
    found, why = source_checkpoint(onnx, unhashed, None)
    assert found is None and "records no sha256" in why


def test_a_jetson_records_its_release_and_power_mode(tmp_path, monkeypatch):
    """Jetson latencies depend on the power mode (docs/jetson.md asks to set it before timing); the bench JSON did
    not say which was set."""
    from pinlite_edge.bench import machine

    assert machine.jetson_state(tmp_path / "missing") is None  # not a Jetson
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64\n")
    tool = tmp_path / "bin" / "nvpmodel"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho 'NV Power Mode: MAXN'\necho 0\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}:{os.environ['PATH']}")
    state = machine.jetson_state(release)
    assert state == {"l4t_release": "# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64",
                     "power_mode": "NV Power Mode: MAXN / 0"}


def test_the_machine_description_names_the_gpu_measured_on(monkeypatch):
    """--device cuda:1 was described as torch's current device (0)."""
    from types import SimpleNamespace

    from pinlite_edge.bench.machine import describe_machine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU {i}")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (8, 7 + i))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=2**30 * (i + 1)))
    assert describe_machine()["gpu"]["name"] == "GPU 0"
    assert describe_machine(1)["gpu"] == {"name": "GPU 1", "compute_capability": "8.8", "memory_gb": 2.0}


def test_memory_is_measured_alone_when_a_script_calls_the_bench(workspace, tmp_path):
    """The memory pass's "fresh" process was a multiprocessing spawn child, which re-imports the caller's main script:
    a script that imported torch (or had no ``__main__`` guard) gave a 750 MiB baseline for a 1 MB ONNX model, or ran
    itself again inside the measurement. Now a clean interpreter measures the model whoever calls."""
    onnx = next((workspace / "exports" / "onnx").rglob("*.onnx"))
    script = tmp_path / "caller.py"
    script.write_text(
        "import sys\n"
        "import numpy as np\n"
        "import torch  # the caller's own heavy imports stay in the caller\n"
        "from pinlite_edge.bench.memory import measure_isolated\n"
        "from pinlite_edge.contract import TINY_CONTRACT as C\n"
        "frames = np.zeros((1, *C.frames_shape()), np.float32)\n"
        "mfcc = np.zeros((1, *C.mfcc_shape()), np.float32)\n"
        "fig = measure_isolated(sys.argv[1], {'threads': 1}, frames, mfcc, calls=1)  # no __main__ guard\n"
        "print('BASELINE', fig.baseline_rss_bytes, flush=True)\n")
    proc = subprocess.run([sys.executable, str(script), str(onnx)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BASELINE")]
    assert len(lines) == 1, proc.stdout  # measured once, not re-run in the child
    assert int(lines[0].split()[1]) < 300 * 2**20  # torch (about 400 MiB resident) is not in the measuring process


def test_real_video_data_cropped_unlike_the_models_training_data_is_noted(tmp_path, capsys):
    """The bench always face-cropped ``folder:`` data, also for a model trained on pre-cropped faces
    (``face_crop=false``), and had no ``--data-option`` to say otherwise: accuracy measured on other inputs, silently."""
    from conftest import GRID_DIR

    clips = sorted(GRID_DIR.glob("*.mpg"))[:2]
    if len(clips) < 2:
        pytest.skip(f"GRID sample clips not found at {GRID_DIR}")
    folder = tmp_path / "videos"
    folder.mkdir()
    for clip in clips:
        (folder / clip.name).symlink_to(clip)
    torch.manual_seed(0)
    record = {"dataset": {"train": {"kind": "folder", "face_crop": False, "root": str(folder)}}}
    ckpt = save_checkpoint(tmp_path / "m" / "best.safetensors", create_student("tiny", pretrained=False), record)
    common = ["--compare", str(ckpt), "--data", f"folder:{folder}", "--split", "all", "--data-option",
              "sync_pairs=true", "--no-plots", *FAST]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    notes = json.loads((tmp_path / "a" / "bench.json").read_text())["notes"]
    assert any("read with face_crop=true, but" in n and "--data-option face_crop=false" in n for n in notes), notes
    assert main([*common, "--data-option", "face_crop=false", "--out", str(tmp_path / "b")]) == 0
    notes = json.loads((tmp_path / "b" / "bench.json").read_text())["notes"]
    assert not any("face_crop" in n for n in notes), notes


def test_featurisation_rtf_is_the_median_of_per_video_ratios(monkeypatch):
    """featurise_rtf_median is the median over videos of featurisation time / that video's duration; the ratio of the
    median time to the median duration is another number (1.0 here instead of 0.5: a short slow clip and a long
    fast one). Featurisation and the clock are stubbed (exact binary fractions), no model runs."""
    import statistics
    from types import SimpleNamespace

    import pinlite_edge.features as features
    from pinlite_edge.bench import endtoend
    from pinlite_edge.contract import TINY_CONTRACT

    durations = {"a.mp4": 1.0, "b.mp4": 2.0, "c.mp4": 10.0}
    seconds = {"a.mp4": 0.5, "b.mp4": 3.0, "c.mp4": 2.0}  # per-video ratios 0.5, 1.5, 0.2
    clock = [0.0]

    def prepare_windows(path, contract, scan_offsets=()):
        clock[0] += seconds[path.name]
        return SimpleNamespace(duration=durations[path.name], face_found=True, face_coverage=1.0), []

    monkeypatch.setattr(features, "prepare_windows", prepare_windows)
    monkeypatch.setattr(endtoend, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    videos = endtoend.Videos([Path(n) for n in durations], "stub")
    info, rows = endtoend.measure_end_to_end([], videos, TINY_CONTRACT)
    expected = statistics.median(seconds[n] / durations[n] for n in durations)
    assert expected == 0.5 and statistics.median(seconds.values()) / statistics.median(durations.values()) == 1.0
    assert type(info["featurise_rtf_median"]) is float and info["featurise_rtf_median"] == expected
    assert info["featurise_s"] == {"median": 2.0, "min": 0.5, "max": 3.0} and rows == []


def test_reports_are_written_before_the_table_and_a_closed_stdout_ends_quietly(workspace, tmp_path):
    """``... --out DIR | head -1`` ended in a BrokenPipeError traceback, exit 1, and no reports: the table was printed
    before they were written."""
    out = tmp_path / "piped"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "pinlite_edge.bench", "--artifacts", str(workspace), "--out",
                               str(out), "--no-plots", *FAST], stdout=write, stderr=subprocess.PIPE, text=True,
                              timeout=300)
    finally:
        os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert (out / "bench.json").is_file() and (out / "bench.md").is_file()


def test_interrupt_is_one_line_and_exit_130(workspace, tmp_path, capsys, monkeypatch):
    from pinlite_edge.bench import cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_bench", interrupted)
    assert main(["--artifacts", str(workspace), "--out", str(tmp_path / "o"), *FAST]) == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_help_describes_every_option_with_its_default():
    text = " ".join(build_parser_help().split())
    for expected in ("--split SPLIT split of the --data dataset", "(default: test)", "--out OUT folder of the reports",
                     "--no-plots do not write the plots", "--data DATA synthetic | lavdf:PATH | folder:PATH (default: "
                     "synthetic)", "latency measurement (default: 1)", "accuracy pass (default: 8)",
                     "memory pass (default: 3)"):
        assert expected in text


def build_parser_help() -> str:
    from pinlite_edge.bench.cli import build_parser

    return build_parser().format_help()


def test_the_accuracy_pass_reports_progress_every_few_seconds_with_time_left_not_every_batch():
    """It said "evaluated N/M clips" after every --eval-batch batch: 1000 lines in a log for 8000 clips."""
    from pinlite_edge.bench.core import EVAL_REPORT_S, EvalProgress

    now = [0.0]
    lines: list[str] = []
    progress = EvalProgress(800, lines.append, clock=lambda: now[0])
    for done in range(8, 801, 8):  # 100 batches, 1 s each
        now[0] += 1.0
        progress.update(done)
    assert len(lines) == 100 // EVAL_REPORT_S, lines  # the last one is at the end
    assert lines[0] == "  evaluated 80/800 clips (10 s, about 90 s left)"
    assert lines[-1] == "  evaluated 800/800 clips (100 s)"
