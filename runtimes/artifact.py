"""Artefact identification and manifest checks shared by the runners.

An artefact is refused (:class:`ManifestError`) when its manifest does not match it: wrong sha256 (checked by
:func:`pinlite_edge.manifest.read_manifest`), a preset or input contract that contradicts the manifest's own model
config, I/O names other than the contract's, or a preset/contract other than the one the caller expects.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES, InputContract
from pinlite_edge.errors import BackendUnavailableError, CheckpointError, InputError, ManifestError
from pinlite_edge.feature_version import check_unrecorded, feature_version_problem
from pinlite_edge.manifest import Manifest, manifest_path_for, read_manifest, validate_contract, verify_content
from pinlite_edge.operating_point import OperatingPoint
from pinlite_edge.trained_on import training_data_from_record
from pinlite_edge.utils.files import input_file_problem

#: backend name -> what the user installs to get it (named in BackendUnavailableError)
INSTALL_HINTS = {
    "torch": "pip install pinlite-edge (torch is a core dependency; on Jetson use NVIDIA's torch wheel)",
    "ort": "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA / TensorRT execution providers)",
    "trt": "on x86 / SBSA: `pip install tensorrt --extra-index-url https://pypi.nvidia.com`; on Jetson use the "
           "TensorRT that ships with JetPack (10.3 on JetPack 6.1 and later; do not pip install it there); the buffers need "
           "pycuda or cuda-python (`pip install pinlite-edge[tensorrt]`); see docs/jetson.md",
    "executorch": "pip install pinlite-edge[executorch]",
}



def import_backend_module(backend: str, module: str) -> Any:
    """Import ``module`` for ``backend`` (lazily: a missing library fails only when its backend is used), or raise
    :class:`BackendUnavailableError` naming it with the backend's install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(backend, f"{module} does not import ({exc})", INSTALL_HINTS[backend]) from None


#: manifest "runtime" values and file suffixes -> backend names used by load_runner
RUNTIME_ALIASES = {"torch": "torch", "pytorch": "torch", "ort": "ort", "onnxruntime": "ort", "onnx": "ort",
                   "trt": "trt", "tensorrt": "trt", "executorch": "executorch", "pte": "executorch"}
SUFFIX_BACKENDS = {".safetensors": "torch", ".onnx": "ort", ".engine": "trt", ".plan": "trt", ".pte": "executorch"}


@dataclass(frozen=True)
class ArtifactSpec:
    """What a runner needs to know about an artefact before it loads it."""

    path: Path
    backend: str
    precision: str
    preset: str
    model_kind: str
    contract: InputContract
    dynamic_batch: bool
    max_batch: int | None
    format: str
    manifest: Manifest | None  # None for a plain checkpoint
    record: dict[str, Any] | None  # the checkpoint record for .safetensors
    #: False when inspected with verify=False: a runner then loads a checkpoint with allow_unverified=True
    verified: bool = True

    @property
    def training_data(self) -> dict[str, Any] | None:
        """What the model was trained on: the manifest's record, or the checkpoint record's (None: unknown)."""
        if self.manifest is not None:
            return self.manifest.training_data if isinstance(self.manifest.training_data, dict) else None
        return training_data_from_record(self.record)

    @property
    def operating_point(self) -> OperatingPoint | None:
        """The thresholds measured on genuine clips (manifest or checkpoint record); None: not calibrated."""
        stored = self.manifest.operating_point if self.manifest is not None else (self.record or {}).get(
            "operating_point")
        if stored is None:
            return None
        try:
            return OperatingPoint.from_dict(stored, source=str(self.path))
        except InputError as exc:
            raise ManifestError(str(exc)) from None

    @property
    def sha256(self) -> str | None:
        if self.manifest is not None:
            return self.manifest.artifact_sha256
        return (self.record or {}).get("weights_sha256")


def backend_name(value: str) -> str:
    try:
        return RUNTIME_ALIASES[value.lower()]
    except KeyError:
        raise ManifestError(f"unknown runtime {value!r}; known: {sorted(set(RUNTIME_ALIASES.values()))}") from None


