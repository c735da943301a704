"""The CUDA paths on a real NVIDIA GPU: the TensorRT runner's CUDA bindings (without TensorRT), torch CUDA inference
through the runner contract, and AMP training. Each test skips with its reason where the GPU or library is missing;
``benchmarks/cuda_paths.py`` runs them on a GPU machine and records what they saw."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pinlite_edge.runtimes.trt import cuda as cuda_bindings

pytestmark = pytest.mark.gpu

HAVE_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAVE_CUDA, reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")


def _imports(load) -> bool:
    """Whether the TensorRT runner's own import of a CUDA binding succeeds here."""
    try:
        load()
    except ImportError:
        return False
    return True


BINDINGS = [
    pytest.param("cuda-python", marks=pytest.mark.skipif(not _imports(cuda_bindings._import_cuda_python),
                                                         reason="cuda-python is not installed")),
    pytest.param("pycuda", marks=pytest.mark.skipif(not _imports(cuda_bindings._import_pycuda),
                                                    reason="pycuda is not installed")),
]


@needs_cuda
@pytest.mark.parametrize("binding_name", BINDINGS)
def test_cuda_binding_round_trip_on_the_gpu(binding_name):
    """What the TensorRT runner does around ``execute_async_v3``: open the device, page-locked host buffers, device
    buffers, async copies both ways on a stream, events for timing, free everything."""
    from pinlite_edge.runtimes.trt.cuda import select_binding

    b = select_binding(binding_name)
    name, capability = b.open(0)
    try:
        assert name == torch.cuda.get_device_name(0)
        assert capability == "{}.{}".format(*torch.cuda.get_device_capability(0))
        free, total = b.mem_get_info()
        assert 0 < free <= total
        src = b.alloc_host((3, 1000), np.float32)
        dst = b.alloc_host((3, 1000), np.float32)
        src[...] = np.arange(3000, dtype=np.float32).reshape(3, 1000)
        dst[...] = -1
        ptr = b.alloc(src.nbytes)
        stream = b.stream_create()
        start, end = b.event_create(), b.event_create()
        b.event_record(start, stream)
        b.memcpy_htod_async(ptr, src, stream)
        b.memcpy_dtoh_async(dst, ptr, stream)
        b.event_record(end, stream)
        b.stream_synchronize(stream)
        assert isinstance(b.stream_handle(stream), int)
        assert b.event_elapsed_ms(start, end) >= 0.0
        np.testing.assert_array_equal(dst, src)
        for e in (start, end):
            b.event_destroy(e)
        b.stream_destroy(stream)
        b.free(ptr)
        b.free_host(src)
        b.free_host(dst)
    finally:
        b.close()


@needs_cuda
def test_torch_runner_on_cuda_matches_cpu(tmp_path):
    """The torch runner on ``device="cuda"`` gives the CPU's logits and attention (float32 on both)."""
    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student
    from pinlite_edge.runtimes import load_runner

    torch.manual_seed(0)
    model = create_student("tiny").eval()
    path = save_checkpoint(tmp_path / "best.safetensors", model, {"note": "random init for the CUDA test"})
    c = model.config.contract
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(2, *c.frames_shape(), generator=g).numpy()
    mfcc = torch.randn(2, *c.mfcc_shape(), generator=g).numpy()
    outs = {}
    for device in ("cpu", "cuda"):
        runner = load_runner(path, device=device)
        with runner:
            outs[device] = runner.infer(frames, mfcc)
    for key in outs["cpu"]:
        np.testing.assert_allclose(outs["cuda"][key], outs["cpu"][key], atol=2e-3, rtol=1e-3, err_msg=key)


@needs_cuda
def test_amp_training_runs_and_says_so(tmp_path):
    """One short AMP epoch on the GPU: the record says the device and that AMP ran, and the loss is finite."""
    import json

    from pinlite_edge.training.__main__ import main

    import warnings

    out = tmp_path / "teacher"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(["teacher", "--data", "synthetic", "--data-option", "num_train=64", "--data-option", "num_val=32",
                   "--data-option", "num_test=8", "--preset", "tiny", "--epochs", "1", "--batch-size", "16",
                   "--device", "cuda", "--output", str(out), "--no-progress"])
    assert rc in (0, None)
    # an overflowing first AMP step is skipped by GradScaler: the scheduler must wait for it, not warn
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    record = json.loads((out / "last.json").read_text())
    assert record["runtime"]["device"].startswith("cuda")
    assert record["runtime"]["amp"] is True
    assert record["history"][-1]["cuda_peak_mb"] > 0
    assert np.isfinite(record["history"][-1]["train_loss"])
