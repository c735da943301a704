"""Runner contract over every backend: torch, onnxruntime and ExecuTorch for real; TensorRT against stand-ins for
``tensorrt`` and each CUDA binding (pycuda, cuda-python) that follow the documented APIs (tests/_trt_standins.py)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pinlite_edge.checkpoint import save_checkpoint
from pinlite_edge.contract import OUTPUT_NAMES, TINY_CONTRACT
from pinlite_edge.errors import BackendUnavailableError, CheckpointError, InputError, ManifestError
from pinlite_edge.manifest import Manifest, manifest_path_for, publish_artifact
from pinlite_edge.models import create_student
from pinlite_edge.runtimes import (
    Comparator, RunnerOptionError, RunnerOutputError, RunnerStateError, load_runner,
)

import _trt_standins as standins

HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None
C = TINY_CONTRACT
ORIN = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu_name": "Orin"}


def export_onnx(checkpoint: Path, out_dir: Path) -> Path:
    from pinlite_edge.export import export_model

    return export_model(checkpoint, "onnx", out_dir).artifact


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Publish the file at ``path`` (already written) with ``manifest`` beside it, as an export does."""
    publish_artifact(path, path, manifest)


def student_manifest(model, fmt: str, runtime: str, precision: str = "fp32", **kw) -> Manifest:
    return Manifest(format=fmt, runtime=runtime, precision=precision, artifact="", artifact_sha256="",
                    model_kind="student", preset=model.config.preset, model_config=model.config.to_dict(),
                    input_contract=model.config.contract.to_dict(), **kw)


class StandIn(torch.nn.Module):
    """A small model with the contract's I/O, used for the ExecuTorch fixture: lowering the real student's GRU
    takes minutes on this CPU, which the runner-contract tests do not need (parity of the real model is the
    exporter's test)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.pf, self.pa = torch.nn.Linear(3, 8), torch.nn.Linear(13, 8)
        self.cls, self.off = torch.nn.Linear(8, 2), torch.nn.Linear(8, 11)

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor):
        v = self.pf(frames.mean(dim=(3, 4)))
        a = self.pa(mfcc.reshape(mfcc.shape[0], 16, 4, 13).mean(dim=2))
        attn = torch.softmax(torch.matmul(a, v.transpose(1, 2)), dim=-1)
        pooled = torch.matmul(attn, v).mean(dim=1)
        return self.cls(pooled), self.off(pooled), attn


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    model = create_student("tiny", pretrained=False).eval()
    root = tmp_path_factory.mktemp("rt")
    ckpt = save_checkpoint(root / "distilled" / "best.safetensors", model, {})
    onnx = export_onnx(ckpt, root / "onnx")
    return {"model": model, "root": root, "torch": ckpt, "ort": onnx}


def write_standin_pte(student, path: Path, batch: int) -> tuple[Path, torch.nn.Module]:
    """The StandIn model lowered to a static-batch .pte at ``path``, with its manifest; skips without ExecuTorch."""
    if not HAS_EXECUTORCH:
        pytest.skip("executorch is not installed (pip install pinlite-edge[executorch])")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module = StandIn().eval()
    ex = (torch.randn(batch, *C.frames_shape()), torch.randn(batch, *C.mfcc_shape()))
    prog = to_edge_transform_and_lower(torch.export.export(module, ex),
                                       partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(prog.buffer)
    write_manifest(path, student_manifest(student["model"], "pte", "executorch", dynamic_batch=False,
                                          max_batch=batch))
    return path, module


@pytest.fixture(scope="module")
def standin_pte(student, tmp_path_factory):
    return write_standin_pte(student, tmp_path_factory.mktemp("pte") / "standin.pte", 1)


def test_static_batch_2_program_takes_a_last_chunk_of_1(student, tmp_path):
    """A .pte exported with a static batch of 2 (max_batch 2): 3 rows are split 2 + 1, the 1 padded to the program's
    batch and its outputs cut (before: ExecuTorch's raw 'Attempted to resize a static tensor' RuntimeError)."""
    path, module = write_standin_pte(student, tmp_path / "standin2.pte", 2)
    f, m = inputs(3, seed=9)
    with load_runner(path, threads=1) as r:
        out = r.infer(f, m)
    with torch.no_grad():
        ref = module(torch.from_numpy(f), torch.from_numpy(m))
    assert out["logits"].shape == (3, 2)
    np.testing.assert_allclose(out["logits"], ref[0].numpy(), atol=1e-5)


def inputs(batch: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, *C.frames_shape())).astype(np.float32),
            rng.standard_normal((batch, *C.mfcc_shape())).astype(np.float32))


