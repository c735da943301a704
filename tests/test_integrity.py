"""Artefact integrity: manifests are verified at load, foreign artefacts are refused, TensorRT engines are checked
against the device BEFORE deserialisation, and nothing in the code base unpickles."""
from __future__ import annotations

import json
import re
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pinlite_edge.contract import PAPER_CONTRACT, TINY_CONTRACT
from pinlite_edge.errors import CheckpointError, ManifestError, PinliteError
from pinlite_edge.manifest import manifest_path_for, read_manifest

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random-init tiny student: its checkpoint and its FP32 ONNX export (with manifest)."""
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.export import export_model
    from pinlite_edge.models import create_student

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("integrity")
    ckpt = save_checkpoint(root / "ckpt" / "best.safetensors", create_student("tiny").eval(), {"epoch": 0})
    onnx = export_model(ckpt, "onnx", root / "onnx").artifact
    return {"checkpoint": ckpt, "onnx": onnx}


def copy_artifact(src: Path, dst_dir: Path) -> Path:
    """Copy an artefact and its manifest (or checkpoint record) into ``dst_dir``."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / src.name
    shutil.copyfile(src, dst)
    for side in (manifest_path_for(src), src.with_suffix(".json")):
        if side.is_file():
            shutil.copyfile(side, dst_dir / side.name)
    return dst


def edit_manifest(art: Path, **changes: Any) -> None:
    path = manifest_path_for(art)
    d = json.loads(path.read_text())
    for key, value in changes.items():
        node = d
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(json.dumps(d))


def reseal(art: Path, d: dict[str, Any]) -> None:
    """Publish ``art`` again with manifest fields ``d``, as an export would (new content hash, also inside the ONNX
    model): a manifest consistent with itself, so that the checks beyond the hashes can be reached."""
    from pinlite_edge.manifest import Manifest, publish_artifact

    publish_artifact(art, art, Manifest.from_dict(d))


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def loaders() -> dict[str, Any]:
    from pinlite_edge.detector import Detector
    from pinlite_edge.runtimes import load_runner

    return {"load_runner": load_runner, "Detector.load": lambda p, **kw: Detector.load(p, face_crop=False, **kw)}


# --------------------------------------------------------------------------------------------- sha256
def test_untouched_artefact_loads_and_runs(exported):
    from pinlite_edge.runtimes import load_runner

    manifest = read_manifest(exported["onnx"])
    assert manifest.preset == "tiny" and manifest.contract == TINY_CONTRACT
    with load_runner(exported["onnx"], expected_preset="tiny", expected_contract=TINY_CONTRACT) as r:
        out = r.infer(np.zeros(TINY_CONTRACT.frames_shape(1), np.float32),
                      np.zeros(TINY_CONTRACT.mfcc_shape(1), np.float32))
    assert out["logits"].shape == (1, 2)


@pytest.mark.parametrize("loader", ["load_runner", "Detector.load"])
def test_tampered_artefact_is_refused(exported, tmp_path, loader):
    art = copy_artifact(exported["onnx"], tmp_path)
    flip_byte(art)
    with pytest.raises(ManifestError, match="sha256") as info:
        loaders()[loader](art)
    assert art.name in str(info.value)


def test_tampered_artefact_same_size_last_byte(exported, tmp_path):
    art = copy_artifact(exported["onnx"], tmp_path)
    flip_byte(art, offset=art.stat().st_size - 1)
    with pytest.raises(ManifestError, match="sha256"):
        read_manifest(art)


def test_manifest_for_another_file_is_refused(exported, tmp_path):
    art = copy_artifact(exported["onnx"], tmp_path)
    edit_manifest(art, artifact_sha256="0" * 64)
    with pytest.raises(ManifestError, match="sha256"):
        loaders()["load_runner"](art)
    art2 = copy_artifact(exported["onnx"], tmp_path / "b")
    edit_manifest(art2, artifact="other.onnx")
    with pytest.raises(ManifestError, match="other.onnx"):
        loaders()["load_runner"](art2)


def test_missing_or_malformed_manifest_is_refused(exported, tmp_path):
    art = copy_artifact(exported["onnx"], tmp_path)
    manifest_path_for(art).unlink()
    with pytest.raises(ManifestError, match="no manifest"):
        loaders()["load_runner"](art)
    manifest_path_for(art).write_text("{not json")
    with pytest.raises(ManifestError, match="malformed"):
        loaders()["load_runner"](art)
    manifest_path_for(art).write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(ManifestError, match="lacks required fields"):
        loaders()["load_runner"](art)


def test_manifest_with_wrong_field_types_is_a_manifest_error(exported, tmp_path):
    """A manifest whose fields have the wrong JSON types must give a ManifestError, not a TypeError deep inside."""
    art = copy_artifact(exported["onnx"], tmp_path)
    edit_manifest(art, input_contract=["not", "a", "dict"])
    with pytest.raises(PinliteError):
        loaders()["load_runner"](art)


def test_verify_false_skips_the_hash_only(exported, tmp_path):
    art = copy_artifact(exported["onnx"], tmp_path)
    flip_byte(art, offset=art.stat().st_size - 1)
    assert read_manifest(art, verify=False).preset == "tiny"


def test_tampered_checkpoint_is_refused(exported, tmp_path):
    ckpt = copy_artifact(exported["checkpoint"], tmp_path)
    flip_byte(ckpt, offset=ckpt.stat().st_size - 3)  # inside the weights, header intact
    for name, load in loaders().items():
        with pytest.raises(CheckpointError, match="sha256"):
            load(ckpt)


