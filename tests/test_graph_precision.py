"""The protected path stays FP32 in every artefact kind, and the manifest says what the graph computes (#14 item 3).

Protected path (SPEC §6): the GRU (weights and activations), each Softmax, the score scaling Mul and the
relative-position-bias Add before it, the attention MatMuls, and the last block's query/key projections. It is found
here *from the graph's structure* (walking back from each Softmax to the score MatMul, forward to the
probabilities x values MatMul; the GRU node; the last block's q/k projection MatMuls), not from the plan, so a plan that
forgets a node cannot hide it. Each protected node must compute FP32, no input may arrive through an activation
Q/DQ pair, and the GRU's W/R must be FP32 initializers. The SPEC would allow FP16 attention MatMuls in ``onnx-fp16``;
the plan keeps them FP32 there too, and this test holds it to that.

Then the manifest: its ``graph_precision`` node list must be what a fresh walk of the artefact (and of onnxruntime's
optimized graph) gives, and every protected node must appear there as FP32 under a protected plan kind.
Tiny preset; ``pte-int8`` checks the PT2E program recorded at export (the XNNPACK delegate blob is opaque).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from pinlite_edge.export import export_from_model
from pinlite_edge.export.graph_precision import onnx_node_precisions
from pinlite_edge.export.plan import PROTECTED_KINDS
from pinlite_edge.manifest import read_manifest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FLOAT, FLOAT16 = 1, 10
MATMULS = {"MatMul", "FusedMatMul", "MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "MatMulNBits"}
PASS = {"Transpose", "Reshape", "Cast", "Identity", "Unsqueeze", "Squeeze"}  # walked through


@pytest.fixture(scope="module")
def fp16(student, cal, tmp_path_factory):
    return export_from_model(student, "onnx-fp16", tmp_path_factory.mktemp("fp16"), calibration=cal, calib_size=8,
                             sensitivity=False)


@pytest.fixture(scope="module")
def int8(student, cal, tmp_path_factory):
    return export_from_model(student, "onnx-int8", tmp_path_factory.mktemp("int8"), calibration=cal, calib_size=8,
                             sensitivity_size=4, keep_float=1)


@pytest.fixture(scope="module")
def trt_qdq(student, cal):
    """The FP16 + QDQ ONNX a TensorRT INT8 engine is built from (no TensorRT needed to write it)."""
    from pinlite_edge.export.api import ExportContext
    from pinlite_edge.export.formats import get_format
    from pinlite_edge.export.onnx_formats import build_int8_onnx
    from pinlite_edge.export.options import ExportOptions

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ctx = ExportContext(student, get_format("trt-int8"), ExportOptions(calib_size=8, sensitivity=False),
                            work / "x.engine", work, cal)
        plan, facts = build_int8_onnx(ctx, work / "int8.onnx", for_tensorrt=True)
        yield onnx.load(str(work / "int8.onnx")), plan, facts


def _types(model) -> dict[str, int]:
    from pinlite_edge.export.graph_precision import _onnx_types

    return _onnx_types(model)


def protected_nodes(model, last_block: int) -> dict[str, str]:
    """Structural protected path of an ONNX graph: node name -> why."""
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out: dict[str, str] = {}
    for sm in (n for n in g.node if n.op_type == "Softmax"):
        out[sm.name] = "softmax"
        stack = [sm.input[0]]
        while stack:  # back to the score MatMul: scaling Mul, bias Add (and the bias Gather), Casts between
            p = producers.get(stack.pop())
            if p is None or p.op_type in ("Constant", "QuantizeLinear"):
                continue
            out.setdefault(p.name, "scores")
            if p.op_type in MATMULS:
                out[p.name] = "attention_matmul"
                continue
            stack.extend(i for i in p.input if i)
        stack = list(sm.output)
        while stack:  # forward to the probabilities x values MatMul
            for c in consumers.get(stack.pop(), []):
                if c.op_type in MATMULS:
                    out[c.name] = "attention_matmul"
                elif c.op_type in PASS:
                    stack.extend(c.output)
    for n in g.node:
        if n.op_type == "GRU":
            out[n.name] = "gru"
        if any(f"blocks.{last_block}/attn/{p}/" in n.name for p in ("q_proj", "k_proj")) and (
                n.op_type in MATMULS):
            out[n.name] = "attention_output"
    return out


def check_protected(model, last_block: int) -> list[str]:
    """Every failure of the protected path in ``model`` (empty: it holds)."""
    g = model.graph
    types = _types(model)
    producers = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    prec = {p.name: p for p in onnx_node_precisions(model)}
    protected = protected_nodes(model, last_block)
    assert {"softmax", "attention_matmul", "gru", "attention_output"} <= set(protected.values())
    failures = []

    def through_qdq(t: str) -> bool:
        seen = 0
        while t in producers and seen < 8:
            p = producers[t]
            if p.op_type in ("DequantizeLinear", "DynamicQuantizeLinear"):
                return p.input[0] not in inits  # activation Q/DQ (a weight's own DequantizeLinear is storage)
            if p.op_type not in PASS:
                return False
            t, seen = p.input[0], seen + 1
        return False

    for name, why in protected.items():
        node = next(n for n in g.node if n.name == name)
        if node.op_type in ("Cast", "Constant", "Shape") or node.op_type in PASS:
            if node.op_type == "Cast" and types.get(node.output[0]) == FLOAT16:
                failures.append(f"{why}: {name} casts a protected tensor to FP16")
            continue
        p = prec.get(name)
        if p is None or p.compute != "fp32":
            failures.append(f"{why}: {name} ({node.op_type}) computes {p.compute if p else 'nothing float'}")
        float_in = [types.get(i) for i in node.input if i and types.get(i) in (FLOAT, FLOAT16)]
        if FLOAT16 in float_in:
            failures.append(f"{why}: {name} has FP16 inputs")
        for k, i in enumerate(node.input):
            if i and through_qdq(i):
                failures.append(f"{why}: {name} input {k} arrives through an activation Q/DQ")
        if why == "gru":
            for i in node.input[1:3]:
                root = i
                while root in producers and producers[root].input:
                    root = producers[root].input[0]
                if root not in inits or inits[root].data_type != FLOAT:
                    failures.append(f"gru: {name} weight {i} is not an FP32 initializer (stored "
                                    f"{inits[root].data_type if root in inits else 'computed'})")
    return failures


def check_manifest(report: dict, model, last_block: int) -> list[str]:
    """The manifest's node list is a fresh walk of ``model``, and lists every protected node as FP32 + protected."""
    fresh = {p.name: (p.op, p.compute, tuple(p.quantized_inputs)) for p in onnx_node_precisions(model)}
    recorded = {n["name"]: (n["op"], n["compute"], tuple(n.get("quantized_inputs", ()))) for n in report["nodes"]}
    failures = []
    if fresh != recorded:
        diff = sorted(set(fresh.items()) ^ set(recorded.items()))[:5]
        failures.append(f"manifest nodes differ from the graph: {diff}")
    by_name = {n["name"]: n for n in report["nodes"]}
    for name, why in protected_nodes(model, last_block).items():
        n = by_name.get(name)
        if n is None:
            continue  # shape arithmetic / Casts are not listed
        if n["compute"] != "fp32" or n.get("kind") not in PROTECTED_KINDS:
            failures.append(f"manifest lists protected {why} node {name} as {n['compute']}/{n.get('kind')}")
    if report["violations"]:
        failures.append(f"manifest reports violations {report['violations'][:3]}")
    return failures


