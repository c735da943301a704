"""Why the onnxruntime INT8 artefact is built the way it is: speed of INT8 variants of the paper-preset student.

Exports the paper student (random weights: weights do not change speed) as FP32 ONNX and as INT8 ONNX with each
combination of ``activation_type`` (int8 / uint8 storage of the symmetric activations) and ``speed_float`` (none /
auto: the CPU speed plan of ``export/cpu_speed_plan.py``), times them in turns on one batch-1 input (1 thread, each
turn one untimed call then ``--block`` timed ones) and records, from each manifest, how many convolutions onnxruntime
really runs in int8 (QLinearConv) and in float.

    python benchmarks/ort_int8_speed.py [--iters 60] [--out benchmarks/results]

Writes ``ort_int8_speed.json`` and ``.md`` (named after the machine's vector ISA, e.g. ``ort_int8_speed-avx2.md``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VARIANTS = [  # label, export options
    ("int8 activations, quantize all (before)", {"activation_type": "int8", "speed_float": "none"}),
    ("uint8 activations, quantize all", {"activation_type": "uint8", "speed_float": "none"}),
    ("int8 activations, speed plan", {"activation_type": "int8", "speed_float": "auto"}),
    ("uint8 activations, speed plan (default)", {"activation_type": "uint8", "speed_float": "auto"}),
]


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(art: Path, seed: int) -> list[tuple[str, Path, dict[str, Any]]]:
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.export import export_model
    from pinlite_edge.manifest import read_manifest
    from pinlite_edge.models import create_student

    ckpt = art / "student" / "best.safetensors"
    if not ckpt.is_file():
        torch.manual_seed(seed)
        save_checkpoint(ckpt, create_student("paper", pretrained=False).eval(), {"note": "random weights, speed only"})
    out = [("FP32", export_model(ckpt, "onnx", art / "fp32", force=True).artifact, {})]
    for i, (label, opts) in enumerate(VARIANTS):
        _say(f"exporting {label}")
        res = export_model(ckpt, "onnx-int8", art / f"int8-{i}", force=True, calib_size=16, sensitivity=False, **opts)
        out.append((label, res.artifact, read_manifest(res.artifact).extra.get("ort_cpu_kernels", {})))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--artifact-dir", type=Path, default=Path(tempfile.gettempdir()) / "pinlite-ort-int8-speed")
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--block", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from pinlite_edge.bench.machine import describe_machine, isa_tag
    from pinlite_edge.bench.timing import measure_interleaved
    from pinlite_edge.contract import PAPER_CONTRACT
    from pinlite_edge.runtimes import load_runner
    from pinlite_edge.utils.atomic import atomic_write_json, atomic_write_text

    machine = describe_machine()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    entries = build(args.artifact_dir, args.seed)
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((1, *PAPER_CONTRACT.frames_shape())).astype(np.float32)
    mfcc = rng.standard_normal((1, *PAPER_CONTRACT.mfcc_shape())).astype(np.float32)
    runners = [load_runner(path, threads=1) for _, path, _ in entries]
    for r in runners:
        r.activate()
    try:
        _say(f"timing {len(runners)} models in turns: {args.iters} calls each")
        timings = measure_interleaved(runners, frames, mfcc, warmup=3, iters=args.iters, block=args.block,
                                      turn_warmup=1)
    finally:
        for r in runners:
            r.deactivate()
    fp32_ms = timings[0].per_clip.median_ms
    rows = [{"variant": label, "artifact_bytes": path.stat().st_size, "ort_cpu_kernels": kernels,
             **t.per_clip.to_dict(), "speedup_vs_fp32": fp32_ms / t.per_clip.median_ms}
            for (label, path, kernels), t in zip(entries, timings)]
    doc = {"machine": machine, "started": started, "iters": args.iters, "block": args.block, "threads": 1,
           "rows": rows}
    name = f"ort_int8_speed{isa_tag(machine.get('cpu_flags', []))}"
    lines = [f"# onnxruntime INT8 variants of the paper student ({name})", "",
             f"Machine: {machine.get('cpu_model')} ({machine.get('usable_cores')} cores, flags "
             f"{', '.join(machine.get('cpu_flags', []))}); onnxruntime {machine['versions'].get('onnxruntime')}; "
             f"measured {started}, load average {machine.get('load_average_1m')} at start.",
             f"Batch 1, 1 thread, {args.iters} timed calls per model in turns (1 untimed + {args.block} timed).", "",
             "| variant | MB | int8 convs | float convs | median ms | min ms | p90 ms | vs FP32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k = r["ort_cpu_kernels"]
        float_convs = k.get("Conv", 0) + k.get("FusedConv", 0) if k else "—"
        lines.append(f"| {r['variant']} | {r['artifact_bytes'] / 1e6:.2f} | {k.get('QLinearConv', '—')} | "
                     f"{float_convs} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "
                     f"{r['p90_ms']:.2f} | {r['speedup_vs_fp32']:.2f}x |")
    lines += ["", "int8 / float convs: QLinearConv / Conv + FusedConv nodes of onnxruntime's CPU graph after its QDQ "
              "fusions (optimisation level extended), from each manifest (`ort_cpu_kernels`). FP32 has 54 convs."]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"{name}.json", doc)
    atomic_write_text(args.out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
