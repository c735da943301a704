"""Peak memory of ``Detector.detect`` against clip length (issue #15: flat within 20% from 10 s to 30 min; no input
file under 10 MB may push memory past 2 GB).

Clips are generated with PyAV at low resolution and bitrate (a square moving over a dark background, H.264; a tone
sweep as 48 kHz stereo AAC, so the resampler and the downmix run), one per length, plus two adversarial files from
the issue: a 720p clip of moving frames, and a Matroska file with 3 s of content and one long timestamp gap; and 1080p
clips at several frame rates (the face track's lookahead is counted in source frames, so memory follows the rate). Each clip
is scored in a fresh subprocess (``Detector.load(model, threads=1, timeout_s=None).detect(clip)``) and its peak
resident set size (``VmHWM`` of /proc/self/status) is read there, beside the RSS after loading the model (what
``detect`` itself adds is the difference).
The model is the tiny student, untrained, exported to ONNX (the memory does not depend on its weights).

    python benchmarks/memory_vs_length.py                     # 1 s, 10 s, 1 min, 5 min, 30 min + adversarial
    python benchmarks/memory_vs_length.py --lengths 1 10 --no-adversarial   # quick
    python benchmarks/memory_vs_length.py --sets frame-rates                 # 1080p at 25 and 240 fps only

Writes ``benchmarks/results/memory_vs_length/<machine>.{json,md}`` (``benchmarks/_record.py``); ``--work`` keeps the
generated clips and model. The machine may be
shared with other work: memory is per process and not affected, times are.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

#: issue #15's targets
FLAT_WITHIN = 0.20
MAX_PEAK_BYTES = 2 * 2**30
SMALL_FILE_BYTES = 10 * 2**20
CODE_PATHS = ("pinlite_edge/features", "pinlite_edge/detector.py", "benchmarks/memory_vs_length.py")
#: the clip sets: one clip per ``--lengths`` value, the 720p clip, the timestamp-gap file, 1080p per ``--frame-rates``
SETS = ("lengths", "hd", "gap", "frame-rates")


# --------------------------------------------------------------------------------------------- clips
def write_clip(path: Path, seconds: float, *, width: int = 128, height: int = 96, fps: int = 25,
               gap_s: float = 0.0) -> Path:
    """``seconds`` of moving frames + a 48 kHz stereo AAC tone sweep. ``gap_s``: the video and audio timestamps
    jump forward by that much after 1.5 s (Matroska; the content itself stays ``seconds`` long)."""
    import av

    fmt = "matroska" if path.suffix == ".mkv" else "mp4"
    rate = 48000
    with av.open(str(path), "w", format=fmt) as c:
        vs = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "35"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.time_base = Fraction(1, 1000)
        ast = c.add_stream("aac", rate=rate, layout="stereo")
        ast.bit_rate = 32000
        ast.time_base = Fraction(1, rate)
        n_frames = int(round(seconds * fps))
        side = max(8, height // 4)
        block = 1024
        next_audio = 0
        total_audio = int(round(seconds * rate))
        for i in range(n_frames):
            t = i / fps
            img = np.full((height, width, 3), 20, np.uint8)
            x = int((width - side) * (0.5 + 0.5 * np.sin(t)))
            y = int((height - side) * (0.5 + 0.5 * np.cos(0.7 * t)))
            img[y:y + side, x:x + side] = 200
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            shift = gap_s if t >= 1.5 else 0.0
            frame.pts, frame.time_base = int(round((t + shift) * 1000)), Fraction(1, 1000)
            c.mux(vs.encode(frame))
            while next_audio < min(total_audio, int((t + 1.0 / fps) * rate)):  # interleave audio with video
                k = min(block, total_audio - next_audio)
                s = np.arange(next_audio, next_audio + k) / rate
                tone = (0.2 * np.sin(2 * np.pi * (200 + 50 * np.sin(0.1 * s)) * s)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(np.stack([tone, tone]).reshape(1, -1).astype(np.float32),
                                                format="flt", layout="stereo")
                af.sample_rate = rate
                ashift = int(round(gap_s * rate)) if next_audio / rate >= 1.5 else 0
                af.pts, af.time_base = next_audio + ashift, Fraction(1, rate)
                c.mux(ast.encode(af))
                next_audio += k
        c.mux(vs.encode())
        c.mux(ast.encode())
    return path


def export_model(folder: Path) -> Path:
    import torch

    from pinlite_edge.checkpoint import save_checkpoint
    from pinlite_edge.export import export_model as export
    from pinlite_edge.models import create_student

    torch.manual_seed(0)
    ckpt = save_checkpoint(folder / "student" / "best.safetensors", create_student("tiny", pretrained=False), {})
    return export(ckpt, "onnx", folder / "onnx", force=True).artifact


# --------------------------------------------------------------------------------------------- one measurement
def _status_bytes(key: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc. Not ``ru_maxrss``: Linux keeps that across
    fork + exec, so a child started by a big parent would report the parent's size."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def child(model: str, clip: str) -> None:
    """Runs in the subprocess: load, detect, print one JSON line."""
    from pinlite_edge.detector import Detector
    from pinlite_edge.errors import PinliteError

    det = Detector.load(model, threads=1, timeout_s=None)  # long clips decode for minutes on a loaded machine
    after_load = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    out: dict[str, Any] = {"rss_after_load": after_load}
    try:
        result = det.detect(clip)
        out.update(windows=len(result.windows), verdict=result.verdict, error=None)
    except PinliteError as exc:
        out.update(windows=0, verdict=None, error=f"{type(exc).__name__}: {exc}")
    out["detect_seconds"] = round(time.perf_counter() - t0, 2)
    out["peak_rss"] = _status_bytes("VmHWM")
    print(json.dumps(out))


def measure(model: Path, clip: Path, timeout_s: float) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(model), str(clip)],
                          capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO_ROOT)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}", "peak_rss": None}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- report
def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f}"


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Peak memory of `Detector.detect` against clip length", "",
             "Each clip scored in a fresh subprocess (`Detector.load(model, threads=1, timeout_s=None).detect(clip)`, "
             "tiny student, ONNX Runtime); peak RSS = the process's `VmHWM` (model and libraries included), "
             "`detect` adds = peak minus the RSS after loading the model.", "",
             "| clip | length (s) | file (MB) | windows | peak RSS (MB) | after load (MB) | detect adds (MB) | "
             "detect time (s) | error |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["clips"]:
        adds = None if r.get("peak_rss") is None else r["peak_rss"] - r.get("rss_after_load", 0)
        lines.append(f"| {r['name']} | {r['seconds']} | {r['file_bytes'] / 2**20:.2f} | {r.get('windows')} | "
                     f"{_mb(r.get('peak_rss'))} | {_mb(r.get('rss_after_load'))} | {_mb(adds)} | "
                     f"{r.get('detect_seconds')} | {r.get('error') or ''} |")
    t = report["targets"]
    lines += ["", "## Targets (issue #15)", ""]
    if t.get("flat") is not None:
        lines.append(f"- Peak RSS from {t['flat_from']} to {t['flat_to']}: {_mb(t['peak_from'])} -> "
                     f"{_mb(t['peak_to'])} MB ({t['change']:+.1%}); within {FLAT_WITHIN:.0%}: "
                     f"{'met' if t['flat'] else 'MISSED'}")
    lines.append(f"- Largest peak of a file under 10 MB: {_mb(t['max_small_peak'])} MB; under 2 GB: "
                 f"{'met' if t['under_2gb'] else 'MISSED'}")
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/memory_vs_length.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=float, nargs="+", default=[1, 10, 60, 300, 1800],
                   help="clip lengths in seconds (default: %(default)s)")
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS),
                   help="which clips to measure: 'lengths' (one per --lengths), 'hd' (the 720p clip), 'gap' (the "
                        "timestamp-gap file), 'frame-rates' (1080p per --frame-rates) (default: all)")
    p.add_argument("--no-adversarial", action="store_true", help="the length clips only (same as --sets lengths)")
    p.add_argument("--frame-rates", type=int, nargs="+", default=[25, 240],
                   help="frame rates of the 1080p clips (default: %(default)s)")
    p.add_argument("--hfr-seconds", type=float, default=8.0,
                   help="length of each 1080p frame-rate clip (default: %(default)s)")
    p.add_argument("--hd-seconds", type=float, default=120.0, help="length of the 720p clip (default: %(default)s)")
    p.add_argument("--gap-seconds", type=float, default=1200.0,
                   help="timestamp gap of the gap file (default: %(default)s, 20 minutes)")
    p.add_argument("--work", type=Path, default=None, help="folder for the clips and model (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per measurement")
    p.add_argument("--note", action="append", default=[], help="free-text note for the report (repeatable)")
    p.add_argument("--results-dir", type=Path, default=None, help="results root (default: benchmarks/results)")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "CLIP"), help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    from benchmarks._record import build_record, fingerprint_json, write_result

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = export_model(work / "model")
        sets = {"lengths"} if args.no_adversarial else set(args.sets)
        specs = [(f"{s:g}s", s, dict()) for s in args.lengths] if "lengths" in sets else []
        if "hd" in sets:
            specs.append(("720p moving", args.hd_seconds, dict(width=1280, height=720)))
        if "gap" in sets:
            specs.append((f"3 s + {args.gap_seconds:g} s timestamp gap (mkv)", 3.0, dict(gap_s=args.gap_seconds)))
        if "frame-rates" in sets:
            specs += [(f"1080p {fps} fps", args.hfr_seconds, dict(width=1920, height=1080, fps=fps))
                      for fps in args.frame_rates]
        clips = []
        for name, seconds, kw in specs:
            suffix = ".mkv" if kw.get("gap_s") else ".mp4"
            path = work / f"clip_{len(clips)}{suffix}"
            t0 = time.perf_counter()
            write_clip(path, seconds, **kw)
            print(f"{name}: written in {time.perf_counter() - t0:.1f} s ({path.stat().st_size / 2**20:.2f} MB)",
                  flush=True)
            r = {"name": name, "seconds": seconds, "file_bytes": path.stat().st_size, "generator": kw}
            r.update(measure(model, path, args.timeout))
            print(f"  peak RSS {_mb(r.get('peak_rss'))} MB, after load {_mb(r.get('rss_after_load'))} MB, "
                  f"{r.get('windows')} windows, {r.get('detect_seconds')} s {r.get('error') or ''}", flush=True)
            clips.append(r)
    by_len = {r["seconds"]: r for r in clips if r["name"].endswith("s") and r["name"][:-1].replace(".", "").isdigit()}
    targets: dict[str, Any] = {"flat": None}
    lo = 10.0 if 10.0 in by_len else (min(by_len) if by_len else None)
    hi = max(by_len) if by_len else None
    if lo is not None and hi is not None and lo != hi and by_len[lo].get("peak_rss") and by_len[hi].get("peak_rss"):
        a, b = by_len[lo]["peak_rss"], by_len[hi]["peak_rss"]
        targets.update(flat=abs(b - a) / a <= FLAT_WITHIN, flat_from=f"{lo:g} s", flat_to=f"{hi:g} s",
                       peak_from=a, peak_to=b, change=(b - a) / a)
    small = [r["peak_rss"] for r in clips if r["file_bytes"] < SMALL_FILE_BYTES and r.get("peak_rss")]
    targets["max_small_peak"] = max(small) if small else None
    targets["under_2gb"] = bool(small) and max(small) <= MAX_PEAK_BYTES
    notes = list(args.note) + ["The machine may be shared with other sessions: memory is per process and unaffected; "
                               "detect times are wall times and vary with the load."]
    report = {"clips": clips, "targets": targets, "notes": notes}
    settings = {"lengths": args.lengths, "sets": sorted(sets), "hd_seconds": args.hd_seconds,
                "gap_seconds": args.gap_seconds, "frame_rates": args.frame_rates, "hfr_seconds": args.hfr_seconds, "generator": "write_clip (128x96 H.264 crf 35, 48 kHz AAC stereo)"}
    record = build_record("memory_vs_length", "benchmarks/memory_vs_length.py", argv,
                          data={"fingerprint": fingerprint_json(settings), **settings}, code_paths=CODE_PATHS)
    json_path, md_path = write_result(record, report, markdown(report), args.results_dir)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
