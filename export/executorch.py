"""ExecuTorch ``.pte`` export (SPEC §6): XNNPACK delegate, static batch; INT8 through PT2E (XNNPACKQuantizer).

The GRU is rewritten as explicit matmuls first (``rewrite.MatmulGRU``, same weights, parity checked): ``nn.GRU`` is
unrolled into portable kernels at the edge stage, lowers slowly (minutes when quantized) and breaks INT8 PT2E at
``to_executorch``; the matmul GRU (both directions in one batched recurrence) lowers to XNNPACK. Measured CPU time
for the tiny student (64 audio steps), 2-core box: FP32 ~56 s (torch.export 3 s, to_edge_transform_and_lower 50 s,
to_executorch 2.5 s); INT8 adds PT2E prepare/calibrate/convert. In INT8 the GRU, the softmax (never annotated by the
XNNPACK quantizer), the attention matmuls and the plan's other float layers stay float.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Any

import numpy as np
import torch

from pinlite_edge.errors import BackendUnavailableError, ExportError
from pinlite_edge.export.api import ExportContext, HandlerOutput
from pinlite_edge.export.plan import EXPORT_ROOT, FloatEntry, PrecisionPlan
from pinlite_edge.export.prepare import TupleOutputs, make_plan, prepare_for_export
from pinlite_edge.models.inputs import example_inputs
from pinlite_edge.runtimes.artifact import import_backend_module
from pinlite_edge.runtimes.executorch.loader import register_quantized_kernels
from pinlite_edge.utils.atomic import atomic_path

log = logging.getLogger(__name__)


def _require_executorch() -> None:
    """ExecuTorch with its XNNPACK backend, or BackendUnavailableError with the runtimes' install hint."""
    import_backend_module("executorch", "executorch.backends.xnnpack.partition.xnnpack_partitioner")


def _delegation(edge, method: str = "forward") -> dict[str, Any]:
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program(method).graph_module)
    by_op = {k: {"delegated": v.delegated, "non_delegated": v.non_delegated}
             for k, v in sorted(info.delegation_by_operator.items())}
    return {"backend": "XnnpackBackend", "delegated_subgraphs": info.num_delegated_subgraphs,
            "delegated_nodes": info.num_delegated_nodes, "non_delegated_nodes": info.num_non_delegated_nodes,
            "delegated_ops": sorted(k for k, v in by_op.items() if v["delegated"]),
            "non_delegated_ops": sorted(k for k, v in by_op.items() if v["non_delegated"]), "by_operator": by_op}


def _quantize_pt2e(wrapped: torch.nn.Module, example: tuple, plan: PrecisionPlan, cal,
                   rows_per_frames: int = 1) -> torch.nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = torch.export.export(wrapped, example, strict=False).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    # set_module_name(name, None) asserts in executorch 1.5, but the annotator supports a None entry (it skips the
    # module and keeps it out of the global config): write the documented mapping directly.
    if not isinstance(getattr(quantizer, "module_name_config", None), dict):
        raise ExportError("this executorch XNNPACKQuantizer has no module_name_config; cannot keep layers float")
    # An entry limited to some op types (the attention module's own MatMul/Mul/Add) keeps those float while the
    # projections inside it that the plan quantizes (blocks.0.attn.v_proj) get the global config, listed first: the
    # quantizer annotates module_name_config in insertion order and skips nodes already annotated.
    global_config = get_symmetric_quantization_config(is_per_channel=True)
    for entry in plan.float_layers:
        if entry.ops is not None:
            for layer in plan.quantized_layers:
                if layer.startswith(entry.module + "."):
                    quantizer.module_name_config[f"{EXPORT_ROOT}.{layer}"] = global_config
    for entry in plan.float_layers:
        quantizer.module_name_config[f"{EXPORT_ROOT}.{entry.module}"] = None
    prepared = prepare_pt2e(graph, quantizer)
    batch = example[0].shape[0]
    with torch.no_grad():  # the same clips for every method: each window's mfcc repeated for a shared method
        for frames, mfcc in cal.batches(batch):
            if len(frames) == batch:
                prepared(torch.from_numpy(frames), torch.from_numpy(np.repeat(mfcc, rows_per_frames, axis=0)))
    return convert_pt2e(prepared)


