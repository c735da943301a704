"""FP32 -> FP16 ONNX conversion with FP32 islands (SPEC §6), written with the onnx helpers (no extra dependency).

Every node computes in FP16 except the nodes named in ``keep_fp32`` (the precision plan's float layers). Float
initializers and Constant values are stored in the precision of their consumers (duplicated when both need them);
a ``Cast`` is inserted wherever a tensor crosses between precisions. Graph inputs and outputs stay FP32.
"""
from __future__ import annotations

import collections
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pinlite_edge.errors import ExportError

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
#: Inputs that must stay FP32 whatever the node's precision (op type -> input positions).
_FIXED_FP32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of every FP32 tensor in the graph (after shape inference)."""
    names = set()
    g = model.graph
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == FLOAT:
            names.add(v.name)
    for init in g.initializer:
        if init.data_type == FLOAT:
            names.add(init.name)
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    names.add(n.output[0])
    return names


def convert_to_fp16(model: onnx.ModelProto, keep_fp32: Iterable[str]) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Return the mixed-precision model and counts (fp16 nodes, fp32 nodes, casts)."""
    keep = set(keep_fp32)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = model.graph
    float_names = _float_tensors(model)
    unknown = [o for n in g.node for o in n.output if o and o not in float_names
               and not _typed(model, o) and n.op_type not in ("Constant",)]
    if unknown:
        raise ExportError(f"FP16 conversion needs every tensor's type; shape inference left {unknown[:5]} untyped")
    node_is_half = {n.name: n.name not in keep for n in g.node}

    # Which precision each consumer wants for each initializer.
    inits = {i.name: i for i in g.initializer}
    wanted: dict[str, set[int]] = collections.defaultdict(set)
    for n in g.node:
        for pos, i in enumerate(n.input):
            if i in inits and inits[i].data_type == FLOAT:
                fixed = pos in _FIXED_FP32_INPUTS.get(n.op_type, ())
                wanted[i].add(HALF if node_is_half[n.name] and not fixed else FLOAT)
    new_inits = []
    current: dict[str, int] = {}  # tensor name -> dtype it has in the new graph
    for init in g.initializer:
        if init.data_type != FLOAT:
            new_inits.append(init)
            continue
        need = wanted.get(init.name, {FLOAT})
        if HALF in need:
            arr = numpy_helper.to_array(init).astype(np.float16)
            new_inits.append(numpy_helper.from_array(arr, init.name))
            current[init.name] = HALF
        if FLOAT in need:
            if HALF in need:
                new_inits.append(numpy_helper.from_array(numpy_helper.to_array(init), init.name + "__fp32"))
            else:
                new_inits.append(init)
                current[init.name] = FLOAT
    for v in g.input:
        if v.type.tensor_type.elem_type == FLOAT:
            current[v.name] = FLOAT

    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast_to(name: str, dtype: int) -> str:
        if current.get(name) == dtype:
            return name
        if dtype == FLOAT and name + "__fp32" in {i.name for i in new_inits}:
            return name + "__fp32"
        key = (name, dtype)
        if key not in casts:
            out = f"{name}__to_{'fp16' if dtype == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=dtype, name=f"{out}__cast"))
            casts[key] = out
        return casts[key]

    for n in g.node:
        half = node_is_half[n.name]
        node = onnx.NodeProto()
        node.CopyFrom(n)
        for pos, i in enumerate(n.input):
            if i and i in float_names:
                fixed = pos in _FIXED_FP32_INPUTS.get(n.op_type, ())
                node.input[pos] = cast_to(i, HALF if half and not fixed else FLOAT)
        if half:
            for a in node.attribute:
                if n.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                    a.i = HALF
                elif a.name == "value" and a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        for o in n.output:
            if o in float_names:
                current[o] = HALF if half else FLOAT
        new_nodes.append(node)

    # Graph outputs stay FP32.
    out_names = {o.name for o in g.output}
    renamed = {}
    for node in new_nodes:
        for k, o in enumerate(node.output):
            if o in out_names and current.get(o) == HALF:
                node.output[k] = o + "__fp16"
                renamed[o] = o + "__fp16"
    for node in new_nodes:
        for k, i in enumerate(node.input):
            if i in renamed:
                node.input[k] = renamed[i]
    for o, src in renamed.items():
        new_nodes.append(helper.make_node("Cast", [src], [o], to=FLOAT, name=f"{o}__output_cast"))

    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    stats = {"fp16_nodes": sum(node_is_half.values()), "fp32_nodes": len(node_is_half) - sum(node_is_half.values()),
             "casts": len(casts) + len(renamed)}
    return model, stats


def _typed(model: onnx.ModelProto, name: str) -> bool:
    g = model.graph
    return any(v.name == name for v in list(g.value_info) + list(g.output))


def cast_islands(model: onnx.ModelProto) -> list[dict[str, str]]:
    """The Cast nodes that move tensors between FP16 and FP32 (for tests and reports)."""
    return [{"name": n.name, "input": n.input[0], "to": "fp32" if n.attribute[0].i == FLOAT else "fp16"}
            for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i in (FLOAT, HALF)]
