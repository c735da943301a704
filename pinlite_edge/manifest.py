"""Artefact manifests (SPEC §6): a JSON file beside every exported artefact, verified at load."""
from __future__ import annotations

import json
import os
import platform
from dataclasses import MISSING, asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pinlite_edge import __version__
from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES, InputContract
from pinlite_edge.errors import ManifestError
from pinlite_edge.utils.atomic import atomic_write_json
from pinlite_edge.utils.hashing import sha256_file

MANIFEST_SUFFIX = ".manifest.json"
SCHEMA_VERSION = 1


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
    tool_versions: dict[str, str] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)  # device an artefact is bound to (TensorRT engines)
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    pinlite_edge_version: str = __version__
    host: str = field(default_factory=lambda: f"{platform.system()} {platform.machine()}")
    schema_version: int = SCHEMA_VERSION

    @property
    def contract(self) -> InputContract:
        return InputContract.from_dict(self.input_contract)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "manifest") -> "Manifest":
        known = set(cls.__dataclass_fields__)
        required = [n for n, f in cls.__dataclass_fields__.items()
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ManifestError(f"{source} lacks required fields {missing}")
        return cls(**{k: v for k, v in d.items() if k in known})


def manifest_path_for(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


PENDING_SUFFIX = ".next"


def write_manifest(artifact: str | Path, manifest: Manifest) -> Path:
    """Fill in the artefact name and hash, then write the manifest atomically beside the artefact."""
    artifact = Path(artifact)
    manifest.artifact = artifact.name
    manifest.artifact_sha256 = sha256_file(artifact)
    path = manifest_path_for(artifact)
    atomic_write_json(path, manifest.to_dict())
    return path


def staging_path_for(artifact: str | Path) -> Path:
    """Where a new version of ``artifact`` is written before :func:`publish_artifact` puts it in place."""
    artifact = Path(artifact)
    return artifact.with_name(f".staging-{artifact.name}")


def publish_artifact(staged: str | Path, artifact: str | Path, manifest: Manifest) -> Path:
    """Replace ``artifact`` by ``staged`` and its manifest by ``manifest`` so that a kill at any moment leaves a
    consistent pair: the new manifest is first written as ``X.manifest.json.next``, then the artefact is renamed
    into place, then the manifest. :func:`read_manifest` completes an interrupted publish.
    """
    staged, artifact = Path(staged), Path(artifact)
    manifest.artifact = artifact.name
    manifest.artifact_sha256 = sha256_file(staged)
    final = manifest_path_for(artifact)
    pending = final.with_name(final.name + PENDING_SUFFIX)
    atomic_write_json(pending, manifest.to_dict())
    os.replace(staged, artifact)
    os.replace(pending, final)
    return final


def _complete_interrupted_publish(artifact: Path, final: Path) -> None:
    pending = final.with_name(final.name + PENDING_SUFFIX)
    if not pending.is_file():
        return
    try:
        wanted = json.loads(pending.read_text()).get("artifact_sha256")
    except json.JSONDecodeError:
        wanted = None
    if wanted and wanted == sha256_file(artifact):
        os.replace(pending, final)  # the artefact was renamed, the manifest was not yet: finish the job
    else:
        pending.unlink(missing_ok=True)  # the artefact never got renamed: the old pair is still consistent


def read_manifest(artifact: str | Path, verify: bool = True) -> Manifest:
    """Read ``X.manifest.json`` for artefact ``X``; with ``verify`` check the artefact's sha256 against it."""
    artifact = Path(artifact)
    if not artifact.is_file():
        raise ManifestError(f"artefact {artifact} does not exist")
    path = manifest_path_for(artifact)
    _complete_interrupted_publish(artifact, path)
    if not path.is_file():
        raise ManifestError(f"no manifest for {artifact}: expected {path}")
    try:
        manifest = Manifest.from_dict(json.loads(path.read_text()), source=str(path))
        manifest.contract  # noqa: B018 - validates the input contract's types now, not deep inside a runner
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"manifest {path} is malformed: {exc}") from None
    if manifest.artifact != artifact.name:
        raise ManifestError(f"manifest {path} describes {manifest.artifact!r}, not {artifact.name!r}")
    if verify:
        actual = sha256_file(artifact)
        if actual != manifest.artifact_sha256:
            raise ManifestError(
                f"{artifact} does not match its manifest: sha256 {actual[:12]}… != {manifest.artifact_sha256[:12]}… "
                "(the file was modified or the manifest belongs to another artefact)"
            )
    return manifest


def check_compatible(manifest: Manifest, *, preset: str | None = None, contract: InputContract | None = None,
                     source: str = "artefact") -> None:
    """Refuse a manifest built for another preset or input contract."""
    if preset is not None and manifest.preset != preset:
        raise ManifestError(f"{source} was built for preset {manifest.preset!r}, expected {preset!r}")
    if contract is not None and manifest.contract != contract:
        raise ManifestError(
            f"{source} was built for input contract {manifest.input_contract}, expected {contract.to_dict()}"
        )
