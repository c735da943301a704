"""``load_runner(path)``: pick the backend from the manifest (``.safetensors`` checkpoints -> torch).

:data:`BACKENDS` is the registry of runners: one package per backend under ``runtimes/<backend>/`` (loader +
runner, as in Polygraphy), each imported only when its runner is asked for.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

from pinlite_edge.contract import InputContract
from pinlite_edge.runtimes.artifact import ArtifactSpec, backend_name, inspect_artifact
from pinlite_edge.runtimes.base import BaseRunner, RunnerOptionError

#: backend name -> runner class in ``pinlite_edge.runtimes.<backend>``
_RUNNER_CLASSES = {"torch": "TorchRunner", "ort": "OrtRunner", "trt": "TrtRunner", "executorch": "ExecuTorchRunner"}
BACKENDS = tuple(_RUNNER_CLASSES)


def runner_class(backend: str) -> type[BaseRunner]:
    """The runner class of a backend; its module imports no heavy library until the runner is activated."""
    backend = backend_name(backend)
    module = importlib.import_module(f"pinlite_edge.runtimes.{backend}")
    return getattr(module, _RUNNER_CLASSES[backend])


def runner_options(backend: str) -> tuple[str, ...]:
    """The keyword options the backend's runner takes (``device``, ``threads``, ``batch_policy``, its own)."""
    params = inspect.signature(runner_class(backend).__init__).parameters
    return tuple(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "model")


def load_runner(path: str | Path, *, backend: str | None = None, verify: bool = True,
                expected_preset: str | None = None, expected_contract: InputContract | None = None,
                **options: Any) -> BaseRunner:
    """Check the artefact's manifest and return an (inactive) runner for it.

    ``options`` go to the runner: ``device`` ("cpu", "cuda", and for ORT "tensorrt"), ``threads``,
    ``batch_policy`` ("split" | "reject"), ORT's ``optimization``, TensorRT's ``cuda_binding``... An option the
    runner does not take, or a bad value, raises :class:`RunnerOptionError` naming it. Raises
    :class:`ManifestError` when the manifest does not match the artefact or the expected preset/contract, and
    ``backend`` when given must agree with the manifest.
    """
    spec: ArtifactSpec = inspect_artifact(path, verify=verify, expected_preset=expected_preset,
                                          expected_contract=expected_contract)
    if backend is not None and backend_name(backend) != spec.backend:
        from pinlite_edge.errors import ManifestError

        raise ManifestError(f"{path} is an artefact for {spec.backend} ({spec.format}), not for "
                            f"{backend_name(backend)}")
    known = runner_options(spec.backend)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise RunnerOptionError(f"runner option(s) {unknown} are not options of the {spec.backend} runner "
                                f"({spec.path.name}); it takes {list(known)}")
    runner = runner_class(spec.backend)(spec, **options)
    runner.training_data = spec.training_data
    runner.operating_point = spec.operating_point
    return runner
