"""Bench output: a terminal table, ``bench.json`` and ``bench.md``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pinlite_edge.utils.atomic import atomic_write_json, atomic_write_text

COLUMNS = ("model", "prec", "dev", "MB", "params M", "GFLOPs", "ms/clip p50", "p90", "p99", "clips/s", "load MB",
           "peak MB", "GPU MB", "e2e s/video", "RTF", "acc", "F1", "AUC", "EPS teacher", "EPS source")


def _mb(x: Any) -> Any:
    return None if x is None else x / 2**20


def _fmt(x: Any, spec: str) -> str:
    if x is None:
        return "—"
    try:
        if x != x:  # NaN
            return "nan"
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


def row_cells(row: dict[str, Any]) -> list[str]:
    lat = row["latency"]["per_clip"]
    m = row["metrics"]
    et, es = row.get("eps_vs_teacher"), row.get("eps_vs_source")
    mem = row.get("memory") or {}
    gpu = mem.get("gpu") or {}
    e2e = row.get("end_to_end") or {}
    return [
        row["name"], row["precision"], row["device"], _fmt(row["artifact_size_bytes"] / 1e6, ".2f"),
        _fmt(row["params"] / 1e6, ".3f"), _fmt(row["flops"] / 1e9, ".3f"), _fmt(lat["median_ms"], ".2f"),
        _fmt(lat["p90_ms"], ".2f"), _fmt(lat["p99_ms"], ".2f"), _fmt(row["throughput_clips_per_s"], ".1f"),
        _fmt(_mb(mem.get("load_rss_delta_bytes")), ".1f"), _fmt(_mb(mem.get("peak_rss_bytes")), ".0f"),
        _fmt(_mb(gpu.get("inference_peak_delta_bytes")), ".0f"),
        _fmt((e2e.get("end_to_end_s") or {}).get("median"), ".3f"), _fmt((e2e.get("rtf") or {}).get("median"), ".3f"),
        _fmt(m["accuracy"], ".2%"), _fmt(m["f1"], ".3f"),
        _fmt(m["auc"], ".3f"), _fmt(et and et["eps_mean"], ".3f"), _fmt(es and es["eps_mean"], ".3f"),
    ]


def terminal_table(result: dict[str, Any]) -> str:
    cells = [list(COLUMNS)] + [row_cells(r) for r in result["rows"]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown(result: dict[str, Any], title: str = "pinlite-edge bench") -> str:
    mach = result["machine"]
    data = result["data"]
    out = [f"# {title}", "",
           f"Machine: {mach.get('cpu_model')} ({mach.get('usable_cores', mach.get('logical_cores'))} usable cores, "
           f"flags {', '.join(mach.get('cpu_flags', [])) or '—'})"
           + (f", GPU {mach['gpu']['name']}" if mach.get("gpu") else "") + f"; Python {mach.get('python')}; "
           + ", ".join(f"{k} {v}" for k, v in mach.get("versions", {}).items()),
           f"Data: `{data['spec']}` split `{data['split']}`, {data['num_clips']} clips (model inputs: 0.64 s "
           f"windows, several per video) (fingerprint `{data['fingerprint'][:12]}`)", ""]
    batch = result["rows"][0]["latency"]["batch"] if result["rows"] else "?"
    cfg = result.get("config", {})
    timed = len(result["rows"]) + bool((result.get("teacher") or {}).get("latency"))  # --time-teacher: one more
    if timed < 2:
        turns = "one model, timed alone"
    else:
        turns = (f"models timed in turns ({cfg['turn_warmup']} untimed + {cfg['block']} timed calls each)"
                 if "block" in cfg else "models timed round-robin")
    out.append(f"Latency: the model alone, host time per clip (one model input) at batch {batch} (batch latency / "
               f"batch), milliseconds, after warm-up; {turns}. Memory: each model loaded alone in a fresh process, "
               "measured outside the timed calls: load MB = resident-set increase when the model is loaded (its "
               "session / program and the backend library's first import), peak MB = that process's resident-set "
               "high-water mark after load and inference, GPU MB = device-wide used memory (cudaMemGetInfo) peak "
               "during inference minus before load (on Jetson's unified memory: all memory in use on the board). "
               "e2e s/video: a video scored through the SDK (decode + face crop + MFCC + every window through the "
               "model), median over the videos; RTF = e2e time / video duration. GFLOPs per clip (1 MAC = 2 "
               "FLOPs). clips/s = batch / mean batch latency. Units: MB (artefact size) = 10^6 bytes; load, peak "
               "and GPU MB = MiB (2^20 bytes). acc and F1: per clip (model input), called fake at P(fake) >= 0.5; "
               "the Detector's operating point applies to whole videos' aggregates, not to these. Min and per-batch "
               "latencies are in bench.json. EPS source: against the artefact's own FP32 checkpoint.")
    out.append("")
    out.append("| " + " | ".join(COLUMNS) + " |")
    out.append("|" + "---|" * len(COLUMNS))
    for r in result["rows"]:
        out.append("| " + " | ".join(c.replace("|", "/") for c in row_cells(r)) + " |")
    teacher = result.get("teacher") or {}
    if teacher.get("metrics"):
        tm = teacher["metrics"]
        line = (f"\nFP32 teacher on the same clips: accuracy {tm['accuracy']:.2%}, F1 {tm['f1']:.3f}, "
                f"AUC {tm['auc']:.3f}")
        if teacher.get("latency"):
            line += f", {teacher['latency']['per_clip']['median_ms']:.2f} ms/clip median"
        out.append(line + ".")
    e2e = result.get("end_to_end")
    if e2e:
        out.append(f"\nEnd to end: {e2e['num_videos']} video(s), {e2e['source']}; "
                   f"{e2e['seconds_of_video']['median']:.2f} s each (median); featurisation alone (decode + face "
                   "crop + MFCC, shared by every model) "
                   f"{e2e['featurise_s']['median']:.3f} s median, RTF {e2e['featurise_rtf_median']:.3f}.")
    if result.get("comparison"):
        out += ["", "## Agreement with the first artefact", "",
                "| model | max abs Δ logits | max abs Δ attention | label agreement | EPS |", "|---|---|---|---|---|"]
        for c in result["comparison"]:
            out.append(f"| {c['other']} | {c['max_abs_diff']['logits']:.2e} | {c['max_abs_diff']['attention']:.2e} | "
                       f"{c['label_agreement']:.1%} | {c['eps_mean']:.3f} |")
    if result.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(out) + "\n"


def write_reports(result: dict[str, Any], out_dir: Path, stem: str = "bench") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write_json(jpath, result)
    atomic_write_text(mpath, markdown(result))
    return jpath, mpath
