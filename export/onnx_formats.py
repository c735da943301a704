"""Format functions for ``onnx``, ``onnx-fp16`` and ``onnx-int8`` (one function per format)."""
from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pinlite_edge.errors import ExportError
from pinlite_edge.export.api import ExportContext, HandlerOutput
from pinlite_edge.export.plan import FloatEntry, PrecisionPlan, resolve_onnx_nodes
from pinlite_edge.export.prepare import make_plan, write_fp32_onnx
from pinlite_edge.models.inputs import example_inputs
from pinlite_edge.utils.atomic import atomic_path

log = logging.getLogger(__name__)


def ort_session(path: Path | str, threads: int = 1):
    """A CPU onnxruntime session built by the runtime's loader (what users run)."""
    from pinlite_edge.runtimes.ort.loader import create_session

    return create_session(path, threads=threads, inter_op_threads=1)


def ort_parity(path: Path, model, batch: int = 2) -> dict[str, float]:
    """Max abs difference per output between ORT (CPU) on ``path`` and eager torch, on a seeded random batch (of
    ``batch`` rows, or of the graph's own size where its batch axis is fixed: ``--static-batch``)."""
    import torch

    fixed = [a for a in input_batch_axes(path) if isinstance(a, int) and a > 0]
    batch = fixed[0] if fixed else batch
    frames, mfcc = example_inputs(model, batch, seed=1)
    with torch.no_grad():
        ref = model(frames, mfcc)
    outs = ort_session(path).run(None, {"frames": frames.numpy(), "mfcc": mfcc.numpy()})
    return {name: float(np.abs(o - r.numpy()).max()) for name, o, r in zip(ref._fields, outs, ref)}


