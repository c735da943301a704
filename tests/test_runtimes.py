"""Runner contract over every backend available here (torch, onnxruntime, ExecuTorch; TensorRT skips)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pinlite_edge.checkpoint import save_checkpoint
from pinlite_edge.contract import OUTPUT_NAMES, TINY_CONTRACT
from pinlite_edge.errors import BackendUnavailableError, CheckpointError, InputError, ManifestError
from pinlite_edge.manifest import Manifest, manifest_path_for, write_manifest
from pinlite_edge.models import create_student
from pinlite_edge.runtimes import Comparator, RunnerStateError, load_runner

HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
C = TINY_CONTRACT


def export_onnx(checkpoint: Path, out_dir: Path) -> Path:
    from pinlite_edge.export import export_model

    return export_model(checkpoint, "onnx", out_dir).artifact


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


@pytest.fixture(scope="module")
def standin_pte(student, tmp_path_factory):
    if not HAS_EXECUTORCH:
        pytest.skip("executorch is not installed (pip install pinlite-edge[executorch])")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module = StandIn().eval()
    ex = (torch.randn(1, *C.frames_shape()), torch.randn(1, *C.mfcc_shape()))
    prog = to_edge_transform_and_lower(torch.export.export(module, ex),
                                       partitioner=[XnnpackPartitioner()]).to_executorch()
    path = tmp_path_factory.mktemp("pte") / "standin.pte"
    path.write_bytes(prog.buffer)
    write_manifest(path, student_manifest(student["model"], "pte", "executorch", dynamic_batch=False, max_batch=1))
    return path, module


def inputs(batch: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, *C.frames_shape())).astype(np.float32),
            rng.standard_normal((batch, *C.mfcc_shape())).astype(np.float32))


@pytest.fixture(params=["torch", "ort", "executorch", "trt"])
def runner(request, student):
    if request.param == "trt":
        pytest.skip("TensorRT cannot run here: no GPU and no TensorRT (it ships with JetPack / NVIDIA's index)")
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
    assert info.precision == "fp32" and info.device == "cpu" and info.preset == "tiny"
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
    np.testing.assert_allclose(one["logits"][0], full["logits"][1], atol=1e-5)
    np.testing.assert_allclose(one["attention"][0], full["attention"][1], atol=1e-5)


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
    mp = manifest_path_for(path)
    d = json.loads(mp.read_text())
    d.update(changes)
    mp.write_text(json.dumps(d))


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


def test_runtime_and_suffix_must_agree(student, tmp_path):
    p = _copy(student["ort"], tmp_path)
    _edit_manifest(p, runtime="executorch")
    with pytest.raises(ManifestError, match="runtime 'executorch'"):
        load_runner(p)
    with pytest.raises(ManifestError, match="not a executorch"):
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
    with pytest.raises(BackendUnavailableError, match="JetPack"):
        r.activate()


def test_missing_ort_provider_is_not_a_silent_fallback(student):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        load_runner(student["ort"], device="cuda").activate()


@pytest.mark.skipif(not HAS_TENSORRT, reason="TensorRT is not installed (JetPack / NVIDIA's index); GPU test")
def test_tensorrt_importable_here():  # pragma: no cover - only on a TensorRT machine
    import tensorrt  # noqa: F401


# --- TensorRT target checks (pure logic, run everywhere) -------------------------------------------------------
def test_engine_target_checks():
    from pinlite_edge.runtimes.trt_runner import check_engine_target

    target = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu_name": "Orin"}
    assert check_engine_target(target, trt_version="10.3.0.26", compute_capability="8.7", gpu_name="Orin") == []
    with pytest.raises(ManifestError, match="TensorRT 10.3.0, this machine has 10.7"):
        check_engine_target(target, trt_version="10.7.0", compute_capability="8.7", gpu_name="Orin")
    with pytest.raises(ManifestError, match="compute capability 8.7"):
        check_engine_target(target, trt_version="10.3.1", compute_capability="9.0", gpu_name="H100")
    warn = check_engine_target(target, trt_version="10.3.0", compute_capability="8.7", gpu_name="Orin Nano")
    assert warn and "Orin Nano" in warn[0]
    compat = dict(target, version_compatible=True)
    check_engine_target(compat, trt_version="10.7.0", compute_capability="8.7", gpu_name="Orin")
    with pytest.raises(ManifestError, match="no tensorrt_version"):
        check_engine_target({}, trt_version="10.3", compute_capability="8.7", gpu_name="x")
