"""ExecuTorch .pte export (tiny preset).

The FP32 round trip runs in the default suite: with the batched matmul GRU the tiny student lowers in ~56 s of CPU
time (torch.export + to_edge_transform_and_lower + to_executorch, measured with ``process_time`` on the shared 2-core
box; wall time is longer when the box is loaded). The INT8 round trip (PT2E calibration on top, ~200 s CPU with the
previous GRU) stays ``slow``: run it with ``pytest -m slow``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pinlite_edge.export import export_from_model
from pinlite_edge.export.calibration import from_arrays
from pinlite_edge.manifest import read_manifest

pytest.importorskip("executorch", reason="executorch not installed (pip install 'pinlite-edge[executorch]')")


def _inputs(model, n=1, seed=5):
    g = torch.Generator().manual_seed(seed)
    c = model.config.contract
    return torch.randn(n, *c.frames_shape(), generator=g), torch.randn(n, *c.mfcc_shape(), generator=g)


def test_pte_rejects_onnx_options(student, tmp_path):
    from pinlite_edge.errors import ExportError

    with pytest.raises(ExportError, match="does not take"):
        export_from_model(student, "pte", tmp_path, opset=18)


def test_pte_fp32_roundtrip(student, tmp_path):
    from pinlite_edge.export.executorch import run_pte

    res = export_from_model(student, "pte", tmp_path)
    man = read_manifest(res.artifact)
    assert man.runtime == "executorch" and man.dynamic_batch is False and man.max_batch == 1
    assert man.extra["delegation"]["delegated_subgraphs"] >= 1
    assert "aten_convolution_default" in man.extra["delegation"]["delegated_ops"]
    frames, mfcc = _inputs(student)
    with torch.no_grad():
        ref = student(frames, mfcc)
    logits, _, attention = run_pte(res.artifact, frames.numpy(), mfcc.numpy())
    assert np.abs(logits - ref.logits.numpy()).max() <= 1e-4
    assert np.abs(attention - ref.attention.numpy()).max() <= 1e-4
    # the second method: one frames row with the offset scan's 7 mfcc rows, the frames encoded once, read back
    assert man.extra["shared_frames"] == {"method": "forward_shared", "frames_rows": 1, "mfcc_rows_per_frames_row": 7}
    assert max(man.extra["torch_parity_max_abs_forward_shared"].values()) <= 1e-4
    _, shifted = _inputs(student, 7, seed=6)
    from pinlite_edge.runtimes import load_runner

    with load_runner(res.artifact, threads=1) as runner:
        assert runner.shares_frames and runner.frames_shared_for(7) and not runner.frames_shared_for(3)
        calls = []
        impl = runner.infer_impl
        runner.infer_impl = lambda f, m: (calls.append((len(f), len(m))), impl(f, m))[1]
        out = runner.infer(np.repeat(frames.numpy(), 2, axis=0), np.concatenate([shifted.numpy()] * 2))
        assert calls == [(1, 7), (1, 7)]  # static batch 1: one window per call, its 7 rows in one
        shorter = runner.infer(frames.numpy(), shifted.numpy()[:3])  # another k: the frames repeated, forward
        assert calls[2:] == [(1, 1)] * 3
    with torch.no_grad():
        ref7 = student(frames.repeat(7, 1, 1, 1, 1), shifted)
    np.testing.assert_allclose(out["logits"][:7], ref7.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(out["logits"][7:], ref7.logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(shorter["logits"], ref7.logits.numpy()[:3], atol=1e-4)


def test_pte_without_a_shared_method_repeats_the_frames(student, tmp_path):
    """shared_rows=1: one method, as before; the runner repeats frames for every k."""
    from pinlite_edge.runtimes import load_runner

    res = export_from_model(student, "pte", tmp_path, shared_rows=1)
    assert read_manifest(res.artifact).extra["shared_frames"] is None
    frames, _ = _inputs(student)
    _, shifted = _inputs(student, 7, seed=6)
    with load_runner(res.artifact, threads=1) as runner:
        assert not runner.shares_frames and not runner.frames_shared_for(7)
        out = runner.infer(frames.numpy(), shifted.numpy())
    with torch.no_grad():
        ref = student(frames.repeat(7, 1, 1, 1, 1), shifted)
    np.testing.assert_allclose(out["logits"], ref.logits.numpy(), atol=1e-4)


@pytest.mark.slow
def test_pte_int8_runs_with_plan(student, tmp_path):
    from pinlite_edge.export.executorch import run_pte

    frames, mfcc = _inputs(student, 8, seed=9)
    cal = from_arrays(frames.numpy(), mfcc.numpy())
    res = export_from_model(student, "pte-int8", tmp_path, calibration=cal, calib_size=8, sensitivity_size=4)
    man = read_manifest(res.artifact)
    assert man.precision == "int8"
    assert any(e["kind"] == "gru" for e in man.precision_plan["float_layers"])
    f1, m1 = _inputs(student, 1, seed=11)
    with torch.no_grad():
        ref = student(f1, m1)
    logits, _, attention = run_pte(res.artifact, f1.numpy(), m1.numpy())
    assert np.abs(attention - ref.attention.numpy()).max() < 0.05
    assert man.extra["shared_frames"]["mfcc_rows_per_frames_row"] == 7
    assert "exported_program_forward_shared" in man.precision_plan["graph_precision"]
    assert np.allclose(attention.sum(-1), 1.0, atol=1e-3)
    # the XNNPACK delegate holds the quantized convolutions / linears; the GRU and softmax stay float
    delegation = man.extra["delegation"]
    assert "quantized_decomposed_dequantize_per_channel_default" in delegation["delegated_ops"]
    assert not any(op.startswith("quantized_decomposed") for op in delegation["non_delegated_ops"])
