"""Full comparison on the current machine -> ``benchmarks/results/run_benchmarks/<machine>.{json,md}`` (with the
run's record, ``benchmarks/_record.py``) and its figures in ``benchmarks/results/run_benchmarks/<machine>/``.

Two parts:

* **Speed, paper presets** (SPEC §2 sizes, random weights: weights do not change speed): teacher torch FP32;
  student torch FP32, ORT FP32 / FP16 / INT8, ExecuTorch FP32 / INT8; the pruned student (4 -> 2 heads per layer,
  physically removed) torch FP32 and ORT FP32 / INT8. All runners are timed in turns on the same batch-1 input
  (and optionally a larger batch): each turn gives a runner ``--turn-warmup`` untimed calls (its weights back in
  cache, as when it runs alone on a device) and ``--block`` timed ones, so that load from other processes spreads
  evenly over the runners; medians reported.
* **Accuracy / EPS, quickstart models** (tiny preset, trained on synthetic data): every checkpoint and export in the
  workspace through the bench, with EPS against the FP32 teacher and against each artefact's FP32 source.

Checks reported (measured truth, whatever it is): paper student ORT FP32 batch-1 median >= 20x lower than the
teacher torch FP32; student ORT INT8 faster than student ORT FP32.

    python benchmarks/run_benchmarks.py [--workspace pinlite-workspace] [--iters 30] [--threads 1]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("run_benchmarks")


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- part 1: paper-preset speed -----------------------------------------------------------------------------------
def paper_checkpoints(art_dir: Path, seed: int) -> dict[str, Path]:
    """Random-weight paper teacher, student and pruned student (2 of 4 heads per layer removed) as checkpoints."""
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.models import create_student, create_teacher

    out = {}
    for name in ("teacher", "student", "pruned"):
        path = art_dir / name / "best.safetensors"
        out[name] = path
        if path.is_file():
            continue
        torch.manual_seed(seed)
        if name == "teacher":
            model = create_teacher("paper", pretrained=False)
        else:
            model = create_student("paper", pretrained=False)
            if name == "pruned":
                heads = {i: [int(h) for h in imp.argsort()[:2]] for i, imp in enumerate(model.head_importance())}
                model.prune_heads(heads)
        save_checkpoint(path, model.eval(), {"note": "random weights, for speed measurements only"})
    return out


def paper_exports(ckpts: dict[str, Path], art_dir: Path, with_pte: bool, with_dynamo: bool,
                  notes: list[str]) -> dict[str, Path]:
    quick = {"calib_size": 16, "sensitivity": False}  # speed only: a small calibration set is enough
    plan = [("student", "onnx", {}), ("student", "onnx-fp16", quick), ("student", "onnx-int8", quick),
            ("pruned", "onnx", {}), ("pruned", "onnx-int8", quick)]
    if with_dynamo:
        plan.append(("student", "onnx", {"exporter": "dynamo", "name": "pinlite-student-dynamo"}))
    if with_pte:
        plan += [("student", "pte", {}), ("student", "pte-int8", quick)]
    out: dict[str, Path] = {}
    for model, fmt, opts in plan:
        key = f"{model}:{fmt}" + (":dynamo" if opts.get("exporter") == "dynamo" else "")
        folder = art_dir / model / fmt.replace("-", "_") / ("dynamo" if opts.get("exporter") == "dynamo" else "")
        if (artifact := export_once(ckpts[model], fmt, folder, f"paper {model}", notes, **opts)) is not None:
            out[key] = artifact
    return out


def export_once(checkpoint: Path, fmt: str, folder: Path, label: str, notes: list[str], **opts: Any) -> Path | None:
    """The artefact already exported into ``folder`` (one with a manifest), else a fresh export; a failed export is
    noted (``notes``) and gives ``None``."""
    from pinlite_edge.errors import PinliteError
    from pinlite_edge.export import export_model
    from pinlite_edge.manifest import manifest_path_for

    existing = [p for p in folder.glob("*") if manifest_path_for(p).is_file()] if folder.is_dir() else []
    if existing:
        return existing[0]
    _say(f"exporting {label} -> {fmt} {opts or ''}")
    t0 = time.perf_counter()
    try:
        artifact = export_model(checkpoint, fmt, folder, **opts).artifact
    except PinliteError as exc:
        notes.append(f"export of {label} {fmt} failed: {exc}")
        _say(f"  FAILED: {exc}")
        return None
    _say(f"  done in {time.perf_counter() - t0:.0f} s")
    return artifact


def speed_part(args: argparse.Namespace, notes: list[str]) -> dict[str, Any]:
    from pinlite_edge.bench.modelstats import params_and_flops
    from pinlite_edge.bench.timing import measure_interleaved
    from pinlite_edge.contract import PAPER_CONTRACT
    from pinlite_edge.runtimes import inspect_artifact, load_runner

    art_dir = args.artifact_dir
    ckpts = paper_checkpoints(art_dir, args.seed)
    exports = paper_exports(ckpts, art_dir, not args.no_executorch, args.dynamo, notes)
    entries = [("teacher torch FP32", ckpts["teacher"]), ("student torch FP32", ckpts["student"]),
               ("pruned torch FP32", ckpts["pruned"])]
    labels = {"student:onnx": "student ORT FP32", "student:onnx:dynamo": "student ORT FP32 (dynamo export)",
              "student:onnx-fp16": "student ORT FP16", "student:onnx-int8": "student ORT INT8",
              "pruned:onnx": "pruned ORT FP32", "pruned:onnx-int8": "pruned ORT INT8",
              "student:pte": "student ExecuTorch FP32", "student:pte-int8": "student ExecuTorch INT8"}
    entries += [(labels[k], p) for k, p in exports.items()]
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        frames = rng.standard_normal((batch, *PAPER_CONTRACT.frames_shape())).astype(np.float32)
        mfcc = rng.standard_normal((batch, *PAPER_CONTRACT.mfcc_shape())).astype(np.float32)
        runners = [load_runner(p, threads=args.threads) for _, p in entries]
        active = []
        try:
            for r in runners:
                r.activate()
                active.append(r)
            _say(f"timing {len(runners)} paper-preset runners in turns ({args.turn_warmup} untimed + {args.block} "
                 f"timed calls), batch {batch}: {args.warmup} warm-up + {args.iters} calls each")
            timings = measure_interleaved(runners, frames, mfcc, warmup=args.warmup, iters=args.iters,
                                          block=args.block, turn_warmup=args.turn_warmup)
        finally:
            for r in active:
                r.deactivate()
        for (label, path), r, t in zip(entries, runners, timings):
            spec = inspect_artifact(path)
            cfg = spec.manifest.model_config if spec.manifest else spec.record["model_config"]
            params, flops = params_and_flops(cfg)
            rows.append({"model": label, "backend": spec.backend, "precision": spec.precision, "batch": batch,
                         "artifact": str(path), "artifact_size_bytes": path.stat().st_size, "params": params,
                         "flops": flops, "heads_per_layer": cfg["heads_per_layer"], **t.to_dict(),
                         "peak_rss_bytes": r.peak_rss_bytes})
    return {"threads": args.threads, "block": args.block, "turn_warmup": args.turn_warmup, "rows": rows,
            "checks": speed_checks(rows)}


def speed_checks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    b1 = {r["model"]: r["per_clip"]["median_ms"] for r in rows if r["batch"] == 1}
    checks = []
    t, s = b1.get("teacher torch FP32"), b1.get("student ORT FP32")
    if t and s:
        ratio = t / s
        mins = {r["model"]: r["per_clip"].get("min_ms") for r in rows if r["batch"] == 1}
        ratio_min = (mins["teacher torch FP32"] / mins["student ORT FP32"]
                     if mins.get("teacher torch FP32") and mins.get("student ORT FP32") else None)
        checks.append({"check": "paper student ORT FP32 batch-1 median >= 20x lower than teacher torch FP32",
                       "teacher_ms": t, "student_ms": s, "ratio": ratio,
                       **({"ratio_of_minima": ratio_min} if ratio_min else {}), "passed": ratio >= 20.0})
    i8 = b1.get("student ORT INT8")
    if s and i8:
        checks.append({"check": "student ORT INT8 faster than student ORT FP32 (batch 1 median)",
                       "fp32_ms": s, "int8_ms": i8, "speedup": s / i8, "passed": i8 < s})
    e32, e8 = b1.get("student ExecuTorch FP32"), b1.get("student ExecuTorch INT8")
    if e32 and e8:  # not an issue target: the same question asked of the other CPU runtime
        checks.append({"check": "(extra) student ExecuTorch INT8 faster than student ExecuTorch FP32 (batch 1 median)",
                       "fp32_ms": e32, "int8_ms": e8, "speedup": e32 / e8, "passed": e8 < e32})
    return checks


# --- part 2: quickstart accuracy / EPS ---------------------------------------------------------------------------
def accuracy_part(args: argparse.Namespace, out_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    from pinlite_edge.bench import BenchConfig, run_bench
    from pinlite_edge.bench.plots import write_plots
    from pinlite_edge.bench.workspace import artefacts_in, is_workspace, stage_checkpoint

    ws = args.workspace
    if not is_workspace(ws):
        notes.append(f"no quickstart workspace at {ws}: accuracy/EPS part skipped "
                     "(python -m pinlite_edge.quickstart builds it)")
        return None
    students = {s: p for s in ("distilled", "pruned") if (p := stage_checkpoint(ws, s))}
    compare = list(students.values()) + artefacts_in(ws / "exports")
    compare += quickstart_exports(students, args, notes)
    compare = [p for p in compare if p.suffix != ".engine"]  # TensorRT engines need their GPU
    if not compare:
        notes.append(f"workspace {ws} has no student checkpoint or export: accuracy part skipped")
        return None
    _say(f"accuracy/EPS on the quickstart models: {[p.name for p in compare]}")
    cfg = BenchConfig(compare=compare, artifacts=ws, limit=args.limit, warmup=args.warmup, iters=args.iters,
                      block=args.block, turn_warmup=args.turn_warmup, threads=args.threads, time_teacher=True,
                      out=out_dir, eval_batch=8)
    result = run_bench(cfg, progress=_say)
    data = result.to_dict()
    write_plots(data, result.attention_samples, out_dir)
    return data


def quickstart_exports(students: dict[str, Path], args: argparse.Namespace, notes: list[str]) -> list[Path]:
    """Every CPU format of the quickstart's distilled and pruned students (exporter defaults: these are judged on
    accuracy and EPS), kept under ``--artifact-dir`` keyed by the checkpoint's hash."""
    from pinlite_edge.utils.hashing import sha256_file

    formats = ["onnx", "onnx-fp16", "onnx-int8"] + ([] if args.no_executorch else ["pte", "pte-int8"])
    out: list[Path] = []
    for stage, ckpt in students.items():
        root = args.artifact_dir / f"quickstart-{stage}-{sha256_file(ckpt)[:12]}"
        for fmt in formats:
            opts = {"calib_size": args.calib_size} if fmt not in ("onnx", "pte") else {}
            artifact = export_once(ckpt, fmt, root / fmt, f"quickstart {stage}", notes, name=f"pinlite-{stage}", **opts)
            if artifact is not None:
                out.append(artifact)
    return out