def input_batch_axes(path: Path) -> list[str | int]:
    """Each input's batch axis as the ONNX graph at ``path`` declares it: a ``dim_param`` name or a fixed size."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = [i.type.tensor_type.shape.dim[0] for i in graph.input]
    return [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in dims]


def onnx_shares_frames(path: Path) -> bool:
    """Whether the graph at ``path`` lets a frames row serve several mfcc rows, from its inputs' batch axes
    (``contract.shares_frames``)."""
    from pinlite_edge.contract import shares_frames

    return shares_frames(*input_batch_axes(path))


def frame_sharing(path: Path, model, k: int = 3) -> dict[str, Any]:
    """Whether the graph at ``path`` lets a frames row serve several mfcc rows, read back from the graph (its inputs'
    batch axes, ``contract.shares_frames``) and, when it says so, checked by running it: 2 frames rows with ``k``
    mfcc rows each must give what the frames repeated ``k`` times give. A graph that declares it and computes
    anything else fails the export."""
    from pinlite_edge.contract import shares_frames

    axes = input_batch_axes(path)
    if not shares_frames(*axes):
        return {"shared_frames": False}
    frames, _ = example_inputs(model, 2, seed=2)
    _, mfcc = example_inputs(model, 2 * k, seed=3)
    session = ort_session(path)
    a = session.run(None, {"frames": frames.numpy(), "mfcc": mfcc.numpy()})
    b = session.run(None, {"frames": np.repeat(frames.numpy(), k, axis=0), "mfcc": mfcc.numpy()})
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    if diff > 1e-4:
        raise ExportError(f"{path.name} declares frame sharing (frames batch {axes[0]!r}, mfcc batch "
                          f"{axes[1]!r}) but 2 frames rows with {k} mfcc rows each differ from the frames "
                          f"repeated by {diff:.3g}")
    return {"shared_frames": True, "frame_sharing_max_abs": diff}


def _batch_fields(ctx: ExportContext, path: Path) -> tuple[bool, int | None]:
    """``dynamic_batch`` and ``max_batch`` for the manifest, read back from the graph at ``path``: a fixed batch axis
    is its own max batch; a dynamic one records ``--batch`` (None: unbounded)."""
    axes = input_batch_axes(path)
    if all(isinstance(a, str) for a in axes):
        return True, ctx.options.batch
    return False, max(int(a) for a in axes if isinstance(a, int))


def export_onnx(ctx: ExportContext) -> HandlerOutput:
    """FP32 ONNX with ORT parity checked against eager torch before it is published."""
    o = ctx.options
    with atomic_path(ctx.artifact) as tmp:
        write_fp32_onnx(ctx, tmp, exporter=o.exporter)
        parity = ort_parity(tmp, ctx.model)
        sharing = frame_sharing(tmp, ctx.model)
        dyn, max_batch = _batch_fields(ctx, tmp)
    if max(parity.values()) > 1e-3:
        log.warning("ORT vs torch parity of %s is %s (expected <= 1e-4)", ctx.artifact, parity)
    plan = PrecisionPlan(precision="fp32", notes=["every node is FP32"])
    return HandlerOutput(plan=plan, dynamic_batch=dyn, max_batch=max_batch,
                         extra={"exporter": o.exporter, "gru": o.gru, "ort_parity_max_abs": parity,
                                "opset": o.opset, **sharing})


# --- shared by the mixed-precision formats ------------------------------------------------------------------------
def _resolve(plan: PrecisionPlan, onnx_path: Path) -> None:
    import onnx

    nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    resolve_onnx_nodes(plan, nodes)
    missing = [e.module for e in plan.float_layers if not e.onnx_nodes]
    if missing:
        raise ExportError(f"precision plan layers {missing} have no node in the ONNX graph {onnx_path.name} "
                          "(node names no longer carry the module scope?)")


def _calibration_info(ctx: ExportContext, method: str | None = None) -> dict:
    info = ctx.calibration().describe()
    if method:
        info["method"] = method
    return info


def quality_vs_fp32(ctx: ExportContext, fp32_path: Path, path: Path, limit: int = 32) -> dict[str, float]:
    """Max/mean abs output differences and fake-probability agreement against the FP32 ONNX on calibration clips."""
    cal = ctx.calibration()
    ref_s, s = ort_session(fp32_path), ort_session(path)
    dl, da = [], []
    for frames, mfcc in cal.batches(8, limit=limit):
        feed = {"frames": frames, "mfcc": mfcc}
        a, b = ref_s.run(None, feed), s.run(None, feed)
        dl.append(np.abs(a[0] - b[0]).max(axis=1))
        da.append(np.abs(a[2] - b[2]).reshape(len(frames), -1).max(axis=1))
    dl_all, da_all = np.concatenate(dl), np.concatenate(da)
    return {"clips": int(dl_all.size), "logits_max_abs": float(dl_all.max()), "logits_mean_max_abs":
            float(dl_all.mean()), "attention_max_abs": float(da_all.max())}


def apply_weight_only(plan: PrecisionPlan, path: Path, mode: str) -> dict:
    """Store the weights of some of the plan's float layers as int8 in the ONNX file at ``path`` (``Cast * scale``,
    folded back to FP32 constants when onnxruntime loads it); their compute stays FP32. ``float``: every float layer
    with a weight except the GRU; ``float+gru``: also the GRU; ``gru``: only the GRU (int8-rounded GRU weights are
    opt-in: the SPEC keeps the GRU's weights FP32)."""
    import onnx

    from pinlite_edge.export.onnx_weight_only import store_weights_int8, weight_only_nodes

    if mode == "none":
        return {"weight_only": "none"}
    entries = [e for e in plan.float_layers
               if (e.kind == "gru" and mode in ("gru", "float+gru")) or (e.kind != "gru" and mode.startswith("float"))]
    model = onnx.load(str(path))
    info = store_weights_int8(model, [n for e in entries for n in e.onnx_nodes])
    onnx.save(model, str(path))
    rewritten = set(weight_only_nodes(model))
    for e in entries:
        if rewritten & set(e.onnx_nodes):
            e.weight_storage = "int8"
            e.reason += "; float compute, int8 weight storage (per channel, Cast * scale: folded to FP32 when " \
                        "onnxruntime loads it)"
    plan.notes.append(f"weight_only={mode}: float layers marked weight_storage=int8 keep FP32 compute; only their "
                      "stored weights are int8 (symmetric per output channel) behind Cast * scale")
    return {"weight_only": mode, **info}


def _compact(path: Path, for_onnxruntime: bool) -> dict:
    """Short tensor names and no value_info (on the tiny student the quantizer's names are ~40% of the file); for
    onnxruntime artefacts also the size pass ``onnx_compact.shrink_for_onnxruntime`` (what onnxruntime folds back at
    load: no all-zero zero points, bias scales as products, FP16/int16/int8 storage of small constants off the
    protected path)."""
    import onnx

    from pinlite_edge.export.onnx_compact import compact_names, shrink_for_onnxruntime

    model = onnx.load(str(path))
    before = path.stat().st_size
    info = compact_names(model)
    if for_onnxruntime:
        info.update(shrink_for_onnxruntime(model))
    onnx.save(model, str(path))
    return {**info, "compact_bytes_saved": before - path.stat().st_size}


def build_int8_onnx(ctx: ExportContext, out: Path, for_tensorrt: bool = False) -> tuple[PrecisionPlan, dict]:
    """Write the INT8 ONNX of ``ctx`` to ``out`` (not atomic); returns the plan and manifest facts.

    ``for_tensorrt``: the FP16 + QDQ graph a strongly typed TensorRT network is built from -- symmetric int8
    activations (TensorRT accepts only zero points of 0), biases stay float (TensorRT's ONNX parser rejects an INT32
    DequantizeLinear), every DequantizeLinear keeps its zero point, no weight-only storage, and then every node
    outside the plan and the Q/DQ pairs converted to FP16 (opset 19: FP16 scales, so a DequantizeLinear yields FP16)
    with FP32 islands (Cast) for the plan: layers without Q/DQ run FP16, the plan FP32, the Q/DQ'd ones INT8.

    The manifest's ``graph_precision`` is read from the written graph (and, for onnxruntime, from the graph its CPU
    provider runs after its fusions); an export whose graph contradicts the plan fails."""
    from pinlite_edge.export.onnx_int8 import quantize_onnx

    o = ctx.options
    fp32 = ctx.work_dir / "fp32.onnx"
    write_fp32_onnx(ctx, fp32)
    speed: list[FloatEntry] = []
    if not for_tensorrt and o.speed_float == "auto":
        from pinlite_edge.export.cpu_speed_plan import cpu_speed_entries

        speed = cpu_speed_entries(ctx.model)
    plan = make_plan(ctx, "int8", "int8", extra=speed)
    _resolve(plan, fp32)
    info = quantize_onnx(fp32, out, ctx.calibration(), plan, method=o.calib_method, quant_format=o.quant_format,
                         per_channel=o.per_channel, work_dir=ctx.work_dir, quantize_bias=not for_tensorrt,
                         activation_symmetric=for_tensorrt or o.symmetric_activations,
                         activation_type="int8" if for_tensorrt else o.activation_type,
                         reduce_range=not for_tensorrt and o.activation_type == "uint8" and o.reduce_range)
    weight_only = "none" if for_tensorrt else o.weight_only
    info.update(apply_weight_only(plan, out, weight_only))
    info.update(_compact(out, for_onnxruntime=not for_tensorrt))
    if for_tensorrt:
        info.update(_to_fp16_qdq(out, plan))
    onnx_checker(out)
    graphs = {"artefact": _load(out)}
    info.update(_facts_of_written_graph(plan, graphs["artefact"]))
    if not for_tensorrt:
        optimized = ort_optimized_graph(out)
        info["ort_cpu_kernels"] = ort_cpu_kernels(optimized)
        graphs["onnxruntime_cpu_optimized"] = optimized
    record_graph_precision(plan, graphs, out.name, allow_int8_gru_weights=weight_only in ("gru", "float+gru"))
    quality = quality_vs_fp32(ctx, fp32, out)
    return plan, {"quant_format": o.quant_format, "per_channel": o.per_channel, "gru": o.gru,
                  "fp32_onnx_bytes": fp32.stat().st_size, "size_vs_fp32_onnx": round(out.stat().st_size /
                                                                                      fp32.stat().st_size, 4),
                  **info, "vs_fp32_onnx": quality}


def _facts_of_written_graph(plan: PrecisionPlan, model: Any) -> dict:
    """What the manifest states about the graph, read from the graph as written (after the weight-only, compaction
    and FP16 passes that follow quantization): its op counts, and each float layer's ONNX nodes that are still nodes
    (constants folded into initializers are no longer nodes)."""
    present = {n.name for n in model.graph.node}
    for entry in plan.float_layers:
        entry.onnx_nodes = [n for n in entry.onnx_nodes if n in present]
    return {"op_counts": dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))}


