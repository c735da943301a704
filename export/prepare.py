"""What every export format shares: the export copy of the model, the precision plan, the FP32 ONNX source.

ONNX, TensorRT and ExecuTorch formats all start here (``onnx_formats``, ``tensorrt``, ``executorch``); the example
inputs come from :func:`pinlite_edge.models.inputs.example_inputs`, the package's one definition.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from pinlite_edge.errors import ExportError
from pinlite_edge.export.api import ExportContext
from pinlite_edge.export.plan import FloatEntry, PrecisionPlan, build_plan
from pinlite_edge.export.rewrite import rewrite_gru


class TupleOutputs(nn.Module):
    """Wrap the model so exporters see a plain tuple (logits, offset_logits, attention). Its attribute ``model`` is
    the export root the precision plan's node scopes start from (``plan.EXPORT_ROOT``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(frames, mfcc)
        return out.logits, out.offset_logits, out.attention


def prepare_for_export(model: nn.Module, gru: str = "native") -> nn.Module:
    """An eval-mode CPU copy of ``model`` (with the GRU rewritten as matmuls when ``gru == "matmul"``)."""
    model = copy.deepcopy(model).cpu().eval()
    if gru == "matmul":
        model = rewrite_gru(model, inplace=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_plan(ctx: ExportContext, precision: str, mode: str, extra: Sequence[FloatEntry] = ()) -> PrecisionPlan:
    """Fixed float layers (+ ``extra``) + (when asked) the measured sensitivity table and the ``keep_float`` most
    sensitive layers not already float."""
    o = ctx.options
    rows = []
    if o.sensitivity:
        from pinlite_edge.export.sensitivity import layer_sensitivity

        cal = ctx.calibration().subset(o.sensitivity_size)
        rows = layer_sensitivity(ctx.model, cal, mode=mode, progress=ctx.progress)
    try:
        return build_plan(ctx.model, precision, rows, o.keep_float, sensitivity_mode=mode if rows else None,
                          extra=extra)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def write_fp32_onnx(ctx: ExportContext, path: Path, exporter: str = "classic") -> None:
    """The FP32 ONNX of ``ctx``'s model at ``path`` (not atomic): the source of every ONNX-derived format."""
    from pinlite_edge.export.onnx_export import export_onnx_fp32

    o = ctx.options
    model = prepare_for_export(ctx.model, o.gru)
    export_onnx_fp32(model, path, opset=o.opset, exporter=exporter, dynamic_batch=o.dynamic_batch, batch=o.batch)
