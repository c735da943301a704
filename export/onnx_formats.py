"""Format functions for ``onnx``, ``onnx-fp16`` and ``onnx-int8`` (one function per format)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from pinlite_edge.errors import ExportError
from pinlite_edge.export.api import ExportContext, HandlerOutput
from pinlite_edge.export.onnx_export import example_inputs, export_onnx_fp32, prepare_for_export
from pinlite_edge.export.plan import FloatEntry, PrecisionPlan, build_plan, resolve_onnx_nodes
from pinlite_edge.utils.atomic import atomic_path

log = logging.getLogger(__name__)


def ort_session(path: Path | str, threads: int = 1):
    """A CPU onnxruntime session built by the runtime's loader (what users run)."""
    from pinlite_edge.runtimes.ort.loader import create_session

    return create_session(path, threads=threads, inter_op_threads=1)


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


# --- shared by the mixed-precision formats ------------------------------------------------------------------------
def make_plan(ctx: ExportContext, precision: str, mode: str, extra: Sequence[FloatEntry] = ()) -> PrecisionPlan:
    """Fixed float layers (+ ``extra``) + (when asked) the measured sensitivity table and the ``keep_float`` most
    sensitive layers not already float."""
    o = ctx.options
    rows = []
    if o.sensitivity:
        from pinlite_edge.export.sensitivity import layer_sensitivity

        cal = ctx.calibration().subset(o.sensitivity_size)
        rows = layer_sensitivity(ctx.model, cal, mode=mode)
    try:
        return build_plan(ctx.model, precision, rows, o.keep_float, sensitivity_mode=mode if rows else None,
                          extra=extra)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


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
    """Store the weights of the plan's float layers (``gru``: only the GRU; ``float``: every float layer with a
    weight) as int8 in the ONNX file at ``path``; their compute stays FP32 (plan notes it). The speed entries use the
    form onnxruntime constant-folds at load (``Cast * scale``), the others ``DequantizeLinear``."""
    import onnx

    from pinlite_edge.export.onnx_weight_only import store_weights_int8, weight_only_nodes

    if mode == "none":
        return {"weight_only": "none"}
    entries = [e for e in plan.float_layers if mode == "float" or e.kind == "gru"]
    model = onnx.load(str(path))
    info = {"weight_only_int8_weights": 0, "weight_only_bytes_saved": 0}
    for foldable in (False, True):
        nodes = [n for e in entries if (e.kind == "speed") == foldable for n in e.onnx_nodes]
        for k, v in store_weights_int8(model, nodes, foldable=foldable).items():
            info[k] += v
    onnx.save(model, str(path))
    rewritten = set(weight_only_nodes(model))
    for e in entries:
        if rewritten & set(e.onnx_nodes):
            e.weight_storage = "int8"
            e.reason += "; float compute, int8 weight storage (per-channel" + (
                ", Cast * scale: folded to FP32 when onnxruntime loads it)" if e.kind == "speed" else
                ", DequantizeLinear)")
    plan.notes.append(f"weight_only={mode}: float layers marked weight_storage=int8 keep FP32 compute; only their "
                      "stored weights are int8 (symmetric per output channel) behind DequantizeLinear, or behind "
                      "Cast * scale for the speed entries")
    return {"weight_only": mode, **info}


def _compact(path: Path, drop_zero_points: bool) -> dict:
    """Short tensor names, no value_info and (onnxruntime only) no all-zero weight zero points (``onnx_compact``):
    on the tiny student the quantizer's names are ~40% of the file."""
    import onnx

    from pinlite_edge.export.onnx_compact import compact_names, drop_weight_zero_points

    model = onnx.load(str(path))
    before = path.stat().st_size
    info = compact_names(model)
    if drop_zero_points:
        info.update(drop_weight_zero_points(model))
    onnx.save(model, str(path))
    return {**info, "compact_bytes_saved": before - path.stat().st_size}


