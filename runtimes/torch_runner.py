"""TorchRunner: a safetensors checkpoint (or an in-memory model) run eagerly with torch, on CPU or CUDA.

This is also the FP32 reference: the teacher's outputs that EPS is measured against come from a TorchRunner.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pinlite_edge.errors import BackendUnavailableError
from pinlite_edge.runtimes.artifact import INSTALL_HINTS, ArtifactSpec
from pinlite_edge.runtimes.base import BaseRunner

log = logging.getLogger(__name__)


class TorchRunner(BaseRunner):
    """Eager PyTorch inference of a checkpoint. ``device`` is ``"cpu"`` or ``"cuda[:N]"``; ``threads`` sets
    ``torch.set_num_threads`` (process-wide: torch has no per-model thread pool)."""

    backend = "torch"

    def __init__(self, spec: ArtifactSpec, *, device: str = "cpu", threads: int | None = None,
                 batch_policy: str = "split", model: Any = None):
        super().__init__(spec.path, spec.contract, precision="fp32", device=device, preset=spec.preset,
                         model_kind=spec.model_kind, max_batch=None, fmt=spec.format, batch_policy=batch_policy)
        self.spec = spec
        self.threads = threads
        self._given_model = model
        self.model: Any = None
        self._torch: Any = None

    @classmethod
    def from_model(cls, model: Any, *, name: str = "in-memory", device: str = "cpu",
                   threads: int | None = None) -> "TorchRunner":
        """Wrap a model object (e.g. a randomly initialised ``paper`` preset for speed measurements)."""
        cfg = model.config
        spec = ArtifactSpec(path=Path(name), backend="torch", precision="fp32", preset=cfg.preset,
                            model_kind=cfg.kind, contract=cfg.contract, dynamic_batch=True, max_batch=None,
                            format="model", manifest=None, record={"model_config": cfg.to_dict()})
        return cls(spec, device=device, threads=threads, model=model)

    def activate_impl(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError("torch", str(exc), INSTALL_HINTS["torch"]) from None
        self._torch = torch
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("torch", f"device {self.device!r} requested but CUDA is not available",
                                          "install a CUDA build of torch and run on a machine with an NVIDIA GPU")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self._given_model is not None:
            model = self._given_model
        else:
            from pinlite_edge.checkpoint import load_checkpoint

            model, _ = load_checkpoint(self.artifact)
        self.model = model.to(self.device).eval()
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)

    def deactivate_impl(self) -> None:
        self.model = None
        if self._torch is not None and self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def infer_impl(self, frames: np.ndarray, mfcc: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        f = torch.from_numpy(frames).to(self.device)
        m = torch.from_numpy(mfcc).to(self.device)
        cuda = self.device.startswith("cuda")
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        with torch.inference_mode():
            out = self.model(f, m)
        if cuda:
            end.record()
            end.synchronize()
            self.last_device_time_s = start.elapsed_time(end) / 1000.0
            self.peak_gpu_memory_bytes = int(torch.cuda.max_memory_allocated(self.device))
        return {"logits": out.logits.float().cpu().numpy(), "offset_logits": out.offset_logits.float().cpu().numpy(),
                "attention": out.attention.float().cpu().numpy()}

    def extra_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"threads": self.threads}
        if self.model is not None:
            info["params"] = int(sum(p.numel() for p in self.model.parameters()))
        return info
