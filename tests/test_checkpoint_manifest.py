import json
import os

import pytest
import torch

from safetensors.torch import save_file

from pinlite_edge.checkpoint import RECORD_KEY, load_checkpoint, record_path, save_checkpoint
from pinlite_edge.contract import PAPER_CONTRACT, TINY_CONTRACT
from pinlite_edge.errors import CheckpointError, ManifestError
from pinlite_edge.manifest import Manifest, manifest_path_for, publish_artifact, read_manifest
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


def test_the_same_model_and_record_give_the_same_checkpoint_file(tmp_path):
    """safetensors orders its header's keys differently from call to call: saving the same weights and record gave
    files with different sha256, which best.json, export manifests (source_checkpoint_sha256), the quickstart's
    staleness check and the teacher cache take for the checkpoint's identity (re-running calibrate with the same
    result made every export look stale)."""
    model = create_student("tiny", pretrained=False).eval()
    record = {"epoch": 3, "note": "same", "metrics": {"val_auc": 0.5}, "history": [{"epoch": i} for i in range(3)]}
    digests = set()
    for i in range(6):
        path = save_checkpoint(tmp_path / f"c{i}" / "best.safetensors", model, record)
        digests.add(json.loads(record_path(path).read_text())["weights_sha256"])
    assert len(digests) == 1, f"{len(digests)} different files from one model and record"
    loaded, _ = load_checkpoint(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    model = create_student("tiny")
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(path)
    # weights whose embedded record describes another model
    wrong = create_student("tiny").config.to_dict()
    wrong["embed_dim"] = 48
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "m2.safetensors"), metadata={RECORD_KEY: json.dumps({"model_config": wrong})})
    with pytest.raises(CheckpointError, match="allow_unverified"):  # no hash: refused before anything else
        load_checkpoint(tmp_path / "m2.safetensors")
    with pytest.raises(CheckpointError, match="does not match its model config"):
        load_checkpoint(tmp_path / "m2.safetensors", allow_unverified=True)


def test_record_is_embedded_so_a_stale_json_beside_cannot_mislead(tmp_path):
    first = create_student("tiny")
    path = save_checkpoint(tmp_path / "best.safetensors", first, {"epoch": 1})
    stale = record_path(path).read_text()
    pruned = create_student("tiny")
    pruned.prune_heads({0: [0]})
    save_checkpoint(path, pruned, {"epoch": 2})
    record_path(path).write_text(stale)  # as if killed between the weights and the JSON copy
    model, record = load_checkpoint(path)
    assert record["epoch"] == 2 and model.config.heads_per_layer == (3, 4)


def _manifest(preset="tiny", contract=TINY_CONTRACT) -> Manifest:
    return Manifest(format="onnx", runtime="ort", precision="fp32", artifact="", artifact_sha256="",
                    model_kind="student", preset=preset, model_config={}, input_contract=contract.to_dict())


def attach(art, manifest: Manifest):
    """Publish ``art`` in place with ``manifest`` (what an export does, staging file = the artefact)."""
    return publish_artifact(art, art, manifest)


def test_manifest_roundtrip_and_hash_verification(tmp_path):
    art = tmp_path / "model.bin"
    art.write_bytes(b"graph bytes")
    path = attach(art, _manifest())
    assert path == manifest_path_for(art) and path.name == "model.bin.manifest.json"
    m = read_manifest(art)
    assert m.contract == TINY_CONTRACT
    art.write_bytes(b"tampered graph")
    with pytest.raises(ManifestError, match="does not match its manifest"):
        read_manifest(art)
    read_manifest(art, verify=False)  # explicit opt-out still reads


def test_manifest_missing_or_for_other_artifact(tmp_path):
    art = tmp_path / "a.bin"
    art.write_bytes(b"x")
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(art)
    attach(art, _manifest())
    other = tmp_path / "b.bin"
    other.write_bytes(b"x")
    manifest_path_for(other).write_text(manifest_path_for(art).read_text())
    with pytest.raises(ManifestError, match="describes"):
        read_manifest(other)
    manifest_path_for(other).write_text("{not json")
    with pytest.raises(ManifestError, match="malformed"):
        read_manifest(other)


def test_manifest_for_other_preset_or_contract_is_refused(tmp_path):
    from pinlite_edge.runtimes import inspect_artifact

    art = tmp_path / "m.onnx.bin"
    art.write_bytes(b"x")
    m = _manifest()
    m.runtime = "ort"
    attach(art, m)
    inspect_artifact(art, expected_preset="tiny", expected_contract=TINY_CONTRACT)
    with pytest.raises(ManifestError, match="preset"):
        inspect_artifact(art, expected_preset="paper")
    with pytest.raises(ManifestError, match="input contract"):
        inspect_artifact(art, expected_contract=PAPER_CONTRACT)


