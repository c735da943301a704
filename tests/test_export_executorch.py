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
    assert np.allclose(attention.sum(-1), 1.0, atol=1e-3)
    # the XNNPACK delegate holds the quantized convolutions / linears; the GRU and softmax stay float
    delegation = man.extra["delegation"]
    assert "quantized_decomposed_dequantize_per_channel_default" in delegation["delegated_ops"]
    assert not any(op.startswith("quantized_decomposed") for op in delegation["non_delegated_ops"])
