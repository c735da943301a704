"""onnxruntime static INT8 quantization of the FP32 ONNX graph, driven by the precision plan."""
from __future__ import annotations

import collections
import contextlib
import io
import logging
import threading
from pathlib import Path
from typing import Any

from pinlite_edge.errors import ExportError, ExportOptionError
from pinlite_edge.export.calibration import CalibrationSet
from pinlite_edge.export.plan import PrecisionPlan

log = logging.getLogger(__name__)

#: Only weight-bearing ops are quantized; element-wise ops stay float (their Q/DQ pairs cost more than they save).
OP_TYPES = ("Conv", "MatMul", "Gemm")


class _Reader:
    """onnxruntime CalibrationDataReader over a :class:`CalibrationSet` (batches of ``batch`` clips)."""

    def __init__(self, cal: CalibrationSet, batch: int = 8):
        self._it = iter(cal.batches(batch))

    def get_next(self) -> dict[str, Any] | None:
        nxt = next(self._it, None)
        return None if nxt is None else {"frames": nxt[0], "mfcc": nxt[1]}


class _RootToDebug(logging.Filter):
    """While active, what this thread logs directly on the root logger (a library's ``logging.warning(...)``) is
    logged at DEBUG on this module's logger instead; records of named loggers, and other threads' (an app's), are
    untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        log.debug("quantize_static: %s", record.getMessage())
        return False

    def __enter__(self) -> "_RootToDebug":
        logging.getLogger().addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeFilter(self)


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def quantize_onnx(fp32: Path, out: Path, cal: CalibrationSet, plan: PrecisionPlan, *, method: str = "minmax",
                  quant_format: str = "qdq", per_channel: bool = True, work_dir: Path | None = None,
                  quantize_bias: bool = True, activation_symmetric: bool = True,
                  activation_type: str = "int8", reduce_range: bool = False) -> dict[str, Any]:
    """Write the INT8 model to ``out``; returns facts for the manifest (excluded nodes, quantized weight nodes; the
    op counts are read from the graph as finally written, ``onnx_formats``)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    exclude = plan.float_onnx_nodes()
    fmt = QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator
    # Weights: always symmetric (zero point 0), per channel. Activations: symmetric for TensorRT (its parser accepts
    # only zero points of 0); asymmetric int8 (a per-tensor zero point) uses the full range of one-sided activations
    # (ReLU/HardSwish outputs) -- on the tiny student it raised the quantization EPS from 0.878 to 0.915.
    # QuantizeBias=False for TensorRT: its ONNX parser rejects a DequantizeLinear with INT32 data (bias).
    # activation_type "uint8" stores a symmetric range with zero point 128 (the int8 grid shifted by 128): onnxruntime's
    # x86 QLinearConv kernels are u8 x s8, and with int8 activations it left 12 of the paper student's 54 convs unfused.
    if activation_type not in ("int8", "uint8"):
        raise ExportOptionError(f"activation_type must be 'int8' or 'uint8', got {activation_type!r}")
    act_type = QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8
    extra = {"ActivationSymmetric": activation_symmetric, "WeightSymmetric": True, "QuantizeBias": quantize_bias}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    sink = io.StringIO()
    # onnxruntime also logs on the root logger ("WARNING root: Please consider to run pre-processing before
    # quantization"), which the console handler of a CLI or app prints past the redirection: kept at DEBUG too
    to_debug = _RootToDebug()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), to_debug:
            quantize_static(
                str(fp32), str(out), _Reader(cal), quant_format=fmt, op_types_to_quantize=list(OP_TYPES),
                per_channel=per_channel, activation_type=act_type, weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude, calibrate_method=_method(method), extra_options=extra,
                reduce_range=reduce_range,
            )
    except Exception as exc:
        raise ExportError(f"onnxruntime quantize_static failed on {fp32.name}: {type(exc).__name__}: {exc}") from exc
    for line in sink.getvalue().splitlines():
        if line.strip():
            log.debug("quantize_static: %s", line)
    model = onnx.load(str(out))
    rewired = strip_input_qdq(model, exclude)
    onnx.save(model, str(out))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    quantized_nodes = [n.name for n in model.graph.node if n.op_type in OP_TYPES and _has_dq_input(model, n)]
    return {"excluded_nodes": len(exclude), "float_inputs_unquantized": rewired, "quantize_bias": quantize_bias,
            "activation_symmetric": activation_symmetric, "activation_type": activation_type,
            "reduce_range": reduce_range,
            "quantized_weight_nodes": len(quantized_nodes) if fmt == QuantFormat.QDQ else
            sum(v for k, v in ops.items() if k.startswith("QLinear") or k in ("ConvInteger", "MatMulInteger"))}


def _has_dq_input(model, node) -> bool:
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return any(producers.get(i) == "DequantizeLinear" for i in node.input)


def strip_input_qdq(model, node_names) -> int:
    """Feed the float nodes ``node_names`` their tensors unquantized, in place; returns how many inputs were rewired.

    ``quantize_static`` puts one QuantizeLinear -> DequantizeLinear pair on a tensor and hands the DequantizeLinear's
    output to *every* consumer, excluded nodes included: the last block's ``k_proj`` shares its input with the
    quantized ``v_proj``, so it received int8-rounded activations (onnxruntime then ran it as MatMulIntegerToFloat).
    Each such input of a plan node is rewired to the QuantizeLinear's float input; Q/DQ nodes left without a consumer
    are removed."""
    g = model.graph
    wanted = set(node_names)
    producers = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    rewired = 0
    for n in g.node:
        if n.name not in wanted:
            continue
        for k, t in enumerate(n.input):
            dq = producers.get(t)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[k] = q.input[0]
                rewired += 1
    graph_outputs = {o.name for o in g.output}
    while True:
        used = {i for n in g.node for i in n.input} | graph_outputs
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return rewired
