"""ExecuTorchRunner: ``.pte`` programs (XNNPACK delegate, FP32 or INT8) through ``executorch.runtime``.

The ``forward`` method takes ``(frames, mfcc)`` and returns the outputs in the manifest's ``output_names`` order.
``.pte`` files are usually exported with a static batch (1): the manifest says so (``dynamic_batch: false``,
``max_batch``) and :class:`BaseRunner` splits larger batches (or rejects them with ``batch_policy="reject"``).
Inputs are passed as contiguous tensors because ``execute`` ignores strides.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pinlite_edge.contract import OUTPUT_NAMES
from pinlite_edge.errors import BackendUnavailableError, ManifestError
from pinlite_edge.runtimes.artifact import INSTALL_HINTS, ArtifactSpec, check_io_shapes
from pinlite_edge.runtimes.base import BaseRunner

log = logging.getLogger(__name__)


def _import_runtime() -> Any:
    try:
        from executorch.runtime import Runtime
    except ImportError as exc:
        raise BackendUnavailableError("executorch", f"executorch does not import: {exc}",
                                      INSTALL_HINTS["executorch"]) from None
    return Runtime


class ExecuTorchRunner(BaseRunner):
    """Runs a ``.pte`` program on the CPU (XNNPACK and portable kernels)."""

    backend = "executorch"

    def __init__(self, spec: ArtifactSpec, *, device: str = "cpu", threads: int | None = None,
                 batch_policy: str = "split"):
        if device != "cpu":
            raise ValueError(f"ExecuTorch runs on the CPU here, got device {device!r}")
        super().__init__(spec.path, spec.contract, precision=spec.precision, device=device, preset=spec.preset,
                         model_kind=spec.model_kind, max_batch=spec.max_batch, fmt=spec.format,
                         batch_policy=batch_policy)
        self.spec = spec
        self.threads = threads
        self.method: Any = None
        self.output_names = list(spec.manifest.output_names) if spec.manifest else list(OUTPUT_NAMES)
        self._torch: Any = None

    def activate_impl(self) -> None:
        runtime_cls = _import_runtime()
        import torch

        self._torch = torch
        if self.precision == "int8":
            try:
                import executorch.kernels.quantized  # noqa: F401  registers the quantized ops the program uses
            except ImportError as exc:
                raise BackendUnavailableError("executorch", f"quantized kernels do not import: {exc}",
                                              INSTALL_HINTS["executorch"]) from None
        if self.threads:
            torch.set_num_threads(int(self.threads))  # XNNPACK's threadpool follows torch's setting here
        try:
            program = runtime_cls.get().load_program(self.artifact)
            self.method = program.load_method("forward")
        except Exception as exc:  # pybind RuntimeError with an ExecuTorch error code
            raise ManifestError(f"ExecuTorch cannot load {self.artifact}: {exc}") from None
        meta = self.method.metadata
        if meta.num_inputs() != 2 or meta.num_outputs() != len(OUTPUT_NAMES):
            raise ManifestError(f"{self.artifact}: forward has {meta.num_inputs()} inputs and {meta.num_outputs()} "
                                f"outputs, expected 2 and {len(OUTPUT_NAMES)}")
        shapes = {"frames": tuple(meta.input_tensor_meta(0).sizes()), "mfcc": tuple(meta.input_tensor_meta(1).sizes())}
        check_io_shapes(self.artifact, self.contract, shapes)
        static_batch = shapes["frames"][0]
        if not self.spec.dynamic_batch and self.max_batch is not None and static_batch < self.max_batch:
            raise ManifestError(f"{self.artifact}: program batch {static_batch} is smaller than the manifest's "
                                f"max_batch {self.max_batch}")

    def deactivate_impl(self) -> None:
        self.method = None

    def infer_impl(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        outs = self.method.execute([torch.from_numpy(frames).contiguous(), torch.from_numpy(mfcc).contiguous()])
        return {name: out.detach().numpy().copy() for name, out in zip(self.output_names, outs)}

    def extra_info(self) -> dict[str, Any]:
        return {"threads": self.threads}
