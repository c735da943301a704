"""Binding an ONNX artefact to its manifest: the manifest's content hash inside the model's ``metadata_props``, and
the external data files (``.data``) the graph references.

Only the protobuf is parsed (``load_external_data=False``): the weights are never loaded here.
"""
from __future__ import annotations

import os
from pathlib import Path

from pinlite_edge.errors import ManifestError
from pinlite_edge.utils.files import parts_inside

#: metadata_props key holding the manifest's content sha256
BINDING_KEY = "pinlite_manifest_sha256"


def _load(path: Path):  # noqa: ANN202 - onnx.ModelProto (onnx imported lazily)
    import onnx
    from google.protobuf.message import DecodeError as ProtoDecodeError

    try:
        return onnx.load(str(path), load_external_data=False)
    except (ProtoDecodeError, ValueError, OSError, RuntimeError) as exc:
        raise ManifestError(f"{path} is not a readable ONNX model: {exc}") from None


def external_locations(model) -> list[str]:  # noqa: ANN001
    """Relative locations of the external data files a model's tensors point to (sorted, unique)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    found = set()
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            found.add(info.get("location", ""))
    return sorted(found)


def _safe_location(folder: Path, location: str, source: Path) -> Path:
    parts = parts_inside(location)
    if parts is None:
        raise ManifestError(f"{source} references external data {location!r} outside its folder; ONNX external "
                            "data must be a relative file name beside the model (re-export it)")
    file = folder / Path(*parts)
    # a symlink there that leads out of the folder is refused too (as onnxruntime refuses it, after it was hashed)
    if file.exists() and not file.resolve().is_relative_to(folder.resolve()):
        raise ManifestError(f"{source} references external data {location!r}, a link to {file.resolve()} outside "
                            "its folder; ONNX external data must be a file beside the model (re-export it)")
    return file


def external_data_hashes(path: Path, model=None) -> dict[str, str]:  # noqa: ANN001
    """``{location: sha256}`` of every external data file ``path`` references (empty for a self-contained model)."""
    from pinlite_edge.utils.hashing import sha256_file

    model = _load(path) if model is None else model
    out = {}
    for loc in external_locations(model):
        file = _safe_location(path.parent, loc, path)
        if not file.is_file():
            raise ManifestError(f"{path} references external data {loc!r}, which does not exist beside it")
        out[loc] = sha256_file(file)
    return out


def embed_binding(path: Path, content_sha256: str) -> None:
    """Write ``content_sha256`` into the model's ``metadata_props`` (atomically replacing ``path``)."""
    from pinlite_edge.utils.atomic import atomic_write_bytes

    model = _load(path)
    props = [p for p in model.metadata_props if p.key != BINDING_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key, entry.value = BINDING_KEY, content_sha256
    atomic_write_bytes(path, model.SerializeToString())


def check_binding(path: Path, content_sha256: str, external_data: dict[str, str]) -> None:
    """Refuse an ONNX artefact whose embedded manifest hash or external data files do not match the manifest."""
    from pinlite_edge.utils.hashing import sha256_file

    model = _load(path)
    embedded = {p.key: p.value for p in model.metadata_props}.get(BINDING_KEY)
    if embedded is None:
        raise ManifestError(f"{path} carries no manifest hash in its ONNX metadata (exported by an older "
                            "pinlite-edge or by another tool): re-export it with python -m pinlite_edge.export")
    if embedded != content_sha256:
        raise ManifestError(f"the manifest of {path} was edited or belongs to another export: its content sha256 "
                            f"{content_sha256[:12]}… != {embedded[:12]}… recorded inside the model; restore the "
                            "manifest written by the export (or re-export)")
    locations = external_locations(model)
    if sorted(external_data) != locations:
        raise ManifestError(f"{path} references external data files {locations}, its manifest lists "
                            f"{sorted(external_data)}: re-export it")
    for loc in locations:
        file = _safe_location(path.parent, loc, path)
        if not file.is_file():
            raise ManifestError(f"{path}: external data file {file} is missing")
        actual = sha256_file(file)
        if actual != external_data[loc]:
            raise ManifestError(f"{path}: external data file {file} does not match the manifest: sha256 "
                                f"{actual[:12]}… != {external_data[loc][:12]}… (it was modified or belongs to "
                                "another export)")


def is_onnx(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() == ".onnx"