def _last_block(student) -> int:
    return len(student.blocks) - 1


def test_onnx_fp16_protected_path_fp32_and_manifest_matches(fp16, student):
    model = onnx.load(str(fp16.artifact))
    assert check_protected(model, _last_block(student)) == []
    report = read_manifest(fp16.artifact).precision_plan["graph_precision"]["artefact"]
    assert check_manifest(report, model, _last_block(student)) == []
    assert report["summary"]["fp16"] > report["summary"]["fp32"]  # it is an FP16 graph with FP32 islands


def test_onnx_int8_protected_path_fp32_in_file_and_in_onnxruntime(int8, student):
    from pinlite_edge.export.onnx_formats import ort_optimized_graph

    last = _last_block(student)
    model = onnx.load(str(int8.artifact))
    optimized = ort_optimized_graph(int8.artifact)
    assert check_protected(model, last) == []
    assert check_protected(optimized, last) == []
    graphs = read_manifest(int8.artifact).precision_plan["graph_precision"]
    assert check_manifest(graphs["artefact"], model, last) == []
    assert check_manifest(graphs["onnxruntime_cpu_optimized"], optimized, last) == []
    assert graphs["onnxruntime_cpu_optimized"]["summary"]["int8"] > 0  # the rest does run int8
    # the plan's weight storage is what the file stores: int8 (Cast * scale) for float layers, FP32 for the GRU
    plan = read_manifest(int8.artifact).precision_plan
    stored = {e["module"]: e["weight_storage"] for e in plan["float_layers"]}
    assert stored["audio_encoder.gru"] == "float"
    assert stored[f"blocks.{last}.attn.k_proj"] == "int8"
    assert not {"MatMulNBits", "MatMulIntegerToFloat"} & {n.op_type for n in optimized.graph.node}