def check_manifest_consistency(manifest: Manifest, source: str) -> None:
    """The manifest must agree with itself: preset and contract of its model config, contract I/O names."""
    cfg = manifest.model_config or {}
    if cfg.get("preset") not in (None, manifest.preset):
        raise ManifestError(f"{source}: manifest preset {manifest.preset!r} contradicts its model config preset "
                            f"{cfg.get('preset')!r}")
    if "contract" in cfg and validate_contract(cfg["contract"], f"{source} model_config") != manifest.contract:
        raise ManifestError(f"{source}: manifest input contract {manifest.input_contract} contradicts its model "
                            f"config contract {cfg['contract']}")
    if list(manifest.input_names) != list(INPUT_NAMES) or list(manifest.output_names) != list(OUTPUT_NAMES):
        raise ManifestError(f"{source}: I/O names {manifest.input_names} -> {manifest.output_names} are not the "
                            f"contract's {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}")


def _check_manifest_features(manifest: Manifest, path: Path) -> None:
    """Refuse an artefact of a model trained for another feature pipeline; warn about one whose manifest records
    neither it nor the training data (:mod:`pinlite_edge.feature_version`)."""
    problem = feature_version_problem(manifest.feature_version, f"artefact {path}")
    if problem is not None:
        raise ManifestError(problem)
    if manifest.feature_version is None:
        check_unrecorded(manifest.training_data, f"artefact {path}")