def write_engine(student, path: Path, *, max_batch: int = 4, static_batch: int | None = None,
                 nan_rows: tuple[int, ...] = (), target: dict | None = None, manifest_max_batch: int | None = None,
                 precision: str = "fp16", audio_rows: int = 1, extra: dict | None = None) -> Path:
    """A stand-in engine file computing the StandIn model, with its manifest (runtime trt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(standins.engine_bytes(standins.standin_weights(StandIn().eval()), max_batch=max_batch,
                                           static_batch=static_batch, nan_rows=nan_rows, audio_rows=audio_rows))
    write_manifest(path, student_manifest(student["model"], f"trt-{precision}", "trt", precision,
                                          target=dict(ORIN) if target is None else target,
                                          dynamic_batch=static_batch is None,
                                          max_batch=manifest_max_batch or static_batch or max_batch,
                                          extra=extra or {}))
    return path


@pytest.fixture(scope="module")
def standin_engine(student, tmp_path_factory):
    return write_engine(student, tmp_path_factory.mktemp("trt") / "standin.engine")


@pytest.fixture()
def gpu(monkeypatch):
    """A fake Orin with both CUDA bindings importable (tests narrow it with standins.install)."""
    g = standins.FakeGpu()
    standins.install(monkeypatch, g, ("pycuda", "cuda-python"))
    return g


BACKEND_PARAMS = ["torch", "ort", "executorch", "trt-pycuda", "trt-cuda-python"]


@pytest.fixture(params=BACKEND_PARAMS)
def runner(request, student, monkeypatch):
    if request.param.startswith("trt-"):
        binding = request.param[4:]
        standins.install(monkeypatch, standins.FakeGpu(), (binding,))
        return load_runner(request.getfixturevalue("standin_engine"), cuda_binding=binding)
    if request.param == "executorch":
        path = request.getfixturevalue("standin_pte")[0]
    else:
        path = student[request.param]
    return load_runner(path, threads=1)


# --- contract ---------------------------------------------------------------------------------------------------
def test_infer_returns_the_three_outputs(runner):
    f, m = inputs(3)
    with runner:
        out = runner.infer(f, m)
    assert set(out) == set(OUTPUT_NAMES)
    assert out["logits"].shape == (3, 2) and out["offset_logits"].shape == (3, 11)
    assert out["attention"].shape == (3, 16, 16)
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in out.values())
    np.testing.assert_allclose(out["attention"].sum(-1), 1.0, atol=1e-4)  # softmax rows
    assert runner.last_inference_time_s > 0
    assert runner.peak_memory_bytes > 0


def test_metadata(runner):
    info = runner.info
    expected = ("fp16", "cuda") if info.backend == "trt" else ("fp32", "cpu")
    assert (info.precision, info.device) == expected and info.preset == "tiny"
    assert [(t.name, t.shape) for t in info.inputs] == [("frames", (None, 16, 3, 64, 64)), ("mfcc", (None, 64, 13))]
    assert [t.name for t in info.outputs] == list(OUTPUT_NAMES)
    json.dumps(info.to_dict())


def test_infer_requires_activation(runner):
    f, m = inputs(1)
    with pytest.raises(RunnerStateError, match="not active"):
        runner.infer(f, m)
    with runner:
        runner.infer(f, m)
    with pytest.raises(RunnerStateError):
        runner.infer(f, m)


def test_same_input_same_output_and_batch_independence(runner):
    f, m = inputs(3)
    with runner:
        full = runner.infer(f, m)
        one = runner.infer(f[1:2], m[1:2])
        again = runner.infer(f, m)
    np.testing.assert_allclose(one["logits"][0], full["logits"][1], atol=1e-5)
    np.testing.assert_allclose(one["attention"][0], full["attention"][1], atol=1e-5)
    for key in OUTPUT_NAMES:
        np.testing.assert_array_equal(again[key], full[key])


def test_batch_above_max_is_split_or_rejected(runner):
    """A batch larger than the artefact's max batch is split (default) with the same numbers, or refused."""
    f, m = inputs(6, seed=4)
    runner.max_batch = runner.max_batch or 4  # dynamic-batch artefacts: pretend a limit
    with runner:
        limit = runner.max_batch
        whole = runner.infer(f, m)
        parts = [runner.infer(f[i:i + limit], m[i:i + limit]) for i in range(0, 6, limit)]
        runner.batch_policy = "reject"
        with pytest.raises(InputError, match=f"max batch {limit}"):
            runner.infer(f, m)
    for key in OUTPUT_NAMES:
        np.testing.assert_allclose(whole[key], np.concatenate([p[key] for p in parts]), atol=1e-6)


# --- frame sharing: k mfcc rows per frames row -------------------------------------------------------------------
#: which runners encode a frames row once for its k mfcc rows (read from the artefact), and which get it repeated
SHARES_FRAMES = {"torch": True, "ort": True, "executorch": False, "trt-pycuda": False, "trt-cuda-python": False}


@pytest.mark.parametrize("limit", [None, 4])
def test_k_mfcc_rows_per_frames_row_give_the_repeated_frames_answer(runner, request, limit):
    """What the offset scan sends: 3 windows, each with 5 audio variants. Every backend answers as if each frames
    row were repeated 5 times (sharing ones encode it once); with a max batch the call is split by whole windows."""
    backend = request.node.callspec.params["runner"]
    f, _ = inputs(3, seed=5)
    _, m = inputs(15, seed=6)
    if limit is not None:
        runner.max_batch = runner.max_batch or limit  # dynamic-batch artefacts: pretend a limit
    with runner:
        assert runner.shares_frames is SHARES_FRAMES[backend]
        shared = runner.infer(f, m)
        repeated = runner.infer(np.repeat(f, 5, axis=0), m)
    assert shared["logits"].shape == (15, 2) and shared["attention"].shape == (15, 16, 16)
    for key in OUTPUT_NAMES:
        np.testing.assert_allclose(shared[key], repeated[key], atol=1e-5)


def test_trt_engine_with_a_sharing_profile_takes_k_mfcc_rows_per_frames_row(student, tmp_path, gpu):
    """An engine whose profile takes 7 mfcc rows per frames row (built from the sharing ONNX graph): k <= 7 runs the
    frames once per window, k = 8 gets them repeated; the answers are those of the frames repeated, the mfcc and
    output buffers are sized for 7 rows per frames row, and a manifest saying otherwise is refused."""
    engine = write_engine(student, tmp_path / "shared.engine", max_batch=4, audio_rows=7,
                          extra={"shared_frames": {"mfcc_rows_per_frames_row": 7}})
    f, _ = inputs(6, seed=7)
    _, m = inputs(6 * 8, seed=8)
    with load_runner(engine) as r:
        assert r.shares_frames and r.shared_rows == 7
        assert r.frames_shared_for(7) and r.frames_shared_for(3) and not r.frames_shared_for(8)
        assert r._host["frames"].shape[0] == 4 and r._host["mfcc"].shape[0] == 28 and r._host["logits"].shape[0] == 28
        out = {k: r.infer(f, m[:6 * k]) for k in (1, 3, 7, 8)}
        rows_run = r.engine.frames_rows_run
        want = {k: r.infer(np.repeat(f, k, axis=0), m[:6 * k]) for k in (1, 3, 7, 8)}
    assert rows_run == 6 + 6 + 6 + 48  # shared for k = 3 and 7: each window's frames once
    for k in out:
        for key in OUTPUT_NAMES:
            np.testing.assert_allclose(out[k][key], want[k][key], atol=1e-6)
    wrong = write_engine(student, tmp_path / "wrong.engine", max_batch=4, audio_rows=7,
                         extra={"shared_frames": None})
    with pytest.raises(ManifestError, match="does not describe this engine"):
        load_runner(wrong).activate()


