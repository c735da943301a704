"""``python -m pinlite_edge.bench --runtime trt`` and the defaults of every runtime, with stand-ins.

No TensorRT or GPU runs here: a stand-in ``tensorrt`` module (only ``__version__``: the engine build itself,
``export.tensorrt.build_engine``, is replaced by a recorder) and a faked GPU detection (``export.tensorrt.cuda_device``,
what the export records in the manifest) drive the real export API (``export_model(..., "trt-fp16")``), the engine
cache and the CLI. The TensorRT runner is replaced by the ONNX runner of the same model for the benchmark pass.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from pinlite_edge.bench import engine_cache, prepare
from pinlite_edge.bench.cli import build_parser, main
from pinlite_edge.bench.workspace import WorkspaceError, resolve_artefacts
from pinlite_edge.checkpoint import save_checkpoint
from pinlite_edge.errors import BackendUnavailableError
from pinlite_edge.export import tensorrt as trt_export
from pinlite_edge.models import create_student, create_teacher

FAST = ["--limit", "2", "--eval-batch", "2", "--warmup", "0", "--iters", "2", "--threads", "1", "--no-memory",
        "--no-e2e", "--no-plots"]
#: an engine build on first use with the fewest clips (the build itself is a recorder here)
TEST_BUILD = {"calib_size": 2, "sensitivity": False}


@pytest.fixture(scope="module")
def base_workspace(tmp_path_factory) -> Path:
    from pinlite_edge.export import export_model

    ws = tmp_path_factory.mktemp("trt-ws") / "pinlite-workspace"
    torch.manual_seed(1)
    save_checkpoint(ws / "teacher" / "best.safetensors", create_teacher("tiny", pretrained=False), {})
    pruned = save_checkpoint(ws / "pruned" / "best.safetensors", create_student("tiny", pretrained=False), {})
    export_model(pruned, "onnx", ws / "exports" / "onnx", name="pinlite-student")
    return ws


@pytest.fixture()
def workspace(base_workspace, tmp_path) -> Path:
    ws = tmp_path / "pinlite-workspace"
    shutil.copytree(base_workspace, ws)
    return ws


class FakeTrt:
    """Stand-in for TensorRT on a GPU: ``tensorrt`` imports (version only), the GPU is detected, builds recorded
    (``export.tensorrt.build_engine`` and its engine inspector replaced)."""

    def __init__(self, monkeypatch, version: str = "10.3.0", gpu: tuple[str, str] = ("Fake Orin", "8.7")):
        self.monkeypatch, self.builds = monkeypatch, []
        self.set(version, gpu)
        monkeypatch.setattr(trt_export, "build_engine", self._build)
        # the export reads each layer's precision back from the built engine (the inspector): none to report here
        monkeypatch.setattr(trt_export, "engine_information", self._information)
        monkeypatch.setattr(engine_cache, "BUILD_OPTIONS", TEST_BUILD)

    def set(self, version: str, gpu: tuple[str, str]) -> None:
        self.monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
        self.monkeypatch.setattr(trt_export, "cuda_device", lambda index=0: trt_export.GpuInfo(*gpu, index))

    def _build(self, trt, onnx_path, **kwargs):
        self.builds.append({"onnx": Path(onnx_path).name, **kwargs})
        return f"engine for {trt.__version__} #{len(self.builds)}".encode(), {"strongly_typed": True}

    def _information(self, trt, engine):
        """No layers to report; the profile the last build was given, as the engine would read it back."""
        b = self.builds[-1]
        shapes = trt_export.profile_shapes(b["input_shapes"], b["max_batch"], b["opt_batch"], b.get("audio_rows", 1))
        return '{"Layers": []}', {name: [list(s) for s in v] for name, v in shapes.items()}


def test_one_table_gives_runtimes_and_default_precisions():
    from pinlite_edge.export.formats import FORMATS, default_precision, format_for, precisions_for, runtimes
    from pinlite_edge.runtimes import BACKENDS

    assert set(runtimes()) == set(BACKENDS)
    assert {f.runtime for f in FORMATS.values()} <= set(BACKENDS)
    assert {r: default_precision(r) for r in BACKENDS} == {"torch": "fp32", "ort": "fp32", "trt": "fp16",
                                                           "executorch": "fp32"}
    assert precisions_for("trt") == ("fp16", "int8") and format_for("trt", "fp32") is None
    assert format_for("executorch", "int8").name == "pte-int8" and format_for("torch", "fp32").name == "checkpoint"
    args = build_parser().parse_args(["--runtime", "trt"])
    assert args.precision is None and args.cuda_binding == "auto"  # the runtime's default precision applies
    from pinlite_edge.bench import BenchConfig

    assert BenchConfig(runtime="trt").resolved_precision == "fp16"
    assert BenchConfig(runtime="trt", precision="int8").resolved_precision == "int8"


def test_trt_without_tensorrt_or_gpu_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from pinlite_edge import quickstart

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError

    def no_gpu(index=0):
        raise BackendUnavailableError("tensorrt", "no CUDA GPU is visible (torch.cuda.is_available() is False)")

    monkeypatch.setattr(trt_export, "cuda_device", no_gpu)
    monkeypatch.setattr(quickstart, "run_quickstart", lambda *a, **k: pytest.fail("built a workspace first"))
    assert main(["--runtime", "trt"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("python -m pinlite_edge.bench: error: backend 'trt' is unavailable: tensorrt does not "
                           "import")
    assert "no CUDA GPU is visible" in line and "JetPack" in line and "NVIDIA GPU" in line
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "pinlite-workspace").exists()


def test_tensorrt_8_is_refused_in_one_line_before_anything_is_built(workspace, monkeypatch, capsys):
    """JetPack 6.0 ships TensorRT 8.6, which has no strongly typed networks nor execute_async_v3: it was accepted and
    the build then failed with an AttributeError traceback inside export.tensorrt, after the ONNX work."""
    from pinlite_edge.export import export_model

    fake = FakeTrt(monkeypatch, version="8.6.2.3")
    assert main(["--runtime", "trt", "--artifacts", str(workspace), "--out", str(workspace.parent / "b8")]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert "TensorRT 8.6.2.3 is too old" in line and "TensorRT 10 or newer" in line and "JetPack 6.1" in line
    assert "Traceback" not in captured.err and fake.builds == []
    with pytest.raises(BackendUnavailableError, match="8.6.2.3 is too old"):  # the exporter says the same
        export_model(workspace / "pruned" / "best.safetensors", "trt-fp16", workspace.parent / "t8")
    assert fake.builds == [] and not (workspace.parent / "t8").exists()
    fake.set("", ("Fake Orin", "8.7"))  # a build without a version string is not taken for a new one
    with pytest.raises(BackendUnavailableError, match="reports no __version__"):
        engine_cache.detect_target()
    fake.set("10.3.0", ("Fake Orin", "8.7"))
    assert engine_cache.detect_target().tensorrt_version == "10.3.0"


def test_engine_cache_key_reuse_and_rebuild(workspace, monkeypatch):
    from pinlite_edge.export import export_model
    from pinlite_edge.manifest import read_manifest
    from pinlite_edge.utils.hashing import sha256_file

    fake = FakeTrt(monkeypatch)
    said: list[str] = []
    target = engine_cache.detect_target()
    assert target == engine_cache.TrtTarget("10.3.0", "Fake Orin", "8.7", 0)
    with pytest.raises(WorkspaceError, match="builds it on first use"):
        resolve_artefacts(workspace, "trt", "fp16")  # nothing built yet, and run_bench never builds

    engine = engine_cache.ensure_engine(workspace, "fp16", say=said.append)
    onnx = workspace / "exports" / "onnx" / "pinlite-student.onnx"
    key = json.loads((engine.parent / engine_cache.KEY_FILE).read_text())
    assert key == {"gpu_name": "Fake Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0",
                   "precision": "fp16", "source_onnx_sha256": sha256_file(onnx),
                   "source_checkpoint_sha256": sha256_file(workspace / "pruned" / "best.safetensors")}
    assert engine.parent.name == f"fake-orin-cc8.7-trt10.3.0-{engine_cache.key_digest(key)}"
    assert engine.name == "pinlite-student.fp16.engine" and engine.parent.parent.name == "trt-fp16"
    man = read_manifest(engine)
    assert (man.format, man.precision, man.target["gpu_name"]) == ("trt-fp16", "fp16", "Fake Orin")
    assert man.source_checkpoint_sha256 == key["source_checkpoint_sha256"]
    timing_cache = workspace / "exports" / "trt-timing" / "fake-orin-cc8.7-trt10.3.0.cache"
    assert len(fake.builds) == 1 and fake.builds[0]["timing_cache"] == timing_cache
    assert any(s.startswith("building the TensorRT fp16 engine for Fake Orin") for s in said)
    assert resolve_artefacts(workspace, "trt", "fp16") == [engine]

    # the same GPU, TensorRT and ONNX: reused, not rebuilt
    assert engine_cache.ensure_engine(workspace, "fp16", say=said.append) == engine
    assert len(fake.builds) == 1 and "reusing" in said[-1]

    # another GPU: its own engine (the first stays for its GPU); the timing cache is per GPU too
    fake.set("10.3.0", ("Fake Thor", "11.0"))
    other = engine_cache.ensure_engine(workspace, "fp16", say=said.append)
    assert other != engine and other.parent.name.startswith("fake-thor-cc11.0-trt10.3.0-")
    assert len(fake.builds) == 2 and fake.builds[1]["timing_cache"].name == "fake-thor-cc11.0-trt10.3.0.cache"
    assert engine.is_file()

    # another TensorRT version on the first GPU: rebuilt
    fake.set("10.4.0", ("Fake Orin", "8.7"))
    assert engine_cache.ensure_engine(workspace, "fp16", say=said.append).parent.name.startswith(
        "fake-orin-cc8.7-trt10.4.0-")
    assert len(fake.builds) == 3

    # a new workspace ONNX (another model): rebuilt; the old engine is not used for it
    fake.set("10.3.0", ("Fake Orin", "8.7"))
    torch.manual_seed(2)
    pruned = save_checkpoint(workspace / "pruned" / "best.safetensors", create_student("tiny", pretrained=False), {})
    export_model(pruned, "onnx", onnx.parent, name="pinlite-student", force=True)
    assert engine_cache.find_engine(workspace, "fp16")[0] is None
    rebuilt = engine_cache.ensure_engine(workspace, "fp16", say=said.append)
    assert rebuilt != engine and len(fake.builds) == 4

    # an interrupted build (engine published, key not yet written) is redone
    (rebuilt.parent / engine_cache.KEY_FILE).unlink()
    engine_cache.ensure_engine(workspace, "fp16", say=said.append)
    assert len(fake.builds) == 5


def test_the_engine_benched_on_cuda_n_is_the_one_built_for_cuda_n(workspace, monkeypatch):
    """``--device cuda:1`` built the engine for GPU 1 but looked it up for GPU 0: on a host with two GPU models it
    reported no engine right after building it."""
    FakeTrt(monkeypatch)
    gpus = {0: ("Fake Orin", "8.7"), 1: ("Fake Thor", "11.0")}
    monkeypatch.setattr(trt_export, "cuda_device", lambda index=0: trt_export.GpuInfo(*gpus[index], index))
    built = engine_cache.ensure_engine(workspace, "fp16", target=engine_cache.detect_target(1))
    assert built.parent.name.startswith("fake-thor-")
    assert resolve_artefacts(workspace, "trt", "fp16", "cuda:1") == [built]
    if engine_cache.find_engine(workspace, "fp16")[0] is None:  # GPU 0 has none of its own (unless built earlier)
        with pytest.raises(WorkspaceError, match="builds it on first use"):
            resolve_artefacts(workspace, "trt", "fp16", "cuda:0")


def test_bench_runtime_trt_with_no_other_flag(workspace, monkeypatch, capsys):
    """The design card's command: FP16 engine built on first use, then benched (TensorRT runner stood in for by
    the ONNX runner of the same model); --cuda-binding reaches the runner; a second run reuses the engine."""
    from pinlite_edge.bench import core
    from pinlite_edge.runtimes import load_runner

    fake = FakeTrt(monkeypatch)
    monkeypatch.chdir(workspace.parent)
    quickstart_calls: list[Path] = []
    monkeypatch.setattr(prepare, "ensure_quickstart_workspace",
                        lambda path, say, progress: quickstart_calls.append((path, progress)))
    opened: list[dict] = []
    onnx = workspace / "exports" / "onnx" / "pinlite-student.onnx"

    def fake_load_runner(path, **options):
        if Path(path).suffix == ".engine":
            opened.append({"path": Path(path), **options})
            return load_runner(onnx, device="cpu", threads=1)
        return load_runner(path, **options)

    monkeypatch.setattr(core, "load_runner", fake_load_runner)
    assert main(["--runtime", "trt", *FAST, "--out", "r1"]) == 0
    err = capsys.readouterr().err
    assert "building the TensorRT fp16 engine for Fake Orin" in err
    assert quickstart_calls == [(Path("pinlite-workspace"), True)]
    (row,) = json.loads(Path("r1/bench.json").read_text())["rows"]
    assert (row["backend"], row["precision"], row["format"]) == ("trt", "fp16", "trt-fp16")
    assert opened[-1]["device"] == "cuda" and opened[-1]["cuda_binding"] == "auto"
    assert "threads" not in opened[-1]
    notes = json.loads(Path("r1/bench.json").read_text())["notes"]
    assert any("torch sees no CUDA device" in n for n in notes)  # references follow the artefact's device

    assert main(["--runtime", "trt", "--cuda-binding", "pycuda", *FAST, "--out", "r2"]) == 0
    assert "reusing" in capsys.readouterr().err and len(fake.builds) == 1
    assert opened[-1]["cuda_binding"] == "pycuda"

    assert main(["--runtime", "trt", "--precision", "int8", *FAST, "--out", "r3"]) == 0
    assert json.loads(Path("r3/bench.json").read_text())["rows"][0]["precision"] == "int8"
    assert len(fake.builds) == 2 and (workspace / "exports" / "trt-int8").is_dir()


@pytest.mark.parametrize("runtime, precision, fmt", [("executorch", None, "pte"), ("executorch", "int8", "pte-int8"),
                                                      ("ort", "fp16", "onnx-fp16")])
def test_missing_format_is_exported_on_first_use(workspace, monkeypatch, runtime, precision, fmt):
    """Every runtime works with no other flag: a format the workspace lacks is exported (from the checkpoint the
    workspace ONNX came from) by the CLI's prepare step, with the runtime's default precision."""
    import pinlite_edge.export as export

    from pinlite_edge.bench import BenchConfig

    calls = []

    def fake_export(checkpoint, format, output_dir, **options):
        calls.append((Path(checkpoint), format, Path(output_dir), options))
        return types.SimpleNamespace(artifact=Path(output_dir) / "x", seconds=0.0)

    monkeypatch.setattr(export, "export_model", fake_export)
    said: list[str] = []
    prepare.prepare(BenchConfig(runtime=runtime, precision=precision, artifacts=workspace), said.append)
    ((ckpt, got, out, options),) = calls
    assert got == fmt and ckpt == workspace / "pruned" / "best.safetensors"
    assert out == workspace / "exports" / fmt and options["name"] == "pinlite-student"
    assert ("calib_size" in options) == (fmt != "pte")
    assert said and said[0].startswith(f"exporting {fmt} ")


def test_present_artefacts_are_not_rebuilt(workspace, monkeypatch):
    import pinlite_edge.export as export

    from pinlite_edge.bench import BenchConfig

    monkeypatch.setattr(export, "export_model", lambda *a, **k: pytest.fail("exported again"))
    for runtime in ("ort", "torch"):
        prepare.prepare(BenchConfig(runtime=runtime, artifacts=workspace), lambda msg: pytest.fail(msg))


def test_cli_builds_a_missing_or_unfinished_quickstart_workspace(tmp_path, monkeypatch):
    """No --artifacts and a default workspace that ``quickstart.workspace_status`` finds incomplete: the CLI runs the
    quickstart (which resumes what exists), announcing what is missing; a complete workspace is left alone."""
    from pinlite_edge import quickstart

    monkeypatch.chdir(tmp_path)
    state = {"missing": ["teacher/ (missing: no training run in pinlite-workspace/teacher)", "summary.json (missing)"]}
    runs, checked, bars = [], [], []

    def fake_status(workspace, export_formats):
        checked.append((Path(workspace), [f for f, _ in export_formats]))
        return types.SimpleNamespace(complete=not state["missing"], missing=list(state["missing"]), outdated={})

    def fake_quickstart(cfg):
        runs.append(Path(cfg.workspace))
        bars.append(cfg.progress)
        state["missing"] = []
        return []

    monkeypatch.setattr(quickstart, "workspace_status", fake_status)
    monkeypatch.setattr(quickstart, "run_quickstart", fake_quickstart)
    said: list[str] = []
    ws = Path("pinlite-workspace")
    prepare.ensure_quickstart_workspace(ws, said.append)
    assert runs == [ws] and checked[0] == (ws, [f for f, _ in quickstart.EXPORT_FORMATS])
    assert said[0].startswith("building the quickstart workspace at pinlite-workspace (missing: teacher/ (missing")
    assert said[-1] == "workspace pinlite-workspace is complete"
    prepare.ensure_quickstart_workspace(ws, said.append)
    assert len(runs) == 1  # complete: not run again
    state["missing"] = ["pruned/ (unfinished: the run did not finish (epoch 0))"]
    prepare.ensure_quickstart_workspace(ws, said.append)
    assert len(runs) == 2 and "pruned/ (unfinished" in said[-2]
    state["missing"] = ["pruned/"]
    prepare.ensure_quickstart_workspace(ws, said.append, progress=False)  # bench --no-progress: no bars in a log
    assert bars == [True, True, False]


def test_cli_warns_before_benchmarking_a_workspace_built_with_an_older_preset(tmp_path, monkeypatch, caplog):
    """A complete workspace whose stages an older preset built is benchmarked as built (nothing is retrained behind
    the user's back), with a warning per stage saying how it differs and how to rebuild it."""
    from pinlite_edge import quickstart

    outdated = {"teacher": "model sync_lags=0, the tiny teacher preset now has 5"}
    monkeypatch.setattr(quickstart, "workspace_status", lambda workspace, export_formats: types.SimpleNamespace(
        complete=True, missing=[], outdated=outdated))
    monkeypatch.setattr(quickstart, "run_quickstart", lambda cfg: pytest.fail("rebuilt a complete workspace"))
    with caplog.at_level("WARNING"):
        prepare.ensure_quickstart_workspace(Path("pinlite-workspace"), lambda msg: pytest.fail(msg))
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "pinlite-workspace/teacher was built with another recipe" in record.getMessage()
    assert "sync_lags=0, the tiny teacher preset now has 5" in record.getMessage()
    assert "python -m pinlite_edge.quickstart --workspace pinlite-workspace" in record.getMessage()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
                    reason="TensorRT and a GPU are present: the missing-TensorRT path cannot be exercised")
def test_design_card_command_as_written_without_tensorrt(tmp_path):
    """`python -m pinlite_edge.bench --runtime trt` in a fresh process on this machine (no TensorRT / no GPU): one
    line on stderr, exit code 2, nothing built."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "pinlite_edge.bench", "--runtime", "trt"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("python -m pinlite_edge.bench: error: backend 'trt' is unavailable:")
    assert "Traceback" not in proc.stderr
    assert proc.stdout == "" and not any(tmp_path.iterdir())
