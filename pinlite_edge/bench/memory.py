"""Memory per model, each measured alone, outside the timed calls (SPEC §7, issue #14 item 5).

Every model is loaded in a fresh process of its own (``multiprocessing`` spawn), so no other model, dataset or
reference shares its resident set. In that process:

- ``baseline_rss_bytes``: resident set of the fresh process (Python, numpy, ``pinlite_edge.runtimes``) before the
  artefact is opened;
- ``load_rss_delta_bytes``: resident set after the runner is built and activated minus the baseline (manifest checks,
  the backend library's own first import, the session / engine / program: what loading this model costs a process
  that has not loaded it before);
- ``peak_rss_bytes``: the process's resident-set high-water mark (``VmHWM`` of ``/proc/self/status``; elsewhere the
  sampled peak) after ``calls`` inferences: what a process running only this model needs;
  ``inference_peak_delta_bytes`` is the highest resident set sampled by a background thread during load and inference
  minus the baseline;
- on a CUDA device: the driver's device-wide used memory (``cudaMemGetInfo`` total - free, through torch when it
  sees the GPU, else through the TensorRT runner's CUDA binding) before and after load and after every inference
  (calls are synchronous: read between calls, never inside one), and for torch models the caching allocator's peak.
  On Jetson (integrated GPU, unified memory) device-wide used memory is **all memory in use on the board** (CPU and
  GPU share it): the deltas are the meaningful figures there, and other processes' allocations show up in them;
- ``tegrastats`` (Jetson): when the binary is on PATH, its RAM figure (board-wide, MB) before load and at peak.

The sampler never runs inside a timed call: this pass is separate from the latency measurement.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 0.002
_TEGRA_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")


@dataclass
class MemoryFigures:
    baseline_rss_bytes: int
    load_rss_delta_bytes: int
    peak_rss_bytes: int
    inference_peak_delta_bytes: int
    calls: int
    samples: int
    gpu: dict[str, Any] | None = None
    tegrastats: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_tegrastats_ram(line: str) -> tuple[int, int] | None:
    """``(used MB, total MB)`` from one tegrastats line (``RAM 2148/7620MB (lfb ...) ...``), else None."""
    m = _TEGRA_RAM.search(line)
    return (int(m.group(1)), int(m.group(2))) if m else None


class _Tegrastats:
    """``tegrastats --interval 50`` in the background (Jetson only), collecting board RAM in use."""

    def __init__(self) -> None:
        self.used: list[int] = []
        self.total: int | None = None
        self.proc: subprocess.Popen[str] | None = None
        binary = shutil.which("tegrastats")
        if binary:
            self.proc = subprocess.Popen([binary, "--interval", "50"], stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            ram = parse_tegrastats_ram(line)
            if ram:
                self.used.append(ram[0])
                self.total = ram[1]

    def mark(self) -> int:
        return len(self.used)

    def stop(self, load_mark: int) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.used:
            return {"note": "tegrastats printed no RAM line"}
        before = self.used[:max(1, load_mark)]
        return {"ram_before_load_mb": before[-1], "ram_peak_mb": max(self.used), "ram_total_mb": self.total,
                "peak_delta_mb": max(self.used) - before[-1], "samples": len(self.used),
                "note": "board-wide (CPU + GPU share the memory on Jetson)"}


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _high_water_rss() -> int | None:
    """``VmHWM``: this process's resident-set high-water mark. Not ``getrusage``'s ``ru_maxrss``, which a spawned
    child inherits from the parent it was forked from (Linux keeps the old mm's peak across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class _DeviceMemory:
    """Device-wide used memory (total - free, ``cudaMemGetInfo``) of one CUDA device, read in the calling thread."""

    used: Callable[[], int]
    facts: dict[str, Any]
    close: Callable[[], None]


def _device_memory(device: str, cuda_binding: str) -> _DeviceMemory | dict[str, Any] | None:
    """How to read device memory for ``device``: torch's ``mem_get_info`` when torch sees CUDA, else the runtimes'
    CUDA binding (pycuda or cuda-python, as the TensorRT runner uses). None on the CPU; a dict saying why when no
    reader is available."""
    if not device.startswith("cuda") and device != "tensorrt":
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(index)

            def used() -> int:
                free, total = torch.cuda.mem_get_info(index)
                return int(total - free)

            return _DeviceMemory(used, {"source": "cudaMemGetInfo via torch", "device": props.name,
                                        "unified_memory": bool(getattr(props, "is_integrated", False))},
                                 lambda: None)
    except ImportError:
        pass
    from pinlite_edge.errors import PinliteError
    from pinlite_edge.runtimes.trt.cuda import select_binding

    try:
        binding = select_binding(cuda_binding)
        name, _ = binding.open(index)
    except (PinliteError, ImportError) as exc:
        return {"note": f"no device memory figures: {exc}"}

    def used_binding() -> int:
        free, total = binding.mem_get_info()
        return int(total - free)

    return _DeviceMemory(used_binding, {"source": f"cudaMemGetInfo via {type(binding).__name__}", "device": name},
                         binding.close)


def measure_alone(artifact: str, runner_options: dict[str, Any], frames: np.ndarray, mfcc: np.ndarray,
                  calls: int = 3, interval_s: float = SAMPLE_INTERVAL_S) -> dict[str, Any]:
    """Load ``artifact`` in THIS process and measure it (run by :func:`measure_isolated` in a fresh process)."""
    from pinlite_edge.runtimes import load_runner

    dev = _device_memory(str(runner_options.get("device") or "cpu"), str(runner_options.get("cuda_binding", "auto")))
    reader = dev if isinstance(dev, _DeviceMemory) else None
    torch_alloc = None
    if reader is not None and reader.facts["source"].endswith("via torch"):
        import torch  # the CUDA context exists now (mem_get_info made it): it is not the model's

        torch.cuda.reset_peak_memory_stats()
        torch_alloc = torch.cuda.memory_allocated()
    tegra = _Tegrastats()
    time.sleep(0.2 if tegra.proc else 0)  # a tegrastats line before the load
    baseline = _rss()
    dev_before = reader.used() if reader else 0
    dev_peak = dev_before
    peak = [baseline, 0]  # RSS, number of samples
    stop = threading.Event()
    load_mark = 0

    def sample() -> None:  # resident set only: CUDA contexts are per thread for some bindings (pycuda)
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            peak[1] += 1
            stop.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    alloc_peak = None
    try:
        runner = load_runner(artifact, **runner_options)
        runner.activate()
        try:
            after_load = _rss()
            dev_after_load = reader.used() if reader else 0
            load_mark = tegra.mark()
            for _ in range(calls):
                runner.infer(frames, mfcc)  # synchronous: its device memory is read right after, never inside
                if reader is not None:
                    dev_peak = max(dev_peak, reader.used())
            if torch_alloc is not None:
                import torch

                torch.cuda.synchronize()
                alloc_peak = int(torch.cuda.max_memory_allocated()) - torch_alloc
        finally:
            stop.set()
            sampler.join()
            runner.deactivate()
    finally:
        stop.set()
        tegra_figures = tegra.stop(load_mark)
        if reader is not None:
            reader.close()
    gpu = dev if isinstance(dev, dict) else None
    if reader is not None:
        gpu = {**reader.facts, "device_used_before_load_bytes": dev_before,
               "load_delta_bytes": int(dev_after_load - dev_before),
               "inference_peak_delta_bytes": int(max(dev_peak, dev_after_load) - dev_before)}
        if alloc_peak is not None and alloc_peak > 0:  # only torch models allocate through torch's allocator
            gpu["torch_allocator_peak_bytes"] = alloc_peak
    return MemoryFigures(baseline_rss_bytes=baseline, load_rss_delta_bytes=after_load - baseline,
                         peak_rss_bytes=max(_high_water_rss() or 0, peak[0]),
                         inference_peak_delta_bytes=peak[0] - baseline,
                         calls=calls, samples=peak[1], gpu=gpu, tegrastats=tegra_figures).to_dict()


def measure_isolated(artifact: str | Path, runner_options: dict[str, Any], frames: np.ndarray, mfcc: np.ndarray,
                     calls: int = 3, timeout_s: float = 600.0) -> MemoryFigures:
    """:func:`measure_alone` in a fresh interpreter (``python -m pinlite_edge.bench.memory``) that holds nothing but
    this model. Not a multiprocessing child: ``spawn`` re-imports the caller's main script, so a script calling
    ``run_bench`` brought torch and the whole bench into the "fresh" process (or ran the bench again in it)."""
    with tempfile.TemporaryDirectory(prefix="pinlite-memory-") as tmp:
        inputs, result = Path(tmp) / "inputs.npz", Path(tmp) / "figures.json"
        np.savez(inputs, frames=np.ascontiguousarray(frames), mfcc=np.ascontiguousarray(mfcc))
        cmd = [sys.executable, "-m", "pinlite_edge.bench.memory", str(artifact), str(inputs), str(result),
               "--calls", str(int(calls)), "--options", json.dumps(dict(runner_options))]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the memory pass of {artifact} took more than {timeout_s:g} s") from None
        if proc.returncode != 0 or not result.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            raise RuntimeError(f"the memory pass's process failed: {tail[0]}")
        return MemoryFigures(**json.loads(result.read_text()))


def _main(argv: list[str] | None = None) -> int:
    """The fresh interpreter of :func:`measure_isolated`: measure one artefact, write its figures as JSON."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m pinlite_edge.bench.memory",
                                description="Memory of one artefact loaded alone (run by the bench).")
    p.add_argument("artifact")
    p.add_argument("inputs", help=".npz with frames and mfcc")
    p.add_argument("out", help="where the figures go (JSON)")
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--options", default="{}", help="runner options (JSON)")
    args = p.parse_args(argv)
    with np.load(args.inputs, allow_pickle=False) as z:
        frames, mfcc = z["frames"], z["mfcc"]
    figures = measure_alone(args.artifact, json.loads(args.options), frames, mfcc, args.calls)
    Path(args.out).write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