def _checkpoint_spec(path: Path, allow_unverified: bool = False) -> ArtifactSpec:
    from pinlite_edge.checkpoint import check_checkpoint_features, read_record  # imports torch: only for checkpoints

    # read_record verifies the file against the hash embedded at save time or the weights_sha256 beside it
    record = read_record(path, allow_unverified=allow_unverified)
    check_checkpoint_features(record, path, warn=False)
    cfg = record.get("model_config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("preset"), str) or not isinstance(cfg.get("kind"), str):
        raise CheckpointError(f"checkpoint record for {path} has no valid model_config (re-save the checkpoint)")
    try:
        contract = validate_contract(cfg.get("contract") or record.get("input_contract") or {}, f"checkpoint {path}")
        if record.get("input_contract") and validate_contract(record["input_contract"], str(path)) != contract:
            raise CheckpointError(f"checkpoint record for {path}: input_contract contradicts model_config.contract")
    except ManifestError as exc:
        raise CheckpointError(str(exc)) from None
    return ArtifactSpec(path=path, backend="torch", precision="fp32", preset=cfg["preset"], model_kind=cfg["kind"],
                        contract=contract, dynamic_batch=True, max_batch=None, format="checkpoint",
                        manifest=None, record=record, verified=not allow_unverified)


def _workspace_hint(path: Path) -> str:
    """For a quickstart workspace given where its artefact belongs: the path of its ONNX student."""
    from pinlite_edge.workspace_layout import DEFAULT_MODEL_FORMAT, export_artifact_path

    try:
        student = export_artifact_path(path, DEFAULT_MODEL_FORMAT) if path.is_dir() else None
        return f" (a quickstart workspace: its ONNX student is {student})" if student and student.is_file() else ""
    except OSError:
        return ""


def inspect_artifact(path: str | Path, *, verify: bool = True, expected_preset: str | None = None,
                     expected_contract: InputContract | None = None) -> ArtifactSpec:
    """Read and check an artefact's manifest (or a checkpoint's record) without loading any backend.

    ``verify=False`` skips the hashes: the artefact's sha256 and the manifest's content hash, and for a checkpoint
    its embedded hash (``allow_unverified=True``; the spec's ``verified`` is then False)."""
    path = Path(path)
    problem = input_file_problem(path)  # missing, a folder, a device, a /proc file, a name too long...
    if problem is not None:
        raise ManifestError(f"artefact {path}: {problem}{_workspace_hint(path)}")
    if path.suffix == ".safetensors":
        if manifest_path_for(path).exists():  # the checkpoint's own, hash-covered record is the authority
            raise ManifestError(f"{path}: a manifest sits beside this checkpoint ({manifest_path_for(path).name}); "
                                "pinlite-edge writes none for checkpoints (their record, with the contract, operating "
                                "point and training data, is inside the file), and one there would override that "
                                "record: remove it")
        spec = _checkpoint_spec(path, allow_unverified=not verify)
    else:
        # the content hash is checked after the checks below, so that their more specific messages come first
        manifest = read_manifest(path, verify=verify, check_content=False)
        check_manifest_consistency(manifest, str(path))
        backend = backend_name(manifest.runtime)
        suffix_backend = SUFFIX_BACKENDS.get(path.suffix)
        if suffix_backend is not None and suffix_backend != backend:
            raise ManifestError(f"{path}: manifest says runtime {manifest.runtime!r} but the file is a "
                                f"{path.suffix} artefact")
        if verify:
            verify_content(manifest, path)
        _check_manifest_features(manifest, path)
        spec = ArtifactSpec(path=path, backend=backend, precision=manifest.precision, preset=manifest.preset,
                            model_kind=manifest.model_kind, contract=manifest.contract,
                            dynamic_batch=bool(manifest.dynamic_batch),
                            max_batch=manifest.max_batch if manifest.dynamic_batch else (manifest.max_batch or 1),
                            format=manifest.format, manifest=manifest, record=None, verified=verify)
    if expected_preset is not None and spec.preset != expected_preset:
        raise ManifestError(f"{path} was built for preset {spec.preset!r}, expected {expected_preset!r}")
    if expected_contract is not None and spec.contract != expected_contract:
        raise ManifestError(f"{path} was built for input contract {spec.contract.to_dict()}, "
                            f"expected {expected_contract.to_dict()}")
    return spec


def check_declared_sharing(spec: ArtifactSpec, matches: Callable[[Any], bool], what: str, found: str) -> None:
    """Refuse an artefact whose manifest's ``extra.shared_frames`` (frame sharing, written at export from the artefact
    itself) does not describe it: ``matches(declared)`` is False; ``what`` names the artefact (graph, program,
    engine), ``found`` says what it has. A manifest without the record (exported before frame sharing) is not
    checked: the artefact alone decides."""
    extra = spec.manifest.extra if spec.manifest is not None else {}
    if "shared_frames" in extra and not matches(extra["shared_frames"]):
        raise ManifestError(f"{spec.path}: the manifest says shared_frames={extra['shared_frames']} but {found}: the "
                            f"manifest does not describe this {what}; re-export it")


def declared_shared_rows(declared: Any) -> int:
    """The mfcc rows per frames row of a ``.pte`` or TensorRT manifest's ``shared_frames`` record (None: 0)."""
    return int((declared or {}).get("mfcc_rows_per_frames_row", 0))


def check_io_shapes(path: Path, contract: InputContract, actual: dict[str, tuple[Any, ...]]) -> None:
    """Compare the artefact's own input shapes (non-batch dims) with the manifest contract."""
    expected = {INPUT_NAMES[0]: contract.frames_shape(), INPUT_NAMES[1]: contract.mfcc_shape()}
    if set(actual) != set(expected):
        raise ManifestError(f"{path} has inputs {sorted(actual)}, the manifest contract expects {sorted(expected)}")
    for name, shape in expected.items():
        got = tuple(actual[name])
        fixed = tuple(d for d in got[1:])
        if len(got) != len(shape) + 1 or any(isinstance(d, int) and d != e for d, e in zip(fixed, shape)):
            raise ManifestError(f"{path}: input {name!r} has shape {got} but the manifest contract says "
                                f"(B, {', '.join(map(str, shape))})")


def read_verified_bytes(spec: ArtifactSpec) -> bytes:
    """The artefact's bytes, read once and checked against the manifest's sha256: what a runner hands to a native
    loader (``executorch.runtime``'s ``load_program``, TensorRT's ``deserialize_cuda_engine``), so the bytes that
    are loaded are the bytes that were verified, even if the file changed since :func:`inspect_artifact`.

    A spec inspected with ``verify=False`` (``spec.verified`` False: the caller chose to skip the hashes) gets the
    bytes unchecked."""
    import hashlib

    try:
        data = spec.path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read {spec.path}: {exc.strerror or exc}") from None
    if not spec.verified:
        return data
    want = spec.sha256
    if want is None:
        raise ManifestError(f"{spec.path} has no recorded sha256 to verify before loading it")
    actual = hashlib.sha256(data).hexdigest()
    if actual != want:
        raise ManifestError(f"{spec.path} does not match its manifest: sha256 {actual[:12]}… != {want[:12]}… (the "
                            "file changed after it was checked, or was modified); refusing to load it")
    return data