def test_checkpoint_record_travels_inside_the_weights_file(exported, tmp_path):
    """The record is embedded in the safetensors metadata (so weights and record are replaced atomically as one
    file); the JSON beside it is a copy for people. A checkpoint without its JSON still loads; a safetensors file
    with neither an embedded record nor a JSON record is refused."""
    ckpt = copy_artifact(exported["checkpoint"], tmp_path)
    ckpt.with_suffix(".json").unlink()
    loaders()["load_runner"](ckpt)
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    with pytest.raises(CheckpointError, match="missing"):
        loaders()["load_runner"](bare)


def test_a_manifest_beside_a_checkpoint_is_refused_not_trusted_over_its_record(exported, tmp_path):
    """A self-hashed manifest placed beside a checkpoint used to replace the checkpoint's own hash-covered record:
    its normalisation, its operating point (threshold 0.999: nothing ever called fake) and its training-data claim
    were used with the checkpoint's weights. pinlite-edge writes no manifest for checkpoints: one there is refused."""
    ckpt = copy_artifact(exported["checkpoint"], tmp_path)
    onnx_manifest = json.loads(manifest_path_for(exported["onnx"]).read_text())
    manifest_path_for(ckpt).write_text(json.dumps({**onnx_manifest, "runtime": "torch", "artifact": ckpt.name}))
    for name, load in loaders().items():
        with pytest.raises(ManifestError, match="a manifest sits beside this checkpoint"):
            load(ckpt)
    # the bench's listing describes the checkpoint as one, not as what a manifest beside it claims
    from pinlite_edge.bench.workspace import WorkspaceError, resolve_artefacts

    manifest_path_for(ckpt).write_text(json.dumps({**onnx_manifest, "artifact": ckpt.name}))
    with pytest.raises(WorkspaceError, match="holds no ort fp32 artefact; it has: best.safetensors .torch fp32"):
        resolve_artefacts(tmp_path, "ort", "fp32")
    assert ckpt in resolve_artefacts(tmp_path, "torch", "fp32")
    manifest_path_for(ckpt).unlink()
    loaders()["load_runner"](ckpt)


def test_an_export_names_the_checkpoint_bytes_it_loaded(exported, tmp_path, monkeypatch):
    """A calibrate rewriting the checkpoint during an export gave a manifest with the new file's sha256 but the old
    operating point, which the quickstart then took as up to date. The manifest names the bytes that were loaded,
    and a file that changes while it is loaded is refused."""
    import pinlite_edge.checkpoint as checkpoint_module
    from pinlite_edge.checkpoint import load_checkpoint, save_checkpoint
    from pinlite_edge.export import api
    from pinlite_edge.utils.hashing import sha256_file

    ckpt = copy_artifact(exported["checkpoint"], tmp_path / "c")
    before = sha256_file(ckpt)
    model, record = load_checkpoint(ckpt)
    record = {k: v for k, v in record.items() if k != "weights_sha256"}

    rewrites = []

    def recalibrate() -> None:  # what calibrate does to the file: the same weights, a new operating point
        rewrites.append(1)
        save_checkpoint(ckpt, model, {**record, "operating_point": {"thresholds": {"scan": 0.5 + len(rewrites) / 10}}})

    staging = api.staging_path_for
    monkeypatch.setattr(api, "staging_path_for", lambda a: (recalibrate(), staging(a))[1])  # after the load
    art = api.export_model(ckpt, "onnx", tmp_path / "o").artifact
    assert sha256_file(ckpt) != before and read_manifest(art).source_checkpoint_sha256 == before
    monkeypatch.undo()

    load_file = checkpoint_module.load_file
    monkeypatch.setattr(checkpoint_module, "load_file", lambda *a, **k: (recalibrate(), load_file(*a, **k))[1])
    with pytest.raises(PinliteError, match="changed while it was being loaded"):
        api.export_model(ckpt, "onnx", tmp_path / "o2")


def test_exporting_one_checkpoint_twice_gives_the_same_artefact(exported, tmp_path):
    """An ONNX model carries its manifest's content hash, and that hash covered when the export ran, how long it
    took, --force and how the checkpoint path was typed: every re-export of one checkpoint was a new file, and
    ``scan --out`` refused to resume with it ("holds results made with other settings")."""
    import time

    from pinlite_edge.export import export_model
    from pinlite_edge.utils.hashing import sha256_file

    ckpt = exported["checkpoint"]
    time.sleep(1.1)  # another created_at
    again = export_model(ckpt.parent.parent / "ckpt" / ".." / "ckpt" / ckpt.name, "onnx", tmp_path / "again",
                         force=True).artifact
    first, second = read_manifest(exported["onnx"]), read_manifest(again)
    assert first.created_at != second.created_at and first.source_checkpoint != second.source_checkpoint
    assert sha256_file(again) == sha256_file(exported["onnx"]) == second.artifact_sha256