def build_int8_onnx(ctx: ExportContext, out: Path, for_tensorrt: bool = False) -> tuple[PrecisionPlan, dict]:
    """Write the INT8 ONNX of ``ctx`` to ``out`` (not atomic); returns the plan and manifest facts.

    ``for_tensorrt``: the QDQ graph TensorRT parses -- symmetric activations (TensorRT accepts only zero points of
    0), biases stay float (TensorRT's ONNX parser rejects an INT32 DequantizeLinear), every DequantizeLinear keeps
    its zero point, and no weight-only storage (a DequantizeLinear feeding the GRU's ``ILoop`` weights is not
    something TensorRT documents)."""
    from pinlite_edge.export.onnx_int8 import quantize_onnx

    o = ctx.options
    fp32 = ctx.work_dir / "fp32.onnx"
    _fp32_onnx(ctx, fp32)
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
    info.update(apply_weight_only(plan, out, "none" if for_tensorrt else o.weight_only))
    info.update(_compact(out, drop_zero_points=not for_tensorrt))
    onnx_checker(out)
    if not for_tensorrt:
        info["ort_cpu_kernels"] = ort_cpu_kernels(out)
    quality = quality_vs_fp32(ctx, fp32, out)
    return plan, {"quant_format": o.quant_format, "per_channel": o.per_channel, "gru": o.gru,
                  "fp32_onnx_bytes": fp32.stat().st_size, "size_vs_fp32_onnx": round(out.stat().st_size /
                                                                                      fp32.stat().st_size, 4),
                  **info, "vs_fp32_onnx": quality}


def ort_optimized_graph(path: Path):
    """The graph onnxruntime's CPU provider runs for ``path`` after its QDQ fusions and constant folding (optimisation
    level "extended": no hardware-specific layouts), as an ``onnx.ModelProto``."""
    from pinlite_edge.runtimes.ort.loader import optimized_graph

    return optimized_graph(path, optimization="extended")


def ort_cpu_kernels(path: Path) -> dict[str, int]:
    """Convolution/MatMul kernels onnxruntime's CPU provider really runs for ``path`` (:func:`ort_optimized_graph`):
    how many convs are int8 (QLinearConv) and float."""
    import collections

    ops = collections.Counter(n.op_type for n in ort_optimized_graph(path).graph.node)
    wanted = ("QLinearConv", "Conv", "FusedConv", "QLinearMatMul", "MatMulInteger", "QGemm", "MatMul", "Gemm",
              "QuantizeLinear", "DequantizeLinear")
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
    dyn, max_batch = _batch_fields(ctx)
    return HandlerOutput(plan=plan, dynamic_batch=dyn, max_batch=max_batch,
                         calibration=_calibration_info(ctx, ctx.options.calib_method), extra=extra)


def build_fp16_onnx(ctx: ExportContext, out: Path) -> tuple[PrecisionPlan, dict]:
    """Write the FP16-with-FP32-islands ONNX of ``ctx`` to ``out`` (not atomic); returns the plan and facts."""
    import onnx

    from pinlite_edge.export.onnx_fp16 import convert_to_fp16

    o = ctx.options
    fp32 = ctx.work_dir / "fp32.onnx"
    _fp32_onnx(ctx, fp32)
    plan = make_plan(ctx, "fp16", "fp16")
    _resolve(plan, fp32)
    mixed, stats = convert_to_fp16(onnx.load(str(fp32)), plan.float_onnx_nodes())
    onnx.save(mixed, str(out))
    try:
        onnx.checker.check_model(str(out), full_check=True)
    except Exception as exc:
        raise ExportError(f"FP16 graph fails onnx.checker: {exc}") from None
    extra = {"gru": o.gru, "fp32_onnx_bytes": fp32.stat().st_size, **stats}
    if o.sensitivity:
        extra["vs_fp32_onnx"] = quality_vs_fp32(ctx, fp32, out)
    return plan, extra


def export_onnx_fp16(ctx: ExportContext) -> HandlerOutput:
    """FP16 graph with FP32 islands (Casts) for the plan's layers; FP32 inputs/outputs."""
    with atomic_path(ctx.artifact) as tmp:
        plan, extra = build_fp16_onnx(ctx, tmp)
    dyn, max_batch = _batch_fields(ctx)
    return HandlerOutput(plan=plan, dynamic_batch=dyn, max_batch=max_batch,
                         calibration=_calibration_info(ctx) if ctx.options.sensitivity else None, extra=extra)
