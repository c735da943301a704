"""Weight-only INT8 storage for the float layers of an INT8 ONNX graph (compute stays float).

The precision plan keeps some layers float (the attention-output projections, layers chosen by sensitivity, the CPU
speed entries): onnxruntime's static quantization leaves their weights as FP32 initializers, which on a small student
dominate the file. This pass stores such a weight as an ``int8`` initializer (symmetric, one scale per output channel)
followed by ``Cast(int8 -> float) * scale``: onnxruntime constant-folds that at session load into an FP32 initializer,
so the node still receives an FP32 constant and computes in FP32; only the stored bytes shrink (4x). There is no
activation quantization. Not a ``DequantizeLinear``: onnxruntime fuses ``DequantizeLinear -> MatMul`` into
``MatMulNBits`` with ``accuracy_level`` 4 (int8 activations on the CPU), and a conv whose weight is not a constant
loses its blocked (NCHWc) kernels (5x slower there).

Which input is the weight, and which axis is its output channel:
- ``GRU``: ``W (D, 3H, I)`` and ``R (D, 3H, H)``; a channel is one gate row of one direction (the leading two axes),
  so the weight is stored flattened to ``(D*3H, X)``, scaled along axis 0 and reshaped back (GRU weights are stored
  int8 only on request: ``weight_only="float+gru"`` / ``"gru"``).
- ``Conv``: ``W (O, I, k...)``, axis 0.
- ``MatMul`` with a 2-D initializer as input B ``(K, N)``: axis 1. ``Gemm`` input B: axis 0 if ``transB`` else 1.
A weight shared with a node outside the chosen set is left alone. The added nodes get short names (``w8c<k>`` Cast,
``w8m<k>`` Mul, ``w8r<k>`` Reshape: on the paper student the module-scoped names cost ~10 kB);
:func:`weight_only_nodes` finds the rewritten nodes by structure (``Cast`` of an int8 initializer, then ``Mul``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)
QMAX = 127.0
SUFFIX = "_w8"


@dataclass(frozen=True)
class _Target:
    node: str
    input_index: int
    lead_axes: int  # channel = product of the leading ``lead_axes`` dims (GRU: 2), else see ``axis``
    axis: int  # channel axis when lead_axes == 0


def _targets(node: onnx.NodeProto, inits: dict[str, TensorProto]) -> list[_Target]:
    def is_weight(i: int, rank: int | None = None) -> bool:
        if len(node.input) <= i or node.input[i] not in inits:
            return False
        t = inits[node.input[i]]
        return t.data_type == TensorProto.FLOAT and (rank is None or len(t.dims) == rank)

    if node.op_type == "GRU":
        return [_Target(node.name, i, 2, 0) for i in (1, 2) if is_weight(i, 3)]
    if node.op_type == "Conv" and is_weight(1):
        return [_Target(node.name, 1, 0, 0)]
    if node.op_type == "MatMul" and is_weight(1, 2):
        return [_Target(node.name, 1, 0, 1)]
    if node.op_type == "Gemm" and is_weight(1, 2):
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return [_Target(node.name, 1, 0, 0 if trans_b else 1)]
    return []


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel INT8 along ``axis``: ``(int8 values, float32 scales)``; ``q * scale`` restores ``w``."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    absmax = np.abs(moved).max(axis=1)
    scale = np.where(absmax > 0, absmax / QMAX, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -QMAX, QMAX).astype(np.int8)
    return q, scale


def store_weights_int8(model: onnx.ModelProto, node_names: Iterable[str],
                       min_elements: int = 256) -> dict[str, int]:
    """Rewrite ``model`` in place: the FP32 weights of ``node_names`` become int8 initializers + ``Cast * scale``.

    Weights with fewer than ``min_elements`` values are left FP32 (the scales would cost as much as they save).
    Returns counts for the manifest: weights rewritten and bytes saved.
    """
    g = model.graph
    wanted = set(node_names)
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, set[str]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, set()).add(n.name)
    done: dict[str, str] = {}  # original initializer -> dequantized tensor name
    new_nodes: list[tuple[int, list[onnx.NodeProto]]] = []
    saved = 0
    for pos, node in enumerate(g.node):
        if node.name not in wanted:
            continue
        inserted: list[onnx.NodeProto] = []
        for t in _targets(node, inits):
            name = node.input[t.input_index]
            if name in done:
                node.input[t.input_index] = done[name]
                continue
            if not consumers.get(name, set()) <= wanted:
                continue  # shared with a node that is not ours: leave it
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            if w.size < min_elements:
                continue
            stored = w.reshape(int(np.prod(w.shape[:t.lead_axes])), -1) if t.lead_axes else w
            axis = 0 if t.lead_axes else t.axis
            q, scale = quantize_weight(stored, axis)
            base = f"{node.name}/W{t.input_index}{SUFFIX}"
            k = len(done)
            out = base + "_dequantized"
            g.initializer.append(numpy_helper.from_array(q, base + "_quantized"))
            bshape = [1] * stored.ndim
            bshape[axis] = -1
            g.initializer.append(numpy_helper.from_array(scale.reshape(bshape), base + "_scale"))
            inserted += [helper.make_node("Cast", [base + "_quantized"], [base + "_float"], name=f"w8c{k}",
                                          to=TensorProto.FLOAT),
                         helper.make_node("Mul", [base + "_float", base + "_scale"], [out], name=f"w8m{k}")]
            if t.lead_axes:
                g.initializer.append(numpy_helper.from_array(np.asarray(w.shape, dtype=np.int64), base + "_shape"))
                inserted.append(helper.make_node("Reshape", [out, base + "_shape"], [base + "_reshaped"],
                                                 name=f"w8r{k}"))
                out = base + "_reshaped"
            done[name] = out
            node.input[t.input_index] = out
            saved += w.nbytes - q.nbytes - scale.nbytes
        if inserted:
            new_nodes.append((pos, inserted))
    for pos, nodes in reversed(new_nodes):  # keep the graph topologically sorted
        for k, n in enumerate(nodes):
            g.node.insert(pos + k, n)
    still_used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in still_used]
    del g.initializer[:]
    g.initializer.extend(keep)
    log.debug("weight-only int8: %d weights, %d bytes saved", len(done), saved)
    return {"weight_only_int8_weights": len(done), "weight_only_bytes_saved": int(saved)}


def weight_only_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes whose weight input comes (possibly via Reshape) from an int8 weight-only ``Cast * scale``
    (a ``Mul`` whose first input is a ``Cast`` of an int8 initializer)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    int8 = {i.name for i in model.graph.initializer if i.data_type == TensorProto.INT8}
    out = []
    for n in model.graph.node:
        for i in n.input[1:3]:
            p = producers.get(i)
            if p is not None and p.op_type == "Reshape":
                p = producers.get(p.input[0])
            cast = producers.get(p.input[0]) if p is not None and p.op_type == "Mul" else None
            if cast is not None and cast.op_type == "Cast" and cast.input[0] in int8:
                out.append(n.name)
                break
    return out
