"""``load_runner(path)``: pick the backend from the manifest (``.safetensors`` checkpoints -> torch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pinlite_edge.contract import InputContract
from pinlite_edge.runtimes.artifact import ArtifactSpec, backend_name, inspect_artifact
from pinlite_edge.runtimes.base import BaseRunner

BACKENDS = ("torch", "ort", "trt", "executorch")


def runner_class(backend: str) -> type[BaseRunner]:
    """The runner class of a backend; its module imports no heavy library until the runner is activated."""
    backend = backend_name(backend)
    if backend == "torch":
        from pinlite_edge.runtimes.torch_runner import TorchRunner

        return TorchRunner
    if backend == "ort":
        from pinlite_edge.runtimes.ort_runner import OrtRunner

        return OrtRunner
    if backend == "trt":
        from pinlite_edge.runtimes.trt_runner import TrtRunner

        return TrtRunner
    from pinlite_edge.runtimes.executorch_runner import ExecuTorchRunner

    return ExecuTorchRunner


def load_runner(path: str | Path, *, backend: str | None = None, verify: bool = True,
                expected_preset: str | None = None, expected_contract: InputContract | None = None,
                **options: Any) -> BaseRunner:
    """Check the artefact's manifest and return an (inactive) runner for it.

    ``options`` go to the runner: ``device`` ("cpu", "cuda", and for ORT "tensorrt"), ``threads``,
    ``batch_policy`` ("split" | "reject"), ORT's ``optimization``... Raises :class:`ManifestError` when the
    manifest does not match the artefact or the expected preset/contract, and ``backend`` when given must agree
    with the manifest.
    """
    spec: ArtifactSpec = inspect_artifact(path, verify=verify, expected_preset=expected_preset,
                                          expected_contract=expected_contract)
    if backend is not None and backend_name(backend) != spec.backend:
        from pinlite_edge.errors import ManifestError

        raise ManifestError(f"{path} is a {spec.backend} artefact ({spec.format}), not a {backend_name(backend)} one")
    runner = runner_class(spec.backend)(spec, **options)
    runner.training_data = spec.training_data
    return runner
