"""Example inputs for a model: the one definition used by export tracing, FLOP counting and latency probes."""
from __future__ import annotations

import torch
from torch import nn


def example_inputs(model: nn.Module, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random ``(frames, mfcc)`` of ``model.config.contract``'s shapes with a leading ``batch`` axis (CPU)."""
    contract = model.config.contract
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*contract.frames_shape(batch), generator=g),
            torch.randn(*contract.mfcc_shape(batch), generator=g))


def share_rows(x: torch.Tensor, batch: int | torch.Tensor) -> torch.Tensor:
    """``x`` of a frames batch ``(B, ...)`` -> ``(batch, ...)`` with row ``i`` repeated ``batch // B`` times in a row:
    what lets one frames row serve several audio rows (:meth:`AVSyncDetector.forward`). ``batch == B`` returns the
    same values (a view); in a traced graph the repeat count is computed from the two inputs' batch sizes."""
    k = batch // x.shape[0]
    return x.unsqueeze(1).expand(-1, k, *([-1] * (x.dim() - 1))).reshape(-1, *x.shape[1:])
