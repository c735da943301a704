"""Export quality: accuracy, quantization EPS, size and ORT latency of every CPU export format of one checkpoint.

    python benchmarks/export_quality.py --checkpoint CKPT --eval-data synthetic --eval-size 200 \
        [--formats onnx,onnx-fp16,onnx-int8,onnx-int8-qop,pte,pte-int8] [--paper-sizes]

Writes ``benchmarks/results/<stem>/<machine>.{json,md}`` with the run's record (``benchmarks/_record.py``;
``--out`` is the results root, ``--stem`` the folder: ``export_quality`` by default, e.g. ``export_quality_paper`` for a
paper-preset checkpoint so the tiny-preset record is kept). ``--eval-option num_test=400`` sizes the synthetic test
split (200 clips by default; ``--eval-size`` alone cannot go beyond the split). EPS here is the *quantization EPS*: the
attention of each artefact against the attention of the FP32 torch model it was exported from (SPEC §4).

Every artefact (and the FP32 torch reference) is run through ``pinlite_edge.runtimes.load_runner`` with one thread:
the figures are those of what users run (input checks, batch splitting of a batch-1 ``.pte`` included).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import RESULTS_DIR, build_record, fingerprint_arrays, write_result  # noqa: E402
from pinlite_edge.checkpoint import load_checkpoint
from pinlite_edge.errors import ExportError
from pinlite_edge.export import export_from_model, load_calibration
from pinlite_edge.metrics import explainability_preservation_score
from pinlite_edge.runtimes import BaseRunner, load_runner
from pinlite_edge.runtimes.torch import TorchRunner
from pinlite_edge.utils.cli import key_value

VARIANTS = {
    "onnx": ("onnx", {}),
    "onnx-dynamo": ("onnx", {"exporter": "dynamo"}),
    "onnx-fp16": ("onnx-fp16", {}),
    "onnx-int8": ("onnx-int8", {}),  # default: weight_only="float" (float layers store int8 weights, compute FP32)
    "onnx-int8-wo-none": ("onnx-int8", {"weight_only": "none"}),  # float layers keep FP32 weights
    "onnx-int8-wo-gru": ("onnx-int8", {"weight_only": "gru"}),
    "onnx-int8-keep4": ("onnx-int8", {"keep_float": 4}),
    "onnx-int8-qop": ("onnx-int8", {"quant_format": "qoperator"}),
    "onnx-int8-speed-none": ("onnx-int8", {"speed_float": "none"}),  # no CPU speed plan: every conv the SPEC allows
    "onnx-int8-act-int8": ("onnx-int8", {"activation_type": "int8"}),  # activations stored int8 (zero point 0)
    "onnx-int8-full-range": ("onnx-int8", {"reduce_range": False}),  # 8-bit weights (VNNI targets only)
    "pte": ("pte", {}),
    "pte-int8": ("pte-int8", {}),
}
#: The done-when of the export work (SPEC §6 targets for the INT8 artefacts).
TARGETS = {"accuracy_drop_max": 0.01, "quant_eps_min": 0.9, "int8_onnx_size_ratio_max": 0.35}


def activate(path: Path) -> BaseRunner:
    """The artefact's runner (from its manifest), active, one thread: what users run."""
    return load_runner(path, threads=1).activate()


def evaluate(runner: BaseRunner, frames, mfcc, batch: int = 25) -> tuple[np.ndarray, np.ndarray]:
    logits, attn = [], []
    for i in range(0, len(frames), batch):
        out = runner.infer(frames[i:i + batch], mfcc[i:i + batch])
        logits.append(out["logits"])
        attn.append(out["attention"])
    return np.concatenate(logits), np.concatenate(attn)


