"""What a graph really computes, node by node: the manifest's precision facts read from the graph that will run.

SPEC §6 asks for the precision plan "read back from the final graph". After an export, :func:`onnx_node_precisions`
walks an ONNX graph (the artefact itself, or the graph onnxruntime runs after its fusions) and
:func:`executorch_node_precisions` walks the PT2E-quantized ExecuTorch program; each node gets

* ``compute``: ``fp32`` / ``fp16`` / ``bf16`` (float math in that type), ``int8`` (an integer kernel: ``QLinearConv``,
  ``MatMulIntegerToFloat``, ``MatMulNBits`` with ``accuracy_level`` 4, or a Conv/MatMul/Gemm whose every non-constant
  input and weight arrive through DequantizeLinear -- the QDQ unit a runtime fuses into an int8 kernel -- unless the
  graph is one onnxruntime already optimized (it holds its fused or integer kernels): a QDQ unit it left unfused
  there runs FP32 on the dequantized, int8-rounded inputs and is reported as such),
  ``quantize`` / ``dequantize`` / ``cast`` (conversions); nodes with no float tensor (shape arithmetic) are left
  out;
* ``quantized_inputs``: input positions fed by an *activation* DequantizeLinear (the tensor was rounded to int8);
* ``weight_storage``: the stored type of its constant weight input (``int8`` behind DequantizeLinear or Cast * scale,
  ``fp16``, ``fp32``), or None.

:func:`precision_report` adds which plan entry each node belongs to, checks the protected path (``PROTECTED_KINDS``:
GRU, softmax, score scaling/bias, attention MatMuls, last block's q/k projections) and every float entry against the
graph, and returns the dict stored in the manifest (``precision_plan.graph_precision``). A violation is an
:class:`ExportError`: an artefact whose graph contradicts its plan is never published.
"""
from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from pinlite_edge.errors import ExportError
from pinlite_edge.export.plan import PROTECTED_KINDS, FloatEntry, PrecisionPlan, onnx_node_scope

# ONNX TensorProto element types (onnx.TensorProto.*), written out so the walk needs no onnx import.
FLOAT, UINT8, INT8, INT32, INT64, BOOL, FLOAT16, DOUBLE, BFLOAT16 = 1, 2, 3, 6, 7, 9, 10, 11, 16
_FLOAT_NAMES = {FLOAT: "fp32", FLOAT16: "fp16", BFLOAT16: "bf16", DOUBLE: "fp64"}
_STORAGE_NAMES = {**_FLOAT_NAMES, INT8: "int8", UINT8: "uint8", INT32: "int32"}
#: Integer kernels (onnxruntime contrib ops and ONNX integer ops): their math is int8 x int8.
INT8_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat", "QGemm", "QLinearAdd",
    "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearConcat", "QLinearSoftmax", "QLinearReduceMean", "QLinearWhere", "QLinearConvTranspose", "QAttention",
    "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QEmbedLayerNormalization",
})
QUANTIZE_OPS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear"})
#: Fused / quantized op type -> the ONNX op it computes (to match plan entries that name op types).
BASE_OP = {"FusedMatMul": "MatMul", "MatMulIntegerToFloat": "MatMul", "QLinearMatMul": "MatMul",
           "MatMulInteger": "MatMul", "MatMulNBits": "MatMul", "DynamicQuantizeMatMul": "MatMul",
           "QLinearConv": "Conv", "FusedConv": "Conv", "ConvInteger": "Conv", "QGemm": "Gemm", "FusedGemm": "Gemm",
           "QLinearAdd": "Add", "QLinearMul": "Mul", "QLinearSoftmax": "Softmax"}
_QDQ_UNIT_OPS = frozenset({"Conv", "MatMul", "Gemm"})
#: Kernels only onnxruntime's optimizer writes (their presence marks an optimized graph).
_ORT_FUSED = frozenset({"FusedConv", "FusedMatMul", "FusedGemm", "NhwcConv", "QuickGelu", "BiasGelu"})
_CONST_PASS = frozenset({"DequantizeLinear", "Cast", "Reshape", "Mul", "Transpose", "Identity", "Unsqueeze",
                         "Squeeze", "Gather", "Concat", "Div"})


@dataclass
class NodePrecision:
    name: str
    op: str
    compute: str
    module: str = ""
    quantized_inputs: list[int] = field(default_factory=list)
    weight_storage: str | None = None
    kind: str | None = None  # the plan entry kind this node belongs to (None: not in the plan)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if k in ("name", "op", "compute") or v not in (None, [], "")}


