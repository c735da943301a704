"""Shrink the non-weight bytes of a quantized ONNX file: short tensor names, no ``value_info``.

On the tiny student, ``quantize_static`` output is ~40% names and shape annotations: every activation gets a
``_QuantizeLinear_Output`` / ``_DequantizeLinear_Output`` tensor named after the original (long, module-scoped)
tensor, each with scale and zero-point initializers named the same way, plus a ``value_info`` entry per tensor.
This pass renames every *tensor* except the graph inputs/outputs to a short (base-36) id and drops ``value_info``
(onnxruntime and TensorRT infer shapes themselves). Node names of the original graph are kept -- the precision plan
refers to them -- and only the Q/DQ nodes added by the quantizer get short names. The computation is unchanged.

:func:`shrink_for_onnxruntime` (onnxruntime artefacts only; called by ``onnx_formats._compact``)
takes out the bytes that are neither weights nor the protected path, in place and without changing what any node
computes beyond the FP16 / int8 storage rounding of some constants:

* all-zero ``zero_point`` inputs of ``DequantizeLinear`` on int8 weights and int32 biases (optional since opset 13);
* attributes that spell out the ONNX default, and ``Constant`` nodes (outside attention modules, whose constants the
  precision plan lists by node name) as initializers;
* each int32 bias's per-channel scale, when it is exactly activation scale x weight scale (as the quantizer defines
  it), as a ``Mul`` of those two instead of a stored copy; int32 biases whose values fit int16 stored int16 + ``Cast``
  (lossless);
* additive tables of rank >= 2 (the positional embeddings) stored int8 per row behind ``Cast * scale``, like
  weight-only layers (:func:`store_tables_int8`);
* the small FP32 constants that only scale or shift a layer -- per-channel quantization scales, the biases and scales
  of weight-only layers, LayerNorm parameters, Linear biases -- stored FP16 behind a ``Cast`` to FP32
  (:func:`store_constants_fp16`) when FP16 holds them to 1e-3 (per value for scales, of the tensor's largest value
  for biases and tables).

onnxruntime constant-folds those Casts and Muls of constants when it loads the model, before its QDQ fusions, so every
node still computes in FP32 from FP32 constants (or int8 in the same fused kernels); only the file shrinks. Constants
of the protected attention path (:func:`attention_score_nodes`: the GRU's inputs, anything between a score MatMul and
its Softmax, the q/k projections that feed a score MatMul) are never touched. TensorRT builds skip this pass: some
TensorRT parsers require all three DequantizeLinear inputs.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import numpy_helper


def _base36(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if not i:
            return out


def compact_names(model: onnx.ModelProto) -> dict[str, int]:
    """Rename tensors / quantizer nodes of ``model`` in place; returns counts for the manifest."""
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return {"compacted_tensors": 0}  # subgraphs capture outer names: not worth the risk
    fixed = {v.name for v in list(g.input) + list(g.output)} | {""}
    mapping: dict[str, str] = {}
    ids = (i for i in itertools.count() if _base36(i) not in fixed)

    def short(name: str) -> str:
        if name in fixed:
            return name
        if name not in mapping:
            mapping[name] = _base36(next(ids))
        return mapping[name]

    for init in g.initializer:
        init.name = short(init.name)
    for n in g.node:
        n.input[:] = [short(i) for i in n.input]
        n.output[:] = [short(o) for o in n.output]
    renamed_nodes = 0
    for k, n in enumerate(g.node):
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            n.name = f"{'q' if n.op_type == 'QuantizeLinear' else 'dq'}{_base36(k)}"
            renamed_nodes += 1
    del g.value_info[:]
    return {"compacted_tensors": len(mapping), "compacted_qdq_nodes": renamed_nodes}


INT8, INT32, FLOAT, FLOAT16 = (onnx.TensorProto.INT8, onnx.TensorProto.INT32, onnx.TensorProto.FLOAT,
                                 onnx.TensorProto.FLOAT16)
#: FP16 storage: smallest constant worth a Cast node (~30 bytes), and the largest FP16 rounding error accepted.
FP16_MIN_ELEMENTS = 32
FP16_MAX_REL_ERROR = 1e-3
#: Ops walked through between a score MatMul and the projections that feed it.
_PASS = frozenset({"Transpose", "Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze", "Mul", "Div"})


def shrink_for_onnxruntime(model: onnx.ModelProto) -> dict[str, int]:
    """The onnxruntime-only size pass, in place (the steps are listed in the module doc). Returns counts and bytes
    for the manifest."""
    info = _drop_zero_points(model)
    info.update(drop_default_attributes(model))
    info.update(constants_as_initializers(model))
    info.update(bias_scales_as_products(model))
    info.update(narrow_int32_biases(model))
    info.update(store_tables_int8(model))
    info.update(store_constants_fp16(model))
    _drop_unused_initializers(model.graph)
    return info


def _drop_zero_points(model: onnx.ModelProto) -> dict[str, int]:
    """Drop the all-zero zero-point inputs of weight DequantizeLinear nodes (the default), except before a Gemm:
    onnxruntime before 1.28 fuses a per-channel DequantizeLinear -> Gemm into a QGemm that then refuses a missing
    zero point ("zero point and scale of input b should have same shape size"), so the INT8 export failed to run
    on the older onnxruntime builds Jetson and pinned deployments carry."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    feeds_gemm = {i for n in g.node if n.op_type == "Gemm" for i in n.input}
    dropped = 0
    for n in g.node:
        if n.op_type != "DequantizeLinear" or len(n.input) < 3 or n.input[0] not in inits or n.input[2] not in inits:
            continue
        if n.output[0] in feeds_gemm:
            continue
        if inits[n.input[0]].data_type not in (INT8, INT32):
            continue
        if np.any(numpy_helper.to_array(inits[n.input[2]])):
            continue
        del n.input[2]
        dropped += 1
    _drop_unused_initializers(g)
    return {"dropped_weight_zero_points": dropped}


