"""Format functions for ``onnx``, ``onnx-fp16`` and ``onnx-int8`` (one function per format)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pinlite_edge.errors import ExportError
from pinlite_edge.export.api import ExportContext, HandlerOutput
from pinlite_edge.export.onnx_export import example_inputs, export_onnx_fp32, prepare_for_export
from pinlite_edge.export.plan import PrecisionPlan, build_plan, resolve_onnx_nodes
from pinlite_edge.utils.atomic import atomic_path

log = logging.getLogger(__name__)


def ort_session(path: Path | str, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_parity(path: Path, model, batch: int = 2) -> dict[str, float]:
    """Max abs difference per output between ORT (CPU) on ``path`` and eager torch, on a seeded random batch."""
    import torch

    frames, mfcc = example_inputs(model, batch, seed=1)
    with torch.no_grad():
        ref = model(frames, mfcc)
    outs = ort_session(path).run(None, {"frames": frames.numpy(), "mfcc": mfcc.numpy()})
    return {name: float(np.abs(o - r.numpy()).max()) for name, o, r in zip(ref._fields, outs, ref)}


def _fp32_onnx(ctx: ExportContext, path: Path, exporter: str = "classic") -> None:
    o = ctx.options
    model = prepare_for_export(ctx.model, o.gru)
    export_onnx_fp32(model, path, opset=o.opset, exporter=exporter, dynamic_batch=o.dynamic_batch, batch=o.batch)


def _batch_fields(ctx: ExportContext) -> tuple[bool, int | None]:
    return ctx.options.dynamic_batch, ctx.options.batch


def export_onnx(ctx: ExportContext) -> HandlerOutput:
    """FP32 ONNX with ORT parity checked against eager torch before it is published."""
    o = ctx.options
    with atomic_path(ctx.artifact) as tmp:
        _fp32_onnx(ctx, tmp, exporter=o.exporter)
        parity = ort_parity(tmp, ctx.model)
    if max(parity.values()) > 1e-3:
        log.warning("ORT vs torch parity of %s is %s (expected <= 1e-4)", ctx.artifact, parity)
    dyn, max_batch = _batch_fields(ctx)
    plan = PrecisionPlan(precision="fp32", notes=["every node is FP32"])
    return HandlerOutput(plan=plan, dynamic_batch=dyn, max_batch=max_batch,
                         extra={"exporter": o.exporter, "gru": o.gru, "ort_parity_max_abs": parity,
                                "opset": o.opset})
