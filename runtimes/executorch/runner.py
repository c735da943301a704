"""ExecuTorchRunner: ``.pte`` programs (XNNPACK delegate, FP32 or INT8), loaded by
:mod:`pinlite_edge.runtimes.executorch.loader`.

The ``forward`` method takes ``(frames, mfcc)`` and returns the outputs in the manifest's ``output_names`` order.
``.pte`` files are usually exported with a static batch (1): the manifest says so (``dynamic_batch: false``,
``max_batch``) and :class:`BaseRunner` splits larger batches (or rejects them with ``batch_policy="reject"``).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pinlite_edge.contract import OUTPUT_NAMES
from pinlite_edge.errors import ManifestError
from pinlite_edge.runtimes.artifact import ArtifactSpec, check_io_shapes, read_verified_bytes
from pinlite_edge.runtimes.base import BaseRunner, check_choice
from pinlite_edge.runtimes.executorch import loader
from pinlite_edge.runtimes.torch import loader as torch_loader

log = logging.getLogger(__name__)


class ExecuTorchRunner(BaseRunner):
    """Runs a ``.pte`` program on the CPU (XNNPACK and portable kernels). ``threads`` sets torch's thread count
    while the runner is active (XNNPACK's threadpool follows it here) and restores the previous one afterwards."""

    backend = "executorch"

    def __init__(self, spec: ArtifactSpec, *, device: str = "cpu", threads: int | None = None,
                 batch_policy: str = "split"):
        check_choice("device", device, ["cpu"], self.backend)
        super().__init__(spec.path, spec.contract, precision=spec.precision, device=device, preset=spec.preset,
                         model_kind=spec.model_kind, max_batch=spec.max_batch, fmt=spec.format,
                         batch_policy=batch_policy, threads=threads)
        self.spec = spec
        self.method: Any = None
        self.output_names = list(spec.manifest.output_names) if spec.manifest else list(OUTPUT_NAMES)
        self._torch: Any = None
        self._previous_threads: int | None = None

    def activate_impl(self) -> None:
        # the bytes checked against the manifest's sha256 are the bytes ExecuTorch loads
        method = loader.load_method(read_verified_bytes(self.spec), quantized=self.precision == "int8",
                                    source=str(self.artifact))
        meta = method.metadata
        if meta.num_inputs() != 2 or meta.num_outputs() != len(OUTPUT_NAMES):
            raise ManifestError(f"{self.artifact}: forward has {meta.num_inputs()} inputs and {meta.num_outputs()} "
                                f"outputs, expected 2 and {len(OUTPUT_NAMES)}")
        shapes = {"frames": tuple(meta.input_tensor_meta(0).sizes()), "mfcc": tuple(meta.input_tensor_meta(1).sizes())}
        check_io_shapes(self.artifact, self.contract, shapes)
        static_batch = shapes["frames"][0]
        if not self.spec.dynamic_batch and self.max_batch is not None and static_batch < self.max_batch:
            raise ManifestError(f"{self.artifact}: program batch {static_batch} is smaller than the manifest's "
                                f"max_batch {self.max_batch}")
        self.method = method
        self._torch = torch_loader.import_torch()
        self._previous_threads = torch_loader.set_threads(self._torch, self.threads)

    def deactivate_impl(self) -> None:
        self.method = None
        if self._torch is not None:
            torch_loader.restore_threads(self._torch, self._previous_threads)
            self._previous_threads = None

    def infer_impl(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, loader.execute(self.method, frames, mfcc)))

    def extra_info(self) -> dict[str, Any]:
        return {"threads": self.threads}
