"""Training-data provenance: checkpoints -> manifests -> runners say what a model was trained on."""
from __future__ import annotations

import json

import pytest

from pinlite_edge.checkpoint import save_checkpoint
from pinlite_edge.manifest import read_manifest
from pinlite_edge.models import create_model, student_config
from pinlite_edge.runtimes import load_runner
from pinlite_edge.trained_on import describe_training_data, trained_on_real_video, training_data_from_record

REAL = {"real_video": True, "kinds": ["folder", "synthetic"],
        "datasets": [{"kind": "folder", "clips": {"train": 22}, "speakers": {"train": 12}}, {"kind": "synthetic"}]}


def test_summary_is_read_from_the_record_and_derived_for_older_records():
    assert training_data_from_record({"training_data": REAL}) == REAL
    legacy = training_data_from_record({"dataset": {"train": {"kind": "synthetic", "num_samples": 8}}})
    assert legacy["real_video"] is False and legacy["kinds"] == ["synthetic"]
    legacy_real = training_data_from_record({"dataset": {"train": {"kind": "folder", "root": "/x"}}})
    assert legacy_real["real_video"] is True
    assert training_data_from_record({}) is None
    assert training_data_from_record(None) is None


def test_real_video_flag_and_description():
    assert trained_on_real_video(REAL) is True
    assert trained_on_real_video({"kinds": ["synthetic"]}) is False
    assert trained_on_real_video(None) is None
    assert describe_training_data({"real_video": False, "kinds": ["synthetic"]}) == "synthetic only"
    assert describe_training_data(REAL) == "real video + synthetic"
    assert describe_training_data(None).startswith("unknown")


def test_export_manifest_and_runners_carry_the_checkpoint_training_data(tmp_path):
    from pinlite_edge.export.api import export_model

    model = create_model(student_config("tiny"))
    ckpt = save_checkpoint(tmp_path / "best.safetensors", model, {"training_data": REAL})
    assert load_runner(ckpt).training_data == REAL
    res = export_model(ckpt, "onnx", tmp_path / "onnx", name="student")
    manifest = read_manifest(res.artifact)
    assert manifest.training_data == REAL
    assert json.loads(res.manifest.read_text())["training_data"] == REAL
    assert load_runner(res.artifact).training_data == REAL


def test_a_checkpoint_without_provenance_exports_as_unknown(tmp_path):
    from pinlite_edge.export.api import export_model

    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_model(student_config("tiny")), {})
    res = export_model(ckpt, "onnx", tmp_path / "onnx", name="student")
    assert read_manifest(res.artifact).training_data is None
    assert load_runner(res.artifact).training_data is None


@pytest.mark.parametrize("bad", [["folder"], "synthetic", 3])
def test_malformed_summaries_are_unknown_not_errors(bad):
    assert trained_on_real_video(bad) is None