def _drop_unused_initializers(g: onnx.GraphProto) -> None:
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)


#: Attributes whose value is the ONNX default (removing them changes nothing): op -> name -> test on the value.
_DEFAULTS = {
    "Conv": {"dilations": lambda v: all(x == 1 for x in v), "strides": lambda v: all(x == 1 for x in v),
             "group": lambda v: v == 1, "pads": lambda v: all(x == 0 for x in v)},
    "Reshape": {"allowzero": lambda v: v == 0},
    "Gather": {"axis": lambda v: v == 0},
    "LayerNormalization": {"axis": lambda v: v == -1},
}


def drop_default_attributes(model: onnx.ModelProto) -> dict[str, int]:
    """Remove node attributes that spell out the ONNX default (Conv ``dilations``/``strides`` of 1, ``group`` 1, zero
    ``pads``; Reshape ``allowzero`` 0; Gather ``axis`` 0; LayerNormalization ``axis`` -1), in place."""
    dropped = 0
    for n in model.graph.node:
        rules = _DEFAULTS.get(n.op_type)
        if not rules:
            continue
        keep = []
        for a in n.attribute:
            value = onnx.helper.get_attribute_value(a)
            if a.name in rules and rules[a.name](value):
                dropped += 1
            else:
                keep.append(a)
        del n.attribute[:]
        n.attribute.extend(keep)
    return {"dropped_default_attributes": dropped}


def constants_as_initializers(model: onnx.ModelProto) -> dict[str, int]:
    """Turn ``Constant`` nodes holding a tensor into initializers named by their output, in place, except those in the
    scope of an attention module (the module around a Softmax: the precision plan lists them by node name)."""
    from pinlite_edge.export.plan import onnx_node_scope

    g = model.graph
    attention = {onnx_node_scope(n.name)[0].rpartition(".")[0] for n in g.node if n.op_type == "Softmax"}
    graph_outputs = {o.name for o in g.output}
    keep, added = [], []
    for n in g.node:
        value = next((a.t for a in n.attribute if a.name == "value"), None) if n.op_type == "Constant" else None
        if value is None or len(n.attribute) != 1 or n.output[0] in graph_outputs or \
                onnx_node_scope(n.name)[0] in attention:
            keep.append(n)
            continue
        t = onnx.TensorProto()
        t.CopyFrom(value)
        t.name = n.output[0]
        added.append(t)
    if added:
        del g.node[:]
        g.node.extend(keep)
        g.initializer.extend(added)
    return {"constants_as_initializers": len(added)}


def _qdq_bias_units(g: onnx.GraphProto, inits: dict[str, onnx.TensorProto]):
    """(bias DequantizeLinear, activation scale name, weight scale name) of every QDQ Conv/Gemm with an int32 bias."""
    producers = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3:
            continue
        x, w, b = (producers.get(t) for t in n.input[:3])
        if not all(p is not None and p.op_type == "DequantizeLinear" for p in (x, w, b)):
            continue
        if b.input[0] not in inits or inits[b.input[0]].data_type != INT32 or w.input[0] not in inits:
            continue
        yield b, x.input[1], w.input[1]