def test_torch_runner_encodes_each_frames_row_once(student):
    from pinlite_edge.runtimes.torch.runner import TorchRunner

    model = student["model"]
    rows = []
    hook = model.frame_encoder.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[0]))
    try:
        with TorchRunner.from_model(model) as r:
            r.infer(inputs(2)[0], inputs(14)[1])
    finally:
        hook.remove()
    assert rows == [2]


def test_onnx_manifest_records_frame_sharing_read_back_from_the_graph(student):
    from pinlite_edge.manifest import read_manifest

    extra = read_manifest(student["ort"]).extra
    assert extra["shared_frames"] is True and extra["frame_sharing_max_abs"] <= 1e-4


def test_a_manifest_that_contradicts_the_graphs_frame_sharing_is_refused(student):
    import dataclasses

    from pinlite_edge.runtimes.artifact import inspect_artifact
    from pinlite_edge.runtimes.ort.runner import OrtRunner, graph_shares_frames

    spec = inspect_artifact(student["ort"])
    wrong = dataclasses.replace(spec, manifest=dataclasses.replace(
        spec.manifest, extra={**spec.manifest.extra, "shared_frames": False}))
    with pytest.raises(ManifestError, match="shared_frames=False but the graph"):
        OrtRunner(wrong, threads=1).activate()
    # an older manifest without the record: the graph decides, both ways
    old = dataclasses.replace(spec, manifest=dataclasses.replace(spec.manifest, extra={}))
    assert graph_shares_frames(old, {"frames": ("batch",), "mfcc": ("audio_batch",)}) is True
    assert graph_shares_frames(old, {"frames": ("batch",), "mfcc": ("batch",)}) is False
    assert graph_shares_frames(old, {"frames": (1,), "mfcc": (1,)}) is False


def test_mfcc_rows_that_are_not_a_whole_multiple_are_refused(student):
    f, _ = inputs(2)
    _, m = inputs(5)
    with load_runner(student["ort"], threads=1) as r, pytest.raises(InputError, match="same whole number k"):
        r.infer(f, m)


def test_more_mfcc_rows_per_frames_row_than_a_scan_uses_are_refused(student):
    """One frames row with 10**6 mfcc rows grew to 22 GB before the kernel killed the process: at most
    MAX_ROWS_PER_FRAMES rows per frames row (the offset scan uses 7, at most 51)."""
    from pinlite_edge.runtimes.base import MAX_ROWS_PER_FRAMES

    f, _ = inputs(1)
    _, m = inputs(MAX_ROWS_PER_FRAMES + 1)
    with load_runner(student["ort"], threads=1) as r:
        with pytest.raises(InputError, match=f"at most {MAX_ROWS_PER_FRAMES}"):
            r.infer(f, m)
        assert r.infer(f, m[:MAX_ROWS_PER_FRAMES])["logits"].shape == (MAX_ROWS_PER_FRAMES, 2)


# --- input validation (done once, in BaseRunner) -----------------------------------------------------------------
@pytest.mark.parametrize("case, match", [
    ("unbatched", "add a batch axis"),
    ("frame_size", r"frames must have shape \(B, 16, 3, 64, 64\)"),
    ("mfcc_shape", "mfcc must have shape"),
    ("batch_mismatch", "batch sizes differ"),
    ("empty", "empty batch"),
    ("nan", "NaN or inf"),
    ("inf", "NaN or inf"),
    ("int_dtype", "must be float32"),
    ("list", "numpy array"),
    ("float64_overflow", "NaN or inf"),
])
def test_invalid_inputs_raise_input_error(student, case, match):
    f, m = inputs(2)
    if case == "unbatched":
        f = f[0]
    elif case == "frame_size":
        f = np.zeros((2, 16, 3, 128, 128), np.float32)
    elif case == "mfcc_shape":
        m = m[:, :32]
    elif case == "batch_mismatch":
        m = m[:1]
    elif case == "empty":
        f, m = f[:0], m[:0]
    elif case == "nan":
        f[0, 0, 0, 0, 0] = np.nan
    elif case == "inf":
        m[1, 3, 2] = np.inf
    elif case == "int_dtype":
        f = (f * 50).astype(np.uint8)
    elif case == "list":
        m = m.tolist()
    elif case == "float64_overflow":
        m = m.astype(np.float64)
        m[0, 0, 0] = 1e300  # finite in float64, inf once cast to float32
    r = load_runner(student["ort"], threads=1)
    with r, pytest.raises(InputError, match=match):
        r.infer(f, m)


def test_float64_is_cast_explicitly(student):
    f, m = inputs(2)
    with load_runner(student["ort"], threads=1) as r:
        a = r.infer(f, m)
        b = r.infer(f.astype(np.float64), m.astype(np.float64))
        c = r.infer(np.asfortranarray(f), torch.from_numpy(m))  # non-contiguous and torch tensors are accepted
    np.testing.assert_array_equal(a["logits"], b["logits"])
    np.testing.assert_allclose(a["logits"], c["logits"], atol=1e-6)


def test_static_batch_artefact_splits_or_rejects(standin_pte):
    path, module = standin_pte
    f, m = inputs(3)
    with load_runner(path) as r:
        assert r.max_batch == 1
        out = r.infer(f, m)  # split into 3 calls of batch 1
    with torch.no_grad():
        ref = module(torch.from_numpy(f), torch.from_numpy(m))
    for got, want in zip((out["logits"], out["offset_logits"], out["attention"]), ref):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    with load_runner(path, batch_policy="reject") as r, pytest.raises(InputError, match="max batch 1"):
        r.infer(f, m)


