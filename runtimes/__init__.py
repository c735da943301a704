"""Runtimes: one runner contract over torch, onnxruntime, TensorRT and ExecuTorch (SPEC §7).

``load_runner(path)`` reads the artefact's manifest and returns the matching runner; ``with runner:`` loads it and
``runner.infer(frames, mfcc)`` returns ``{"logits", "offset_logits", "attention"}`` as float32 numpy arrays.
One package per backend (``torch/``, ``ort/``, ``trt/``, ``executorch/``), each a ``loader`` (library import with its
install hint, session / program / engine construction, device setup) and a ``runner``. Backend libraries are
imported only when a runner is activated.
"""
from pinlite_edge.runtimes.artifact import INSTALL_HINTS, ArtifactSpec, inspect_artifact
from pinlite_edge.runtimes.base import (
    BaseRunner, RunnerInfo, RunnerOptionError, RunnerOutputError, RunnerStateError, TensorMeta, validate_input,
)
from pinlite_edge.runtimes.compare import Comparator, ComparisonReport, PairComparison, compare_outputs
from pinlite_edge.runtimes.loader import BACKENDS, load_runner, runner_class, runner_options

__all__ = [
    "BACKENDS", "INSTALL_HINTS", "ArtifactSpec", "BaseRunner", "Comparator", "ComparisonReport", "PairComparison",
    "RunnerInfo", "RunnerOptionError", "RunnerOutputError", "RunnerStateError", "TensorMeta", "compare_outputs",
    "inspect_artifact", "load_runner", "runner_class", "runner_options", "validate_input",
]