def method_examples(model: torch.nn.Module, batch: int, shared_rows: int = 1,
                    seed: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """Example inputs of each method of the program: ``forward`` (``batch`` frames and mfcc rows) and, with
    ``shared_rows > 1``, ``forward_shared`` (the same frames with ``shared_rows`` mfcc rows each)."""
    from pinlite_edge.runtimes.executorch.loader import SHARED_METHOD

    frames, mfcc = example_inputs(model, batch, seed=seed)
    out = {"forward": (frames, mfcc)}
    if shared_rows > 1:
        out[SHARED_METHOD] = (frames, example_inputs(model, batch * shared_rows, seed=seed + 1)[1])
    return {name: tuple(t.contiguous() for t in ex) for name, ex in out.items()}


def lower_to_pte(model: torch.nn.Module, batch: int, plan: PrecisionPlan | None = None,
                 cal=None, shared_rows: int = 1) -> tuple[bytes, dict[str, Any]]:
    """torch.export -> (PT2E INT8) -> to_edge_transform_and_lower(XNNPACK) -> .pte bytes, delegation summary per
    method (:func:`method_examples`: ``forward``, and ``forward_shared`` when ``shared_rows > 1``).

    With an INT8 ``plan``, ``plan.graph_precision["exported_program"]`` (and ``exported_program_forward_shared``)
    records what the quantized program computes node by node (the graph handed to the XNNPACK partitioner: a node with
    int8 inputs and weights becomes an int8 XNNPACK kernel); the export fails if it contradicts the plan."""
    _require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    wrapped = TupleOutputs(prepare_for_export(model, gru="matmul")).eval()
    examples = method_examples(model, batch, shared_rows)
    int8 = plan is not None and plan.precision == "int8"
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            programs = {}
            for name, example in examples.items():
                module = wrapped
                if int8:
                    assert plan is not None
                    register_quantized_kernels()
                    rows = example[1].shape[0] // example[0].shape[0]
                    module = _quantize_pt2e(wrapped, example, plan, cal, rows)
                programs[name] = torch.export.export(module, example, strict=False)
                if int8:
                    assert plan is not None
                    _record_precision(plan, programs[name], name)
            edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
            delegation = {name: _delegation(edge, name) for name in programs}
            buffer = edge.to_executorch().buffer
    except (BackendUnavailableError, ExportError):
        raise
    except Exception as exc:
        raise ExportError(f"ExecuTorch lowering failed: {type(exc).__name__}: {exc}") from exc
    return buffer, delegation


REASON_ATTN_INPUT = ("feeds an attention MatMul: PT2E quantizes a Linear's output, which would put Q/DQ on the "
                     "MatMul's input (the ONNX graph adds the bias after the int8 MatMul, in float)")


def attention_input_entries(model: torch.nn.Module) -> list[FloatEntry]:
    """The q/k/v projections of every attention module: float in the .pte so that the attention MatMuls get FP32
    inputs (XNNPACKQuantizer annotates a Linear's output as quantized)."""
    return [FloatEntry(f"{name}.{proj}", REASON_ATTN_INPUT, "attention_input")
            for name, m in model.named_modules() if hasattr(m, "q_proj") and hasattr(m, "softmax")
            for proj in ("q_proj", "k_proj", "v_proj")]


def _record_precision(plan: PrecisionPlan, program, method: str = "forward") -> None:
    from pinlite_edge.export.graph_precision import executorch_node_precisions, precision_report, require_consistent

    label = "exported_program" if method == "forward" else f"exported_program_{method}"
    nodes = executorch_node_precisions(program.graph_module, root=EXPORT_ROOT)
    report = precision_report(nodes, plan, label, required_kinds=("gru", "softmax", "attention_scores",
                                                                  "attention_matmul", "sync_cue"))
    require_consistent(report, f"the .pte program's {method} method")
    plan.graph_precision[label] = report


def run_pte(path, frames: np.ndarray, mfcc: np.ndarray) -> list[np.ndarray]:
    """Run a .pte's ``forward`` with ``executorch.runtime`` (inputs made contiguous: ``execute`` ignores strides)."""
    from pinlite_edge.runtimes.executorch import loader  # the runtime's program loading (what users run)

    _require_executorch()
    return loader.execute(loader.load_method(path), frames, mfcc)


def _parity(path, model, batch: int, shared_rows: int) -> dict[str, Any]:
    """Max abs difference per output of each method against eager torch, and what the written program's methods
    take, read back from it (``shared_frames``: the forward_shared method's mfcc rows per frames row, or None)."""
    from pinlite_edge.runtimes.executorch import loader

    _require_executorch()
    methods = loader.load_methods(path)
    parity: dict[str, Any] = {}
    # other inputs than the ones the program was traced with
    for name, (frames, mfcc) in method_examples(model, batch, shared_rows, seed=10).items():
        if name not in methods:
            raise ExportError(f"the written program has no {name} method (methods: {sorted(methods)})")
        with torch.no_grad():
            ref = model(frames, mfcc)
        outs = loader.execute(methods[name], frames.numpy(), mfcc.numpy())
        parity[name] = {out: float(np.abs(o - r.numpy()).max()) for out, o, r in zip(ref._fields, outs, ref)}
    shared = None
    if loader.SHARED_METHOD in methods:
        meta = methods[loader.SHARED_METHOD].metadata
        f_rows, m_rows = meta.input_tensor_meta(0).sizes()[0], meta.input_tensor_meta(1).sizes()[0]
        shared = {"method": loader.SHARED_METHOD, "frames_rows": int(f_rows), "mfcc_rows_per_frames_row":
                  int(m_rows) // int(f_rows)}
    return {"parity": parity, "shared_frames": shared}


def _write(ctx: ExportContext, buffer: bytes, batch: int) -> dict[str, Any]:
    with atomic_path(ctx.artifact) as tmp:
        tmp.write_bytes(buffer)
        import shutil

        probe = ctx.work_dir / "probe.pte"  # executorch.runtime wants a .pte path
        shutil.copyfile(tmp, probe)
        checked = _parity(probe, ctx.model, batch, ctx.options.shared_rows)
    return checked


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("executorch", "torchao"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def _extra(delegation: dict[str, Any], checked: dict[str, Any]) -> dict[str, Any]:
    """The manifest's facts: delegation and parity per method, and ``shared_frames`` read back from the program."""
    out: dict[str, Any] = {"delegation": delegation["forward"], "gru": "matmul",
                           "torch_parity_max_abs": checked["parity"]["forward"],
                           "shared_frames": checked["shared_frames"]}
    for name in delegation:
        if name != "forward":
            out[f"delegation_{name}"] = delegation[name]
            out[f"torch_parity_max_abs_{name}"] = checked["parity"][name]
    return out


def export_pte(ctx: ExportContext) -> HandlerOutput:
    batch = ctx.options.batch or 1
    buffer, delegation = lower_to_pte(ctx.model, batch, shared_rows=ctx.options.shared_rows)
    checked = _write(ctx, buffer, batch)
    worst = max(v for p in checked["parity"].values() for v in p.values())
    if worst > 1e-3:
        log.warning(".pte vs torch parity is %s", checked["parity"])
    plan = PrecisionPlan(precision="fp32", notes=["every op FP32; GRU rewritten as matmuls (same weights)"])
    return HandlerOutput(plan=plan, dynamic_batch=False, max_batch=batch, tool_versions=_versions(),
                         extra=_extra(delegation, checked))


def export_pte_int8(ctx: ExportContext) -> HandlerOutput:
    o = ctx.options
    batch = o.batch or 1
    plan = make_plan(ctx, "int8", "int8", extra=attention_input_entries(ctx.model))
    plan.notes.append("softmax and the attention matmuls are not annotated by XNNPACKQuantizer: they stay float")
    buffer, delegation = lower_to_pte(ctx.model, batch, plan, ctx.calibration(), shared_rows=o.shared_rows)
    checked = _write(ctx, buffer, batch)
    return HandlerOutput(plan=plan, dynamic_batch=False, max_batch=batch, tool_versions=_versions(),
                         calibration={**ctx.calibration().describe(), "method": "minmax (PT2E observers)"},
                         extra=_extra(delegation, checked))