def latency_ms(runner: BaseRunner, frames, mfcc, reps: int = 30) -> dict:
    """Batch-1 ``runner.infer`` wall time (``last_inference_time_s``: the backend call and the runner's checks)."""
    f, m = frames[:1], mfcc[:1]
    for _ in range(3):
        runner.infer(f, m)
    ts = []
    for _ in range(reps):
        runner.infer(f, m)
        ts.append(runner.last_inference_time_s * 1e3)
    return {"min": float(np.min(ts)), "median": float(np.median(ts))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--eval-data", default="synthetic")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--eval-size", type=int, default=200)
    p.add_argument("--calib-size", type=int, default=256)
    p.add_argument("--formats", default="onnx,onnx-fp16,onnx-int8,onnx-int8-wo-none,onnx-int8-keep4,onnx-int8-qop,"
                                        "pte,pte-int8")
    p.add_argument("--note", default="", help="what the checkpoint is (training, provenance): written to the results")
    p.add_argument("--paper-sizes", action="store_true", help="also export a random-init paper student (sizes, speed)")
    p.add_argument("--eval-option", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="option of the evaluation dataset (repeatable; values parsed as JSON when possible), e.g. "
                        "num_test=400 for 400 synthetic test clips")
    p.add_argument("--out", default=str(RESULTS_DIR), help="results root: writes OUT/STEM/<machine>.*")
    p.add_argument("--stem", default="export_quality", type=_parse_stem,
                   help="results folder under --out and the record's bench name (default: export_quality); e.g. "
                        "export_quality_paper for a paper-preset checkpoint")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, _ = load_checkpoint(args.checkpoint)
    contract = model.config.contract
    ev = load_calibration(args.eval_data, contract, args.eval_size, args.eval_split,
                          options=dict(args.eval_option) or None)
    if len(ev) < args.eval_size:
        print(f"evaluation set has {len(ev)} clips, fewer than --eval-size {args.eval_size} (the split is smaller; "
              f"for synthetic data pass --eval-option num_{args.eval_split}={args.eval_size})", file=sys.stderr)
    labels = ev.labels
    with TorchRunner.from_model(model, name=args.checkpoint, threads=1) as reference:
        ref_logits, ref_attn = evaluate(reference, ev.frames, ev.mfcc)
    ref_acc = float((ref_logits.argmax(1) == labels).mean())
    rows = [{"variant": "torch-fp32", "accuracy": ref_acc, "agreement_with_fp32": 1.0, "eps_vs_fp32": 1.0}]
    record = build_record(args.stem, "benchmarks/export_quality.py", argv, code_paths=CODE_PATHS,
                          data={**ev.describe(), "fingerprint": fingerprint_arrays(ev.frames, ev.mfcc, labels),
                                "fingerprint_of": "the evaluation clips' frames, MFCCs and labels"})
    results = {"load_average_1m_at_start": os.getloadavg()[0], "checkpoint": args.checkpoint,
        "preset": model.config.preset, "note": args.note,
        "eval": {**ev.describe(), "options": dict(args.eval_option)},
        "code": {"commit": record["git"]["commit"], "uncommitted_changes": record["git"].get("code_changed")},
        "rows": rows}
    tmp = Path(tempfile.mkdtemp(prefix="export-quality-"))
    sizes = {}
    for variant in [v for v in args.formats.split(",") if v]:
        fmt, opts = VARIANTS[variant]
        if fmt not in ("onnx", "pte"):
            opts = {"calib_size": args.calib_size, **opts}
        t = time.perf_counter()
        res = export_from_model(model, fmt, tmp / variant, source_checkpoint=args.checkpoint, **opts)
        export_s = time.perf_counter() - t
        runner = activate(res.artifact)  # a batch-1 .pte is split into batch-1 calls by the runner
        logits, attn = evaluate(runner, ev.frames, ev.mfcc)
        eps = explainability_preservation_score(ref_attn, attn)
        size = res.artifact.stat().st_size
        sizes[variant] = size
        row = {"variant": variant, "format": fmt, "options": opts, "bytes": size,
               "accuracy": float((logits.argmax(1) == labels).mean()),
               "agreement_with_fp32": float((logits.argmax(1) == ref_logits.argmax(1)).mean()),
               "logits_max_abs_vs_fp32": float(np.abs(logits - ref_logits).max()),
               "eps_vs_fp32": eps.mean, "eps_std": eps.std, "runner": runner.name,
               "latency_ms_b1": latency_ms(runner, ev.frames, ev.mfcc),
               "export_s": round(export_s, 1),
               "float_layers": [e.module for e in res.plan.float_layers] if res.plan else [],
               "delegation": {k: v for k, v in res.extra.get("delegation", {}).items() if k != "by_operator"}}
        runner.deactivate()
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("float_layers", "delegation")}), flush=True)
    for ref, prefix, key in (("onnx", "onnx", "size_vs_fp32_onnx"), ("pte", "pte", "size_vs_fp32_pte")):
        if ref in sizes:
            for row in rows:
                if "bytes" in row and row["format"].startswith(prefix):
                    row[key] = row["bytes"] / sizes[ref]
    results["done_when"] = done_when(rows)
    if args.paper_sizes:
        results["paper_student"] = paper_sizes(tmp / "paper", args.calib_size)
    json_path, md_path = write_result(record, results, markdown(results), results_dir=args.out)
    print(f"wrote {json_path} and {md_path}")