#: Opset of the FP16 + QDQ graph for TensorRT: QuantizeLinear/DequantizeLinear take FP16 scales from opset 19.
FP16_QDQ_OPSET = 19


def _to_fp16_qdq(path: Path, plan: PrecisionPlan) -> dict:
    """Rewrite the QDQ graph at ``path`` as FP16 + QDQ (opset 19) with FP32 islands for the plan's nodes."""
    import onnx
    from onnx import version_converter

    from pinlite_edge.export.onnx_fp16 import convert_to_fp16

    model = onnx.load(str(path))
    try:
        model = version_converter.convert_version(model, FP16_QDQ_OPSET)
    except Exception as exc:
        raise ExportError(f"cannot convert {path.name} to opset {FP16_QDQ_OPSET} for FP16 Q/DQ scales: {exc}") from None
    mixed, stats = convert_to_fp16(model, plan.float_onnx_nodes())
    onnx.save(mixed, str(path))
    return {"fp16_qdq": True, "opset": FP16_QDQ_OPSET, **stats}


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def record_graph_precision(plan: PrecisionPlan, graphs: dict, artefact: str, **checks) -> None:
    """Walk each ONNX graph (label -> ModelProto), store what it computes per node in ``plan.graph_precision`` and
    fail (ExportError) when a graph contradicts the plan (``graph_precision.precision_report``)."""
    from pinlite_edge.export.graph_precision import onnx_node_precisions, precision_report, require_consistent

    for label, model in graphs.items():
        report = precision_report(onnx_node_precisions(model), plan, label, **checks)
        require_consistent(report, artefact)
        plan.graph_precision[label] = report