BENCH = "run_benchmarks"


# --- report -------------------------------------------------------------------------------------------------------
def markdown(doc: dict[str, Any], record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [f"# Benchmarks: {record['machine_slug']}", "",
             f"- CPU: {m.get('cpu_model')} ({m.get('usable_cores')} usable cores, flags "
             f"{', '.join(m.get('cpu_flags', [])) or '—'}), {m.get('memory_gb')} GB RAM"
             + (f"; GPU {m['gpu']['name']}" if m.get("gpu") else "; no GPU"),
             f"- OS {m.get('os')}, Python {m.get('python')}; " + ", ".join(f"{k} {v}" for k, v in
                                                                         record["versions"].items() if k != "python"),
             "- This machine can be shared with other jobs (see the load averages); runners are timed in turns "
             "so any competition spreads over all of them, but absolute numbers are noisy.",
             f"- This report was written {doc['started']}.", ""]
    speed = doc.get("speed")
    if speed:
        run = speed.get("run", {})
        lines += [f"## Speed, paper presets (random weights), {speed['threads'] or 'default'} thread(s)", "",
                  f"Measured {run.get('started')}, load average {run.get('load_start')} at start / "
                  f"{run.get('load_end')} at end on {m.get('usable_cores')} cores"
                  + (" (other jobs were running)." if max(run.get("load_start") or 0, run.get("load_end") or 0)
                     > 1.5 else " (about this process alone)."),
                  "Host end-to-end latency per clip (ms), after warm-up; "
                  + (f"runners timed in turns of {speed['turn_warmup']} untimed + {speed['block']} timed calls "
                     "(each runner warm, as alone on a device; any load spread over all)"
                     if "block" in speed else "runners timed round-robin, one call each per turn")
                  + "; the checks use medians.", "",
                  "| model | batch | size MB | params M | GFLOPs | min | median | p90 | p99 | clips/s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in speed["rows"]:
            c = r["per_clip"]
            lines.append(f"| {r['model']} | {r['batch']} | {r['artifact_size_bytes'] / 1e6:.2f} | "
                         f"{r['params'] / 1e6:.3f} | {r['flops'] / 1e9:.3f} | {c['min_ms']:.1f} | "
                         f"{c['median_ms']:.1f} | {c['p90_ms']:.1f} | {c['p99_ms']:.1f} | "
                         f"{r['throughput_clips_per_s']:.1f} |")
        lines += ["", "### Checks", ""]
        for ch in speed["checks"]:
            detail = ", ".join(f"{k} {v:.2f}" for k, v in ch.items() if isinstance(v, float))
            lines.append(f"- {'PASS' if ch['passed'] else 'FAIL'}: {ch['check']} ({detail})")
    acc = doc.get("accuracy")
    if acc:
        from pinlite_edge.bench.report import markdown as bench_md

        body = bench_md(acc, title="x").split("\n", 2)[2]
        lines += ["", "## Accuracy and EPS, quickstart models (tiny preset, synthetic test split)", "", body]
    if doc["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


def _previous(path: Path) -> dict[str, Any]:
    """The last results of this machine, so that a run of one part keeps the other part."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", type=Path, default=Path("pinlite-workspace"))
    p.add_argument("--out", type=Path, default=None,
                   help="results root (default benchmarks/results): writes OUT/run_benchmarks/<machine>.*")
    p.add_argument("--artifact-dir", type=Path, default=Path(tempfile.gettempdir()) / "pinlite-bench-paper",
                   help="where the paper-preset checkpoints/exports are kept between runs")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--block", type=int, default=5, help="timed calls per runner per turn")
    p.add_argument("--turn-warmup", type=int, default=1, help="untimed calls at the start of each runner's turn")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--limit", type=int, default=None, help="clips of the accuracy part (default: whole test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib-size", type=int, default=256,
                   help="calibration clips of the quickstart models' FP16/INT8 exports (exporter default 256)")
    p.add_argument("--no-executorch", action="store_true")
    p.add_argument("--dynamo", action="store_true", help="also time an ONNX export made with the dynamo exporter")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(REPO))
    from benchmarks._record import RESULTS_DIR, build_record, fingerprint_json, result_paths, write_result
    from pinlite_edge.bench.machine import machine_slug

    t0 = time.time()
    out_root = args.out or RESULTS_DIR
    slug = machine_slug()
    notes: list[str] = []
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "load_start": round(os.getloadavg()[0], 2), "notes": notes,
                           "settings": {k: str(v) for k, v in vars(args).items()}}
    previous = _previous(result_paths(BENCH, slug, out_root)[0])
    if not args.skip_speed:
        t_speed = time.time()
        doc["speed"] = speed_part(args, notes)
        doc["speed"]["run"] = {"started": doc["started"], "load_start": doc["load_start"],
                               "load_end": round(os.getloadavg()[0], 2), "wall_s": round(time.time() - t_speed)}
    elif previous.get("speed"):
        doc["speed"] = previous["speed"]
        doc["speed"].setdefault("run", {k: previous.get(k) for k in ("started", "load_start", "load_end", "wall_s")})
        doc["speed"]["checks"] = speed_checks(doc["speed"]["rows"])
        run = doc["speed"]["run"]
        notes.append(f"speed part carried over from the run started {run['started']} (load average "
                     f"{run['load_start']} / {run['load_end']}; command "
                     f"`{previous.get('record', {}).get('command', 'not recorded')}`)")
    if not args.skip_accuracy:
        doc["accuracy_run"] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "workspace": str(args.workspace)}
        doc["accuracy"] = accuracy_part(args, out_root / BENCH / slug, notes)
    elif previous.get("accuracy"):
        doc["accuracy"] = previous["accuracy"]
        doc["accuracy_run"] = previous.get("accuracy_run", {"started": previous.get("started")})
        notes.append(f"accuracy part carried over from the run started {doc['accuracy_run']['started']} (command "
                     f"`{previous.get('record', {}).get('command', 'not recorded')}`)")
    else:
        notes.append("accuracy/EPS part not run: no trained quickstart workspace was available; run "
                     "`python benchmarks/run_benchmarks.py --skip-speed --workspace PATH` to add it "
                     "(the speed part is kept)")
    doc["load_end"] = round(os.getloadavg()[0], 2)
    doc["wall_s"] = time.time() - t0
    accuracy_data = (doc.get("accuracy") or {}).get("data")
    speed_inputs = {"inputs": "random, paper contract", "seed": args.seed}
    record = build_record(BENCH, "benchmarks/run_benchmarks.py", argv, data={
        "speed_inputs": speed_inputs, "accuracy": accuracy_data,
        "fingerprint": fingerprint_json([speed_inputs, accuracy_data and accuracy_data.get("fingerprint")]),
        "fingerprint_of": "the speed part's input settings and the accuracy part's evaluation-data fingerprint"})
    json_path, md_path = write_result(record, doc, markdown(doc, record), results_dir=out_root)
    print(markdown(doc, record))
    _say(f"wrote {json_path} and {md_path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