#: the code this benchmark measures: the record lists uncommitted changes among them (``git.code_changed``)
CODE_PATHS = ("benchmarks/export_quality.py", "benchmarks/_record.py", "export/", "runtimes/", "pinlite_edge/")


def _parse_stem(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"--stem must be a plain folder name (letters, digits, _ . -), not {text!r}")
    return text


def done_when(rows: list[dict]) -> dict:
    """Check the INT8 rows against :data:`TARGETS` (accuracy vs the FP32 artefact of the same runtime)."""
    by = {r["variant"]: r for r in rows}
    out: dict = {"targets": TARGETS}
    for variant, ref in (("onnx-int8", "onnx"), ("pte-int8", "pte")):
        if variant not in by:
            continue
        r, fp = by[variant], by.get(ref, by["torch-fp32"])
        drop = fp["accuracy"] - r["accuracy"]
        out[variant] = {"accuracy_drop_vs_" + fp["variant"]: drop,
                        "accuracy_ok": drop <= TARGETS["accuracy_drop_max"],
                        "quant_eps": r["eps_vs_fp32"], "eps_ok": r["eps_vs_fp32"] >= TARGETS["quant_eps_min"]}
        if variant == "onnx-int8" and "size_vs_fp32_onnx" in r:
            out[variant]["size_ratio"] = r["size_vs_fp32_onnx"]
            out[variant]["size_ok"] = r["size_vs_fp32_onnx"] <= TARGETS["int8_onnx_size_ratio_max"]
    return out


def paper_sizes(tmp: Path, calib_size: int) -> dict:
    """Random-init paper student (sizes and ORT speed only; accuracy needs trained weights)."""
    from pinlite_edge.models import create_student, create_teacher

    model = create_student("paper", pretrained=False).eval()
    cal = load_calibration("synthetic", model.config.contract, min(calib_size, 64), "train")
    out = {"note": "random init; sizes and speed only", "calib_size": len(cal)}
    runs = {}
    for variant, (fmt, opts) in {v: VARIANTS[v] for v in ("onnx", "onnx-int8", "onnx-int8-wo-none",
                                                         "onnx-int8-qop")}.items():
        if fmt != "onnx":
            opts = {"calib_size": len(cal), "sensitivity": False, **opts}
        try:
            res = export_from_model(model, fmt, tmp / variant, calibration=cal if fmt != "onnx" else None, **opts)
        except ExportError as exc:  # recorded, not hidden: the table says which variant failed and why
            out[variant] = {"error": str(exc)}
            print(f"paper {variant}: {exc}", flush=True)
            continue
        runs[variant] = activate(res.artifact)
        out[variant] = {"bytes": res.artifact.stat().st_size}
    for r in range(2):  # interleave to share the machine's noise
        for variant, runner in runs.items():
            lat = latency_ms(runner, cal.frames, cal.mfcc, reps=15)
            prev = out[variant].get("latency_ms_b1")
            out[variant]["latency_ms_b1"] = lat if prev is None or lat["median"] < prev["median"] else prev
    for runner in runs.values():
        runner.deactivate()
    for variant in out:
        if isinstance(out[variant], dict) and "bytes" in out[variant]:
            out[variant]["size_vs_fp32_onnx"] = out[variant]["bytes"] / out["onnx"]["bytes"]
    teacher = create_teacher("paper", pretrained=False).eval()
    with TorchRunner.from_model(teacher, name="paper-teacher", threads=1) as runner:
        out["teacher_torch_fp32_eager_ms_b1"] = latency_ms(runner, cal.frames, cal.mfcc, reps=5)
    return out


