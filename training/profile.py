"""Model cost figures for the summary tables: parameters, file size, FLOPs and batch-1 CPU latency."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from pinlite_edge.models import AVSyncDetector, count_parameters
from pinlite_edge.models.flops import count_flops
from pinlite_edge.models.inputs import example_inputs


@torch.no_grad()
def cpu_latency_ms(model: AVSyncDetector, runs: int = 7, warmup: int = 2) -> float:
    """Median wall time (ms) of ``runs`` batch-1 eager forward passes on the CPU after ``warmup`` passes."""
    was_training = model.training
    model.eval().cpu()
    frames, mfcc = example_inputs(model)
    for _ in range(warmup):
        model(frames, mfcc)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model(frames, mfcc)
        times.append((time.perf_counter() - t0) * 1000.0)
    model.train(was_training)
    return float(statistics.median(times))


def size_mb(path: str | Path) -> float:
    """File size in MB (10^6 bytes)."""
    return Path(path).stat().st_size / 1e6


def model_costs(model: AVSyncDetector, checkpoint: str | Path, latency_runs: int = 7) -> dict[str, float | int]:
    return {"params": count_parameters(model), "size_mb": size_mb(checkpoint),
            "gflops": count_flops(model) / 1e9, "latency_ms": cpu_latency_ms(model, runs=latency_runs)}