def test_the_content_hash_leaves_out_only_when_and_how_an_export_ran():
    from pinlite_edge.manifest import content_hash

    base = {"schema_version": 3, "preset": "tiny", "created_at": "2026-12-05T10:00:00+00:00",
            "source_checkpoint": "a/best.safetensors", "source_checkpoint_sha256": "ab" * 32,
            "extra": {"export_seconds": 1.0, "export_options": {"force": False, "opset": 17}},
            "operating_point": {"thresholds": {"scan": 0.75}}}
    same = json.loads(json.dumps(base))
    same.update(created_at="2026-12-06T11:00:00+00:00", source_checkpoint="/abs/a/best.safetensors")
    same["extra"].update(export_seconds=9.5, export_options={"force": True, "opset": 17})
    assert content_hash(same) == content_hash(base)
    for key, value in (("source_checkpoint_sha256", "cd" * 32), ("operating_point", {"thresholds": {"scan": 0.9}}),
                       ("extra", {"export_seconds": 1.0, "export_options": {"force": False, "opset": 18}})):
        assert content_hash({**base, key: value}) != content_hash(base), key
    old = {**base, "schema_version": 2}  # manifests written before schema 3 hashed every field, and still verify
    assert content_hash({**old, "created_at": same["created_at"]}) != content_hash(old)


# --------------------------------------------------------------------------------------------- preset / contract
@pytest.mark.parametrize("loader", ["load_runner", "Detector.load"])
def test_manifest_for_another_preset_is_refused(exported, loader):
    with pytest.raises(ManifestError, match="preset"):
        loaders()[loader](exported["onnx"], expected_preset="paper")


@pytest.mark.parametrize("loader", ["load_runner", "Detector.load"])
def test_manifest_for_another_contract_is_refused(exported, loader):
    with pytest.raises(ManifestError, match="input contract"):
        loaders()[loader](exported["onnx"], expected_contract=PAPER_CONTRACT)


def test_checkpoint_for_another_preset_or_contract_is_refused(exported):
    from pinlite_edge.runtimes import load_runner

    with pytest.raises(ManifestError, match="preset"):
        load_runner(exported["checkpoint"], expected_preset="paper")
    with pytest.raises(ManifestError, match="input contract"):
        load_runner(exported["checkpoint"], expected_contract=PAPER_CONTRACT)


def test_manifest_contradicting_its_model_config_is_refused(exported, tmp_path):
    art = copy_artifact(exported["onnx"], tmp_path)
    edit_manifest(art, preset="paper")  # model_config still says tiny
    with pytest.raises(ManifestError, match="contradicts"):
        loaders()["load_runner"](art)


def test_manifest_claiming_another_contract_than_the_onnx_graph_is_refused_at_activation(exported, tmp_path):
    """The manifest (and its model config) claim 128x128 frames; the ONNX graph takes 64x64."""
    from pinlite_edge.runtimes import load_runner

    art = copy_artifact(exported["onnx"], tmp_path)
    paper = PAPER_CONTRACT.to_dict()
    d = json.loads(manifest_path_for(art).read_text())
    d["input_contract"] = paper
    if "contract" in d["model_config"]:
        d["model_config"]["contract"] = paper
    manifest_path_for(art).write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="edited"):  # an edited manifest is refused at once
        load_runner(art)
    reseal(art, d)  # a manifest re-published with the wrong contract: the graph itself disagrees at activation
    runner = load_runner(art)
    assert runner.contract == PAPER_CONTRACT
    with pytest.raises(ManifestError, match="frames"):
        runner.activate()


def test_manifest_runtime_must_match_the_file_type(exported, tmp_path):
    art = copy_artifact(exported["onnx"], tmp_path)
    edit_manifest(art, runtime="executorch")
    with pytest.raises(ManifestError, match="runtime"):
        loaders()["load_runner"](art)
    with pytest.raises(ManifestError, match="not for trt"):
        loaders()["load_runner"](exported["onnx"], backend="trt")


def test_manifest_with_other_io_names_is_refused(exported, tmp_path):
    art = copy_artifact(exported["onnx"], tmp_path)
    edit_manifest(art, output_names=["logits", "offset_logits"])
    with pytest.raises(ManifestError, match="I/O names"):
        loaders()["load_runner"](art)


def test_manifest_schema_newer_unknown_or_missing_is_named(exported, tmp_path):
    """A manifest from a newer pinlite-edge says to upgrade; an unknown or missing field is named (it used to be
    reported as "edited after export", which named nothing)."""
    from pinlite_edge.manifest import SCHEMA_VERSION

    art = copy_artifact(exported["onnx"], tmp_path)
    original = manifest_path_for(art).read_text()
    cases = ((dict(schema_version=SCHEMA_VERSION + 1, feature_flags={"x": 1}),
              rf"newer pinlite-edge \(manifest schema {SCHEMA_VERSION + 1}; .* reads schemas 1 to {SCHEMA_VERSION}\)"),
             (dict(feature_flags={"x": 1}), rf"fields that manifest schema {SCHEMA_VERSION} does not have: \['feature_flags'\]"),
             (dict(schema_version=0), "schema_version must be >= 1"),
             (dict(feature_version="2"), "'feature_version' must be an integer or null"))
    for changes, message in cases:
        manifest_path_for(art).write_text(original)
        edit_manifest(art, **changes)
        with pytest.raises(ManifestError, match=message):
            loaders()["load_runner"](art)
    d = json.loads(original)
    del d["schema_version"]
    manifest_path_for(art).write_text(json.dumps(d))
    with pytest.raises(ManifestError, match=r"lacks required fields \['schema_version'\]"):
        loaders()["load_runner"](art)