def test_publish_artifact_is_consistent_at_every_interruption_point(tmp_path, monkeypatch):
    """A kill right after the artefact rename: the pending manifest describes the artefact; reading uses it without
    writing anything (read-only media), and the next publish replaces it."""
    import os

    from pinlite_edge.manifest import pending_path_for, staging_path_for

    art = tmp_path / "m.bin"
    art.write_bytes(b"old")
    attach(art, _manifest())
    staged = staging_path_for(art)
    staged.write_bytes(b"new")
    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):  # simulate a kill right after the artefact rename
        real_replace(src, dst)
        calls.append(dst)
        if len(calls) == 2:  # 1: pending manifest written atomically, 2: artefact renamed
            raise KeyboardInterrupt

    monkeypatch.setattr("pinlite_edge.manifest.os.replace", replace_then_die)
    monkeypatch.setattr("pinlite_edge.utils.atomic.os.replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        publish_artifact(staged, art, _manifest())
    monkeypatch.undo()
    assert art.read_bytes() == b"new"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir())
    os.chmod(tmp_path, 0o555)  # read-only folder: reading must not need to write
    try:
        assert read_manifest(art).artifact_sha256  # the pending manifest matches the artefact: it is used
    finally:
        os.chmod(tmp_path, 0o755)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.iterdir()) == before  # reading wrote nothing
    assert pending_path_for(art).is_file()
    staged = staging_path_for(art)
    staged.write_bytes(b"newer")
    publish_artifact(staged, art, _manifest())  # the next publish replaces the pending manifest
    assert not list(tmp_path.glob("*.next")) and read_manifest(art).artifact_sha256


def test_stale_pending_manifest_of_a_publish_killed_before_the_rename_is_ignored(tmp_path):
    """Killed after writing ``X.manifest.json.next`` but before renaming the artefact: the old pair stands."""
    from pinlite_edge.manifest import pending_path_for

    art = tmp_path / "m.bin"
    art.write_bytes(b"old")
    attach(art, _manifest())
    other = _manifest(preset="paper", contract=PAPER_CONTRACT).to_dict()
    other.update(artifact="m.bin", artifact_sha256="0" * 64)
    pending_path_for(art).write_text(json.dumps(other))
    assert read_manifest(art).preset == "tiny"
    assert pending_path_for(art).is_file()  # not deleted by a reader


def test_atomic_files_get_normal_permissions(tmp_path):
    from pinlite_edge.utils.atomic import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o044  # group/other readable under the usual umask


def test_publish_waits_for_another_publish_into_the_same_folder(tmp_path):
    """Publishing holds an exclusive lock on the folder, so two publishes of one artefact cannot interleave their
    renames (which could leave the artefact of one beside the manifest of the other)."""
    import fcntl
    import os
    import threading
    import time

    from pinlite_edge.manifest import staging_path_for

    art = tmp_path / "m.bin"
    held = threading.Event()

    def hold() -> None:
        fd = os.open(tmp_path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.set()
        time.sleep(0.6)
        os.close(fd)

    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    staged = staging_path_for(art)
    staged.write_bytes(b"x")
    start = time.monotonic()
    publish_artifact(staged, art, _manifest())
    waited = time.monotonic() - start
    t.join()
    assert waited >= 0.4, f"publish did not wait for the folder lock ({waited:.2f} s)"
    assert read_manifest(art).artifact == "m.bin"


def test_staging_names_are_unique_and_stale_ones_are_cleaned(tmp_path):
    from pinlite_edge.manifest import staging_path_for

    art = tmp_path / "m.onnx"
    a, b = staging_path_for(art), staging_path_for(art)
    assert a != b and a.parent == b.parent == tmp_path and str(os.getpid()) in a.name
    dead = tmp_path / f".m.onnx.{2 ** 22 + 12345}.0123abcd.staging"  # a pid above pid_max: no such process
    dead.write_bytes(b"left by a killed export")
    part = tmp_path / f".m.onnx.{2 ** 22 + 12345}.0123abcd.part"
    part.write_bytes(b"half")
    staging_path_for(art)
    assert not dead.exists() and not part.exists()


def test_a_manifest_passed_as_the_artefact_says_so(tmp_path):
    """It used to say "expected …manifest.json.manifest.json"."""
    from pinlite_edge.errors import ManifestError
    from pinlite_edge.manifest import read_manifest

    given = tmp_path / "pinlite-student.onnx.manifest.json"
    given.write_text("{}")
    with pytest.raises(ManifestError, match=r"is a manifest: pass the artefact it describes \(pinlite-student\.onnx\)"):
        read_manifest(given)
