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