def ort_optimized_graph(path: Path):
    """The graph onnxruntime's CPU provider runs for ``path`` after its QDQ fusions and constant folding (optimisation
    level "extended": no hardware-specific layouts), as an ``onnx.ModelProto``."""
    from pinlite_edge.runtimes.ort.loader import optimized_graph

    return optimized_graph(path, optimization="extended")


def ort_cpu_kernels(optimized) -> dict[str, int]:
    """Convolution/MatMul kernels in onnxruntime's optimized CPU graph (:func:`ort_optimized_graph`, a ModelProto):
    how many convs are int8 (QLinearConv) and float."""
    import collections

    ops = collections.Counter(n.op_type for n in optimized.graph.node)
    wanted = ("QLinearConv", "Conv", "FusedConv", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
              "MatMulNBits", "QGemm", "MatMul", "FusedMatMul", "Gemm", "QuantizeLinear", "DequantizeLinear")
    return {k: ops[k] for k in wanted if ops[k]}


def onnx_checker(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"{path.name} fails onnx.checker: {exc}") from None


def export_onnx_int8(ctx: ExportContext) -> HandlerOutput:
    """Static INT8 (symmetric per-channel weights; symmetric activations unless ``symmetric_activations=False``) with the
    plan's layers computing in float (their weights stored int8 per ``weight_only``); compact names."""
    with atomic_path(ctx.artifact) as tmp:
        plan, extra = build_int8_onnx(ctx, tmp)
        extra.update(frame_sharing(tmp, ctx.model))
        dyn, max_batch = _batch_fields(ctx, tmp)
    return HandlerOutput(plan=plan, dynamic_batch=dyn, max_batch=max_batch,
                         calibration=_calibration_info(ctx, ctx.options.calib_method), extra=extra)


def build_fp16_onnx(ctx: ExportContext, out: Path) -> tuple[PrecisionPlan, dict]:
    """Write the FP16-with-FP32-islands ONNX of ``ctx`` to ``out`` (not atomic); returns the plan and facts (the
    manifest's ``graph_precision`` read from the written graph)."""
    import onnx

    from pinlite_edge.export.onnx_fp16 import convert_to_fp16

    o = ctx.options
    fp32 = ctx.work_dir / "fp32.onnx"
    write_fp32_onnx(ctx, fp32)
    plan = make_plan(ctx, "fp16", "fp16")
    _resolve(plan, fp32)
    mixed, stats = convert_to_fp16(onnx.load(str(fp32)), plan.float_onnx_nodes())
    onnx.save(mixed, str(out))
    onnx_checker(out)
    record_graph_precision(plan, {"artefact": _load(out)}, out.name)
    extra = {"gru": o.gru, "fp32_onnx_bytes": fp32.stat().st_size, **stats}
    if o.sensitivity:
        extra["vs_fp32_onnx"] = quality_vs_fp32(ctx, fp32, out)
    return plan, extra


def export_onnx_fp16(ctx: ExportContext) -> HandlerOutput:
    """FP16 graph with FP32 islands (Casts) for the plan's layers; FP32 inputs/outputs."""
    with atomic_path(ctx.artifact) as tmp:
        plan, extra = build_fp16_onnx(ctx, tmp)
        extra.update(frame_sharing(tmp, ctx.model))
        dyn, max_batch = _batch_fields(ctx, tmp)
    return HandlerOutput(plan=plan, dynamic_batch=dyn, max_batch=max_batch,
                         calibration=_calibration_info(ctx) if ctx.options.sensitivity else None, extra=extra)
