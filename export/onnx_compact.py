"""Shrink the non-weight bytes of a quantized ONNX file: short tensor names, no ``value_info``.

On the tiny student, ``quantize_static`` output is ~40% names and shape annotations: every activation gets a
``_QuantizeLinear_Output`` / ``_DequantizeLinear_Output`` tensor named after the original (long, module-scoped)
tensor, each with scale and zero-point initializers named the same way, plus a ``value_info`` entry per tensor.
This pass renames every *tensor* except the graph inputs/outputs to a short id and drops ``value_info`` (onnxruntime
and TensorRT infer shapes themselves). Node names of the original graph are kept -- the precision plan refers to
them -- and only the Q/DQ nodes added by the quantizer get short names. The computation is unchanged.

:func:`drop_weight_zero_points` removes the all-zero ``zero_point`` input of a ``DequantizeLinear`` on an int8
*weight* initializer (optional since opset 13; the type comes from the int8 data). onnxruntime only: some
TensorRT parsers require all three DequantizeLinear inputs, so TensorRT builds keep them.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper



def compact_names(model: onnx.ModelProto) -> dict[str, int]:
    """Rename tensors / quantizer nodes of ``model`` in place; returns counts for the manifest."""
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return {"compacted_tensors": 0}  # subgraphs capture outer names: not worth the risk
    fixed = {v.name for v in list(g.input) + list(g.output)} | {""}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if name in fixed:
            return name
        if name not in mapping:
            mapping[name] = f"t{len(mapping)}"
        return mapping[name]

    for init in g.initializer:
        init.name = short(init.name)
    for n in g.node:
        n.input[:] = [short(i) for i in n.input]
        n.output[:] = [short(o) for o in n.output]
    renamed_nodes = 0
    for k, n in enumerate(g.node):
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            n.name = f"{'q' if n.op_type == 'QuantizeLinear' else 'dq'}{k}"
            renamed_nodes += 1
    del g.value_info[:]
    return {"compacted_tensors": len(mapping), "compacted_qdq_nodes": renamed_nodes}


def drop_weight_zero_points(model: onnx.ModelProto) -> dict[str, int]:
    """Remove all-zero zero points of weight DequantizeLinear nodes (int8 initializer data) in place."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    dropped = 0
    for n in g.node:
        if n.op_type != "DequantizeLinear" or len(n.input) < 3 or n.input[0] not in inits or n.input[2] not in inits:
            continue
        if inits[n.input[0]].data_type != onnx.TensorProto.INT8:
            continue
        if np.any(numpy_helper.to_array(inits[n.input[2]])):
            continue
        del n.input[2]
        dropped += 1
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return {"dropped_weight_zero_points": dropped}


def inline_initializer_identities(model: onnx.ModelProto) -> int:
    """Replace every ``Identity`` whose input is an initializer by a copy of that initializer, in place.

    The TorchScript exporter deduplicates equal initializers and feeds the copies through ``Identity`` nodes (a
    freshly initialised MobileNetV3 has dozens of identical BatchNorm-folded biases). A Conv whose bias is an
    Identity *output* is not a constant to onnxruntime's QDQ fusion, so it stays a float Conv between a
    DequantizeLinear and a QuantizeLinear: on the random-weight paper student 18 of 54 convolutions did, which made
    its INT8 graph slower than FP32. Returns the number of nodes removed.
    """
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    graph_outputs = {o.name for o in g.output}
    keep, added = [], []
    for n in g.node:
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in graph_outputs:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[n.input[0]])
            copy.name = n.output[0]
            added.append(copy)
        else:
            keep.append(n)
    if not added:
        return 0
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(added)
    return len(added)
