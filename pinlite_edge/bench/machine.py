"""A description of the machine a measurement was taken on (CPU, cores, memory, GPU, library versions)."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = ("torch", "torchvision", "onnxruntime", "onnxruntime-gpu", "onnx", "executorch", "tensorrt", "numpy",
             "cuda-bindings")


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M) or re.search(r"^Model\s*:\s*(.+)$", text, re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU features that decide INT8/FP16 speed on x86 (AVX2, AVX-512, VNNI, AMX) or ARM (dotprod, fp16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    m = re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.M)
    flags = set(m.group(2).split()) if m else set()
    interesting = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "fphp", "asimdhp", "i8mm")
    return [f for f in interesting if f in flags]


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


#: where a Jetson says its L4T release (JetPack's Linux), and the power-mode tool
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
NVPMODEL = "nvpmodel"


def jetson_state(release_file: Path = TEGRA_RELEASE) -> dict[str, Any] | None:
    """On a Jetson: its L4T release line and power mode (``nvpmodel -q``), which decide its clocks and so every
    latency measured on it; None elsewhere. Whether ``jetson_clocks`` locked the clocks is not readable without
    root, so it is not claimed."""
    try:
        release = release_file.read_text(errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    state: dict[str, Any] = {"l4t_release": release, "power_mode": None}
    if shutil.which(NVPMODEL):
        try:
            out = subprocess.run([NVPMODEL, "-q"], capture_output=True, text=True, timeout=10)
            lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
            state["power_mode"] = " / ".join(lines[:2]) or None
        except (OSError, subprocess.SubprocessError):
            pass
    return state


def describe_machine(gpu_index: int | None = None) -> dict[str, Any]:
    """The machine; ``gpu_index``: the CUDA device measured on (default: torch's current device)."""
    info: dict[str, Any] = {
        "hostname": platform.node(), "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(), "cpu_model": cpu_model(), "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(), "python": platform.python_version(),
    }
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    except Exception:  # psutil/loadavg missing: leave them out
        pass
    info["versions"] = {p: v for p in _PACKAGES if (v := _version(p))}
    try:
        import torch

        if torch.cuda.is_available():
            i = torch.cuda.current_device() if gpu_index is None else gpu_index
            cap = torch.cuda.get_device_capability(i)
            info["gpu"] = {"name": torch.cuda.get_device_name(i), "compute_capability": f"{cap[0]}.{cap[1]}",
                           "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
    except Exception:  # no torch / no CUDA: CPU only
        pass
    jetson = jetson_state()
    if jetson is not None:
        info["jetson"] = jetson
    return info


def machine_slug(info: dict[str, Any] | None = None) -> str:
    """A file-name-safe name for results of this machine, e.g. ``x86_64-amd-epyc-2c-avx2``."""
    info = info or describe_machine()
    cpu = re.sub(r"[^a-z0-9]+", "-", str(info.get("cpu_model", "cpu")).lower()).strip("-")
    cpu = "-".join(cpu.split("-")[:4])
    gpu = info.get("gpu", {}).get("name")
    gpu_part = "-" + re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") if gpu else ""
    return (f"{info.get('machine', 'host')}-{cpu}-{info.get('usable_cores', info.get('logical_cores'))}c"
            f"{isa_tag(info.get('cpu_flags', []))}{gpu_part}")


def isa_tag(flags: list[str]) -> str:
    """The vector ISA level that decides INT8/FP32 kernel choice, for file names: ``-avx512vnni``, ``-avx2``, ...
    (machines of one CPU model name can differ here, e.g. two generations of "AMD EPYC")."""
    for flag, tag in (("amx_int8", "amx"), ("avx512_vnni", "avx512vnni"), ("avx512f", "avx512"),
                      ("avx_vnni", "avxvnni"), ("avx2", "avx2"), ("i8mm", "i8mm"), ("asimddp", "dotprod")):
        if flag in flags:
            return f"-{tag}"
    return ""
