"""FLOP counting: the one definition used by training's cost table and the bench.

``torch.utils.flop_counter.FlopCounterMode`` on one forward pass: matmuls, convolutions and the GRU's matmuls,
a multiply-add counts 2 FLOPs, element-wise ops are not counted. Input values do not change the count.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pinlite_edge.models.inputs import example_inputs


def count_flops(model: nn.Module, batch: int = 1) -> int:
    """FLOPs of one eval-mode forward pass on ``batch`` clips; the model's train/eval mode is restored."""
    was_training = model.training
    device = next(model.parameters()).device
    frames, mfcc = (t.to(device) for t in example_inputs(model, batch))
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(frames, mfcc)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
