import json

import pytest
import torch

from pinlite_edge.checkpoint import load_checkpoint, record_path, save_checkpoint
from pinlite_edge.contract import PAPER_CONTRACT, TINY_CONTRACT
from pinlite_edge.errors import CheckpointError, ManifestError
from pinlite_edge.manifest import Manifest, check_compatible, manifest_path_for, read_manifest, write_manifest
from pinlite_edge.models import count_parameters, create_student


def _inputs(model, batch=1):
    torch.manual_seed(1)
    c = model.contract
    return torch.randn(batch, *c.frames_shape()), torch.randn(batch, *c.mfcc_shape())


def test_checkpoint_roundtrip_including_pruned_model(tmp_path):
    torch.manual_seed(0)
    model = create_student("tiny").eval()
    model.prune_heads({0: [0, 1]})
    path = save_checkpoint(tmp_path / "best.safetensors", model, {"metrics": {"accuracy": 0.9}})
    rec = json.loads(record_path(path).read_text())
    assert rec["metrics"]["accuracy"] == 0.9 and rec["model_config"]["heads_per_layer"] == [2, 4]
    loaded, record = load_checkpoint(path)
    assert count_parameters(loaded) == count_parameters(model)
    x, a = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, a).logits, model(x, a).logits)


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    model = create_student("tiny")
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(path)
    # a record whose config does not match the weights
    path = save_checkpoint(tmp_path / "m2.safetensors", model)
    rec = json.loads(record_path(path).read_text())
    rec["model_config"]["embed_dim"] = 48
    record_path(path).write_text(json.dumps(rec))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def _manifest(preset="tiny", contract=TINY_CONTRACT) -> Manifest:
    return Manifest(format="onnx", runtime="ort", precision="fp32", artifact="", artifact_sha256="",
                    model_kind="student", preset=preset, model_config={}, input_contract=contract.to_dict())


def test_manifest_roundtrip_and_hash_verification(tmp_path):
    art = tmp_path / "model.onnx"
    art.write_bytes(b"graph bytes")
    path = write_manifest(art, _manifest())
    assert path == manifest_path_for(art) and path.name == "model.onnx.manifest.json"
    m = read_manifest(art)
    assert m.contract == TINY_CONTRACT
    art.write_bytes(b"tampered graph")
    with pytest.raises(ManifestError, match="does not match its manifest"):
        read_manifest(art)
    read_manifest(art, verify=False)  # explicit opt-out still reads


def test_manifest_missing_or_for_other_artifact(tmp_path):
    art = tmp_path / "a.onnx"
    art.write_bytes(b"x")
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(art)
    write_manifest(art, _manifest())
    other = tmp_path / "b.onnx"
    other.write_bytes(b"x")
    manifest_path_for(other).write_text(manifest_path_for(art).read_text())
    with pytest.raises(ManifestError, match="describes"):
        read_manifest(other)
    manifest_path_for(other).write_text("{not json")
    with pytest.raises(ManifestError, match="malformed"):
        read_manifest(other)


def test_manifest_for_other_preset_or_contract_is_refused(tmp_path):
    m = _manifest()
    check_compatible(m, preset="tiny", contract=TINY_CONTRACT)
    with pytest.raises(ManifestError, match="preset"):
        check_compatible(m, preset="paper")
    with pytest.raises(ManifestError, match="input contract"):
        check_compatible(m, contract=PAPER_CONTRACT)
