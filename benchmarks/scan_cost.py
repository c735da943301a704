"""What the offset scan costs in model time, with and without frame sharing, on every CPU artefact of a workspace.

The scan scores each window against its audio at 7 shifts (``pinlite_edge.offset_scan``). Its model calls carry one
frames row per window and 7 mfcc rows; an artefact that shares frames (``runtimes.base``, "Frame sharing") encodes
each window's frames once, any other gets them repeated 7 times. For each artefact this times, in turns on the same
batch of windows (one thread, each turn one untimed call then ``--block`` timed ones):

- ``no scan``: one mfcc row per window (``Detector(scan_offsets=None)``);
- ``scan, frames repeated``: 7 mfcc rows per window, the runner made to repeat the frames (how every artefact scanned
  before frame sharing, and how a ``.pte`` or TensorRT engine still does);
- ``scan, frames shared``: the same inputs on the artefact as it is, when it shares frames.

The inputs are seeded random arrays of the artefact's contract: the model's time does not depend on their values.

    python benchmarks/scan_cost.py [--workspace pinlite-workspace] [--windows 8] [--iters 30]

Writes ``benchmarks/results/scan_cost/<machine>.{json,md}`` through ``benchmarks/_record.py``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._record import build_record, fingerprint_files, parse_cli, report_parser, write_result  # noqa: E402

BENCH = "scan_cost"
#: workspace-relative artefacts timed when present: label, path
ARTEFACTS = (("torch FP32 (checkpoint)", "pruned/best.safetensors"),
             ("ONNX FP32", "exports/onnx/pinlite-student.onnx"),
             ("ONNX INT8", "exports/onnx-int8/pinlite-student.int8.onnx"),
             ("ExecuTorch FP32", "exports/pte/pinlite-student.pte"),
             ("ExecuTorch INT8", "exports/pte-int8/pinlite-student.int8.pte"))
MODES = ("no scan", "scan, frames repeated", "scan, frames shared")


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def time_modes(runner: Any, windows: int, shifts: int, iters: int, block: int, seed: int = 0) -> dict[str, Any]:
    """Median seconds per call of each mode (:data:`MODES`) on one active runner, measured in turns."""
    c = runner.contract
    rng = np.random.default_rng(seed)
    frames = rng.standard_normal(c.frames_shape(windows)).astype(np.float32)
    mfcc = rng.standard_normal(c.mfcc_shape(windows * shifts)).astype(np.float32)
    own = runner.shares_frames
    calls = {"no scan": (frames, mfcc[::shifts], own), "scan, frames repeated": (frames, mfcc, False)}
    if own:
        calls["scan, frames shared"] = (frames, mfcc, True)
    times: dict[str, list[float]] = {m: [] for m in calls}
    try:
        while min(len(t) for t in times.values()) < iters:
            for mode, (f, m, share) in calls.items():
                runner.shares_frames = share
                runner.infer(f, m)  # untimed: the caches hold this mode's data
                for _ in range(block):
                    start = time.perf_counter()
                    runner.infer(f, m)
                    times[mode].append(time.perf_counter() - start)
    finally:
        runner.shares_frames = own
    med = {m: float(np.median(t)) for m, t in times.items()}
    return {"shares_frames": own, "calls": {m: len(t) for m, t in times.items()},
            "median_s_per_call": med, "median_ms_per_window": {m: 1e3 * v / windows for m, v in med.items()},
            "vs_no_scan": {m: v / med["no scan"] for m, v in med.items()}}


def markdown(rows: list[dict[str, Any]], windows: int, shifts: int, notes: str | None) -> str:
    lines = [f"# What the offset scan costs in model time ({windows} windows per call, {shifts} audio shifts, "
             "1 thread)", "",
             "Median ms per window; in brackets, the ratio to no scan measured in the same run.", "",
             "| artefact | shares frames | " + " | ".join(MODES) + " |", "|---|---|" + "---|" * len(MODES)]
    for r in rows:
        cells = []
        for m in MODES:
            ms = r["median_ms_per_window"].get(m)
            cells.append("n/a (the artefact repeats frames)" if ms is None else f"{ms:.2f} ({r['vs_no_scan'][m]:.2f}x)")
        lines.append(f"| {r['label']} | {'yes' if r['shares_frames'] else 'no'} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = report_parser(__doc__ or "")
    p.add_argument("--workspace", type=Path, default=REPO / "pinlite-workspace")
    p.add_argument("--windows", type=int, default=8, help="windows per call (Detector's default batch_size: 8)")
    p.add_argument("--iters", type=int, default=30, help="timed calls per mode")
    p.add_argument("--block", type=int, default=3, help="timed calls per turn")
    argv_list, args = parse_cli(p, argv)
    from pinlite_edge.offset_scan import DEFAULT_SCAN_OFFSETS
    from pinlite_edge.runtimes import load_runner

    shifts = len(DEFAULT_SCAN_OFFSETS)
    found = [(label, args.workspace / rel) for label, rel in ARTEFACTS if (args.workspace / rel).is_file()]
    if not found:
        p.error(f"no artefact of {[rel for _, rel in ARTEFACTS]} in {args.workspace}: build it with "
                "python -m pinlite_edge.quickstart")
    rows = []
    for label, path in found:
        _say(f"{label}: {path}")
        with load_runner(path, threads=1) as runner:
            rows.append({"label": label, "artefact": str(path.relative_to(args.workspace)),
                         **time_modes(runner, args.windows, shifts, args.iters, args.block)})
        _say(f"  {rows[-1]['median_ms_per_window']}")
    record = build_record(BENCH, "benchmarks/scan_cost.py", argv_list,
                          data={"fingerprint": fingerprint_files([p for _, p in found]),
                                "artefacts": [r["artefact"] for r in rows],
                                "inputs": f"seeded random arrays, {args.windows} windows x {shifts} shifts"},
                          code_paths=["benchmarks/scan_cost.py", "runtimes", "pinlite_edge/models"])
    notes = args.notes.read_text() if args.notes else None
    json_path, md_path = write_result(record, {"windows": args.windows, "shifts": shifts, "rows": rows},
                                      markdown(rows, args.windows, shifts, notes), args.out_dir)
    _say(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
