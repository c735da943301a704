"""FP32 ONNX export: contract (names, opset, dynamic batch), ORT parity, manifest, options, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pinlite_edge.checkpoint import save_checkpoint
from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES
from pinlite_edge.errors import ExportError
from pinlite_edge.export import FORMATS, export_from_model, export_model
from pinlite_edge.export.__main__ import main as cli_main
from pinlite_edge.export.rewrite import MatmulGRU, rewrite_gru
from pinlite_edge.manifest import read_manifest
from pinlite_edge.models import create_student
from pinlite_edge.runtimes.ort.loader import create_session
from pinlite_edge.utils.hashing import sha256_file

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(student, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "best.safetensors"
    save_checkpoint(path, student, {"note": "test"})
    return path


@pytest.fixture(scope="module")
def fp32(checkpoint, tmp_path_factory):
    return export_model(checkpoint, "onnx", tmp_path_factory.mktemp("onnx"))


def _inputs(model, batch, seed=3):
    g = torch.Generator().manual_seed(seed)
    c = model.config.contract
    return torch.randn(*c.frames_shape(batch), generator=g), torch.randn(*c.mfcc_shape(batch), generator=g)


def test_onnx_contract_and_checker(fp32):
    m = onnx.load(str(fp32.artifact))
    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in m.graph.output] == list(OUTPUT_NAMES)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for value in list(m.graph.input) + list(m.graph.output):
        dims = value.type.tensor_type.shape.dim
        # frames have their own batch axis: one frames row may serve several mfcc rows (frame sharing)
        assert dims[0].dim_param == ("batch" if value.name == "frames" else "audio_batch"), value.name
        assert all(d.dim_value > 0 for d in dims[1:]), value.name  # no generated dim names
    att = [d.dim_value for d in m.graph.output[2].type.tensor_type.shape.dim[1:]]
    assert att == [16, 16]


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_ort_parity_dynamic_batch(fp32, student, batch):
    frames, mfcc = _inputs(student, batch)
    with torch.no_grad():
        ref = student(frames, mfcc)
    sess = create_session(fp32.artifact)
    logits, offsets, attention = sess.run(None, {"frames": frames.numpy(), "mfcc": mfcc.numpy()})
    assert logits.shape == (batch, 2) and offsets.shape == (batch, 11) and attention.shape == (batch, 16, 16)
    assert np.abs(logits - ref.logits.numpy()).max() <= 1e-4
    assert np.abs(attention - ref.attention.numpy()).max() <= 1e-4
    assert np.abs(offsets - ref.offset_logits.numpy()).max() <= 1e-4


def test_manifest_beside_artifact(fp32, checkpoint, student):
    man = read_manifest(fp32.artifact)  # verifies the sha256
    assert man.format == "onnx" and man.runtime == "ort" and man.precision == "fp32"
    assert man.preset == "tiny" and man.model_kind == "student"
    assert man.source_checkpoint_sha256 == sha256_file(checkpoint)
    assert man.input_contract == student.config.contract.to_dict()
    assert man.dynamic_batch is True
    assert "onnx" in man.tool_versions and "torch" in man.tool_versions
    assert man.precision_plan["precision"] == "fp32"
    assert man.extra["ort_parity_max_abs"]["logits"] <= 1e-4


def test_existing_artifact_needs_force(fp32, checkpoint):
    before = sha256_file(fp32.artifact)
    with pytest.raises(ExportError, match="already exists"):
        export_model(checkpoint, "onnx", fp32.artifact.parent)
    assert sha256_file(fp32.artifact) == before


def test_options_a_format_does_not_take_are_rejected(checkpoint, tmp_path):
    with pytest.raises(ExportError, match="does not take option.*calib_size"):
        export_model(checkpoint, "onnx", tmp_path, calib_size=8)
    with pytest.raises(ExportError, match="does not take option.*exporter"):
        export_model(checkpoint, "pte", tmp_path, exporter="dynamo")
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(checkpoint, "tflite", tmp_path)
    with pytest.raises(ExportError, match="opset must be >= 17"):
        export_model(checkpoint, "onnx", tmp_path, opset=13)
    assert not list(tmp_path.iterdir())  # nothing written on a rejected call


@pytest.mark.parametrize("fmt,options,words", [
    ("onnx", {"calib_size": 8}, "does not take option"), ("tflite", {}, "unknown export format"),
    ("onnx", {"opset": 13}, "opset must be >= 17"), ("onnx", {"opset": "17"}, "opset must be"),
    ("onnx-int8", {"calib_size": 0}, "calib_size must be >= 1"),
])
def test_an_export_option_error_is_a_usage_error_for_the_api_too(checkpoint, tmp_path, fmt, options, words):
    """An app catching UsageError for its own bad arguments (as for every other API) missed these: they were plain
    ExportErrors, which the CLI alone turned into usage errors (exit 2). Now both, so ``except ExportError`` still
    works."""
    from pinlite_edge.errors import UsageError

    with pytest.raises(UsageError, match=words) as caught:
        export_model(checkpoint, fmt, tmp_path, **options)
    assert isinstance(caught.value, ExportError)


@pytest.mark.parametrize("options,words", [
    ({"opset": "17"}, "opset must be an integer, got '17'"),  # TypeError in validate
    ({"batch": "4"}, "batch must be an integer or None, got '4'"),  # TypeError in validate
    ({"batch": 2.5}, "batch must be an integer or None, got 2.5"),
    ({"batch": True}, "batch must be an integer or None, got True"),
    ({"keep_float": 1.5}, "keep_float must be an integer, got 1.5"),
    ({"calib_size": True}, "calib_size must be an integer, got True"),
    ({"name": 5}, "name must be a string or None, got 5"),  # pathlib TypeError
    ({"dynamic_batch": "no"}, "dynamic_batch must be True or False, got 'no'"),  # exported a dynamic graph
    ({"force": "no"}, "force must be True or False, got 'no'"),  # overwrote the artefact
])
def test_export_options_of_the_wrong_type_are_export_errors(options, words):
    from pinlite_edge.export import ExportOptions

    with pytest.raises(ExportError, match=words):
        ExportOptions(**options).validate()
    ExportOptions(opset=np.int64(18), batch=4, name="x", timing_cache="cache.bin", force=True).validate()


def test_export_path_arguments_of_the_wrong_type_are_export_errors(tmp_path):
    """None as the checkpoint or the output folder was a TypeError from pathlib."""
    with pytest.raises(ExportError, match="checkpoint must be a path"):
        export_model(None, "onnx", tmp_path)
    with pytest.raises(ExportError, match="output_dir must be a path"):
        export_model(tmp_path / "x.safetensors", "onnx", None)
    with pytest.raises(ExportError, match="output_dir must be a path"):
        export_from_model(create_student("tiny", pretrained=False), "onnx", None)


def test_format_table_is_complete():
    assert set(FORMATS) == {"onnx", "onnx-fp16", "onnx-int8", "trt-fp16", "trt-int8", "pte", "pte-int8"}
    suffixes = [f.suffix for f in FORMATS.values()]
    assert len(set(suffixes)) == len(suffixes)
    assert {f.name for f in FORMATS.values() if f.needs_gpu} == {"trt-fp16", "trt-int8"}


def test_classic_export_works_with_torch_2_3s_exporter(student, tmp_path, monkeypatch):
    """pyproject admits torch 2.3 (JetPack 6.0's NVIDIA build), whose torch.onnx.export has no ``dynamo`` parameter
    and no **kwargs: passing dynamo=False made every ONNX (and TensorRT) export fail there with a TypeError."""
    real = torch.onnx.export
    calls = []

    def export_23(model, args, f, export_params=True, verbose=False, training=None, input_names=None,
                  output_names=None, operator_export_type=None, opset_version=None, do_constant_folding=True,
                  dynamic_axes=None, keep_initializers_as_inputs=None, custom_opsets=None,
                  export_modules_as_functions=False, autograd_inlining=True):  # torch-2.3.0 torch/onnx/utils.py
        calls.append(opset_version)
        return real(model, args, f, dynamo=False, input_names=input_names, output_names=output_names,
                    opset_version=opset_version, do_constant_folding=do_constant_folding, dynamic_axes=dynamic_axes)

    monkeypatch.setattr(torch.onnx, "export", export_23)
    res = export_from_model(student, "onnx", tmp_path)
    assert calls == [17] and res.artifact.is_file()
    assert read_manifest(res.artifact).dynamic_batch is True


def test_static_batch_and_matmul_gru(student, tmp_path):
    """A static batch other than 2 used to fail in the parity check, which always ran 2 rows."""
    res = export_from_model(student, "onnx", tmp_path, dynamic_batch=False, batch=3, gru="matmul")
    m = onnx.load(str(res.artifact))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert not [n for n in m.graph.node if n.op_type == "GRU"]
    man = read_manifest(res.artifact)
    assert man.max_batch == 3  # read back from the graph
    frames, mfcc = _inputs(student, 3)
    with torch.no_grad():
        ref = student(frames, mfcc)
    out = create_session(res.artifact).run(None, {"frames": frames.numpy(), "mfcc": mfcc.numpy()})
    assert np.abs(out[0] - ref.logits.numpy()).max() <= 1e-4
    assert read_manifest(res.artifact).dynamic_batch is False


def test_matmul_gru_matches_nn_gru():
    torch.manual_seed(1)
    gru = torch.nn.GRU(12, 7, batch_first=True, bidirectional=True)
    x = torch.randn(3, 9, 12)
    ref, _ = gru(x)
    out, _ = MatmulGRU(gru)(x)
    assert torch.allclose(out, ref, atol=1e-6)
    one_way = torch.nn.GRU(12, 5, batch_first=True)
    assert torch.allclose(MatmulGRU(one_way)(x)[0], one_way(x)[0], atol=1e-6)
    model = rewrite_gru(create_student("tiny", pretrained=False).eval())
    assert isinstance(model.audio_encoder.gru, MatmulGRU)


def test_cli_exports_and_reports_errors(checkpoint, tmp_path, capsys):
    assert cli_main(["--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(tmp_path)]) == 0
    assert (tmp_path / "pinlite-student.onnx").is_file()
    data = json.loads((tmp_path / "pinlite-student.onnx.manifest.json").read_text())
    assert data["format"] == "onnx"
    assert cli_main(["--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(tmp_path),
                     "--calib-size", "4"]) == 2
    assert "does not take option(s) ['--calib-size']" in capsys.readouterr().err  # the flag, not calib_size
    # a static batch is an FP32 ONNX option: the reduced-precision formats' checks feed batches of other sizes
    assert cli_main(["--checkpoint", str(checkpoint), "--format", "onnx-int8", "--output", str(tmp_path / "i8"),
                     "--static-batch"]) == 2
    assert "format 'onnx-int8' does not take option(s) ['--static-batch']" in capsys.readouterr().err


def test_cli_help_lists_formats(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in FORMATS:
        assert name in text


def test_conv_biases_are_constants_not_identity_outputs(fp32):
    # a fresh MobileNetV3 has many equal folded biases; the exporter shares them through Identity nodes, which kept
    # those convolutions float in the INT8 graph (onnxruntime fuses DQ->Conv->Q only with a constant bias)
    m = onnx.load(str(fp32.artifact))
    inits = {i.name for i in m.graph.initializer}
    assert not [n.name for n in m.graph.node if n.op_type == "Identity" and n.input[0] in inits]
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert convs and all(len(n.input) < 3 or n.input[2] in inits for n in convs)


def test_inline_initializer_identities_keeps_the_numbers():
    from onnx import TensorProto, helper, numpy_helper

    from pinlite_edge.export.onnx_compact import inline_initializer_identities

    b = numpy_helper.from_array(np.arange(3, dtype=np.float32), "b")
    nodes = [helper.make_node("Identity", ["b"], ["b_copy"]), helper.make_node("Add", ["x", "b_copy"], ["y"]),
             helper.make_node("Identity", ["b"], ["z"])]  # an Identity that IS a graph output stays
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert inline_initializer_identities(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Add", "Identity"]
    sess = create_session(model.SerializeToString())
    y, z = sess.run(None, {"x": np.ones(3, np.float32)})
    np.testing.assert_array_equal(y, [1, 2, 3])
    np.testing.assert_array_equal(z, [0, 1, 2])


def test_a_failed_export_leaves_no_empty_output_folders(student, tmp_path):
    """Failed exports used to leave the folders they had created behind."""
    from pinlite_edge.errors import PinliteError

    out = tmp_path / "new" / "sub"
    with pytest.raises(PinliteError, match="does not exist"):
        export_from_model(student, "onnx-int8", out, calib_data=f"folder:{tmp_path / 'nowhere'}")
    assert not (tmp_path / "new").exists()