def test_a_model_trained_for_another_feature_pipeline_is_refused(exported, tmp_path, caplog, monkeypatch):
    """Checkpoints and manifests record the feature pipeline (the face crop) the model was trained for. One trained
    for another crop is refused by every loader, naming both. One that does not record it (written before the field)
    loads quietly when it records its training data (recorded from two commits before the mouth crop), and is scored
    with a warning when it does not (a checkpoint, or an export of one, from before the mouth crop)."""
    import pinlite_edge.manifest as manifest_module
    from pinlite_edge.checkpoint import load_checkpoint, save_checkpoint
    from pinlite_edge.export import export_model
    from pinlite_edge.feature_version import FEATURE_VERSION

    model, record = load_checkpoint(exported["checkpoint"])
    assert record["feature_version"] == FEATURE_VERSION == read_manifest(exported["onnx"]).feature_version
    for version, advice in ((1, "the whole-face crop.*Retrain it"), (FEATURE_VERSION + 1, "unknown to this.*Upgrade")):
        ckpt = save_checkpoint(tmp_path / f"v{version}" / "best.safetensors", model, {"feature_version": version})
        for load in (*loaders().values(), load_checkpoint):
            with pytest.raises(CheckpointError, match=f"trained for feature version {version}, {advice}"):
                load(ckpt)
        art = copy_artifact(exported["onnx"], tmp_path / f"v{version}-onnx")
        reseal(art, {**json.loads(manifest_path_for(art).read_text()), "feature_version": version})
        for load in loaders().values():
            with pytest.raises(ManifestError, match=f"trained for feature version {version}, {advice}"):
                load(art)

    trained_on = {"real_video": False, "synthetic": True, "sources": [{"kind": "synthetic"}]}
    for training_data, warned in ((None, True), (trained_on, False)):
        folder = tmp_path / f"unrecorded-{warned}"
        unrecorded = save_checkpoint(folder / "best.safetensors", model,
                                     {"feature_version": None, "training_data": training_data})
        art = export_model(unrecorded, "onnx", folder / "onnx").artifact
        assert read_manifest(art).feature_version is None
        for path in (unrecorded, art):
            caplog.clear()
            with caplog.at_level("WARNING", logger="pinlite_edge.feature_version"), loaders()["load_runner"](path):
                pass
            assert (f"{path} does not record the feature pipeline" in caplog.text) is warned, (path, caplog.text)

    # publish as the exporter of schema 3 did: its manifests had no feature_version field at all
    monkeypatch.setattr(manifest_module, "SCHEMA_VERSION", 3)
    to_dict = manifest_module.Manifest.to_dict
    monkeypatch.setattr(manifest_module.Manifest, "to_dict",
                        lambda self: {k: v for k, v in to_dict(self).items() if k != "feature_version"})
    old = copy_artifact(exported["onnx"], tmp_path / "schema3")
    reseal(old, {**json.loads(manifest_path_for(old).read_text()), "feature_version": None, "schema_version": 3,
                 "training_data": trained_on})
    monkeypatch.undo()
    assert "feature_version" not in json.loads(manifest_path_for(old).read_text())
    caplog.clear()
    with caplog.at_level("WARNING"), loaders()["load_runner"](old):
        pass
    assert read_manifest(old).schema_version == 3 and "feature pipeline" not in caplog.text


# --------------------------------------------------------------------------------------------- TensorRT target
ORIN = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "gpu_name": "Orin"}


def test_engine_target_matching_device_passes():
    from pinlite_edge.runtimes.trt.loader import check_engine_target

    assert check_engine_target(ORIN, trt_version="10.3.0.30", compute_capability="8.7", gpu_name="Orin") == []


@pytest.mark.parametrize("device, words", [
    ({"trt_version": "11.0.0", "compute_capability": "8.7", "gpu_name": "Orin"}, "TensorRT 10.3.0"),
    ({"trt_version": "10.7.0", "compute_capability": "8.7", "gpu_name": "Orin"}, "TensorRT 10.3.0"),
    # another patch release: NVIDIA binds an engine to the release that built it
    ({"trt_version": "10.3.1", "compute_capability": "8.7", "gpu_name": "Orin"}, "TensorRT 10.3.0"),
    ({"trt_version": "10.3.0", "compute_capability": "8.9", "gpu_name": "NVIDIA L4"}, "compute capability 8.7"),
    ({"trt_version": "10.3.0", "compute_capability": "11.0", "gpu_name": "Thor"}, "compute capability 8.7"),
])
def test_engine_target_mismatch_is_refused(device, words):
    from pinlite_edge.runtimes.trt.loader import check_engine_target

    with pytest.raises(ManifestError, match=re.escape(words)):
        check_engine_target(ORIN, source="model.engine", **device)


def test_engine_target_same_capability_other_gpu_warns():
    from pinlite_edge.runtimes.trt.loader import check_engine_target

    warnings = check_engine_target({**ORIN, "compute_capability": [8, 7]}, trt_version="10.3.0.30",
                                   compute_capability="8.7", gpu_name="Orin NX")
    assert len(warnings) == 1 and "Orin NX" in warnings[0]


def test_engine_target_version_compatible():
    from pinlite_edge.runtimes.trt.loader import check_engine_target

    target = {**ORIN, "version_compatible": True}
    assert check_engine_target(target, trt_version="10.8.0", compute_capability="8.7", gpu_name="Orin") == []
    with pytest.raises(ManifestError):
        check_engine_target(target, trt_version="10.2.0", compute_capability="8.7", gpu_name="Orin")
    with pytest.raises(ManifestError):
        check_engine_target(target, trt_version="11.0.0", compute_capability="8.7", gpu_name="Orin")


