"""CUDA paths on an NVIDIA GPU machine (issue #14, item 7): what runs there, measured, and what does not, said.

Run on a machine with an NVIDIA GPU and the package installed (TensorRT is not installable on the GPU machines lent
here; step 4 records what the card's command says there instead of guessing). Each step is a subprocess with its
own time limit; its command, exit code, seconds and the end of its output are kept, and the result is written after
every step, so a machine that goes away mid-run still leaves the steps done so far.

1. ``gpu-tests``: ``pytest tests/test_cuda_gpu.py``: the TensorRT runner's CUDA bindings (cuda-python, pycuda where
   installed) round-tripping a buffer through the GPU, the torch runner on ``cuda`` against ``cpu``, one AMP epoch.
2. ``bench-torch-cuda`` (batch 1) and ``bench-torch-cuda-b32``: ``python -m pinlite_edge.bench --runtime torch
   --device cuda`` on the workspace's models: latency, GPU memory per model (each measured alone), accuracy, EPS,
   end-to-end time on synthetic videos; the teacher reference runs on the GPU too.
3. ``bench-ort-cuda``: ``--runtime ort --device cuda``: onnxruntime's CUDA execution provider, when the installed
   onnxruntime has one (the step records the providers it has).
4. ``bench-trt``: the card's command ``python -m pinlite_edge.bench --runtime trt`` on a GPU machine without TensorRT:
   expected to exit 2 with one line naming what is missing.
5. ``train-{preset}-{amp,fp32}``: the teacher trained on synthetic clips with AMP (fp16 autocast + GradScaler) and
   without, same seed and data: seconds per epoch (training and validation), validation AUC and loss, the CUDA
   allocator's peak over each epoch's training steps.
6. ``amp-steps``: one training step of the teacher (forward under autocast as the trainer does, the teacher loss,
   backward, AdamW) on a batch already on the GPU, so no data loading is in it: median milliseconds per step and
   the allocator's peak, AMP vs FP32, per preset and batch size. Step 5 times the trainer as users run it (its data
   loading included); this step shows what AMP changes in the GPU work alone.

    python benchmarks/cuda_paths.py --artifacts pinlite-workspace

Writes ``benchmarks/results/cuda_paths/<machine>.{json,md}``.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import build_record, fingerprint_json, parse_cli, report_parser, write_result  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.cuda_paths")

STEM = "cuda_paths"
TAIL_CHARS = 4000
#: synthetic training data of step 5 (small: the step measures the GPU path, not a model worth shipping)
TRAIN_DATA = {"num_train": 1024, "num_val": 256, "num_test": 8}


def run_step(name: str, cmd: Sequence[str], timeout_s: float, cwd: Path) -> dict[str, Any]:
    """Run ``cmd``; its exit code, wall seconds and output tail (a step past its limit is recorded as timed out)."""
    log.info("%s: %s", name, " ".join(cmd))
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = None
        out = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")) \
            + f"\n[timed out after {timeout_s:.0f} s]"
    seconds = time.perf_counter() - t0
    log.info("%s: exit %s in %.1f s", name, rc, seconds)
    return {"command": " ".join(cmd), "exit_code": rc, "seconds": round(seconds, 2), "output_tail": out[-TAIL_CHARS:]}


def bench_rows(out_dir: Path) -> dict[str, Any] | None:
    """The rows of a bench run (latency, memory, end to end, accuracy, EPS per model), without the runner details."""
    path = out_dir / "bench.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    keep = ("name", "backend", "precision", "device", "preset", "params", "latency", "memory", "end_to_end",
            "metrics", "eps_vs_teacher", "eps_vs_source")
    return {"rows": [{k: row.get(k) for k in keep} for row in data.get("rows", [])],
            "teacher": data.get("teacher"), "notes": data.get("notes")}


def training_summary(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "last.json"
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    keep = ("epoch", "seconds", "train_loss", "train_accuracy", "val_loss", "val_auc", "val_accuracy", "cuda_peak_mb")
    return {"runtime": rec.get("runtime"), "params": rec.get("params"), "steps_per_epoch": rec.get("steps_per_epoch"),
            "history": [{k: e.get(k) for k in keep} for e in rec.get("history", [])]}


def amp_step_probe(presets: Sequence[str], batches: Sequence[int], steps: int = 20, warmup: int = 5,
                   device_name: str = "cuda") -> list[dict[str, Any]]:
    """Step 6 (module doc): median ms per training step and allocator peak, AMP vs FP32, data already on the GPU.
    ``device_name="cpu"`` runs the FP32 rows only (a dry run of this code without a GPU)."""
    import torch

    from pinlite_edge.contract import NUM_OFFSET_CLASSES
    from pinlite_edge.models import create_teacher
    from pinlite_edge.training.losses import teacher_loss

    device = torch.device(device_name)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    for preset in presets:
        for batch in batches:
            for amp in ((True, False) if cuda else (False,)):
                torch.manual_seed(0)
                model = create_teacher(preset, pretrained=False).to(device).train()
                c = model.config.contract
                frames = torch.randn(batch, *c.frames_shape(), device=device)
                mfcc = torch.randn(batch, *c.mfcc_shape(), device=device)
                label = torch.randint(0, 2, (batch,), device=device)
                offset = torch.randint(0, NUM_OFFSET_CLASSES, (batch,), device=device)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
                scaler = torch.amp.GradScaler("cuda", enabled=amp)
                sync()
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated() if cuda else 0
                times = []
                for i in range(warmup + steps):
                    t0 = time.perf_counter()
                    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        out = model(frames, mfcc)
                    loss, _ = teacher_loss(out, label, offset)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    sync()
                    if i >= warmup:
                        times.append(time.perf_counter() - t0)
                rows.append({"preset": preset, "batch": batch, "amp": amp,
                             "median_ms": round(1000 * float(np.median(times)), 3),
                             "min_ms": round(1000 * min(times), 3),
                             "allocator_peak_mb": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
                             if cuda else None,
                             "loss_finite": bool(torch.isfinite(loss).item())})
                del model, opt, frames, mfcc, out, loss
                if cuda:
                    torch.cuda.empty_cache()
    return rows


def onnxruntime_providers() -> list[str] | str:
    try:
        import onnxruntime as ort

        return list(ort.get_available_providers())
    except Exception as exc:  # noqa: BLE001 - recorded, not raised: this only describes the machine
        return f"onnxruntime does not import: {exc}"


def nvidia_smi() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def markdown(result: dict[str, Any]) -> str:
    lines = [f"GPU (nvidia-smi): {result.get('nvidia_smi')}", f"onnxruntime providers: {result.get('ort_providers')}",
             "", "| step | exit | seconds |", "|---|---|---|"]
    for name, step in result["steps"].items():
        lines.append(f"| {name} | {step['exit_code']} | {step['seconds']} |")
    if result.get("amp_steps"):
        lines += ["", "### amp-steps (one teacher training step, batch on the GPU)", "",
                  "| preset | batch | AMP | median ms/step | min ms | allocator peak MB |", "|---|---|---|---|---|---|"]
        for r in result["amp_steps"]:
            lines.append(f"| {r['preset']} | {r['batch']} | {'yes' if r['amp'] else 'no'} | {r['median_ms']} | "
                         f"{r['min_ms']} | {r['allocator_peak_mb']} |")
    for name, step in result["steps"].items():
        if step.get("bench"):
            lines += ["", f"### {name}", "", "| model | device | ms/clip p50 | clips/s | GPU load MB | "
                      "GPU inference peak MB | torch allocator peak MB | e2e s/video | AUC | EPS vs teacher |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for row in step["bench"]["rows"]:
                gpu = (row.get("memory") or {}).get("gpu") or {}
                lat = row["latency"]["per_clip"]["median_ms"]
                e2e = ((row.get("end_to_end") or {}).get("end_to_end_s") or {}).get("median")
                lines.append(f"| {row['name']} | {row['device']} | {lat:.3f} | "
                             f"{row['latency']['throughput_clips_per_s']:.0f} | {_mb(gpu.get('load_delta_bytes'))} | "
                             f"{_mb(gpu.get('inference_peak_delta_bytes'))} | "
                             f"{_mb(gpu.get('torch_allocator_peak_bytes'))} | {e2e if e2e is None else f'{e2e:.3f}'} | "
                             f"{(row.get('metrics') or {}).get('auc', float('nan')):.3f} | "
                             f"{(row.get('eps_vs_teacher') or {}).get('eps_mean', float('nan')):.3f} |")
        if step.get("training"):
            t = step["training"]
            lines += ["", f"### {name} ({t['runtime']})", "", "| epoch | seconds | train loss | val loss | val AUC | "
                      "CUDA peak MB |", "|---|---|---|---|---|---|"]
            for e in t["history"]:
                lines.append(f"| {e['epoch']} | {e['seconds']:.1f} | {e['train_loss']:.4f} | {e['val_loss']:.4f} | "
                             f"{e['val_auc']:.3f} | {e.get('cuda_peak_mb') or 0:.0f} |")
        if step["exit_code"] not in (0,) or name in ("bench-ort-cuda", "bench-trt"):
            lines += ["", f"{name} said (last lines):", "", "```",
                      *step["output_tail"].strip().splitlines()[-6:], "```"]
    return "\n".join(lines) + "\n"


def _mb(value: Any) -> str:
    return "—" if value is None else f"{value / 2**20:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = report_parser(__doc__)
    p.add_argument("--artifacts", type=Path, default=REPO_ROOT / "pinlite-workspace",
                   help="workspace whose models the bench steps use (default ./pinlite-workspace)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per AMP / FP32 run (default 3)")
    p.add_argument("--presets", default="tiny,paper", help="teacher presets trained in step 5 (default tiny,paper)")
    p.add_argument("--no-e2e", action="store_true",
                   help="pass --no-e2e to the bench steps (where the face crop's OpenCV 4 or PyAV is missing)")
    p.add_argument("--amp-batches", default="32,128", help="batch sizes of step 6 (default 32,128)")
    p.add_argument("--skip", default="", help="comma-separated step names to skip")
    args_list, args = parse_cli(p, argv)
    import torch

    if not torch.cuda.is_available():
        print("cuda_paths: no CUDA GPU is visible (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)
        return 2
    py = sys.executable
    skip = {s for s in args.skip.split(",") if s}
    work = Path(tempfile.mkdtemp(prefix="cuda_paths-"))
    data = {"fingerprint": fingerprint_json({"train": TRAIN_DATA, "artifacts": str(args.artifacts)}),
            "bench": "synthetic test split (the bench's default) and the models in " + str(args.artifacts),
            "training": {"synthetic": TRAIN_DATA}}
    record = build_record(STEM, "benchmarks/cuda_paths.py", args_list, data=data,
                          code_paths=("benchmarks/cuda_paths.py", "pinlite_edge", "runtimes", "training"))
    result: dict[str, Any] = {"nvidia_smi": nvidia_smi(), "ort_providers": onnxruntime_providers(), "steps": {}}
    if args.notes:
        result["notes"] = args.notes.read_text()

    def save() -> None:
        json_path, md_path = write_result(record, result, markdown(result) + (result.get("notes") or ""),
                                          args.out_dir)
        log.info("wrote %s, %s", json_path, md_path)

    bench = [py, "-m", "pinlite_edge.bench", "--artifacts", str(args.artifacts), "--no-plots",
             *(["--no-e2e"] if args.no_e2e else [])]
    steps: list[tuple[str, list[str], float]] = [
        ("gpu-tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda_gpu.py", "-rs"], 300),
        ("bench-torch-cuda", [*bench, "--runtime", "torch", "--device", "cuda", "--out", str(work / "b1")], 300),
        ("bench-torch-cuda-b32", [*bench, "--runtime", "torch", "--device", "cuda", "--batch", "32",
                                  "--out", str(work / "b32")], 300),
        ("bench-ort-cuda", [*bench, "--runtime", "ort", "--device", "cuda", "--out", str(work / "ort")], 300),
        ("bench-trt", [py, "-m", "pinlite_edge.bench", "--runtime", "trt", "--artifacts", str(args.artifacts),
                       "--out", str(work / "trt")], 120),
    ]
    for preset in [s for s in args.presets.split(",") if s]:
        for amp in (True, False):
            name = f"train-{preset}-{'amp' if amp else 'fp32'}"
            out = work / name
            cmd = [py, "-m", "pinlite_edge.training", "teacher", "--data", "synthetic", "--preset", preset,
                   "--epochs", str(args.epochs), "--batch-size", "32", "--device", "cuda", "--seed", "0",
                   "--output", str(out), "--no-progress", "--cache-dir", str(work / "cache"), "--in-memory", "yes",
                   *[a for k, v in TRAIN_DATA.items() for a in ("--data-option", f"{k}={v}")]]
            steps.append((name, cmd + ([] if amp else ["--no-amp"]), 600))
    for name, cmd, timeout_s in steps:
        if name in skip:
            continue
        step = run_step(name, cmd, timeout_s, REPO_ROOT)
        out_dir = Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd else None
        if out_dir is not None:
            step["bench"] = bench_rows(out_dir)
        if name.startswith("train-"):
            step["training"] = training_summary(Path(cmd[cmd.index("--output") + 1]))
        result["steps"][name] = step
        save()
    if "amp-steps" not in skip:
        t0 = time.perf_counter()
        try:
            result["amp_steps"] = amp_step_probe([s for s in args.presets.split(",") if s],
                                                 [int(b) for b in args.amp_batches.split(",") if b])
        except Exception as exc:  # noqa: BLE001 - recorded: the steps before it are kept either way
            result["amp_steps_error"] = f"{type(exc).__name__}: {exc}"
            log.exception("amp-steps failed")
        result["steps"]["amp-steps"] = {"command": "in-process (amp_step_probe)",
                                        "exit_code": 0 if "amp_steps" in result else 1,
                                        "seconds": round(time.perf_counter() - t0, 2), "output_tail": ""}
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
