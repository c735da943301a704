"""TorchRunner: a safetensors checkpoint (or an in-memory model) run eagerly with torch, on CPU or CUDA.

This is also the FP32 reference: the teacher's outputs that EPS is measured against come from a TorchRunner.
"""
from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from pinlite_edge.runtimes.artifact import ArtifactSpec
from pinlite_edge.runtimes.base import BaseRunner, check_cuda_device
from pinlite_edge.runtimes.torch import loader

log = logging.getLogger(__name__)


class TorchRunner(BaseRunner):
    """Eager PyTorch inference of a checkpoint. ``device`` is ``"cpu"`` or ``"cuda[:N]"``; ``threads`` sets
    ``torch.set_num_threads`` while the runner is active (process-wide: torch has no per-model thread pool) and the
    previous count is restored on deactivation, or when an active runner is garbage-collected without it."""

    backend = "torch"
    shares_frames = True  # AVSyncDetector.forward encodes each frames row once for the mfcc rows it serves

    def __init__(self, spec: ArtifactSpec, *, device: str = "cpu", threads: int | None = None,
                 batch_policy: str = "split", model: Any = None):
        if device != "cpu":
            check_cuda_device(device, self.backend)
        super().__init__(spec.path, spec.contract, precision="fp32", device=device, preset=spec.preset,
                         model_kind=spec.model_kind, max_batch=None, fmt=spec.format, batch_policy=batch_policy,
                         threads=threads)
        self.spec = spec
        self._given_model = model
        self.model: Any = None
        self._torch: Any = None
        #: releases the thread request: called by deactivation, or by the garbage collector for a runner (or the
        #: Detector holding it) dropped while active, which otherwise left the process on its count for good
        self._thread_release: weakref.finalize | None = None

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
        torch = self._torch = loader.import_torch()
        loader.check_device(torch, self.device)
        # a spec inspected with verify=False loads a checkpoint without a hash too (load_runner(..., verify=False))
        self.model = loader.load_model(self.artifact, self.device, self._given_model,
                                       allow_unverified=not self.spec.verified)
        request = loader.set_threads(torch, self.threads)
        self._thread_release = weakref.finalize(self, loader.restore_threads_from_gc, torch, request)
        self._thread_release.atexit = False  # nothing to give back to a process that is ending
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)

    def deactivate_impl(self) -> None:
        self.model = None
        if self._thread_release is not None:
            detached = self._thread_release.detach()  # (runner, func, args, kwargs) unless already called
            self._thread_release = None
            if detached is not None:
                _, _, (torch, request), _ = detached
                loader.restore_threads(torch, request)
        if self._torch is not None:
            if self.device.startswith("cuda") and self._torch.cuda.is_available():
                self._torch.cuda.empty_cache()

    def gpu_memory_bytes(self) -> int | None:
        """Peak bytes torch's CUDA allocator handed out since activation (weights, activations)."""
        if self._torch is None or not self.device.startswith("cuda"):
            return None
        return int(self._torch.cuda.max_memory_allocated(self.device))

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
        return {"logits": out.logits.float().cpu().numpy(), "offset_logits": out.offset_logits.float().cpu().numpy(),
                "attention": out.attention.float().cpu().numpy()}

    def extra_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"threads": self.threads}
        if self.model is not None:
            info["params"] = int(sum(p.numel() for p in self.model.parameters()))
        return info