# --- ONNX ------------------------------------------------------------------------------------------------------
def _attr(node, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            if a.type == 2:  # INT
                return a.i
            if a.type == 1:  # FLOAT
                return a.f
            if a.type == 3:  # STRING
                return a.s.decode()
            if a.type == 4:  # TENSOR
                return a.t
    return default


def _onnx_types(model) -> dict[str, int]:
    """Element type of every tensor, propagated through the graph (works for onnxruntime's contrib ops too)."""
    g = model.graph
    types: dict[str, int] = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        if v.type.tensor_type.elem_type:
            types[v.name] = v.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for n in g.node:
        ins = [types.get(i) for i in n.input]
        first_float = next((t for t in ins if t in _FLOAT_NAMES), None)
        op = n.op_type
        if op == "Constant":
            t = _attr(n, "value")
            out = [t.data_type if t is not None else FLOAT]
        elif op == "QuantizeLinear":
            zp = ins[2] if len(ins) > 2 and n.input[2] else None
            out = [zp or _attr(n, "output_dtype") or UINT8]
        elif op == "DynamicQuantizeLinear":
            out = [UINT8, FLOAT, UINT8]
        elif op == "DequantizeLinear":
            out = [_attr(n, "output_dtype") or (ins[1] if len(ins) > 1 and ins[1] else FLOAT)]
        elif op == "Cast":
            out = [_attr(n, "to")]
        elif op in ("Shape", "Size", "NonZero", "ArgMax", "ArgMin"):
            out = [INT64]
        elif op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "IsNaN"):
            out = [BOOL]
        elif op in ("MatMulInteger", "ConvInteger"):
            out = [INT32]
        elif op == "ConstantOfShape":
            t = _attr(n, "value")
            out = [t.data_type if t is not None else FLOAT]
        elif op in ("MatMulIntegerToFloat", "MatMulNBits", "DynamicQuantizeMatMul"):
            out = [next((t for t in ins[1:] if t in _FLOAT_NAMES), FLOAT)]
        elif op.startswith("QLinear") or op == "QGemm":
            out = [ins[-1] if n.input[-1] and ins[-1] in (INT8, UINT8) else (ins[0] or UINT8)]
        elif op in ("Gather", "GatherElements", "Slice", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Expand",
                    "Tile", "Flatten", "Identity"):
            out = [ins[0]]
        elif op == "Where":
            out = [ins[1] if len(ins) > 1 else None]
        else:
            out = [first_float or (ins[0] if ins else None)]
        for k, o in enumerate(n.output):
            if o and o not in types:
                t = out[k] if k < len(out) else out[-1]
                if t is not None:
                    types[o] = t
    return types