def test_tensorrt_fp16_qdq_onnx_protected_path_fp32(trt_qdq, student):
    model, plan, facts = trt_qdq
    last = _last_block(student)
    assert check_protected(model, last) == []
    assert check_manifest(plan.graph_precision["artefact"], model, last) == []
    summary = plan.graph_precision["artefact"]["summary"]
    # FP16 + QDQ: Q/DQ'd layers int8, the rest FP16, the plan FP32 -- and FP16 Q/DQ scales (opset 19)
    assert summary["int8"] > 0 and summary["fp16"] > summary["fp32"] > 0
    assert facts["opset"] == 19
    dq_scales = {i.name: i.data_type for i in model.graph.initializer}
    scales = [dq_scales[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert scales and set(scales) == {FLOAT16}


@pytest.mark.slow
def test_pte_int8_protected_path_fp32(student, cal, tmp_path):
    pytest.importorskip("executorch")
    res = export_from_model(student, "pte-int8", tmp_path, calibration=cal, calib_size=8, sensitivity=False)
    report = read_manifest(res.artifact).precision_plan["graph_precision"]["exported_program"]
    assert report["violations"] == []
    last = _last_block(student)
    nodes = report["nodes"]
    softmax = [n for n in nodes if n["op"] in ("softmax", "_softmax")]
    matmuls = [n for n in nodes if n["op"] in ("matmul", "bmm") and n.get("module", "").endswith(".attn")]
    scores = [n for n in nodes if n["op"] in ("mul", "add") and n.get("module", "").endswith(".attn")]
    gru = [n for n in nodes if n.get("module", "").startswith("audio_encoder.gru")]
    qk = [n for n in nodes if n.get("module", "") in (f"blocks.{last}.attn.q_proj", f"blocks.{last}.attn.k_proj")]
    assert len(softmax) == len(student.blocks) and len(matmuls) == 2 * len(student.blocks)
    assert scores and gru and qk
    for n in softmax + matmuls + scores + gru + qk:
        assert n["compute"] == "fp32" and not n.get("quantized_inputs"), n
        assert n.get("weight_storage") != "int8", n
    assert report["summary"]["int8"] > 0


def test_q_dq_put_on_the_softmax_input_is_a_violation_that_stops_the_export(trt_qdq, student):
    """The check that refuses to publish an artefact whose protected path (here the last block's softmax) reads
    int8-rounded activations had only been run on correct exports: an exporter regression putting Q/DQ there would
    have been published with a manifest saying the softmax runs FP32 on float inputs."""
    import copy

    from onnx import helper, numpy_helper

    from pinlite_edge.errors import ExportError
    from pinlite_edge.export.graph_precision import precision_report, require_consistent

    model, plan, _ = trt_qdq
    assert precision_report(onnx_node_precisions(model), plan, "artefact")["violations"] == []
    bad = copy.deepcopy(model)
    g = bad.graph
    last = _last_block(student)
    (softmax,) = [n for n in g.node if n.op_type == "Softmax" and f"blocks.{last}/" in n.name]
    x = softmax.input[0]
    elem = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}.get(x, FLOAT16)
    scale_dtype = np.float16 if elem == FLOAT16 else np.float32
    g.initializer.extend([numpy_helper.from_array(np.array(0.05, scale_dtype), "qdq_scale"),
                          numpy_helper.from_array(np.array(0, np.int8), "qdq_zero")])
    q = helper.make_node("QuantizeLinear", [x, "qdq_scale", "qdq_zero"], ["qdq_q"], name="injected/Quantize")
    dq = helper.make_node("DequantizeLinear", ["qdq_q", "qdq_scale", "qdq_zero"], ["qdq_dq"], name="injected/Dequantize")
    softmax.input[0] = "qdq_dq"
    index = list(g.node).index(softmax)
    g.node.insert(index, dq)
    g.node.insert(index, q)
    report = precision_report(onnx_node_precisions(bad), plan, "artefact")
    assert any("softmax" in v and softmax.name in v and "int8-rounded inputs" in v for v in report["violations"]), \
        report["violations"]
    with pytest.raises(ExportError, match="int8-rounded"):
        require_consistent(report, "test.onnx")