def _code_line(code: dict | None) -> str:
    if not code:
        return "Code: not recorded."
    changed = code.get("uncommitted_changes")
    state = ("no uncommitted changes" if changed == [] else "uncommitted changes not known" if changed is None
             else "uncommitted changes to " + ", ".join(changed))
    return f"Code measured: commit {str(code.get('commit'))[:12]}, {state} in {', '.join(CODE_PATHS)}."


def markdown(results: dict) -> str:
    lines = [f"# Export quality ({results['preset']} student)", "",
             f"1 inference thread; the machine may be shared (load average "
             f"{results['load_average_1m_at_start']:.1f} at start), so latencies are noisy.", "",
             f"Checkpoint: `{results['checkpoint']}` ({results['preset']} preset). {results.get('note', '')}", "",
             _code_line(results.get("code")), "",
             f"Evaluation: {results['eval']}. Quantization EPS = EPS of the artefact's attention against the FP32 "
             "torch model's attention.", "",
             "| variant | size | vs FP32 (same runtime) | accuracy | agreement w/ FP32 | max logit err | quant. EPS | "
             "ORT/ET ms (b1, median) |", "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        size = f"{r['bytes'] / 1e6:.3f} MB" if "bytes" in r else "-"
        ratio = r.get("size_vs_fp32_onnx", r.get("size_vs_fp32_pte"))
        rel = f"{ratio:.1%}" if ratio is not None else "-"
        lat = f"{r['latency_ms_b1']['median']:.2f}" if "latency_ms_b1" in r else "-"
        err = f"{r['logits_max_abs_vs_fp32']:.4f}" if "logits_max_abs_vs_fp32" in r else "-"
        lines.append(f"| {r['variant']} | {size} | {rel} | {r['accuracy']:.3f} | {r['agreement_with_fp32']:.3f} | "
                     f"{err} | {r['eps_vs_fp32']:.3f} | {lat} |")
    dw = results.get("done_when", {})
    if dw:
        lines += ["", "## Done-when checks", "", f"Targets: {dw['targets']}", ""]
        for k, v in dw.items():
            if k != "targets":
                lines.append(f"- {k}: " + ", ".join(f"{a}={b:.4f}" if isinstance(b, float) else f"{a}={b}"
                                                    for a, b in v.items()))
    if "paper_student" in results:
        ps = results["paper_student"]
        lines += ["", "## Paper-preset student (random init: sizes and speed only)", "",
                  "| variant | size | vs FP32 ONNX | ORT ms (b1, median) |", "|---|---|---|---|"]
        for k, v in ps.items():
            if isinstance(v, dict) and "bytes" in v:
                lines.append(f"| {k} | {v['bytes'] / 1e6:.3f} MB | {v['size_vs_fp32_onnx']:.1%} | "
                             f"{v['latency_ms_b1']['median']:.2f} |")
        for k, v in ps.items():
            if isinstance(v, dict) and "error" in v:
                lines.append(f"| {k} | failed: {v['error'][:160]} | | |")
        t = ps.get("teacher_torch_fp32_eager_ms_b1")
        if t:
            lines.append(f"\nPaper teacher, torch FP32 eager, batch 1: {t['median']:.1f} ms (median).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