@pytest.mark.parametrize("target", [{}, {"compute_capability": "8.7"}, {"tensorrt_version": "10.3.0"}])
def test_engine_target_incomplete_is_refused(target):
    from pinlite_edge.runtimes.trt.loader import check_engine_target

    with pytest.raises(ManifestError):
        check_engine_target(target, trt_version="10.3.0", compute_capability="8.7", gpu_name="Orin")


def _fake_engine_artifact(exported: dict[str, Path], tmp_path: Path, target: dict[str, Any]) -> Path:
    """An ``.engine`` file (random bytes) with a manifest cloned from the ONNX export and the given target."""
    from pinlite_edge.manifest import publish_artifact

    engine = tmp_path / "pinlite-student.engine"
    engine.write_bytes(b"not a real engine" * 64)
    m = read_manifest(exported["onnx"])
    m.format, m.runtime, m.precision, m.target = "trt-fp16", "trt", "fp16", target
    publish_artifact(engine, engine, m)
    return engine


@pytest.fixture()
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-ins for ``tensorrt`` 10.3 and cuda-python on an Orin (cc 8.7); records deserialisation attempts."""
    calls: dict[str, Any] = {"deserialize": 0}

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> None:
            calls["deserialize"] += 1
            return None  # a real TensorRT would crash or fail here on a foreign engine

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    trt = types.SimpleNamespace(__version__="10.3.0.30", Runtime=Runtime, Logger=Logger)

    props = types.SimpleNamespace(name=b"Orin\x00", major=8, minor=7)
    cudart = types.SimpleNamespace(cudaSetDevice=lambda i: (0,), cudaGetDeviceProperties=lambda i: (0, props))
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart  # type: ignore[attr-defined]
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    return calls


@pytest.mark.parametrize("target", [
    {"tensorrt_version": "11.0.0", "compute_capability": "8.7", "gpu_name": "Orin"},
    {"tensorrt_version": "10.3.0", "compute_capability": "9.0", "gpu_name": "NVIDIA H100"},
    {},
])
def test_trt_runner_refuses_foreign_engine_before_deserialising(exported, tmp_path, fake_trt, target):
    from pinlite_edge.runtimes import load_runner

    engine = _fake_engine_artifact(exported, tmp_path, target)
    runner = load_runner(engine)
    assert runner.backend == "trt"
    with pytest.raises(ManifestError):
        runner.activate()
    assert fake_trt["deserialize"] == 0, "the engine was handed to TensorRT before its target was checked"


def test_trt_runner_matching_engine_reaches_deserialisation(exported, tmp_path, fake_trt):
    """Control for the test above: with a matching target the check passes and TensorRT is asked to deserialise
    (the fake returns None, which the runner turns into a ManifestError)."""
    from pinlite_edge.runtimes import load_runner

    engine = _fake_engine_artifact(exported, tmp_path, dict(ORIN))
    with pytest.raises(ManifestError, match="could not deserialise"):
        load_runner(engine).activate()
    assert fake_trt["deserialize"] == 1


def test_trt_runner_without_tensorrt_is_backend_unavailable(exported, tmp_path, monkeypatch):
    from pinlite_edge.errors import BackendUnavailableError
    from pinlite_edge.runtimes import load_runner

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    engine = _fake_engine_artifact(exported, tmp_path, dict(ORIN))
    with pytest.raises(BackendUnavailableError, match="trt"):
        load_runner(engine).activate()


# --------------------------------------------------------------------------------------------- no pickle
SOURCE_DIRS = ("pinlite_edge", "export", "runtimes", "training")
PICKLE_PATTERNS = {
    "pickle.load / pickle.loads": re.compile(r"\b(c?pickle|dill|joblib)\.loads?\s*\("),
    "np.load(..., allow_pickle=True)": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.load without weights_only=True": None,  # checked call by call below
    "pandas.read_pickle": re.compile(r"read_pickle\s*\("),
}


def _python_sources() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 20, "source tree not found"
    return files


def _call_args(text: str, start: int) -> str:
    """The text of a call's parenthesised arguments starting at ``text[start] == '('``."""
    depth = 0
    for i in range(start, len(text)):
        depth += text[i] == "("
        depth -= text[i] == ")"
        if depth == 0:
            return text[start:i + 1]
    return text[start:]


def test_no_pickle_loading_anywhere():
    offences = []
    for path in _python_sources():
        text = path.read_text()
        rel = path.relative_to(REPO)
        for what, pattern in PICKLE_PATTERNS.items():
            if pattern is not None:
                for m in pattern.finditer(text):
                    offences.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {what}")
        for m in re.finditer(r"\btorch\.load\s*\(", text):
            args = _call_args(text, m.end() - 1)
            if not re.search(r"weights_only\s*=\s*True", args):
                offences.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: torch.load without "
                                f"weights_only=True: {args[:80]}")
        for m in re.finditer(r"\bnp\.load\s*\(|\bnumpy\.load\s*\(", text):
            args = _call_args(text, m.end() - 1)
            if "allow_pickle" in args and not re.search(r"allow_pickle\s*=\s*False", args):
                offences.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: np.load with allow_pickle: {args}")
        if re.search(r"^\s*(import pickle|from pickle import|import cPickle|import dill)", text, re.M):
            if re.search(r"pickle\.(load|Unpickler)|Unpickler\(", text):
                offences.append(f"{rel}: imports pickle and unpickles")
    assert not offences, "pickle loading found:\n" + "\n".join(offences)


