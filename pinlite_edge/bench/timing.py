"""Latency measurement: warm-up, then timed calls; summaries in milliseconds."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from pinlite_edge.runtimes.base import BaseRunner


@dataclass(frozen=True)
class LatencyStats:
    """Milliseconds over ``n`` timed calls."""

    n: int
    min_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> "LatencyStats":
        if not samples:
            raise ValueError("no latency samples")
        ms = np.asarray(samples, dtype=np.float64) * 1e3
        return cls(n=int(ms.size), min_ms=float(ms.min()), median_ms=float(np.median(ms)),
                   p90_ms=float(np.percentile(ms, 90)), p99_ms=float(np.percentile(ms, 99)), mean_ms=float(ms.mean()))

    def scaled(self, factor: float) -> "LatencyStats":
        """Per-clip figures from per-batch ones (``factor = 1 / batch``)."""
        return LatencyStats(self.n, self.min_ms * factor, self.median_ms * factor, self.p90_ms * factor,
                            self.p99_ms * factor, self.mean_ms * factor)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class TimingResult:
    """Host end-to-end latency per batch (validation + backend + copies) and, on GPUs, device time."""

    batch: int
    host: LatencyStats
    device: LatencyStats | None

    @property
    def per_clip(self) -> LatencyStats:
        return self.host.scaled(1.0 / self.batch)

    @property
    def throughput_clips_per_s(self) -> float:
        """Clips per second over the timed calls back to back (batch / mean batch latency): what the model sustains,
        slow calls included (the median latency would overstate it on a loaded or throttling device)."""
        return self.batch / (self.host.mean_ms / 1e3) if self.host.mean_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        return {"batch": self.batch, "per_batch": self.host.to_dict(), "per_clip": self.per_clip.to_dict(),
                "device_per_batch": self.device.to_dict() if self.device else None,
                "throughput_clips_per_s": self.throughput_clips_per_s}


def _one_call(runner: BaseRunner, frames: np.ndarray, mfcc: np.ndarray) -> tuple[float, float | None]:
    start = time.perf_counter()
    runner.infer(frames, mfcc)
    return time.perf_counter() - start, runner.last_device_time_s


def measure_interleaved(runners: Sequence[BaseRunner], frames: np.ndarray, mfcc: np.ndarray, *, warmup: int,
                        iters: int, block: int = 1, turn_warmup: int = 0) -> list[TimingResult]:
    """Time active runners in turns so that load from other processes on a shared machine spreads evenly over them.

    Each turn gives one runner ``turn_warmup`` untimed calls, then ``block`` timed ones. With ``block=1,
    turn_warmup=0`` this is plain round-robin, where every call follows another model's and finds the caches full of
    that model's weights; ``block=5, turn_warmup=1`` measures each model warm, as it runs alone on a device, while
    still interleaving the models. A single runner is simply ``warmup`` + ``iters`` calls."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if block < 1 or turn_warmup < 0:
        raise ValueError(f"block must be >= 1 and turn_warmup >= 0, got {block} and {turn_warmup}")
    for runner in runners:
        for _ in range(max(0, warmup)):
            runner.infer(frames, mfcc)
    host: list[list[float]] = [[] for _ in runners]
    device: list[list[float]] = [[] for _ in runners]
    done = 0
    while done < iters:
        n = min(block, iters - done)
        for i, runner in enumerate(runners):
            for _ in range(turn_warmup if len(runners) > 1 else 0):
                runner.infer(frames, mfcc)
            for _ in range(n):
                h, d = _one_call(runner, frames, mfcc)
                host[i].append(h)
                if d is not None:
                    device[i].append(d)
        done += n
    batch = int(frames.shape[0])
    return [TimingResult(batch, LatencyStats.from_seconds(h), LatencyStats.from_seconds(d) if d else None)
            for h, d in zip(host, device)]