def bias_scales_as_products(model: onnx.ModelProto) -> dict[str, int]:
    """Replace each stored int32-bias scale by ``Mul(activation scale, weight scale)`` when it is exactly that
    product (as the quantizer defines it), in place: the per-channel bias scales are not stored twice."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    muls = []
    for bias_dq, x_scale, w_scale in _qdq_bias_units(g, inits):
        if not {x_scale, w_scale, bias_dq.input[1]} <= set(inits):
            continue
        product = numpy_helper.to_array(inits[x_scale]).astype(np.float32) * \
            numpy_helper.to_array(inits[w_scale]).astype(np.float32)
        stored = numpy_helper.to_array(inits[bias_dq.input[1]])
        if product.shape != stored.shape or not np.array_equal(product, stored):
            continue
        out = f"{bias_dq.input[1]}_p"
        muls.append(onnx.helper.make_node("Mul", [x_scale, w_scale], [out], name=f"bs{len(muls)}"))
        bias_dq.input[1] = out
    for k, m in enumerate(muls):
        g.node.insert(k, m)
    _drop_unused_initializers(g)
    return {"bias_scales_as_products": len(muls)}


def narrow_int32_biases(model: onnx.ModelProto) -> dict[str, int]:
    """Store an int32 bias whose values all fit int16 as int16 + ``Cast`` to int32 (lossless), in place."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    casts = []
    for bias_dq, _, _ in _qdq_bias_units(g, inits):
        init = inits[bias_dq.input[0]]
        value = numpy_helper.to_array(init)
        if value.size < FP16_MIN_ELEMENTS or np.abs(value).max() > np.iinfo(np.int16).max:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(value.astype(np.int16), name + "_s"))
        casts.append(onnx.helper.make_node("Cast", [name + "_s"], [name], name=f"b16_{len(casts)}", to=INT32))
    for k, c in enumerate(casts):
        g.node.insert(k, c)
    return {"int16_stored_biases": len(casts)}


#: Smallest additive table (``Add`` operand of rank >= 2, e.g. a positional embedding) stored int8.
TABLE_MIN_ELEMENTS = 1024