def onnx_node_precisions(model) -> list[NodePrecision]:
    """Every node of an ONNX ``ModelProto`` with float or quantized compute (see the module doc)."""
    g = model.graph
    types = _onnx_types(model)
    inits = {i.name for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    const_memo: dict[str, bool] = {}

    def is_const(t: str) -> bool:
        if t in const_memo:
            return const_memo[t]
        const_memo[t] = False  # cycle guard
        p = producers.get(t)
        ok = t in inits or (p is not None and (p.op_type == "Constant" or (
            p.op_type in _CONST_PASS and all(is_const(i) for i in p.input if i))))
        const_memo[t] = ok
        return ok

    def storage(t: str) -> int | None:
        """Element type of the initializer a constant tensor is computed from (its first input's chain)."""
        seen = 0
        while t not in inits and seen < 16:
            p = producers.get(t)
            if p is None or not p.input:
                return types.get(t)
            t, seen = p.input[0], seen + 1
        return types.get(t)

    def activation_dq(t: str) -> bool:
        p = producers.get(t)
        return p is not None and p.op_type == "DequantizeLinear" and not is_const(p.input[0])

    def from_dq(t: str) -> bool:
        p = producers.get(t)
        return p is not None and p.op_type == "DequantizeLinear"

    # A graph holding onnxruntime's fused / integer kernels has had its QDQ fusions: what it left unfused runs float.
    runtime_fused = any(n.op_type in INT8_OPS or n.op_type in _ORT_FUSED or n.domain == "com.microsoft"
                        for n in g.node)
    out = []
    for n in g.node:
        op = n.op_type
        float_in = [types.get(i) for i in n.input if i and types.get(i) in _FLOAT_NAMES]
        float_out = [types.get(o) for o in n.output if o and types.get(o) in _FLOAT_NAMES]
        q_inputs = [k for k, i in enumerate(n.input) if i and activation_dq(i)]
        if op == "DynamicQuantizeLinear" or any(producers.get(i) is not None and producers[i].op_type ==
                                                "DynamicQuantizeLinear" for i in n.input if i):
            q_inputs = q_inputs or [0]
        weight = next((i for k, i in enumerate(n.input) if k >= 1 and i and is_const(i)
                       and (types.get(i) in _FLOAT_NAMES or types.get(i) in (INT8, UINT8))), None)
        w_store = _STORAGE_NAMES.get(storage(weight)) if weight is not None else None
        if op in INT8_OPS:
            compute = "int8"
        elif op == "MatMulNBits":
            # accuracy_level 4: onnxruntime quantizes the activations to int8 on the fly (int8 x intN kernels)
            compute = "int8" if _attr(n, "accuracy_level", 0) == 4 else (_FLOAT_NAMES.get(float_in[0]) if float_in
                                                                         else "fp32")
            w_store = f"int{_attr(n, 'bits', 4)}"
        elif op in QUANTIZE_OPS:
            compute = "quantize"
        elif op == "DequantizeLinear":
            compute = "dequantize"
        elif op == "Cast":
            compute = "cast"
        elif op in _QDQ_UNIT_OPS and q_inputs and all(from_dq(i) for i in n.input[:2] if i) and not runtime_fused:
            compute = "int8"  # QDQ unit: activation and weight (or both operands) through DequantizeLinear
        elif float_in or float_out:
            dtypes = set(float_in or float_out)
            compute = "fp16" if FLOAT16 in dtypes else _FLOAT_NAMES[min(dtypes)]
        else:
            continue  # shape arithmetic: no float math
        if op == "DequantizeLinear" or op in QUANTIZE_OPS or op == "Cast":
            w_store = None
        out.append(NodePrecision(n.name, op, compute, onnx_node_scope(n.name)[0], q_inputs, w_store))
    return out


# --- ExecuTorch (torch.fx graph of the PT2E-quantized program) -------------------------------------------------
_ET_QUANT = ("quantize_per_tensor", "quantize_per_channel", "choose_qparams")
_ET_DEQUANT = ("dequantize_per_tensor", "dequantize_per_channel")
_ET_WEIGHT_OPS = ("linear", "conv1d", "conv2d", "convolution", "matmul", "bmm", "baddbmm", "addmm", "mm")


def _et_target(node) -> str:
    t = node.target
    return getattr(t, "__name__", str(t)).split(".")[0] if node.op == "call_function" else ""


def _et_module(node, root: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    path = path.split("L['self'].", 1)[-1] if "L['self']" in path else path
    path = path.replace("._modules['", ".").replace("']", "")
    return path[len(root) + 1:] if path.startswith(root + ".") else ("" if path == root else path)


def executorch_node_precisions(graph_module, root: str = "model") -> list[NodePrecision]:
    """Every call of a torch.fx graph (e.g. the PT2E-converted program) with float or quantized compute.

    Node names are ``<module path>/<op>_<k>`` so that :func:`onnx_node_scope` -style scopes apply; ``module`` is
    taken from ``nn_module_stack`` (the torch module that issued the call)."""
    import torch

    nodes = [n for n in graph_module.graph.nodes if n.op == "call_function"]
    # constants reach a call through get_attr / placeholder (lifted) nodes
    out = []
    for n in nodes:
        target = _et_target(n)
        val = n.meta.get("val")
        dtype = getattr(val, "dtype", None)
        module = _et_module(n, root)
        args = [a for a in n.args if isinstance(a, torch.fx.Node)]
        dq_args = [k for k, a in enumerate(args) if _et_target(a) in _ET_DEQUANT]
        act_dq = [k for k in dq_args if args[k].args and isinstance(args[k].args[0], torch.fx.Node)
                  and args[k].args[0].op == "call_function"]
        weight_store = None
        if target in _ET_DEQUANT:
            compute = "dequantize"
        elif target in _ET_QUANT:
            compute = "quantize"
        elif target in ("_to_copy", "to"):
            compute = "cast"
        elif target in _ET_WEIGHT_OPS and act_dq and len(dq_args) >= 2:
            compute, weight_store = "int8", "int8"
        elif dtype in (torch.float32, torch.float16, torch.bfloat16):
            compute = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
            w = [a for k, a in enumerate(args) if k >= 1 and k in dq_args and k not in act_dq]
            weight_store = "int8" if w else None
        else:
            continue
        name = f"/{module.replace('.', '/')}/{target}" if module else f"/{target}"
        out.append(NodePrecision(f"{name}#{n.name}", target, compute, module,
                                 act_dq if compute != "int8" else act_dq, weight_store))
    return out


# --- the report ------------------------------------------------------------------------------------------------
#: torch op names that stand for an ONNX op type named by a plan entry's ``ops``.
_ET_OPS = {"MatMul": ("matmul", "bmm", "baddbmm", "mm"), "Mul": ("mul",), "Add": ("add",),
           "Gather": ("index", "gather", "embedding"), "Softmax": ("softmax", "_softmax"),
           "Conv": ("conv1d", "conv2d", "convolution"), "Gemm": ("linear", "addmm")}


def _matches(node: NodePrecision, entry: FloatEntry, names: set[str]) -> bool:
    if names and (node.name in names or any(node.name.startswith(n + "/") for n in names)):
        return True
    if entry.ops is None:
        return node.module == entry.module or node.module.startswith(entry.module + ".")
    if node.module != entry.module:
        return False
    base = BASE_OP.get(node.op, node.op)
    return base in entry.ops or any(node.op in _ET_OPS.get(o, ()) for o in entry.ops)


def assign_kinds(nodes: Sequence[NodePrecision], plan: PrecisionPlan) -> dict[str, list[NodePrecision]]:
    """Tag each node with the kind of the plan entry it belongs to (protected kinds first); entry module -> nodes."""
    order = sorted(plan.float_layers, key=lambda e: e.kind not in PROTECTED_KINDS)
    per_entry: dict[str, list[NodePrecision]] = collections.defaultdict(list)
    for node in nodes:
        if node.compute in ("quantize", "dequantize", "cast"):
            continue  # conversions belong to the layer they feed
        for entry in order:
            if _matches(node, entry, set(entry.onnx_nodes)):
                node.kind = node.kind or entry.kind
                per_entry[f"{entry.kind}:{entry.module}"].append(node)
    return per_entry


def precision_report(nodes: Sequence[NodePrecision], plan: PrecisionPlan, graph: str, *,
                     float_compute: Iterable[str] = ("fp32",), allow_int8_gru_weights: bool = False,
                     required_kinds: Iterable[str] = PROTECTED_KINDS) -> dict[str, Any]:
    """The manifest section for one graph. Checks (a violation raises ExportError):

    * every node of a protected entry computes in ``float_compute`` (FP32) with no activation Q/DQ on its inputs,
      and a GRU's weights are not stored int8 unless ``allow_int8_gru_weights``;
    * every other float entry (sensitivity, speed) computes float with no Q/DQ on its inputs;
    * every protected kind in ``required_kinds`` that the plan lists has nodes in the graph;
    * a plan entry saying ``weight_storage="int8"`` has int8-stored weights in the graph, and one saying float has none.
    """
    allowed = set(float_compute)
    per_entry = assign_kinds(nodes, plan)
    violations = []
    verified = []
    for entry in plan.float_layers:
        key = f"{entry.kind}:{entry.module}"
        hits = per_entry.get(key, [])
        if not hits:
            if entry.kind in required_kinds:
                violations.append(f"{key}: no node of this plan entry in the {graph} graph")
            continue
        bad = [h for h in hits if h.compute not in allowed or h.quantized_inputs]
        if entry.kind == "gru" and not allow_int8_gru_weights:
            bad += [h for h in hits if h.weight_storage == "int8"]
        for h in bad:
            violations.append(f"{key}: node {h.name} ({h.op}) computes {h.compute}"
                              + (f" with int8-rounded inputs {h.quantized_inputs}" if h.quantized_inputs else "")
                              + (f", weights stored {h.weight_storage}" if h.weight_storage == "int8" else ""))
        stored_int8 = any(h.weight_storage == "int8" for h in hits)
        if (entry.weight_storage == "int8") != stored_int8 and graph == "artefact":
            violations.append(f"{key}: the plan says weight storage {entry.weight_storage!r}, the graph stores "
                              f"{'int8' if stored_int8 else 'float'} weights")
        if not bad:
            verified.append(key)
    summary = collections.Counter(n.compute for n in nodes)
    protected = [n for n in nodes if n.kind in PROTECTED_KINDS]
    report = {
        "graph": graph,
        "summary": dict(sorted(summary.items())),
        "protected_path": {"nodes": len(protected),
                           "compute": dict(sorted(collections.Counter(n.compute for n in protected).items())),
                           "with_quantized_inputs": sum(bool(n.quantized_inputs) for n in protected)},
        "verifies": verified,
        "violations": violations,
        "nodes": [n.to_dict() for n in nodes],
    }
    return report


def require_consistent(report: dict[str, Any], artefact: str) -> None:
    """Raise ExportError when a report has violations (the artefact would contradict its manifest)."""
    if report["violations"]:
        shown = "; ".join(report["violations"][:6])
        more = len(report["violations"]) - 6
        raise ExportError(f"{artefact}: the {report['graph']} graph contradicts the precision plan: {shown}"
                          + (f" (+{more} more)" if more > 0 else ""))