def test_executorch_threads_size_executorch_s_own_threadpool(standin_pte):
    """``threads`` used to set torch's thread count only: ExecuTorch's threadpool (XNNPACK's) kept its size, and
    ``bench --threads 1`` recorded 1 thread for a run on every core. The pool is process-wide and a loaded program
    holds it (resizing it then crashes that program), so it is sized before the process's first program and a later
    runner asking for another size says so. A fresh process: this one may have loaded programs already."""
    import subprocess

    code = ("import logging, numpy as np\n"
            "logging.basicConfig(level=logging.WARNING)\n"
            "from pinlite_edge.runtimes import load_runner\n"
            "from pinlite_edge.runtimes.executorch.loader import threadpool_size\n"
            f"path = {str(standin_pte[0])!r}\n"
            "first = load_runner(path, threads=1)\n"
            "first.activate()\n"
            "shape = {m.name: m.shape for m in first.info.inputs}\n"
            "f = np.zeros((1, *shape['frames'][1:]), np.float32)\n"
            "m = np.zeros((1, *shape['mfcc'][1:]), np.float32)\n"
            "ref = first.infer(f, m)['logits']\n"
            "print('pool', threadpool_size(), first.info.extra['threads'])\n"
            "second = load_runner(path, threads=2)\n"
            "second.activate()\n"
            "np.testing.assert_allclose(first.infer(f, m)['logits'], ref)\n"  # the first program still runs
            "np.testing.assert_allclose(second.infer(f, m)['logits'], ref)\n"
            "print('second', threadpool_size(), second.info.extra['threads'], second.info.extra['threads_asked'])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pool 1 1" in run.stdout and "second 1 1 2" in run.stdout
    assert "stays at 1 threads, not the 2 asked" in run.stderr


def test_executorch_program_outlives_its_loading(standin_pte):
    """The runner loads the verified bytes; the program holding them must live as long as the method, or the next
    execute reads freed memory. Run in a child process: the failure is a segfault."""
    import subprocess

    code = ("import gc, numpy as np, sys\n"
            "from pinlite_edge.runtimes import load_runner\n"
            f"r = load_runner({str(standin_pte[0])!r}, threads=1)\n"
            "r.activate()\n"
            "shape = {m.name: m.shape for m in r.info.inputs}\n"
            "f = np.zeros((1, *shape['frames'][1:]), np.float32)\n"
            "m = np.zeros((1, *shape['mfcc'][1:]), np.float32)\n"
            "first = r.infer(f, m)['logits']\n"
            "for _ in range(20):\n"
            "    gc.collect(); junk = [bytearray(1 << 16) for _ in range(64)]\n"
            "    np.testing.assert_allclose(r.infer(f, m)['logits'], first)\n"
            "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "ok" in run.stdout, (run.returncode, run.stderr[-2000:])


# --- agreement ----------------------------------------------------------------------------------------------------
def test_comparator_ort_fp32_matches_torch_fp32(student):
    f, m = inputs(4, seed=3)
    report = Comparator([load_runner(student["torch"], threads=1), load_runner(student["ort"], threads=1)]).run(f, m)
    (pair,) = report.pairs
    assert report.within(1e-4), pair.max_abs_diff
    assert pair.label_agreement == 1.0 and pair.eps_mean > 0.99
    assert "ort-fp32" in report.table()


# --- manifests ----------------------------------------------------------------------------------------------------
def _copy(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(manifest_path_for(src), manifest_path_for(dst))
    return dst


def _edit_manifest(path: Path, **changes) -> None:
    """Change manifest fields and publish the pair again (new hashes), so the checks beyond the hashes are reached."""
    d = json.loads(manifest_path_for(path).read_text())
    d.update(changes)
    publish_artifact(path, path, Manifest.from_dict(d))


def test_a_workspace_given_as_the_artefact_names_its_onnx_student(tmp_path):
    """``Detector.load("pinlite-workspace")`` (the folder the README's command builds) said only that a folder is
    not a regular file."""
    student_path = tmp_path / "ws" / "exports" / "onnx" / "pinlite-student.onnx"
    student_path.parent.mkdir(parents=True)
    student_path.write_bytes(b"onnx")
    with pytest.raises(ManifestError, match=r"a quickstart workspace: its ONNX student is .*exports/onnx/pinlite-stu"):
        load_runner(tmp_path / "ws")
    with pytest.raises(ManifestError, match=r"it is a folder, not a regular file$"):
        load_runner(tmp_path / "ws" / "exports")


def test_modified_artefact_is_refused(student, tmp_path):
    p = _copy(student["ort"], tmp_path)
    with open(p, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ManifestError, match="does not match its manifest"):
        load_runner(p)


def test_preset_mismatch_is_refused(student, tmp_path):
    with pytest.raises(ManifestError, match="preset 'tiny', expected 'paper'"):
        load_runner(student["ort"], expected_preset="paper")
    p = _copy(student["ort"], tmp_path)
    _edit_manifest(p, preset="paper")
    with pytest.raises(ManifestError, match="contradicts its model config preset"):
        load_runner(p)


def test_contract_mismatch_is_refused(student, tmp_path):
    from pinlite_edge.contract import PAPER_CONTRACT

    with pytest.raises(ManifestError, match="input contract"):
        load_runner(student["ort"], expected_contract=PAPER_CONTRACT)
    p = _copy(student["ort"], tmp_path / "a")
    _edit_manifest(p, input_contract=PAPER_CONTRACT.to_dict())
    with pytest.raises(ManifestError, match="contradicts its model config contract"):
        load_runner(p)
    # manifest consistent with itself but not with the artefact: the ONNX graph takes 64x64 frames
    p = _copy(student["ort"], tmp_path / "b")
    cfg = json.loads(manifest_path_for(p).read_text())["model_config"]
    cfg["contract"] = PAPER_CONTRACT.to_dict()
    _edit_manifest(p, input_contract=PAPER_CONTRACT.to_dict(), model_config=cfg)
    r = load_runner(p)
    with pytest.raises(ManifestError, match="manifest contract says"):
        r.activate()
    assert not r.is_active


@pytest.mark.parametrize("backend", ["executorch", "trt"])
def test_native_loaders_get_the_bytes_verified_at_activation(student, backend, tmp_path, monkeypatch, request):
    """ExecuTorch's load_program and TensorRT's deserialize_cuda_engine get the bytes read once and checked against
    the manifest's sha256: a file changed between load_runner and activation is refused, not loaded."""
    if backend == "executorch":
        src = request.getfixturevalue("standin_pte")[0]
        from executorch.runtime import Runtime as native
        method = "load_program"
    else:
        src = request.getfixturevalue("standin_engine")
        native = standins.install(monkeypatch, standins.FakeGpu(), ("cuda-python",))["tensorrt"].Runtime
        method = "deserialize_cuda_engine"
    received = []
    real = getattr(native, method)
    monkeypatch.setattr(native, method, lambda self, data, *a, **kw: received.append(data) or real(self, data, *a,
                                                                                                      **kw))
    p = _copy(src, tmp_path)
    original = p.read_bytes()
    runner = load_runner(p)
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    p.write_bytes(bytes(changed))  # after inspection, before activation
    with pytest.raises(ManifestError, match="does not match its manifest"):
        runner.activate()
    assert not runner.is_active and received == []
    p.write_bytes(original)
    with runner:
        assert runner.infer(*inputs(1))["logits"].shape == (1, 2)
    assert len(received) == 1 and isinstance(received[0], bytes) and received[0] == original


def test_runtime_and_suffix_must_agree(student, tmp_path):
    p = _copy(student["ort"], tmp_path)
    _edit_manifest(p, runtime="executorch")
    with pytest.raises(ManifestError, match="runtime 'executorch'"):
        load_runner(p)
    with pytest.raises(ManifestError, match="not for executorch"):
        load_runner(student["ort"], backend="executorch")
    bare = tmp_path / "bare.onnx"
    shutil.copy(student["ort"], bare)
    with pytest.raises(ManifestError, match="no manifest"):
        load_runner(bare)


def test_modified_checkpoint_is_refused(student, tmp_path):
    dst = tmp_path / "best.safetensors"
    shutil.copy(student["torch"], dst)
    shutil.copy(student["torch"].with_suffix(".json"), dst.with_suffix(".json"))
    data = bytearray(dst.read_bytes())
    data[-1] ^= 0xFF  # one weight byte changed
    dst.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="modified"):
        load_runner(dst)


# --- missing backends ---------------------------------------------------------------------------------------------
def test_missing_executorch_names_the_extra(student, monkeypatch, tmp_path):
    p = tmp_path / "m.pte"
    p.write_bytes(b"not a program")
    write_manifest(p, student_manifest(student["model"], "pte", "executorch", dynamic_batch=False, max_batch=1))
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    r = load_runner(p)
    with pytest.raises(BackendUnavailableError, match=r"pip install pinlite-edge\[executorch\]"):
        r.activate()


def test_missing_tensorrt_names_jetpack(student, monkeypatch, tmp_path):
    p = tmp_path / "m.engine"
    p.write_bytes(b"not an engine")
    write_manifest(p, student_manifest(student["model"], "trt-fp16", "trt", "fp16",
                                       target={"tensorrt_version": "10.3.0", "compute_capability": "8.7"}))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    r = load_runner(p)
    assert r.device == "cuda"
    with pytest.raises(BackendUnavailableError) as info:
        r.activate()
    for words in ("pip install tensorrt --extra-index-url https://pypi.nvidia.com", "JetPack 6",
                  "do not pip install it there", "pycuda or cuda-python", "pip install pinlite-edge[tensorrt]"):
        assert words in str(info.value)


def test_missing_ort_provider_is_not_a_silent_fallback(student):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        load_runner(student["ort"], device="cuda").activate()


# --- TensorRT target checks (pure logic, run everywhere) -------------------------------------------------------
def test_engine_target_checks():
    from pinlite_edge.runtimes.trt.loader import check_engine_target

    target = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu_name": "Orin"}
    assert check_engine_target(target, trt_version="10.3.0.26", compute_capability="8.7", gpu_name="Orin") == []
    with pytest.raises(ManifestError, match="TensorRT 10.3.0, this machine has 10.7"):
        check_engine_target(target, trt_version="10.7.0", compute_capability="8.7", gpu_name="Orin")
    with pytest.raises(ManifestError, match="compute capability 8.7"):
        check_engine_target(target, trt_version="10.3.0", compute_capability="9.0", gpu_name="H100")
    # another patch release: refused here with the rebuild hint (it passed, then failed inside deserialisation)
    with pytest.raises(ManifestError, match="TensorRT 10.3.0, this machine has 10.3.1: rebuild"):
        check_engine_target(target, trt_version="10.3.1", compute_capability="8.7", gpu_name="Orin")
    warn = check_engine_target(target, trt_version="10.3.0", compute_capability="8.7", gpu_name="Orin Nano")
    assert warn and "Orin Nano" in warn[0]
    compat = dict(target, version_compatible=True)
    check_engine_target(compat, trt_version="10.7.0", compute_capability="8.7", gpu_name="Orin")
    with pytest.raises(ManifestError, match="no tensorrt_version"):
        check_engine_target({}, trt_version="10.3", compute_capability="8.7", gpu_name="x")


# --- TensorRT runner against the stand-ins (both CUDA bindings) ------------------------------------------------
@pytest.mark.parametrize("binding", ["pycuda", "cuda-python"])
def test_trt_runner_computes_the_engine_model(student, standin_engine, monkeypatch, binding):
    """The numbers: the stand-in engine (numpy) against the same model in torch, through host->device copies,
    execute_async_v3 on the stream, device->host copies and the synchronisation; a batch above the profile's
    maximum (4) is split. Everything allocated is freed on deactivation."""
    gpu = standins.FakeGpu()
    mods = standins.install(monkeypatch, gpu, (binding,))
    f, m = inputs(6, seed=5)
    runner = load_runner(standin_engine, cuda_binding=binding)
    with runner:
        assert runner.max_batch == 4 and runner.info.extra["cuda_binding"] == binding
        out = runner.infer(f, m)
        assert gpu.launches == 2  # 6 clips = 4 + 2
        assert runner.last_device_time_s == pytest.approx(6 * 0.25e-3)
        assert runner.peak_gpu_memory_bytes == gpu.used() > 0  # the I/O buffers, allocated once
        io = runner.info.extra["gpu_memory"]["io_buffers_bytes"]
        assert io == 4 * 4 * (16 * 3 * 64 * 64 + 64 * 13 + 2 + 11 + 16 * 16)
    with torch.no_grad():
        ref = StandIn().eval()(torch.from_numpy(f), torch.from_numpy(m))
    for key, want in zip(OUTPUT_NAMES, ref):
        np.testing.assert_allclose(out[key], want.numpy(), atol=1e-5, err_msg=key)
    assert gpu.mem == {} and gpu.pinned == {}, "device or pinned host memory left allocated after deactivate"
    if binding == "pycuda":
        assert mods["pycuda"].context_stack() == [] and mods["pycuda"].state["retained"] == 0
    assert runner.peak_gpu_memory_bytes > 0  # kept after deactivation for reports


def test_trt_runner_static_batch_engine_splits(student, tmp_path, gpu):
    engine = write_engine(student, tmp_path / "b1.engine", static_batch=1)
    f, m = inputs(3, seed=6)
    with load_runner(engine) as r:
        assert r.max_batch == 1
        out = r.infer(f, m)
    with torch.no_grad():
        ref = StandIn().eval()(torch.from_numpy(f), torch.from_numpy(m))
    np.testing.assert_allclose(out["logits"], ref[0].numpy(), atol=1e-5)
    assert gpu.launches == 3


def test_trt_static_batch_2_engine_takes_a_last_chunk_of_1(student, tmp_path, gpu):
    """3 rows on a static batch-2 engine: split 2 + 1, the 1 padded to the engine's batch and its outputs cut
    (before: 'TensorRT refused input shape (1, ...)')."""
    engine = write_engine(student, tmp_path / "b2.engine", static_batch=2)
    f, m = inputs(3, seed=6)
    with load_runner(engine) as r:
        out = r.infer(f, m)
    with torch.no_grad():
        ref = StandIn().eval()(torch.from_numpy(f), torch.from_numpy(m))
    assert out["logits"].shape == (3, 2) and gpu.launches == 2
    np.testing.assert_allclose(out["logits"], ref[0].numpy(), atol=1e-5)


def test_trt_runner_refuses_a_manifest_batch_above_the_engine(student, tmp_path, gpu):
    engine = write_engine(student, tmp_path / "m.engine", max_batch=2, manifest_max_batch=8)
    r = load_runner(engine)
    with pytest.raises(ManifestError, match="max_batch 8.*at most 2"):
        r.activate()
    assert not r.is_active and gpu.mem == {} and gpu.pinned == {}


def test_trt_failed_activation_releases_the_pycuda_context(student, tmp_path, monkeypatch):
    gpu = standins.FakeGpu()
    mods = standins.install(monkeypatch, gpu, ("pycuda",))
    engine = write_engine(student, tmp_path / "bad.engine")
    engine.write_bytes(b"not an engine")
    _edit_manifest(engine)
    r = load_runner(engine)
    with pytest.raises(ManifestError, match="could not deserialise"):
        r.activate()
    assert mods["pycuda"].context_stack() == [] and mods["pycuda"].state["retained"] == 0


def test_trt_non_finite_output_is_an_error_not_an_answer(student, tmp_path, gpu):
    engine = write_engine(student, tmp_path / "nan.engine", nan_rows=(1,))
    f, m = inputs(3)
    with load_runner(engine) as r:
        with pytest.raises(RunnerOutputError, match=r"NaN/inf values in 'logits' \(batch rows \[1\]\)"):
            r.infer(f, m)
        r.infer(f[:1], m[:1])  # row 0 is fine: the runner stays usable


def test_cuda_binding_auto_prefers_pycuda(standin_engine, monkeypatch):
    standins.install(monkeypatch, standins.FakeGpu(), ("pycuda", "cuda-python"))
    with load_runner(standin_engine) as r:
        assert r.cuda.name == "pycuda"
    standins.install(monkeypatch, standins.FakeGpu(), ("cuda-python",))
    with load_runner(standin_engine) as r:
        assert r.cuda.name == "cuda-python"


def test_cuda_binding_missing_or_unknown(standin_engine, monkeypatch):
    with pytest.raises(RunnerOptionError, match=r"cuda_binding .*\['auto', 'pycuda', 'cuda-python'\].*'cupy'"):
        load_runner(standin_engine, cuda_binding="cupy")
    standins.install(monkeypatch, standins.FakeGpu(), ("cuda-python",))
    with pytest.raises(BackendUnavailableError, match=r"pycuda does not import.*JetPack"):
        load_runner(standin_engine, cuda_binding="pycuda").activate()
    standins.install(monkeypatch, standins.FakeGpu(), ())
    with pytest.raises(BackendUnavailableError, match="neither CUDA binding imports.*pycuda.*cuda-python"):
        load_runner(standin_engine).activate()


@pytest.mark.parametrize("binding", ["pycuda", "cuda-python"])
def test_trt_missing_device_is_backend_unavailable(standin_engine, monkeypatch, binding):
    standins.install(monkeypatch, standins.FakeGpu(device_count=0), (binding,))
    with pytest.raises(BackendUnavailableError, match="trt"):
        load_runner(standin_engine, cuda_binding=binding).activate()


# --- options are checked when the runner is built ------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "ort", "executorch", "trt"])
@pytest.mark.parametrize("options, match", [
    ({"threads": 0}, r"threads=0 is out of range"),
    ({"threads": 10 ** 6}, r"threads=1000000 is out of range"),
    ({"threads": "2"}, r"threads='2' must be a whole number"),
    ({"threads": True}, r"threads=True must be a whole number"),
    ({"device": "gpu"}, r"option device .*'gpu'"),
    ({"batch_policy": "drop"}, r"batch_policy must be one of \['split', 'reject'\]"),
    ({"optimisation": "all"}, r"\['optimisation'\] are not options of the \w+ runner"),
])
def test_bad_runner_options_raise_a_pinlite_error_naming_them(student, standin_engine, backend, options, match,
                                                             request):
    path = {"torch": student["torch"], "ort": student["ort"], "trt": standin_engine}.get(backend)
    if backend == "executorch":
        path = request.getfixturevalue("standin_pte")[0]
    with pytest.raises(RunnerOptionError, match=match):
        load_runner(path, **options)


def test_good_thread_counts_are_accepted(student):
    for threads in (None, 1, os.cpu_count()):
        assert load_runner(student["ort"], threads=threads).threads == threads


# --- thread counts are restored -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "executorch"])
def test_torch_threads_restored_on_deactivate(student, backend, request):
    """torch's runner sets torch's thread count while active; ExecuTorch's leaves it alone (its own threadpool:
    test_executorch_threads_size_executorch_s_own_threadpool)."""
    path = student["torch"] if backend == "torch" else request.getfixturevalue("standin_pte")[0]
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        with load_runner(path, threads=wanted) as r:
            r.infer(*inputs(1))
            assert torch.get_num_threads() == (wanted if backend == "torch" else before)
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_threads_restored_after_a_failed_activation(student, tmp_path):
    """A failed activation leaves the process's thread count as it was."""
    before = torch.get_num_threads()
    p = tmp_path / "bad.pte"
    p.write_bytes(b"not a program")
    write_manifest(p, student_manifest(student["model"], "pte", "executorch", dynamic_batch=False, max_batch=1))
    if not HAS_EXECUTORCH:
        pytest.skip("executorch is not installed")
    with pytest.raises(ManifestError, match="ExecuTorch cannot load"):
        load_runner(p, threads=1 if before != 1 else 2).activate()
    assert torch.get_num_threads() == before


def test_a_torch_runner_dropped_while_active_gives_the_thread_count_back(student):
    """An app that drops its Detector (or runner) without close() left torch on the runner's count for good, and a
    later runner's close() then restored that stale count."""
    import gc

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        runner = load_runner(student["torch"], threads=wanted)
        runner.activate()
        assert torch.get_num_threads() == wanted
        del runner
        gc.collect()
        assert torch.get_num_threads() == before
        with load_runner(student["torch"], threads=wanted):
            pass
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_a_thread_count_the_host_sets_while_a_runner_is_active_is_kept(student):
    before = torch.get_num_threads()
    wanted, hosts = (1, 2) if before != 1 else (2, 1)
    try:
        with load_runner(student["torch"], threads=wanted):
            torch.set_num_threads(hosts)
        assert torch.get_num_threads() == hosts
        with load_runner(student["torch"], threads=wanted):  # a later runner restores the host's new count
            assert torch.get_num_threads() == wanted
        assert torch.get_num_threads() == hosts
    finally:
        torch.set_num_threads(before)


class _CountingTorch:
    """torch's thread-count API alone, for ThreadRequests."""

    def __init__(self, count: int):
        self.count = count

    def get_num_threads(self) -> int:
        return self.count

    def set_num_threads(self, count: int) -> None:
        self.count = count


def test_a_count_the_host_sets_between_two_holds_is_the_one_come_back_to():
    from pinlite_edge.runtimes.torch.loader import ThreadRequests

    torch_, registry = _CountingTorch(8), ThreadRequests()
    a = registry.hold(torch_, 2)
    torch_.set_num_threads(3)  # the host, while a runner holds 2
    b = registry.hold(torch_, 4)
    registry.release(torch_, b)
    assert torch_.count == 2
    registry.release(torch_, a)
    assert torch_.count == 3  # it was 8, the count from before the host's


def test_the_garbage_collectors_release_never_waits_for_the_lock():
    """The collector can run a dropped runner's finaliser inside hold() or release() on the same thread, which holds
    the registry's (non-reentrant) lock: waiting for it there hung for good. The release is made by the next call."""
    from pinlite_edge.runtimes.torch.loader import ThreadRequests

    torch_, registry = _CountingTorch(8), ThreadRequests()
    a, b = registry.hold(torch_, 2), registry.hold(torch_, 4)
    with registry._lock:  # as inside hold() when the collector runs
        registry.release_from_gc(torch_, b)
    assert torch_.count == 4  # not yet
    registry.release(torch_, a)
    assert torch_.count == 8 and not registry._held


def test_a_release_on_another_thread_restores_the_count():
    """torch's count is read per OS thread: a runner held on a worker thread and closed on the main one read the
    main thread's count, took it for the host's, and left new threads on the runner's count."""
    import threading

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    from pinlite_edge.runtimes.torch.loader import THREAD_REQUESTS

    request: list[int | None] = []
    worker = threading.Thread(target=lambda: request.append(THREAD_REQUESTS.hold(torch, wanted)))
    worker.start()
    worker.join()
    try:
        THREAD_REQUESTS.release(torch, request[0])
        seen: list[int] = []
        fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
        assert seen == [before] and torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_loading_a_checkpoint_leaves_the_hosts_torch_rng_alone(student):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    with load_runner(student["torch"]) as r:
        r.infer(*inputs(1))
    assert torch.equal(torch.rand(4), expected)


# --- outputs are checked ------------------------------------------------------------------------------------------
def test_torch_nan_output_raises(student):
    from pinlite_edge.runtimes.torch import TorchRunner

    model = create_student("tiny", pretrained=False).eval()
    model.register_forward_hook(lambda mod, args, out: out._replace(attention=out.attention * float("nan")))
    with TorchRunner.from_model(model, threads=1) as r, \
            pytest.raises(RunnerOutputError, match=r"in 'attention' \(batch rows \[0, 1\]\)"):
        r.infer(*inputs(2))


# --- memory is never sampled inside the timed call ----------------------------------------------------------------
def test_infer_does_not_sample_memory(student, monkeypatch):
    from pinlite_edge.runtimes import base

    calls = []
    monkeypatch.setattr(base, "_process_rss", lambda: calls.append(1) or 123)
    with load_runner(student["ort"], threads=1) as r:
        after_activate = len(calls)
        for _ in range(3):
            r.infer(*inputs(1))
        assert len(calls) == after_activate
        assert r.sample_memory() == 123 and len(calls) == after_activate + 1
    assert r.peak_memory_bytes == 123


# --- the real cuda-python (installed beside torch) ----------------------------------------------------------------
def _real_cuda_python():
    try:
        from cuda.bindings import runtime
    except ImportError:
        pytest.skip("cuda-python (cuda.bindings) is not installed here: pip install 'pinlite-edge[tensorrt]'")
    return runtime


def test_cuda_python_standin_and_binding_use_names_the_real_library_has():
    """Every runtime-API name the binding calls, and every one the stand-in provides, exists in the real
    cuda.bindings.runtime (so neither invented an API)."""
    import inspect

    from pinlite_edge.runtimes.trt import cuda as cuda_mod

    rt = _real_cuda_python()
    called = set(__import__("re").findall(r"cudart\.(cuda\w+)", inspect.getsource(cuda_mod.CudaPythonBinding)))
    standin = {n for n in vars(standins.cuda_python_module(standins.FakeGpu())) if n.startswith("cuda")}
    assert called and called <= standin
    missing = sorted(n for n in called | standin if not hasattr(rt, n))
    assert not missing, f"not in the real cuda.bindings.runtime: {missing}"
    for kind in ("cudaMemcpyHostToDevice", "cudaMemcpyDeviceToHost"):
        assert int(getattr(rt.cudaMemcpyKind, kind)) == int(getattr(standins.cudaMemcpyKind, kind))


def test_real_cuda_python_without_a_gpu_is_backend_unavailable(standin_engine, monkeypatch):
    rt = _real_cuda_python()
    if int(rt.cudaSetDevice(0)[0]) == 0:
        pytest.skip("a CUDA device works here: the no-driver path cannot be exercised")
    monkeypatch.setitem(sys.modules, "tensorrt", standins.tensorrt_module(standins.FakeGpu()))
    with pytest.raises(BackendUnavailableError, match=r"cudaSetDevice\(0\) failed: .*cudaError.*NVIDIA GPU"):
        load_runner(standin_engine, cuda_binding="cuda-python").activate()


def test_runtime_suffix_table_agrees_with_the_format_table():
    """runtimes/ cannot import export/ (a runner needs no exporter), so it keeps its own suffix -> backend map; it
    must agree with export/formats.py on every format."""
    from pinlite_edge.export.formats import FORMATS
    from pinlite_edge.runtimes import BACKENDS
    from pinlite_edge.runtimes.artifact import RUNTIME_ALIASES, SUFFIX_BACKENDS

    for fmt in FORMATS.values():
        ext = "." + fmt.suffix.rsplit(".", 1)[-1]
        assert SUFFIX_BACKENDS[ext] == RUNTIME_ALIASES[fmt.runtime] == fmt.runtime, fmt.name
        assert fmt.runtime in BACKENDS


@pytest.mark.parametrize("binding", ["cuda-python", "pycuda"])
def test_a_trt_runner_shared_by_threads_gives_each_caller_its_own_outputs(student, standin_engine, monkeypatch,
                                                                          binding):
    """A Detector may score from several threads. The TensorRT runner's execution context, stream and pinned
    buffers are shared, and CUDA's current device/context is per thread: unguarded, concurrent calls returned other
    callers' outputs and failed CUDA calls (the stand-ins' stream runs 2 ms after the enqueue, as a GPU's does)."""
    import threading
    import time

    gpu = standins.FakeGpu()
    standins.install(monkeypatch, gpu, (binding,))
    synchronize = gpu.synchronize

    def slow_synchronize(handle):
        time.sleep(0.002)
        synchronize(handle)

    gpu.synchronize = slow_synchronize
    data = [inputs(1, seed=100 + i) for i in range(4)]
    with load_runner(standin_engine, cuda_binding=binding) as runner:
        expected = [runner.infer(*d)["logits"].copy() for d in data]
        wrong, errors = [], []

        def work(i: int) -> None:
            for _ in range(8):
                try:
                    out = runner.infer(*data[i])["logits"]
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    errors.append(repr(exc))
                    return
                if not np.allclose(out, expected[i], atol=1e-5):
                    wrong.append(i)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(data))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors and not wrong, (errors[:2], len(wrong))


def test_torch_runners_share_the_process_thread_count_in_any_close_order(tmp_path):
    """Each torch runner saved and restored "the previous" thread count: closing A (1 thread) while B (3) was open
    left B on 2, and closing B then left the process on 1 thread for good."""
    from pinlite_edge.runtimes import load_runner

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    original = torch.get_num_threads()
    a = load_runner(ckpt, threads=1).activate()
    b = load_runner(ckpt, threads=3).activate()
    try:
        assert torch.get_num_threads() == 3
        a.deactivate()
        assert torch.get_num_threads() == 3  # B is still open and asked for 3
    finally:
        a.deactivate()
        b.deactivate()
    assert torch.get_num_threads() == original


def test_a_torch_model_run_multithreaded_before_a_fork_still_answers_in_the_child(tmp_path):
    """gunicorn --preload / celery prefork: a checkpoint Detector warmed up on several threads, then os.fork(); the
    child's first inference hung for ever in torch's OpenMP pool. Children now run torch on one thread."""
    import subprocess

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_student("tiny", pretrained=False), {})
    script = tmp_path / "fork.py"
    script.write_text(
        "import os, sys, numpy as np\n"
        "from pinlite_edge.runtimes import load_runner\n"
        "from pinlite_edge.contract import TINY_CONTRACT as C\n"
        "r = load_runner(sys.argv[1], threads=2).activate()\n"
        "f = np.random.default_rng(0).standard_normal((4, *C.frames_shape())).astype(np.float32)\n"
        "m = np.random.default_rng(1).standard_normal((4, *C.mfcc_shape())).astype(np.float32)\n"
        "parent = r.infer(f, m)['logits']\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    child = r.infer(f, m)['logits']\n"
        "    os._exit(0 if np.allclose(child, parent, atol=1e-5) else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('child', os.waitstatus_to_exitcode(status))\n")
    proc = subprocess.run([sys.executable, str(script), str(ckpt)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "child 0" in proc.stdout, proc.stdout + proc.stderr
