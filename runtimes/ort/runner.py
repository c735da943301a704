"""OrtRunner: ONNX artefacts (FP32, FP16 with FP32 islands, INT8 QDQ) on onnxruntime (session built by
:mod:`pinlite_edge.runtimes.ort.loader`)."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pinlite_edge.contract import INPUT_NAMES, OUTPUT_NAMES, shares_frames
from pinlite_edge.errors import ManifestError
from pinlite_edge.runtimes.artifact import ArtifactSpec, check_declared_sharing, check_io_shapes
from pinlite_edge.runtimes.base import BaseRunner, check_choice, check_threads
from pinlite_edge.runtimes.ort import loader

log = logging.getLogger(__name__)


def graph_shares_frames(spec: ArtifactSpec, inputs: dict[str, tuple[Any, ...]]) -> bool:
    """Whether the graph lets a frames row serve several mfcc rows (``contract.shares_frames`` of its inputs' batch
    dims); a manifest that says otherwise (``extra.shared_frames``, written at export) is refused."""
    shared = shares_frames(inputs[INPUT_NAMES[0]][0], inputs[INPUT_NAMES[1]][0])
    check_declared_sharing(spec, lambda declared: bool(declared) == shared, "graph",
                           f"the graph's input batch axes are {inputs[INPUT_NAMES[0]][0]!r} (frames) and "
                           f"{inputs[INPUT_NAMES[1]][0]!r} (mfcc)")
    return shared


class OrtRunner(BaseRunner):
    """onnxruntime InferenceSession with explicit providers and thread counts (per session: nothing process-wide
    is changed, so there is nothing to restore on deactivation)."""

    backend = "ort"

    def __init__(self, spec: ArtifactSpec, *, device: str = "cpu", threads: int | None = None,
                 inter_op_threads: int | None = None, optimization: str = "all",
                 optimized_model_path: str | None = None, profile: bool = False, batch_policy: str = "split"):
        check_choice("device", device, list(loader.PROVIDERS), self.backend)
        check_choice("optimization", optimization, loader.OPT_LEVELS, self.backend)
        super().__init__(spec.path, spec.contract, precision=spec.precision, device=device, preset=spec.preset,
                         model_kind=spec.model_kind, max_batch=spec.max_batch, fmt=spec.format,
                         batch_policy=batch_policy, threads=threads)
        self.spec = spec
        self.inter_op_threads = check_threads(inter_op_threads, "inter_op_threads")
        self.optimization = optimization
        self.optimized_model_path = optimized_model_path
        self.profile = profile
        self.session: Any = None
        self.providers: list[str] = []

    def activate_impl(self) -> None:
        session = loader.create_session(self.artifact, device=self.device, threads=self.threads,
                                        inter_op_threads=self.inter_op_threads, optimization=self.optimization,
                                        optimized_model_path=self.optimized_model_path, profile=self.profile)
        inputs = {i.name: tuple(i.shape) for i in session.get_inputs()}
        check_io_shapes(self.artifact, self.contract, inputs)
        outputs = [o.name for o in session.get_outputs()]
        if sorted(outputs) != sorted(OUTPUT_NAMES):
            raise ManifestError(f"{self.artifact} has outputs {outputs}, expected {list(OUTPUT_NAMES)}")
        self.shares_frames = graph_shares_frames(self.spec, inputs)
        self.session = session
        self.providers = list(session.get_providers())

    def deactivate_impl(self) -> None:
        if self.session is not None and self.profile:
            log.info("onnxruntime profile written to %s", self.session.end_profiling())
        self.session = None

    def infer_impl(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(OUTPUT_NAMES, loader.run(self.session, frames, mfcc, list(OUTPUT_NAMES))))

    def extra_info(self) -> dict[str, Any]:
        return {"providers": self.providers or loader.PROVIDERS[self.device], "threads": self.threads,
                "optimization": self.optimization}