def store_tables_int8(model: onnx.ModelProto, min_elements: int = TABLE_MIN_ELEMENTS) -> dict[str, int]:
    """Store each FP32 additive table (an ``Add`` operand initializer of rank >= 2 with ``min_elements`` values or
    more, used by that node only, outside the attention score path: the positional embeddings) as int8 with one
    scale per row (symmetric, the last axis is a row) behind ``Cast * scale``, like weight-only layers; in place.
    The Add still computes in FP32 from an FP32 constant once onnxruntime folds the Cast * scale."""
    from pinlite_edge.export.onnx_weight_only import quantize_weight

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    protected = attention_score_nodes(g)
    added: list[onnx.NodeProto] = []
    saved = 0
    for n in g.node:
        if n.op_type != "Add" or n.name in protected:
            continue
        for k, name in enumerate(n.input):
            init = inits.get(name)
            if init is None or init.data_type != FLOAT or len(init.dims) < 2 or uses[name] != 1 or \
                    int(np.prod(init.dims)) < min_elements:
                continue
            value = numpy_helper.to_array(init).astype(np.float32)
            q, scale = quantize_weight(value.reshape(-1, value.shape[-1]), axis=0)
            before = len(init.SerializeToString())
            init.CopyFrom(numpy_helper.from_array(q.reshape(value.shape), name + "_q"))
            scales = numpy_helper.from_array(scale.reshape(*value.shape[:-1], 1), name + "_r")
            g.initializer.append(scales)
            tag = _base36(len(added))
            added += [onnx.helper.make_node("Cast", [name + "_q"], [name + "_f"], name=f"tc{tag}", to=FLOAT),
                      onnx.helper.make_node("Mul", [name + "_f", name + "_r"], [name], name=f"tm{tag}")]
            saved += before - len(init.SerializeToString()) - len(scales.SerializeToString())
    for k, m in enumerate(added):
        g.node.insert(k, m)
    return {"int8_stored_tables": len(added) // 2, "int8_table_bytes_saved": int(saved)}


def attention_score_nodes(g: onnx.GraphProto) -> set[str]:
    """Names of the nodes whose constants FP16 storage must not touch: every GRU, each Softmax and what lies between
    it and its score MatMul (scaling Mul, bias Add/Gather), the probabilities x values MatMul, and the projections
    (MatMul + bias Add) feeding a score MatMul's operands."""
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = {n.name for n in g.node if n.op_type == "GRU"}
    for sm in (n for n in g.node if n.op_type == "Softmax"):
        out.add(sm.name)
        stack, scores = [sm.input[0]], []
        while stack:  # back to the score MatMul
            p = producers.get(stack.pop())
            if p is None or p.name in out:
                continue
            out.add(p.name)
            if p.op_type == "MatMul":
                scores.append(p)
                continue
            stack.extend(i for i in p.input if i)
        for mm in scores:  # q / k operands: back through layout ops to their projection MatMul (+ bias Add)
            stack = [i for i in mm.input if i]
            while stack:
                p = producers.get(stack.pop())
                if p is None or p.name in out:
                    continue
                if p.op_type in _PASS or p.op_type in ("Add", "MatMul"):
                    out.add(p.name)
                    if p.op_type != "MatMul":
                        stack.extend(i for i in p.input if i)
        stack = list(sm.output)
        while stack:  # forward to the probabilities x values MatMul
            for c in consumers.get(stack.pop(), []):
                if c.op_type == "MatMul":
                    out.add(c.name)
                elif c.op_type in _PASS:
                    stack.extend(c.output)
    return out


def _fp16_candidates(g: onnx.GraphProto, inits: dict[str, onnx.TensorProto]) -> dict[str, str]:
    """FP32 initializer -> ``"scale"`` (relative error per value) or ``"shift"`` (relative to the largest value)."""
    protected = attention_score_nodes(g)
    producers = {o: n for n in g.node for o in n.output}
    wanted: dict[str, str] = {}
    blocked: set[str] = set()

    def block(t: str, depth: int = 0) -> None:  # an initializer and the constant chain (Cast * scale, DQ) behind it
        if t in inits:
            blocked.add(t)
        p = producers.get(t)
        if p is not None and depth < 4 and p.op_type in ("Cast", "Mul", "Reshape", "DequantizeLinear"):
            for i in p.input:
                block(i, depth + 1)

    for n in g.node:
        slots: dict[int, str] = {}
        if n.name in protected:
            for i in n.input:
                block(i)
            continue
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            slots = {1: "scale"}  # a weight's or bias's per-channel scale
        elif n.op_type == "Mul" and len(n.input) == 2 and n.input[0] in inits and n.input[1] in inits:
            slots = {0: "scale", 1: "scale"}  # constant arithmetic: a bias scale as activation x weight scale
        elif n.op_type == "Mul" and len(n.input) == 2 and n.input[0] not in inits and n.input[1] in inits:
            src = producers.get(n.input[0])
            if src is not None and src.op_type == "Cast" and src.input[0] in inits and \
                    inits[src.input[0]].data_type == INT8:
                slots = {1: "scale"}  # weight-only storage: Cast(int8) * scale
        elif n.op_type in ("Conv", "Gemm"):
            slots = {2: "shift"}
        elif n.op_type == "LayerNormalization":
            slots = {1: "shift", 2: "shift"}
        elif n.op_type == "Add":
            slots = {k: "shift" for k in (0, 1)}
        for k, kind in slots.items():
            if k < len(n.input) and n.input[k] in inits:
                wanted.setdefault(n.input[k], kind)
        # any other use of an initializer keeps it FP32
        blocked.update(i for k, i in enumerate(n.input) if i in inits and k not in slots)
    return {name: kind for name, kind in wanted.items() if name not in blocked}


def store_constants_fp16(model: onnx.ModelProto, min_elements: int = FP16_MIN_ELEMENTS,
                         max_rel_error: float = FP16_MAX_REL_ERROR) -> dict[str, int]:
    """Store the FP32 scaling/shifting constants of ``model`` as FP16 + ``Cast`` to FP32, in place (module doc)."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    casts: list[onnx.NodeProto] = []
    saved = 0
    for name, kind in _fp16_candidates(g, inits).items():
        init = inits[name]
        if init.data_type != FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        value = numpy_helper.to_array(init).astype(np.float32)
        half = value.astype(np.float16)
        if not np.all(np.isfinite(half)):
            continue
        err = np.abs(half.astype(np.float32) - value)
        if kind == "scale":
            if np.any(err > max_rel_error * np.abs(value)):
                continue
        elif np.any(err > max_rel_error * float(np.abs(value).max())):
            continue
        stored = numpy_helper.from_array(half, name + "_h")
        before = len(init.SerializeToString())
        init.CopyFrom(stored)
        casts.append(onnx.helper.make_node("Cast", [name + "_h"], [name], name=f"h{_base36(len(casts))}", to=FLOAT))
        saved += before - len(init.SerializeToString())
    for k, c in enumerate(casts):  # constants first: the graph stays topologically sorted
        g.node.insert(k, c)
    return {"fp16_stored_constants": len(casts), "fp16_bytes_saved": int(saved)}


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
