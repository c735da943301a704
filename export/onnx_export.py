"""FP32 ONNX export (SPEC §6): opset >= 17, inputs ``frames``/``mfcc``, three named outputs, dynamic batch.

With a dynamic batch the classic graph has two batch axes: ``batch`` (frames) and ``audio_batch`` (mfcc and the
outputs), so one frames row can serve several mfcc rows and is encoded once (``contract.FRAMES_BATCH_AXIS``: the
offset scan's frame sharing). The dynamo graph keeps one axis for both (torch.export cannot state that one batch is
a multiple of the other): it runs the scan with the frames repeated, as a static-batch artefact does.

Two exporters are offered. Measured on the paper-preset student, batch 1, 1 ORT thread on the 2-core AVX2 dev box,
the classic (TorchScript) graph and the dynamo graph ran at the same speed (~31 ms each; the MobileNetV3 backbone
dominates), while the dynamo export takes 35-60 s instead of ~2 s: ``classic`` is the default. The classic graph's
node names carry the torch module scope, which the precision plan uses to find nodes (``plan.resolve_onnx_nodes``).
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pinlite_edge.contract import AUDIO_BATCH_AXIS, FRAMES_BATCH_AXIS, INPUT_NAMES, OUTPUT_NAMES
from pinlite_edge.errors import ExportError
from pinlite_edge.export.prepare import TupleOutputs
from pinlite_edge.models.inputs import example_inputs

log = logging.getLogger(__name__)


def export_onnx_fp32(model: nn.Module, path: Path, *, opset: int = 17, exporter: str = "classic",
                     dynamic_batch: bool = True, batch: int | None = None) -> None:
    """Write the FP32 ONNX graph of an (already prepared) model to ``path`` (not atomic: callers pass a temp path)."""
    wrapped = TupleOutputs(model).eval()
    # A batch-1 example silently fixes the batch to 1 with dynamo: trace with 2 when the batch is dynamic.
    example_batch = (batch or 1) if not dynamic_batch else 2
    args = example_inputs(model, example_batch)
    names = dict(input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES))
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                dynamic_shapes = None
                if dynamic_batch:
                    bdim = torch.export.Dim("batch", min=1, max=max(batch or 1024, 2))
                    dynamic_shapes = {"frames": {0: bdim}, "mfcc": {0: bdim}}
                program = torch.onnx.export(wrapped, args, dynamo=True, opset_version=max(opset, 18),
                                            dynamic_shapes=dynamic_shapes, verbose=False, **names)
                program.save(str(path))
            else:
                dynamic_axes = {n: {0: FRAMES_BATCH_AXIS if n == INPUT_NAMES[0] else AUDIO_BATCH_AXIS}
                                for n in (*INPUT_NAMES, *OUTPUT_NAMES)} if dynamic_batch else None
                torch.onnx.export(wrapped, args, str(path), opset_version=opset, dynamic_axes=dynamic_axes,
                                  do_constant_folding=True, **names, **_classic_exporter())
    except Exception as exc:  # torch.onnx raises many types; report one clear error
        raise ExportError(f"torch.onnx.export ({exporter}) failed for {path.name}: {type(exc).__name__}: {exc}") from exc
    with torch.no_grad():
        shapes = [tuple(t.shape[1:]) for t in wrapped(*args)]
    out_batch = (AUDIO_BATCH_AXIS if exporter == "classic" else FRAMES_BATCH_AXIS) if dynamic_batch else example_batch
    finalize_graph(path, shapes, out_batch)
    check_onnx(path)


def _classic_exporter() -> dict[str, Any]:
    """The argument that picks the classic (TorchScript) exporter: ``dynamo=False`` where ``torch.onnx.export`` takes
    it (torch 2.4 added it; 2.9 made the dynamo exporter the default), nothing on torch 2.3 (JetPack 6.0's NVIDIA
    build), which has only the classic one and refuses an unknown keyword."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def finalize_graph(path: Path, shapes: list[tuple[int, ...]], batch: int | str) -> None:
    """Output shapes named and static (:func:`fix_output_shapes`), shared-initializer Identity nodes inlined."""
    import onnx

    from pinlite_edge.export.onnx_compact import inline_initializer_identities

    m = onnx.load(str(path))
    fix_output_shapes(m, shapes, batch, path.name)
    n = inline_initializer_identities(m)
    if n:
        log.debug("%s: inlined %d Identity nodes of shared initializers", path.name, n)
    onnx.save(m, str(path))


def fix_output_shapes(m: Any, shapes: list[tuple[int, ...]], batch: int | str, label: str = "the graph") -> None:
    """Name the outputs' batch axis and write their static dims (the classic exporter leaves generated dim names)."""
    for out, shape in zip(m.graph.output, shapes):
        dims = out.type.tensor_type.shape.dim
        values: list[int | str] = [batch, *shape]
        if len(dims) != len(values):
            raise ExportError(f"output {out.name} of {label} has rank {len(dims)}, expected {len(values)}")
        for d, v in zip(dims, values):
            if isinstance(v, str):
                d.dim_param = v
            else:
                d.dim_value = int(v)


def check_onnx(path: Path) -> None:
    """``onnx.checker`` plus the I/O names of the contract."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path} fails onnx.checker: {exc}") from None
    m = onnx.load(str(path), load_external_data=False)
    inputs = [i.name for i in m.graph.input]
    outputs = [o.name for o in m.graph.output]
    if inputs != list(INPUT_NAMES) or outputs != list(OUTPUT_NAMES):
        raise ExportError(f"{path} has inputs {inputs} / outputs {outputs}, expected {INPUT_NAMES} / {OUTPUT_NAMES}")
