"""TensorRT export: what can be tested without TensorRT / a GPU.

Real engine builds need TensorRT and an NVIDIA GPU (skipped here with the reason). The tests marked "API-shape" drive
``build_engine`` with a *fake* ``tensorrt`` module object that records calls: they check that the code uses the
documented TensorRT 10/11 Python API in the intended way, not that TensorRT accepts the network.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from pinlite_edge.errors import BackendUnavailableError, ExportError
from pinlite_edge.export import export_from_model
from pinlite_edge.export.plan import FloatEntry, PrecisionPlan
from pinlite_edge.export.tensorrt import build_engine, layer_precisions, profile_shapes
from pinlite_edge.models import create_student

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.fixture(scope="module")
def student():
    return create_student("tiny", pretrained=False).eval()


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT and a GPU are present: the unavailable path cannot be exercised")
@pytest.mark.parametrize("fmt", ["trt-fp16", "trt-int8"])
def test_trt_without_tensorrt_or_gpu_is_a_clear_error(student, tmp_path, fmt):
    with pytest.raises(BackendUnavailableError, match="tensorrt.*(JetPack|pypi.nvidia.com)"):
        export_from_model(student, fmt, tmp_path)
    assert not list(tmp_path.iterdir())


def test_trt_option_validation(student, tmp_path):
    with pytest.raises(ExportError, match="does not take option.*quant_format"):
        export_from_model(student, "trt-int8", tmp_path, quant_format="qoperator")
    with pytest.raises(ExportError, match="does not take option.*calib_method"):
        export_from_model(student, "trt-fp16", tmp_path, calib_method="entropy")
    with pytest.raises(ExportError, match="opt_batch"):
        profile_shapes({"mfcc": (64, 13)}, max_batch=4, opt_batch=8)


def test_profile_covers_batch_1_to_max():
    shapes = profile_shapes({"frames": (16, 3, 64, 64), "mfcc": (64, 13)}, max_batch=8, opt_batch=2)
    assert shapes["mfcc"] == ((1, 64, 13), (2, 64, 13), (8, 64, 13))
    assert shapes["frames"][2] == (8, 16, 3, 64, 64)
    # frame sharing: up to 7 mfcc rows per frames row, tuned for the offset scan's 7
    shared = profile_shapes({"frames": (16, 3, 64, 64), "mfcc": (64, 13)}, max_batch=8, opt_batch=2, audio_rows=7)
    assert shared["mfcc"] == ((1, 64, 13), (14, 64, 13), (56, 64, 13)) and shared["frames"] == shapes["frames"]


def _plan() -> PrecisionPlan:
    return PrecisionPlan("fp16", [
        FloatEntry("audio_encoder.gru", "r", "gru", onnx_nodes=["/model/audio_encoder/gru/GRU"]),
        FloatEntry("blocks.1.attn.softmax", "r", "softmax", onnx_nodes=["/model/blocks.1/attn/softmax/Softmax"]),
    ])


def test_plan_to_layer_precision_mapping():
    layers = ["/model/audio_encoder/gru/GRU", "/model/audio_encoder/gru/GRU_loop_0", "/model/audio_encoder/gru/GRU2",
              "/model/blocks.1/attn/softmax/Softmax", "/model/blocks.1/attn/MatMul", "/model/cls_head/Gemm"]
    pinned = layer_precisions(_plan(), layers)
    assert pinned == {"/model/audio_encoder/gru/GRU": "float32", "/model/audio_encoder/gru/GRU_loop_0": "float32",
                      "/model/blocks.1/attn/softmax/Softmax": "float32"}


def _inspector_json(softmax_type: str = "FP32") -> str:
    """Engine inspector output in the documented JSON layout (ProfilingVerbosity.DETAILED): per layer its name, type,
    inputs/outputs with "Format/Datatype" and the ONNX nodes it was built from in "Metadata"."""
    import json

    def t(name, fmt):
        return {"Name": name, "Location": "Device", "Dimensions": [1, 4, 16, 16], "Format/Datatype": fmt}

    return json.dumps({"Layers": [
        {"Name": "/model/frame_encoder/backbone/backbone.0/backbone.0.0/Conv + /model/frame_encoder/.../HardSwish",
         "LayerType": "CaskConvolution", "Inputs": [t("x", "Channel major INT8 format where channel % 32 == 0")],
         "Outputs": [t("y", "Channel major INT8 format where channel % 32 == 0")],
         "Metadata": "[ONNX Layer: /model/frame_encoder/backbone/backbone.0/backbone.0.0/Conv]\x1e"
                     "[ONNX Layer: /model/frame_encoder/backbone/backbone.0/backbone.0.2/HardSwish]"},
        {"Name": "/model/blocks.1/ffn/ffn.1/Gelu", "LayerType": "PointWiseV2",
         "Inputs": [t("a", "Row major linear FP16 format")], "Outputs": [t("b", "Row major linear FP16 format")],
         "Metadata": "[ONNX Layer: /model/blocks.1/ffn/ffn.1/Gelu]"},
        {"Name": "/model/blocks.1/attn/softmax/Softmax", "LayerType": "SoftMax",
         "Inputs": [t("s", f"Row major linear {softmax_type} format")],
         "Outputs": [t("p", f"Row major linear {softmax_type} format")],
         "Metadata": "[ONNX Layer: /model/blocks.1/attn/softmax/Softmax]"},
        {"Name": "{ForeignNode[/model/audio_encoder/gru/GRU...]}", "LayerType": "Myelin",
         "Inputs": [t("g", "Row major linear FP32 format")], "Outputs": [t("h", "Row major linear FP32 format")],
         "Metadata": "[ONNX Layer: /model/audio_encoder/gru/GRU]\x1e[ONNX Layer: /model/audio_encoder/proj/MatMul]"},
    ], "Bindings": ["frames", "mfcc", "logits", "offset_logits", "attention"]})


class _Recorder:
    """A fake ``tensorrt`` module (API-shape test only)."""

    def __init__(self, layer_names, major="10.3.0", inspector_json=None):
        self.__version__ = major
        self.calls = []
        rec = self
        info = inspector_json or _inspector_json()

        class Flag:
            STRONGLY_TYPED = 5

        class BuilderFlag:
            FP16, INT8, OBEY_PRECISION_CONSTRAINTS = "FP16", "INT8", "OBEY"

        class MemoryPoolType:
            WORKSPACE = "WORKSPACE"

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Tensor:
            def __init__(self, name, dtype="float32"):
                self.name, self.dtype = name, dtype

        class Layer:
            def __init__(self, name):
                self.name, self.num_outputs, self.precision, self.out_types = name, 1, None, {}
                # a name ending in "_tripcount" stands for an integer-output layer (a loop counter)
                self._out = Tensor(name, "int32" if name.endswith("_tripcount") else "float32")

            def get_output(self, i):
                return self._out

            def set_output_type(self, i, t):
                self.out_types[i] = t

        class Network:
            def __init__(self, flags):
                rec.calls.append(("create_network", flags))
                self.layers = [Layer(n) for n in layer_names]
                self.num_layers = len(self.layers)
                self.num_inputs = 2

            def get_input(self, i):
                return Tensor(["frames", "mfcc"][i])

            def get_layer(self, i):
                return self.layers[i]

        class Cache:
            def serialize(self):
                return b"cache-bytes"

        class Config:
            def __init__(self):
                rec.config = self
                self.profiling_verbosity = "LAYER_NAMES_ONLY"

            def set_memory_pool_limit(self, pool, size):
                rec.calls.append(("pool", pool, size))

            def add_optimization_profile(self, p):
                rec.calls.append(("profile", dict(p.shapes)))

            def set_flag(self, f):
                rec.calls.append(("flag", f))

            def create_timing_cache(self, data):
                rec.calls.append(("timing_cache_in", data))
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                rec.calls.append(("set_timing_cache", ignore_mismatch))

            def get_timing_cache(self):
                return Cache()

        class ProfilingVerbosity:
            DETAILED, LAYER_NAMES_ONLY = "DETAILED", "LAYER_NAMES_ONLY"

        class LayerInformationFormat:
            JSON, ONELINE = "JSON", "ONELINE"

        class Inspector:
            def get_engine_information(self, fmt):
                rec.calls.append(("engine_information", fmt))
                return info

        class Engine:
            def create_engine_inspector(self):
                return Inspector()

            def get_tensor_profile_shape(self, name, index):  # what the build was given (the last profile added)
                profile = [c[1] for c in rec.calls if c[0] == "profile"][-1]
                return [tuple(shape) for shape in profile[name]]

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                rec.calls.append(("deserialize", bytes(data)))
                return Engine()

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                self.network = None

            def create_network(self, flags):
                self.network = Network(flags)
                rec.network = self.network
                return self.network

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                rec.calls.append(("build",))
                return b"engine-bytes"

        class OnnxParser:
            def __init__(self, network, logger):
                self.num_errors = 0

            def parse_from_file(self, path):
                rec.calls.append(("parse", Path(path).name))
                return True

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.NetworkDefinitionCreationFlag, self.BuilderFlag, self.MemoryPoolType = Flag, BuilderFlag, MemoryPoolType
        self.float32, self.float16, self.int32 = "float32", "float16", "int32"
        self.ProfilingVerbosity, self.LayerInformationFormat, self.Runtime = (ProfilingVerbosity,
                                                                               LayerInformationFormat, Runtime)


def test_build_engine_strongly_typed_api_shape(tmp_path):
    """API-shape test with a fake tensorrt module: strongly typed flag, profile, workspace, timing cache."""
    trt = _Recorder(["/model/audio_encoder/gru/GRU"])
    cache = tmp_path / "timing.cache"
    engine, facts = build_engine(trt, tmp_path / "m.fp16.onnx", input_shapes={"frames": (16, 3, 64, 64),
                                 "mfcc": (64, 13)}, max_batch=4, opt_batch=1, workspace_mb=256, timing_cache=cache)
    assert engine == b"engine-bytes"
    assert ("create_network", 1 << 5) in trt.calls
    assert ("pool", "WORKSPACE", 256 << 20) in trt.calls
    profile = next(c[1] for c in trt.calls if c[0] == "profile")
    assert profile["mfcc"] == ((1, 64, 13), (1, 64, 13), (4, 64, 13))
    assert not [c for c in trt.calls if c[0] == "flag"]  # no precision flags when strongly typed
    assert cache.read_bytes() == b"cache-bytes" and facts["strongly_typed"] is True
    assert trt.config.profiling_verbosity == "DETAILED"  # the inspector can then report per-layer types


def test_build_engine_weak_typing_pins_plan_layers_api_shape(tmp_path):
    """API-shape test with a fake tensorrt module: TRT-10 weak typing sets flags and FP32 layer constraints."""
    trt = _Recorder(["/model/audio_encoder/gru/GRU", "/model/audio_encoder/gru/GRU_tripcount",
                     "/model/blocks.1/attn/softmax/Softmax", "/model/cls_head/Gemm"])
    _, facts = build_engine(trt, tmp_path / "m.onnx", input_shapes={"frames": (16, 3, 64, 64), "mfcc": (64, 13)},
                            max_batch=2, opt_batch=1, workspace_mb=64, strongly_typed=False, weak_precision="fp16",
                            plan=_plan())
    assert ("create_network", 0) in trt.calls
    assert ("flag", "FP16") in trt.calls and ("flag", "OBEY") in trt.calls
    layers = {layer.name: layer for layer in trt.network.layers}
    assert layers["/model/audio_encoder/gru/GRU"].precision == "float32"
    assert layers["/model/blocks.1/attn/softmax/Softmax"].out_types == {0: "float32"}
    assert layers["/model/cls_head/Gemm"].precision is None
    # an integer-output layer of the GRU loop is neither retyped nor given a float precision
    assert layers["/model/audio_encoder/gru/GRU_tripcount"].precision is None
    assert layers["/model/audio_encoder/gru/GRU_tripcount"].out_types == {}
    assert facts["fp32_pinned_layers"] == 2


def test_build_engine_tensorrt_11_strong_typing_without_flag(tmp_path):
    """API-shape test: on 11.x STRONGLY_TYPED is deprecated and ignored, so the network is created with 0; weak
    typing is refused before anything is built."""
    trt = _Recorder([], major="11.1.0")
    shapes = {"frames": (16, 3, 64, 64), "mfcc": (64, 13)}
    build_engine(trt, tmp_path / "m.fp16.onnx", input_shapes=shapes, max_batch=2, opt_batch=1, workspace_mb=64)
    assert ("create_network", 0) in trt.calls and not [c for c in trt.calls if c[0] == "flag"]
    with pytest.raises(ExportError, match="removed in TensorRT 11"):
        build_engine(_Recorder([], major="11.1.0"), tmp_path / "m.onnx", input_shapes=shapes, max_batch=2,
                     opt_batch=1, workspace_mb=64, strongly_typed=False, weak_precision="fp16", plan=_plan())


def test_trt_manifest_fields_with_fake_tensorrt(student, tmp_path, monkeypatch):
    """API-shape test: the trt-fp16 format path end to end with a fake tensorrt module and a faked GPU."""
    import sys

    from pinlite_edge.export import tensorrt as trt_mod
    from pinlite_edge.export.calibration import from_arrays
    from pinlite_edge.manifest import read_manifest

    fake = _Recorder([])
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_mod, "cuda_device", lambda index=0: trt_mod.GpuInfo("Fake Orin", "8.7", index))
    c = student.config.contract
    g = torch.Generator().manual_seed(0)
    cal = from_arrays(torch.randn(2, *c.frames_shape(), generator=g).numpy(),
                      torch.randn(2, *c.mfcc_shape(), generator=g).numpy())
    res = export_from_model(student, "trt-fp16", tmp_path, calibration=cal, calib_size=2, sensitivity=False, batch=4)
    man = read_manifest(res.artifact)
    assert man.runtime == "trt" and man.precision == "fp16" and man.max_batch == 4
    assert man.target == {"tensorrt_version": "10.3.0", "gpu_name": "Fake Orin", "compute_capability": "8.7",
                          "device_index": 0}
    assert man.tool_versions["tensorrt"] == "10.3.0"
    assert any(e["kind"] == "gru" for e in man.precision_plan["float_layers"])
    assert ("parse", "fp16.onnx") in fake.calls
    # the precision per layer is read back from the built engine with the inspector into the manifest
    assert ("deserialize", b"engine-bytes") in fake.calls and ("engine_information", "JSON") in fake.calls
    engine = man.precision_plan["graph_precision"]["tensorrt_engine"]
    assert engine["summary"] == {"fp16": 1, "fp32": 2, "int8": 1} and engine["violations"] == []
    assert man.precision_plan["graph_precision"]["artefact"]["violations"] == []  # the FP16 ONNX it was built from
    # the ONNX it was built from has separate batch axes: the profile takes 7 mfcc rows per frames row, read back
    assert man.extra["engine_profile"]["mfcc"][2] == [28, 64, 13] and man.extra["engine_profile"]["frames"][2][0] == 4
    assert man.extra["shared_frames"] == {"mfcc_rows_per_frames_row": 7}
    assert next(c[1] for c in fake.calls if c[0] == "profile")["mfcc"][2] == (28, 64, 13)

    # weak typing builds from the FP32 ONNX: the manifest no longer describes the FP16 ONNX it did not use
    weak = export_from_model(student, "trt-fp16", tmp_path / "weak", calibration=cal, calib_size=2,
                             sensitivity=False, batch=4, weak_typing=True)
    wman = read_manifest(weak.artifact)
    assert wman.extra["source_onnx"] == "fp32.onnx" and wman.extra["onnx"]["built_from"] == "fp32.onnx"
    assert "artefact" not in wman.precision_plan["graph_precision"]
    assert "tensorrt_engine" in wman.precision_plan["graph_precision"]


def _softmax_plan() -> PrecisionPlan:
    return PrecisionPlan("int8", [
        FloatEntry("audio_encoder.gru", "r", "gru", onnx_nodes=["/model/audio_encoder/gru/GRU"]),
        FloatEntry("blocks.1.attn.softmax", "r", "softmax", onnx_nodes=["/model/blocks.1/attn/softmax/Softmax"]),
    ])


def test_engine_inspector_json_gives_per_layer_precision():
    from pinlite_edge.export.tensorrt import engine_layer_precisions

    report = engine_layer_precisions(_inspector_json(), _softmax_plan())
    by_type = {r["type"]: r for r in report["layers"]}
    assert by_type["CaskConvolution"]["compute"] == "int8"  # Q/DQ'd conv fused to an int8 kernel
    assert by_type["PointWiseV2"]["compute"] == "fp16"  # no Q/DQ: FP16 (the FP16 + QDQ ONNX)
    assert by_type["SoftMax"]["compute"] == "fp32" and by_type["SoftMax"]["kinds"] == ["softmax"]
    assert report["violations"] == []
    # the GRU fused with a non-protected node into one Myelin layer: reported, not claimed verified
    assert report["fused_with_protected"] == ["{ForeignNode[/model/audio_encoder/gru/GRU...]}"]
    bad = engine_layer_precisions(_inspector_json(softmax_type="FP16"), _softmax_plan())
    assert len(bad["violations"]) == 1 and "Softmax" in bad["violations"][0]
    with pytest.raises(ExportError, match="DETAILED"):
        engine_layer_precisions('{"Layers": ["/model/blocks.1/attn/softmax/Softmax"]}', _softmax_plan())


def test_weak_typing_refused_on_tensorrt_11(student, tmp_path, monkeypatch):
    import sys

    from pinlite_edge.export import tensorrt as trt_mod

    monkeypatch.setitem(sys.modules, "tensorrt", _Recorder([], major="11.0.0"))
    monkeypatch.setattr(trt_mod, "cuda_device", lambda index=0: trt_mod.GpuInfo("Fake", "9.0", index))
    with pytest.raises(ExportError, match="removed in TensorRT 11"):
        export_from_model(student, "trt-fp16", tmp_path, weak_typing=True)


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="needs TensorRT (JetPack / NVIDIA index) and an NVIDIA GPU")
def test_real_trt_fp16_build(student, tmp_path):
    res = export_from_model(student, "trt-fp16", tmp_path, calib_size=4, sensitivity=False, batch=2)
    assert res.artifact.stat().st_size > 0


def test_trt_int8_builds_from_a_tensorrt_parsable_qdq_onnx(student, tmp_path, monkeypatch):
    """API-shape test: the QDQ ONNX handed to TensorRT has symmetric activations (zero points 0), float biases (the
    parser rejects an INT32 DequantizeLinear), every DequantizeLinear has its 3 inputs and no weight-only storage."""
    import sys

    import numpy as np
    import onnx

    from pinlite_edge.export import tensorrt as trt_mod
    from pinlite_edge.export.calibration import from_arrays

    seen = {}
    recorder = _Recorder([])

    def fake_build(trt, onnx_path, **kwargs):
        seen["model"] = onnx.load(str(onnx_path))
        recorder.calls.append(("profile", profile_shapes(kwargs["input_shapes"], kwargs["max_batch"],
                                                         kwargs["opt_batch"], kwargs.get("audio_rows", 1))))
        return b"engine", {"strongly_typed": kwargs.get("strongly_typed", True)}

    monkeypatch.setitem(sys.modules, "tensorrt", recorder)
    monkeypatch.setattr(trt_mod, "cuda_device", lambda index=0: trt_mod.GpuInfo("Fake Orin", "8.7", index))
    monkeypatch.setattr(trt_mod, "build_engine", fake_build)
    c = student.config.contract
    g = torch.Generator().manual_seed(0)
    cal = from_arrays(torch.randn(4, *c.frames_shape(), generator=g).numpy(),
                      torch.randn(4, *c.mfcc_shape(), generator=g).numpy())
    res = export_from_model(student, "trt-int8", tmp_path, calibration=cal, calib_size=4, sensitivity=False)
    m = seen["model"]
    inits = {i.name: i for i in m.graph.initializer}
    qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(len(n.input) == 3 for n in qdq)
    assert all(not np.any(onnx.numpy_helper.to_array(inits[n.input[2]])) for n in qdq)
    assert not [n for n in qdq if n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT32]
    assert not [n for n in qdq if n.name.endswith("_w8_DQ")]
    assert res.extra["onnx"]["weight_only"] == "none" and res.extra["onnx"]["quantize_bias"] is False
    # FP16 + QDQ (#14 item 4): opset 19 so Q/DQ carry FP16 scales; layers without Q/DQ are FP16 in the ONNX
    assert res.extra["onnx"]["fp16_qdq"] is True
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 19
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
