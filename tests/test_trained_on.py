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
    # a mixed dataset describes its parts under "sources" (pinlite_edge.data.mix): it used to read as synthetic only
    mix = training_data_from_record({"dataset": {"train": {"kind": "mix", "sources": [
        {"spec": "synthetic", "kind": "SyntheticDataset"}, {"spec": "folder:/x", "kind": "folder"}]}}})
    assert mix["real_video"] is True and mix["kinds"] == ["folder", "synthetic"]
    assert training_data_from_record(None) is None


def test_real_video_flag_and_description():
    assert trained_on_real_video(REAL) is True
    assert trained_on_real_video({"kinds": ["synthetic"]}) is False
    # no real_video flag: the kinds decide, and one real-video source among others is enough (a model trained on
    # folders + synthetic clips was read as synthetic-only by a rule that asked all sources to be real)
    assert trained_on_real_video({"kinds": ["folder", "synthetic"]}) is True
    assert trained_on_real_video({"kinds": ["synthetic", "lavdf"]}) is True
    assert trained_on_real_video(None) is None
    assert describe_training_data({"real_video": False, "kinds": ["synthetic"]}) == "synthetic only"
    assert describe_training_data(REAL) == "real video + synthetic"
    # the summary training writes today (pinlite_edge.data.provenance) has flags, not kinds
    assert describe_training_data({"real_video": True, "synthetic": True, "sources": []}) == "real video + synthetic"
    assert describe_training_data({"real_video": True, "synthetic": False, "sources": []}) == "real video"


def test_a_pruned_model_keeps_the_training_data_of_the_student_it_was_pruned_from():
    """Pruning a real-data student on synthetic clips used to record the model as synthetic only (the Detector then
    warned, wrongly, that it had never seen real video)."""
    from pinlite_edge.data.provenance import fine_tuned_summary

    pruning = {"real_video": False, "synthetic": True, "sources": [{"kind": "synthetic"}]}
    source = {"real_video": True, "synthetic": False, "sources": [{"kind": "folder"}]}
    merged = fine_tuned_summary(pruning, source)
    assert merged["real_video"] is True and merged["synthetic"] is True and merged["fine_tuned_from"] == source
    assert merged["sources"] == pruning["sources"]  # the pruning run's own data is still what it says
    assert describe_training_data(merged) == "real video + synthetic"
    assert fine_tuned_summary(pruning, None) == pruning  # an unknown source adds nothing
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


@pytest.fixture(scope="module")
def synthetic_video(tmp_path_factory):
    from pinlite_edge.contract import TINY_CONTRACT
    from pinlite_edge.data.synthetic import write_clip_video

    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    write_clip_video(path, seed=3, contract=TINY_CONTRACT, duration_s=1.5, manipulation="real")
    return path


@pytest.mark.parametrize("summary, real, warns", [
    ({"real_video": False, "kinds": ["synthetic"]}, False, True),
    (REAL, True, False),
    (None, None, False),
])
def test_detector_warns_once_when_a_synthetic_only_model_scores_a_video_file(tmp_path, synthetic_video, caplog,
                                                                             summary, real, warns):
    from pinlite_edge import Detector

    record = {} if summary is None else {"training_data": summary}
    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_model(student_config("tiny")), record)
    with Detector.load(ckpt, threads=1) as det, caplog.at_level("WARNING", logger="pinlite_edge.detector"):
        first = det.detect(synthetic_video)
        second = det.detect(synthetic_video)
    warnings = [r for r in caplog.records if "synthetic clips only" in r.getMessage()]
    assert len(warnings) == (1 if warns else 0)
    for result in (first, second):
        assert result.model_trained_on_real_video is real
        assert result.to_dict()["model_trained_on_real_video"] is real
        assert result.model_training_data == describe_training_data(summary)


@pytest.mark.parametrize("summary, real", [({"real_video": False, "kinds": ["synthetic"]}, False), (REAL, True)])
def test_scan_warns_about_a_synthetic_only_model_and_records_what_it_was_trained_on(tmp_path, synthetic_video,
                                                                                    caplog, summary, real):
    """``scan`` scores through ``Detector.score_stream``, which does not warn: it used to score a folder of real
    videos with a synthetic-only model without a word, and its records said nothing of the model's training data."""
    from pinlite_edge.scan import ScanConfig, scan

    ckpt = save_checkpoint(tmp_path / "best.safetensors", create_model(student_config("tiny")),
                           {"training_data": summary})
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(synthetic_video.read_bytes())
    out = tmp_path / "results.jsonl"
    with caplog.at_level("WARNING", logger="pinlite_edge.detector"):
        scan(ScanConfig(root=tmp_path / "videos", model=ckpt, out=out, workers=0, face_crop=False, progress=False))
    assert len([r for r in caplog.records if "synthetic clips only" in r.getMessage()]) == (0 if real else 1)
    rec = json.loads(out.read_text())
    assert rec["model_trained_on_real_video"] is real
    assert rec["model_training_data"] == describe_training_data(summary)
