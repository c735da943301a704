"""ExecuTorchRunner: ``.pte`` programs (XNNPACK delegate, FP32 or INT8), loaded by
:mod:`pinlite_edge.runtimes.executorch.loader`.

The ``forward`` method takes ``(frames, mfcc)`` and returns the outputs in the manifest's ``output_names`` order.
``.pte`` files are usually exported with a static batch (1): the manifest says so (``dynamic_batch: false``,
``max_batch``) and :class:`BaseRunner` splits larger batches (or rejects them with ``batch_policy="reject"``).

A program exported with ``shared_rows=k`` (the default, 7: the offset scan's shifts) also has the method
``forward_shared``: the same batch of frames with ``k`` mfcc rows each, the frames encoded once (frame sharing,
:mod:`pinlite_edge.runtimes.base`). Its ``k`` is read from the method's own input shapes; calls with that many mfcc
rows per frames row go to it, any other ``k`` gets the frames repeated and runs ``forward``.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pinlite_edge.contract import OUTPUT_NAMES
from pinlite_edge.errors import ManifestError
from pinlite_edge.runtimes.artifact import (ArtifactSpec, check_declared_sharing, check_io_shapes, declared_shared_rows,
                                             read_verified_bytes)
from pinlite_edge.runtimes.base import BaseRunner, check_choice, pad_to_batch
from pinlite_edge.runtimes.executorch import loader

log = logging.getLogger(__name__)


class ExecuTorchRunner(BaseRunner):
    """Runs a ``.pte`` program on the CPU (XNNPACK and portable kernels). ``threads`` sizes ExecuTorch's CPU
    threadpool, which is process-wide and can only be sized before the process loads its first program (later runners
    asking for another size keep the pool's, with a warning); ``info.extra["threads"]`` is the size that runs."""

    backend = "executorch"

    def __init__(self, spec: ArtifactSpec, *, device: str = "cpu", threads: int | None = None,
                 batch_policy: str = "split"):
        check_choice("device", device, ["cpu"], self.backend)
        super().__init__(spec.path, spec.contract, precision=spec.precision, device=device, preset=spec.preset,
                         model_kind=spec.model_kind, max_batch=spec.max_batch, fmt=spec.format,
                         batch_policy=batch_policy, threads=threads)
        self.spec = spec
        self.method: Any = None
        self.shared_method: Any = None
        #: mfcc rows per frames row of the program's forward_shared method (0: the program has none)
        self.shared_rows = 0
        #: the program's static batch (frames rows per call), read from its forward method at activation
        self.static_batch = 1
        self.output_names = list(spec.manifest.output_names) if spec.manifest else list(OUTPUT_NAMES)
        #: the threads ExecuTorch's threadpool has while this runner is active (process-wide; what runs)
        self.threadpool_threads: int | None = None

    def activate_impl(self) -> None:
        # sized before the program is loaded: a loaded program holds the pool (loader.size_threadpool)
        self.threadpool_threads = loader.size_threadpool(self.threads, str(self.artifact))
        # the bytes checked against the manifest's sha256 are the bytes ExecuTorch loads
        methods = loader.load_methods(read_verified_bytes(self.spec), quantized=self.precision == "int8",
                                      source=str(self.artifact))
        shapes = self._method_shapes("forward", methods["forward"])
        static_batch = shapes["frames"][0]
        if shapes["mfcc"][0] != static_batch:
            raise ManifestError(f"{self.artifact}: forward takes {static_batch} frames rows but {shapes['mfcc'][0]} "
                                "mfcc rows; expected one mfcc row per frames row")
        if not self.spec.dynamic_batch and self.max_batch is not None and static_batch < self.max_batch:
            raise ManifestError(f"{self.artifact}: program batch {static_batch} is smaller than the manifest's "
                                f"max_batch {self.max_batch}")
        self.shared_rows = 0
        if loader.SHARED_METHOD in methods:
            shared = self._method_shapes(loader.SHARED_METHOD, methods[loader.SHARED_METHOD])
            rows = shared["mfcc"][0] // shared["frames"][0]
            if shared["frames"][0] != static_batch or shared["mfcc"][0] != rows * static_batch or rows < 2:
                raise ManifestError(f"{self.artifact}: {loader.SHARED_METHOD} takes {shared['frames'][0]} frames rows "
                                    f"and {shared['mfcc'][0]} mfcc rows; expected {static_batch} frames rows with the "
                                    "same whole number (>= 2) of mfcc rows each")
            self.shared_rows = rows
            self.shared_method = methods[loader.SHARED_METHOD]
        check_declared_sharing(self.spec, lambda declared: declared_shared_rows(declared) == self.shared_rows,
                               "program", f"the program's {loader.SHARED_METHOD} method takes {self.shared_rows or 'no'} mfcc "
                               "rows per frames row")
        self.shares_frames = self.shared_rows > 0
        self.static_batch = int(static_batch)
        self.method = methods["forward"]

    def _method_shapes(self, name: str, method: Any) -> dict[str, tuple[int, ...]]:
        meta = method.metadata
        if meta.num_inputs() != 2 or meta.num_outputs() != len(OUTPUT_NAMES):
            raise ManifestError(f"{self.artifact}: {name} has {meta.num_inputs()} inputs and {meta.num_outputs()} "
                                f"outputs, expected 2 and {len(OUTPUT_NAMES)}")
        shapes = {"frames": tuple(meta.input_tensor_meta(0).sizes()), "mfcc": tuple(meta.input_tensor_meta(1).sizes())}
        check_io_shapes(self.artifact, self.contract, shapes)
        return shapes

    def frames_shared_for(self, k: int) -> bool:
        """Only for the ``k`` of the program's ``forward_shared`` method (its static input shapes)."""
        return self.shares_frames and k == self.shared_rows

    def deactivate_impl(self) -> None:
        self.method = None
        self.shared_method = None

    def infer_impl(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        rows, audio = frames.shape[0], mfcc.shape[0]
        method = self.method if audio == rows else self.shared_method
        # a static program takes exactly its batch: the last chunk of a split call is padded, its outputs cut
        frames, mfcc = pad_to_batch(frames, mfcc, self.static_batch)
        outs = loader.execute(method, frames, mfcc)
        return {name: o[:audio] for name, o in zip(self.output_names, outs)}

    def extra_info(self) -> dict[str, Any]:
        return {"threads": self.threadpool_threads or self.threads, "threads_asked": self.threads,
                "shared_rows": self.shared_rows}