def test_the_pickle_check_catches_offences():
    """The scanner above must not be vacuous."""
    bad = ["x = torch.load(path)", "x = torch.load(\n  path, map_location='cpu')", "pickle.load(fh)",
           "np.load(f, allow_pickle=True)"]
    good = ["x = torch.load(path, weights_only=True)", "torch.load(p,\n map_location='cpu', weights_only=True)"]
    for src in bad + good:
        hits = [w for w, pat in PICKLE_PATTERNS.items() if pat is not None and pat.search(src)]
        for m in re.finditer(r"\btorch\.load\s*\(", src):
            if not re.search(r"weights_only\s*=\s*True", _call_args(src, m.end() - 1)):
                hits.append("torch.load")
        assert bool(hits) == (src in bad), src


def test_torch_load_is_not_used_on_untrusted_files_at_all():
    """Stronger than the rule: loading paths use safetensors; list any torch.load for review."""
    uses = [f"{p.relative_to(REPO)}" for p in _python_sources() if re.search(r"\btorch\.load\s*\(", p.read_text())]
    for rel in uses:  # every use must be weights_only (checked above); they must also not be in runtimes/
        assert not rel.startswith("runtimes/"), f"{rel}: runners load safetensors / manifests, never torch.load"


# --------------------------------------------------------------------------------------------- no silent fallback
def test_bench_runtime_selection_does_not_fall_back_to_other_artefacts(exported):
    """``bench --runtime trt --artifacts FOLDER`` on a folder without engines must refuse, not bench the ONNX/.pte
    it finds there instead (observed: it benched an ExecuTorch .pte on the CPU and exited 0)."""
    from pinlite_edge.bench.workspace import resolve_artefacts

    folder = exported["onnx"].parent  # holds only the FP32 ONNX export
    with pytest.raises(PinliteError):
        resolve_artefacts(folder, "trt", "fp16")
    with pytest.raises(PinliteError):
        resolve_artefacts(exported["onnx"], "executorch", "fp32")  # a single file of another runtime


# --------------------------------------------------------------------------------------------- issue #15: semantic content
@pytest.mark.parametrize("loader", ["load_runner", "Detector.load"])
@pytest.mark.parametrize("change", [{"input_contract__window_seconds": 0.32},
                                    {"input_contract__mean": [0.0, 0.0, 0.0]},
                                    {"input_contract__std": [1.0, 1.0, 1.0]},
                                    {"model_config__contract__window_seconds": 0.32,
                                     "input_contract__window_seconds": 0.32},
                                    {"precision_plan": {"precision": "int8", "float_layers": []}},
                                    {"max_batch": 1, "dynamic_batch": False}])
def test_edited_manifest_is_refused_not_scored_differently(exported, tmp_path, loader, change):
    """Editing what changes a score (window length, normalisation, plan, batch) in a manifest used to change every
    score silently (0.99 -> 0.22); the manifest's content hash, also stored inside the ONNX model, refuses it."""
    art = copy_artifact(exported["onnx"], tmp_path)
    edit_manifest(art, **change)
    with pytest.raises(ManifestError, match="edited"):
        loaders()[loader](art)


def test_manifest_republished_with_a_fresh_content_hash_still_disagrees_with_the_model(exported, tmp_path):
    """Recomputing the manifest's own hash is not enough: the ONNX model carries the hash of the exported manifest."""
    from pinlite_edge.manifest import content_hash

    art = copy_artifact(exported["onnx"], tmp_path)
    d = json.loads(manifest_path_for(art).read_text())
    d["input_contract"]["window_seconds"] = 0.32
    d["model_config"]["contract"]["window_seconds"] = 0.32
    d["content_sha256"] = content_hash(d)
    manifest_path_for(art).write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="inside the model"):
        read_manifest(art)


def test_manifest_without_content_hash_is_refused(exported, tmp_path):
    art = copy_artifact(exported["onnx"], tmp_path)
    edit_manifest(art, content_sha256=None, schema_version=1)
    with pytest.raises(ManifestError, match="no content hash"):
        read_manifest(art)


