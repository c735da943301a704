"""Artefact manifests (SPEC §6): a JSON file beside every exported artefact, verified at load."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
from dataclasses import MISSING, asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pinlite_edge import __version__
from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES, InputContract, contract_problem
from pinlite_edge.errors import ManifestError
from pinlite_edge.utils.atomic import (atomic_write_json, check_writable_target, clean_stale_temporaries,
                                       finite_json, folder_lock, json_default, temp_name, write_error)
from pinlite_edge.utils.checks import is_whole
from pinlite_edge.utils.files import MAX_METADATA_BYTES, input_file_problem
from pinlite_edge.utils.hashing import sha256_file
from pinlite_edge.utils.onnx_binding import check_binding, embed_binding, external_data_hashes, is_onnx


MANIFEST_SUFFIX = ".manifest.json"
#: 2: content_sha256 (every field hashed; for ONNX also inside the model) and external_data hashes;
#: 3: the content hash leaves out :data:`VOLATILE_FIELDS`; 4: ``feature_version`` (hashed where it is set, so a
#: manifest of schema 2 or 3, which has none, keeps its hash)
SCHEMA_VERSION = 4
#: fields the content hash leaves out: the artefact's identity (it is hashed on its own) and the hash itself
CONTENT_EXCLUDED = ("artifact", "artifact_sha256", "content_sha256")
#: fields that say when an export ran, how long it took and how its command was typed, not what the artefact
#: computes: from schema 3 the content hash leaves them out too, so exporting one checkpoint twice with the same
#: options gives the same artefact (an ONNX model carries the content hash inside, and ``scan --out`` resumes only
#: with the same model file). ``source_checkpoint`` is the path as given; its sha256 stays hashed.
VOLATILE_FIELDS = ("created_at", "source_checkpoint", "extra.export_seconds", "extra.export_options.force")


@dataclass
class Manifest:
    format: str  # export format name, e.g. "onnx-int8"
    runtime: str  # "torch" | "ort" | "trt" | "executorch"
    precision: str  # "fp32" | "fp16" | "int8"
    artifact: str  # file name of the artefact (relative to the manifest)
    artifact_sha256: str
    model_kind: str  # "teacher" | "student"
    preset: str
    model_config: dict[str, Any]
    input_contract: dict[str, Any]
    input_names: list[str] = field(default_factory=lambda: list(INPUT_NAMES))
    output_names: list[str] = field(default_factory=lambda: list(OUTPUT_NAMES))
    dynamic_batch: bool = True
    max_batch: int | None = None
    precision_plan: dict[str, Any] = field(default_factory=dict)
    source_checkpoint: str | None = None
    source_checkpoint_sha256: str | None = None
    calibration: dict[str, Any] | None = None
    #: what the source model was trained on (the checkpoint record's summary; pinlite_edge.trained_on), None: unknown
    training_data: dict[str, Any] | None = None
    #: the P(fake) thresholds measured on genuine clips (pinlite_edge.operating_point), None: not calibrated (0.5)
    operating_point: dict[str, Any] | None = None
    #: the feature pipeline the model was trained for (pinlite_edge.feature_version), None: not recorded
    feature_version: int | None = None
    tool_versions: dict[str, str] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)  # device an artefact is bound to (TensorRT engines)
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    pinlite_edge_version: str = __version__
    host: str = field(default_factory=lambda: f"{platform.system()} {platform.machine()}")
    schema_version: int = SCHEMA_VERSION
    #: ONNX external data files the artefact references: {relative location: sha256}
    external_data: dict[str, str] = field(default_factory=dict)
    #: sha256 of every other field (:func:`content_hash`); for ONNX also stored inside the model
    content_sha256: str | None = None

    @property
    def contract(self) -> InputContract:
        return InputContract.from_dict(self.input_contract)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: str = "manifest") -> "Manifest":
        """Build a manifest from parsed JSON; every field's JSON type and the input contract are checked
        (:class:`ManifestError` naming the field), so a bad manifest never fails deep inside a runner."""
        if not isinstance(d, dict):
            raise ManifestError(f"{source} is malformed: a JSON object is expected, got {_json_type(d)}; restore "
                                "it or re-export the artefact")
        required = [n for n, f in cls.__dataclass_fields__.items()
                    if f.default is MISSING and f.default_factory is MISSING] + ["schema_version"]
        missing = [k for k in required if k not in d]
        if missing:
            raise ManifestError(f"{source} lacks required fields {missing}; restore it or re-export the artefact")
        schema = d["schema_version"]
        if is_whole(schema) and schema > SCHEMA_VERSION:
            raise ManifestError(f"{source} was written by a newer pinlite-edge (manifest schema {schema}; this "
                                f"pinlite-edge {__version__} reads schemas 1 to {SCHEMA_VERSION}): upgrade "
                                "pinlite-edge, or re-export the artefact with this one")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ManifestError(f"{source} has fields that manifest schema {schema} does not have: {unknown}; it was "
                                "edited or written by another tool: restore it or re-export the artefact")
        for name, value in d.items():
            kinds = _FIELD_TYPES.get(name)
            if kinds is not None and not _is_instance(value, kinds):
                want = " or ".join(_TYPE_NAMES[k] for k in kinds)
                raise ManifestError(f"{source} is malformed: field {name!r} must be {want}, got {_json_type(value)}"
                                    "; restore it or re-export the artefact")
        for name in ("input_names", "output_names"):
            if name in d and not all(isinstance(x, str) for x in d[name]):
                raise ManifestError(f"{source} is malformed: {name} must be a list of strings")
        if isinstance(d.get("max_batch"), int) and d["max_batch"] < 1:
            raise ManifestError(f"{source} is malformed: max_batch must be >= 1, got {d['max_batch']}")
        for name in ("external_data", "tool_versions"):
            if name in d and not all(isinstance(v, str) for v in d[name].values()):
                raise ManifestError(f"{source} is malformed: the values of {name} must be strings")
        if d["schema_version"] < 1:
            raise ManifestError(f"{source} is malformed: schema_version must be >= 1, got {d['schema_version']}")
        validate_contract(d["input_contract"], source)
        return cls(**d)


_TYPE_NAMES = {str: "a string", dict: "a JSON object", list: "a list", bool: "true/false", int: "an integer",
               type(None): "null"}
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    **{k: (str,) for k in ("format", "runtime", "precision", "artifact", "artifact_sha256", "model_kind", "preset",
                           "created_at", "pinlite_edge_version", "host")},
    **{k: (dict,) for k in ("model_config", "input_contract", "precision_plan", "tool_versions", "target", "extra",
                            "external_data")},
    **{k: (dict, type(None)) for k in ("calibration", "training_data", "operating_point")},
    **{k: (str, type(None)) for k in ("source_checkpoint", "source_checkpoint_sha256", "content_sha256")},
    "input_names": (list,), "output_names": (list,), "dynamic_batch": (bool,), "max_batch": (int, type(None)),
    "schema_version": (int,), "feature_version": (int, type(None)),
}


def _is_instance(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in kinds:
        return False  # JSON true is not an integer here
    return isinstance(value, kinds)


def _json_type(value: Any) -> str:
    for kind, name in _TYPE_NAMES.items():
        if isinstance(value, kind):
            return "true/false" if isinstance(value, bool) else name
    return "a number" if isinstance(value, float) else type(value).__name__


def validate_contract(d: Any, source: str = "manifest") -> InputContract:
    """An :class:`InputContract` from a manifest's (or record's) ``input_contract``, every value type-checked
    (:func:`~pinlite_edge.contract.contract_problem`, the check the dataclass makes)."""
    if not isinstance(d, dict):
        raise ManifestError(f"{source}: input_contract must be a JSON object, got {_json_type(d)}")
    problem = contract_problem(d)
    if problem is not None:
        raise ManifestError(f"{source}: input_contract.{problem}; restore the manifest or re-export the artefact")
    return InputContract.from_dict(d)


def manifest_path_for(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


PENDING_SUFFIX = ".next"
#: a manifest is a few kB; anything far larger is refused before it is read
MAX_MANIFEST_BYTES = MAX_METADATA_BYTES


def pending_path_for(artifact: str | Path) -> Path:
    final = manifest_path_for(artifact)
    return final.with_name(final.name + PENDING_SUFFIX)


def content_hash(manifest: Manifest | dict[str, Any]) -> str:
    """sha256 of everything in the manifest except the artefact's name and hash, this hash itself and (schema 3)
    :data:`VOLATILE_FIELDS`: window length, normalisation, contract, preset, model config, precision plan, batch,
    target, operating point, external data... so an edited manifest is refused instead of changing scores."""
    d = manifest.to_dict() if isinstance(manifest, Manifest) else dict(manifest)
    # tuples, numpy values and (schema 4) non-finite numbers as they are written; schema 2 and 3 wrote NaN as NaN
    old = isinstance(d.get("schema_version"), int) and d["schema_version"] < 4
    d = json.loads(json.dumps(d, default=json_default) if old else json.dumps(finite_json(d)))
    for key in CONTENT_EXCLUDED:
        d.pop(key, None)
    if d.get("feature_version") is None:  # schema 4's field, hashed where set: schema 2 and 3 keep their hashes
        d.pop("feature_version", None)
    if isinstance(d.get("schema_version"), int) and d["schema_version"] >= 3:  # schema 2 hashed every field
        for dotted in VOLATILE_FIELDS:
            *parents, last = dotted.split(".")
            node: Any = d
            for key in parents:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(last, None)
    canon = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(canon.encode("ascii")).hexdigest()


def staging_path_for(artifact: str | Path) -> Path:
    """A fresh staging name for a new version of ``artifact``: ``.X.<pid>.<random>.staging`` beside it (unique per
    process and call); :func:`publish_artifact` renames it into place."""
    artifact = Path(artifact)
    clean_stale_temporaries(artifact)
    return temp_name(artifact, "staging")


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish_artifact(staged: str | Path, artifact: str | Path, manifest: Manifest) -> Path:
    """Put ``staged`` in place as ``artifact`` with ``manifest`` beside it, as a pair.

    The manifest gets the artefact's name, its content hash (:func:`content_hash`) and, for ONNX, the hashes of its
    external data files; an ONNX artefact also carries the content hash inside (``metadata_props``). Then, holding
    a lock on the folder (one publish at a time), the artefact hash is taken on the staged bytes (the very bytes
    renamed into place), the new manifest is written as ``X.manifest.json.next``, the artefact is renamed into
    place, then the manifest. A kill at any moment leaves a consistent pair: :func:`read_manifest` reads a pending
    manifest that matches the artefact (without writing), and the next publish replaces it. Neither the artefact
    nor its manifest may be anything but a regular file (``WriteError``).
    """
    staged, artifact = Path(staged), Path(artifact)
    final, pending = manifest_path_for(artifact), pending_path_for(artifact)
    for target in (artifact, final, pending):
        check_writable_target(target)
    manifest.artifact = artifact.name
    manifest.schema_version = SCHEMA_VERSION
    manifest.content_sha256 = None
    if is_onnx(artifact):
        manifest.external_data = external_data_hashes(staged)
        manifest.content_sha256 = content_hash(manifest)
        embed_binding(staged, manifest.content_sha256)
    else:
        manifest.external_data = {}
        manifest.content_sha256 = content_hash(manifest)
    with folder_lock(artifact.parent, "publishing"):
        manifest.artifact_sha256 = sha256_file(staged)
        atomic_write_json(pending, manifest.to_dict())
        try:
            os.replace(staged, artifact)
            os.replace(pending, final)
        except OSError as exc:
            raise write_error(artifact, exc) from None
        _fsync_folder(artifact.parent)
    return final


def _read_json(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest {path} is {size} bytes, more than a manifest can be "
                                f"({MAX_MANIFEST_BYTES}); it is not a pinlite-edge manifest")
        return json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path} is malformed (not JSON: {exc}); restore it or re-export") from None
    except RecursionError:
        raise ManifestError(f"manifest {path} is malformed (nested too deeply); restore it or re-export") from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None


def _current_manifest(artifact: Path) -> tuple[Path, Any]:
    """The manifest that describes ``artifact`` now: ``X.manifest.json``, or the pending ``.next`` one of a publish
    killed between renaming the artefact and renaming its manifest (read only: reading never writes)."""
    final, pending = manifest_path_for(artifact), pending_path_for(artifact)
    if pending.is_file():
        with contextlib.suppress(ManifestError):
            data = _read_json(pending)
            wanted = data.get("artifact_sha256") if isinstance(data, dict) else None
            if isinstance(wanted, str) and wanted == sha256_file(artifact):
                return pending, data
    if not final.is_file():
        raise ManifestError(f"no manifest for {artifact}: expected {final} (export the artefact with "
                            "python -m pinlite_edge.export, which writes it)")
    return final, _read_json(final)


def _check_regular_input(path: Path, what: str) -> None:
    problem = input_file_problem(path)
    if problem == "file does not exist":
        raise ManifestError(f"{what} {path} does not exist")
    if problem is not None:
        raise ManifestError(f"{what} {path}: {problem}")


def verify_content(manifest: Manifest, artifact: str | Path, source: str | Path | None = None) -> None:
    """Refuse an edited manifest: its content hash must match its fields and, for ONNX, the hash inside the model
    and the external data files."""
    artifact = Path(artifact)
    source = source or manifest_path_for(artifact)
    if not manifest.content_sha256:
        raise ManifestError(f"manifest {source} has no content hash (written by an older pinlite-edge): re-export "
                            f"{artifact.name} with python -m pinlite_edge.export")
    actual = content_hash(manifest)
    if actual != manifest.content_sha256:
        raise ManifestError(f"manifest {source} was edited after export (content sha256 {actual[:12]}… != "
                            f"{manifest.content_sha256[:12]}…): a changed window, normalisation, contract or plan "
                            "would change every score; restore the manifest written by the export (or re-export)")
    if is_onnx(artifact):
        check_binding(artifact, manifest.content_sha256, manifest.external_data)


def read_manifest(artifact: str | Path, verify: bool = True, check_content: bool = True) -> Manifest:
    """Read ``X.manifest.json`` for artefact ``X`` without writing anything.

    With ``verify`` (the default) the artefact's sha256 must match the manifest and, with ``check_content``, the
    manifest must be unedited (:func:`verify_content`). ``verify=False`` trusts the files and skips every hash.
    """
    artifact = Path(artifact)
    _check_regular_input(artifact, "artefact")
    if artifact.name.endswith(MANIFEST_SUFFIX):
        raise ManifestError(f"{artifact} is a manifest: pass the artefact it describes "
                            f"({artifact.name[:-len(MANIFEST_SUFFIX)]}), not its manifest")
    path, data = _current_manifest(artifact)
    manifest = Manifest.from_dict(data, source=str(path))
    if manifest.artifact != artifact.name:
        raise ManifestError(f"manifest {path} describes {manifest.artifact!r}, not {artifact.name!r}")
    if verify:
        actual = sha256_file(artifact)
        if actual != manifest.artifact_sha256:
            raise ManifestError(
                f"{artifact} does not match its manifest: sha256 {actual[:12]}… != {manifest.artifact_sha256[:12]}… "
                "(the file was modified or the manifest belongs to another artefact)"
            )
        if check_content:
            verify_content(manifest, artifact, path)
    return manifest