@pytest.fixture()
def external_onnx(exported, tmp_path) -> Path:
    """The exported model re-saved with its weights in an external ``weights.data`` file, published with a manifest."""
    import onnx

    from pinlite_edge.manifest import publish_artifact

    folder = tmp_path / "ext"
    folder.mkdir()
    art = folder / "pinlite-student.onnx"
    model = onnx.load(str(exported["onnx"]))
    onnx.save_model(model, str(art), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.data", size_threshold=0)
    publish_artifact(art, art, read_manifest(exported["onnx"]))
    return art


def test_onnx_external_data_is_hashed(external_onnx):
    from pinlite_edge.runtimes import load_runner

    m = read_manifest(external_onnx)
    assert list(m.external_data) == ["weights.data"]
    with load_runner(external_onnx) as r:
        r.infer(np.zeros(TINY_CONTRACT.frames_shape(1), np.float32), np.zeros(TINY_CONTRACT.mfcc_shape(1), np.float32))
    flip_byte(external_onnx.parent / "weights.data")
    with pytest.raises(ManifestError, match="weights.data"):
        load_runner(external_onnx)


def test_onnx_external_data_missing_or_outside_the_folder_is_refused(external_onnx):
    data = external_onnx.parent / "weights.data"
    # a link beside the model that leads out of its folder: it was read and hashed wherever it pointed
    outside = external_onnx.parent.parent / "elsewhere" / "weights.data"
    outside.parent.mkdir()
    data.rename(outside)
    data.symlink_to(outside)
    with pytest.raises(ManifestError, match="a link to .* outside its folder"):
        read_manifest(external_onnx)
    data.unlink()
    with pytest.raises(ManifestError, match="missing"):
        read_manifest(external_onnx)


def test_onnx_external_data_not_listed_in_the_manifest_is_refused(external_onnx):
    edit_manifest(external_onnx, external_data={})
    with pytest.raises(ManifestError):
        read_manifest(external_onnx)


# --------------------------------------------------------------------------------------------- manifest types
@pytest.mark.parametrize("change, field", [
    ({"model_config": ["a", "list"]}, "model_config"),
    ({"input_contract": "tiny"}, "input_contract"),
    ({"dynamic_batch": "yes"}, "dynamic_batch"),
    ({"max_batch": "8"}, "max_batch"),
    ({"max_batch": True}, "max_batch"),
    ({"precision_plan": 3}, "precision_plan"),
    ({"input_names": "frames"}, "input_names"),
    ({"input_contract__num_frames": "16"}, "num_frames"),
    ({"input_contract__mean": [0.1, 0.2]}, "mean"),
    ({"input_contract__std": [0.0, 1.0, 1.0]}, "std"),
    ({"input_contract__fps": None}, "fps"),
    ({"preset": {"deep": [[[[1]]]]}}, "preset"),
])
def test_manifest_field_of_the_wrong_type_is_a_manifest_error_naming_it(exported, tmp_path, change, field):
    art = copy_artifact(exported["onnx"], tmp_path)
    edit_manifest(art, **change)
    for load in loaders().values():
        with pytest.raises(ManifestError, match=field):
            load(art)


@pytest.mark.parametrize("text", ["[1, 2, 3]", "null", "\"a string\"", "[" * 100000 + "]" * 100000])
def test_manifest_that_is_not_a_json_object_or_nested_too_deeply_is_malformed(exported, tmp_path, text):
    art = copy_artifact(exported["onnx"], tmp_path)
    manifest_path_for(art).write_text(text)
    with pytest.raises(ManifestError, match="malformed"):
        read_manifest(art)


def test_reading_an_artefact_on_read_only_media_writes_nothing(exported, tmp_path):
    import os

    from pinlite_edge.manifest import pending_path_for

    art = copy_artifact(exported["onnx"], tmp_path / "ro")
    stale = json.loads(manifest_path_for(art).read_text())
    stale["artifact_sha256"] = "0" * 64  # a pending manifest of a publish killed before its rename
    pending_path_for(art).write_text(json.dumps(stale))
    os.chmod(art.parent, 0o555)
    try:
        assert read_manifest(art).preset == "tiny"
    finally:
        os.chmod(art.parent, 0o755)
    assert pending_path_for(art).is_file()


def test_proc_file_is_not_an_artefact(tmp_path):
    with pytest.raises(ManifestError, match="not a regular file"):
        read_manifest(Path("/proc/self/status"))


# --------------------------------------------------------------------------------------------- checkpoints (#15)
def _state_and_record(ckpt: Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(ckpt), framework="pt") as fh:
        record = json.loads(fh.metadata()["pinlite_record"])
    return load_file(str(ckpt)), record


def test_checkpoint_without_embedded_hash_is_refused_unless_allowed(exported, tmp_path):
    """A checkpoint re-saved by another tool (no embedded hash) used to load unverified."""
    from safetensors.torch import save_file

    from pinlite_edge.checkpoint import load_checkpoint
    from pinlite_edge.runtimes import load_runner

    state, record = _state_and_record(exported["checkpoint"])
    bare = tmp_path / "bare.safetensors"
    save_file(state, str(bare), metadata={"pinlite_record": json.dumps(record)})
    with pytest.raises(CheckpointError, match="allow_unverified"):
        load_checkpoint(bare)
    with pytest.raises(CheckpointError, match="allow_unverified"):
        load_runner(bare)
    model, _ = load_checkpoint(bare, allow_unverified=True)
    assert model.config.preset == "tiny"
    # load_runner(verify=False) is the runner's allow_unverified: inspected and loaded at activation
    with load_runner(bare, verify=False) as r:
        out = r.infer(np.zeros(TINY_CONTRACT.frames_shape(1), np.float32),
                      np.zeros(TINY_CONTRACT.mfcc_shape(1), np.float32))
    assert out["logits"].shape == (1, 2)


def test_an_oversized_json_beside_a_checkpoint_is_refused_before_parsing(exported, tmp_path, monkeypatch):
    """The record beside a checkpoint was parsed whatever its size (300 MB: 1.4 GB of memory), although the embedded
    record is the one used; manifests had a 16 MB limit, records none (security audit)."""
    from pinlite_edge import checkpoint

    ckpt = copy_artifact(exported["checkpoint"], tmp_path)
    monkeypatch.setattr(checkpoint, "MAX_METADATA_BYTES", 4096)  # the limit scaled down: the same check
    ckpt.with_suffix(".json").write_text(json.dumps({"pad": "x" * 5000}))
    with pytest.raises(CheckpointError, match="more than 4096: it is not a pinlite-edge record"):
        loaders()["load_runner"](ckpt)


def test_checkpoint_with_a_flipped_head_is_refused_by_the_sidecar_hash(exported, tmp_path):
    """The head's weights negated and the file re-saved without the embedded hash: weights_sha256 in the JSON
    beside it no longer matches (it was never compared: every verdict flipped, no error)."""
    from safetensors.torch import save_file

    from pinlite_edge.checkpoint import load_checkpoint

    ckpt = copy_artifact(exported["checkpoint"], tmp_path)
    state, record = _state_and_record(ckpt)
    head = [k for k in state if k.startswith("cls_head")]
    assert head
    for k in head:
        state[k] = -state[k]
    save_file(state, str(ckpt), metadata={"pinlite_record": json.dumps(record)})
    for allow in (False, True):
        with pytest.raises(CheckpointError, match="weights_sha256"):
            load_checkpoint(ckpt, allow_unverified=allow)


def test_checkpoint_record_is_covered_by_the_embedded_hash(exported, tmp_path):
    """Editing the embedded record (keeping the embedded hash) is refused."""
    from safetensors.torch import save_file

    from pinlite_edge.checkpoint import HASH_KEY, load_checkpoint

    ckpt = copy_artifact(exported["checkpoint"], tmp_path)
    ckpt.with_suffix(".json").unlink()
    state, record = _state_and_record(ckpt)
    from safetensors import safe_open

    with safe_open(str(ckpt), framework="pt") as fh:
        meta = dict(fh.metadata())
    record["model_config"]["dropout"] = 0.5
    meta["pinlite_record"] = json.dumps(record)
    save_file(state, str(ckpt), metadata=meta)
    assert HASH_KEY in meta
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(ckpt)


@pytest.mark.parametrize("embed_dim, words", [
    (10 ** 6, "has no valid model_config: embed_dim must be a whole number"),  # ModelConfig's range check
    (2048, "does not match its model config"),  # in range: shapes compared on the meta device
])
def test_tampered_record_asking_for_a_huge_model_allocates_nothing(exported, tmp_path, embed_dim, words):
    """A record claiming embed_dim 10**6 (terabytes of weights) or 2048 (another model): refused before anything is
    allocated, by ModelConfig's range check or by comparing shapes on the meta device."""
    import resource
    import time

    from safetensors.torch import save_file

    from pinlite_edge.checkpoint import load_checkpoint

    state, record = _state_and_record(exported["checkpoint"])
    record["model_config"]["embed_dim"] = embed_dim
    big = tmp_path / "big.safetensors"
    save_file(state, str(big), metadata={"pinlite_record": json.dumps(record)})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(big, allow_unverified=True)
    assert time.perf_counter() - start < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB: < 512 MB more


@pytest.mark.parametrize("header_len", [10 ** 12, 2 ** 63])
def test_checkpoint_header_size_is_checked_against_the_file_size(exported, tmp_path, header_len):
    import struct

    from pinlite_edge.checkpoint import load_checkpoint

    ckpt = copy_artifact(exported["checkpoint"], tmp_path)
    data = bytearray(ckpt.read_bytes())
    data[:8] = struct.pack("<Q", header_len)
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="header"):
        load_checkpoint(ckpt, allow_unverified=True)


def test_checkpoint_tensor_offsets_are_checked_against_the_file_size(exported, tmp_path):
    """A header whose tensor claims more bytes than the file holds is refused before anything is read."""
    import struct

    from pinlite_edge.checkpoint import load_checkpoint

    ckpt = copy_artifact(exported["checkpoint"], tmp_path)
    raw = ckpt.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [10 ** 9, 10 ** 3]
    header[name]["data_offsets"] = [0, 4 * 10 ** 12]
    blob = json.dumps(header).encode()
    ckpt.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_checkpoint(ckpt, allow_unverified=True)


@pytest.mark.parametrize("name", ["x" * 5000 + ".onnx", "x" * 5000 + ".safetensors", "/proc/self/status",
                                  "/dev/null"])
def test_unusable_artefact_paths_are_pinlite_errors(name):
    """A name too long (OSError from the OS), a /proc file (size 0 with content), a device node."""
    from pinlite_edge.checkpoint import load_checkpoint

    path = Path(name) if name.startswith("/") else Path("/tmp") / name
    for load in [*loaders().values(), load_checkpoint]:
        with pytest.raises(PinliteError):
            load(path)


def test_read_verified_bytes_refuses_a_file_changed_after_inspection(exported, tmp_path):
    """What a runner hands to a native loader is the verified bytes, read once: a file swapped between
    ``load_runner`` and activation is refused instead of reaching ExecuTorch / TensorRT."""
    from pinlite_edge.runtimes.artifact import inspect_artifact, read_verified_bytes

    art = copy_artifact(exported["onnx"], tmp_path)
    spec = inspect_artifact(art)
    assert read_verified_bytes(spec) == art.read_bytes()
    flip_byte(art)
    with pytest.raises(ManifestError, match="sha256"):
        read_verified_bytes(spec)
    # inspected with verify=False: the caller skipped the hashes, the bytes come unchecked
    assert read_verified_bytes(inspect_artifact(art, verify=False)) == art.read_bytes()
