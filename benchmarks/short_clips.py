"""Short clips (issue #12): are short genuine clips called fake more often than the operating point allows?

The operating point's thresholds are measured so that at most 5% of genuine calibration clips are called fake. A
short clip's verdict rests on one or two windows, and its score is noisier than a whole clip's. This benchmark cuts
excerpts of every genuine clip of ``../shared/data/real-av`` (``pinlite_edge.data.reencode.excerpt``: whole frames,
the audio cut at the same times, written as H.264 CRF 18 + AAC), in sync and with the audio delayed by 200 ms (the
audio of the 200 ms before the excerpt's frames), and scores them with ``Detector.detect`` at each model's own
operating point.

Excerpts: lengths 1.2 s, 2 s and 3 s; cut from the clip's middle for the 6 test clips (never in calibration) and at a
quarter of the clip for the train + dev clips (the quickstart's calibration cut their middles, so these are partly
in sample and reported apart). A clip too short for an excerpt (with 200 ms of audio before it) is left out.

    python benchmarks/short_clips.py whole-clip=pinlite-workspace/exports/onnx/pinlite-student.onnx \
        shipped=pinlite-workspace/exports/onnx/pinlite-student.onnx --whole-clip-thresholds whole-clip

``--whole-clip-thresholds NAME`` scores model ``NAME`` with its whole-clip thresholds for every clip (its operating
point's short-clip thresholds ignored): the Detector before short clips had thresholds of their own.

Writes ``benchmarks/results/short_clips/<machine>.{json,md}``; how to read it was fixed before the first run in
``benchmarks/results/short_clips/notes.md``.
"""
from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import (build_record, fingerprint_files, parse_cli, repo_relative,  # noqa: E402
                                report_parser, write_result)
from benchmarks.real_faces import DEFAULT_ROOT, DEFAULT_SPLIT_FILE  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.short_clips")

LENGTHS = (1.2, 2.0, 3.0)
DELAY_S = 0.2
CONDITIONS = ("in-sync", "delay200")


def cut(clip: Any, seconds: float, position: float, delay_s: float) -> Any | None:
    """The excerpt of ``clip`` of ``seconds`` starting at ``position`` of the room left (0.5: the middle), with its
    audio taken ``delay_s`` earlier (the audio delayed); None when the clip is too short for it."""
    from pinlite_edge.data.reencode import excerpt
    from pinlite_edge.errors import InputError

    count = int(round(seconds * clip.fps))
    room = len(clip.frames) - count
    lead = int(round(DELAY_S * clip.fps)) + 1  # every condition's audio must exist before the frames
    if room <= lead:
        return None
    first = min(lead + int(round((room - lead) * position)), room)
    try:
        return excerpt(clip, seconds, first, delay_s)
    except InputError:
        return None


def excerpts(root: Path, split_file: Path, work: Path) -> list[dict[str, Any]]:
    """Write every excerpt once (shared by the models); one row per file."""
    from pinlite_edge.data.reencode import decode_clip, write_mp4
    from pinlite_edge.data.splits import read_split_file
    from pinlite_edge.errors import PinliteError

    rows = []
    for rel, rec in sorted(read_split_file(split_file).items()):
        try:
            clip = decode_clip(root / rel)
        except PinliteError as exc:
            log.warning("%s: %s", rel, exc)
            continue
        position = 0.5 if rec.split == "test" else 0.25
        for seconds in LENGTHS:
            for condition in CONDITIONS:
                part = cut(clip, seconds, position, DELAY_S if condition == "delay200" else 0.0)
                if part is None:
                    continue
                dst = work / f"{len(rows):03d}.mp4"
                write_mp4(dst, part.frames, part.fps, part.audio, part.sample_rate, crf=18, audio_bitrate=128_000)
                rows.append({"file": rel, "split": rec.split, "seconds": seconds, "position": position,
                             "condition": condition, "path": str(dst)})
    return rows


def score(models: dict[str, Path], rows: list[dict[str, Any]], whole_clip: Sequence[str] = ()
          ) -> dict[str, list[dict[str, Any]]]:
    from pinlite_edge import Detector
    from pinlite_edge.errors import PinliteError

    out: dict[str, list[dict[str, Any]]] = {}
    for name, artifact in models.items():
        scored = []
        with Detector.load(artifact, threads=1) as det:
            if name in whole_clip:
                det.operating_point = None  # its short-clip thresholds are not used; the whole-clip one decides
            for row in rows:
                entry = {k: v for k, v in row.items() if k != "path"}
                try:
                    r = det.detect(row["path"])
                except PinliteError as exc:
                    entry["error"] = str(exc)
                else:
                    entry.update(verdict=r.verdict, fake_prob=round(r.fake_prob, 4), threshold=round(r.threshold, 4),
                                 verdict_windows=r.evidence_windows(),
                                 short_threshold=r.threshold_source.startswith("operating point for short"))
                scored.append(entry)
        out[name] = scored
    return out


def summary(scored: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per model, group (test middle / train+dev quarter), length and condition: excerpts called fake."""
    table = []
    for name, rows in scored.items():
        for group, splits in (("test (middle, out of sample)", {"test"}),
                              ("train+dev (quarter, partly in sample)", {"train", "dev"})):
            for seconds in LENGTHS:
                for condition in CONDITIONS:
                    hits = [r for r in rows if r["split"] in splits and r["seconds"] == seconds
                            and r["condition"] == condition and r.get("verdict") in ("real", "fake")]
                    table.append({"model": name, "group": group, "seconds": seconds, "condition": condition,
                                  "excerpts": len(hits), "called_fake": sum(r["verdict"] == "fake" for r in hits)})
    return table


def render(report: dict[str, Any]) -> str:
    lines = ["# Short clips: excerpts of the genuine clips called fake", "",
             "Models: " + "; ".join(f"`{n}` = `{p}`" for n, p in report["models"].items()) + ". "
             + "".join(f"`{n}` is scored with its whole-clip thresholds for every clip. "
                       for n in report.get("whole_clip_thresholds", [])), "",
             "Each cell: excerpts called fake / excerpts scored (no-face and silent-audio verdicts left out). "
             "In-sync excerpts are genuine: every one called fake is a false alarm; delayed ones are manipulated.",
             "", "| model | excerpts | length | in sync: called fake | audio delayed 200 ms: called fake |",
             "|---|---|---|---|---|"]
    cells = {(r["model"], r["group"], r["seconds"], r["condition"]): r for r in report["summary"]}
    for name in report["models"]:
        for group in dict.fromkeys(r["group"] for r in report["summary"]):
            for seconds in LENGTHS:
                row = [f"{cells[(name, group, seconds, c)]['called_fake']} / {cells[(name, group, seconds, c)]['excerpts']}"
                       for c in CONDITIONS]
                lines.append(f"| {name} | {group} | {seconds:g} s | {row[0]} | {row[1]} |")
    notes = report.get("notes")
    return "\n".join(lines) + "\n" + (f"\n{notes}\n" if notes else "")


def main(argv: Sequence[str] | None = None) -> int:
    p = report_parser(__doc__)
    p.add_argument("models", nargs="+", metavar="NAME=ARTEFACT", help="models to score the excerpts with")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE)
    p.add_argument("--whole-clip-thresholds", action="append", default=[], metavar="NAME",
                   help="score model NAME with its whole-clip thresholds for every clip (short-clip ones ignored)")
    args_list, args = parse_cli(p, argv)
    if not args.root.is_dir():
        log.warning("real-av data not found at %s: nothing to do", args.root)
        return 0
    models = {}
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path).is_file():
            p.error(f"expected NAME=ARTEFACT with an existing artefact, got {spec!r}")
        models[name] = Path(path)
    with tempfile.TemporaryDirectory(prefix="pinlite-short-") as tmp:
        rows = excerpts(args.root, args.split_file, Path(tmp))
        scored = score(models, rows, args.whole_clip_thresholds)
    report = {"models": {n: repo_relative(p) for n, p in models.items()},
              "whole_clip_thresholds": list(args.whole_clip_thresholds), "lengths": list(LENGTHS),
              "delay_s": DELAY_S, "summary": summary(scored), "excerpts": scored,
              "notes": args.notes.read_text() if args.notes else None}
    files = sorted({args.root / r["file"] for r in rows})
    record = build_record("short_clips", "benchmarks/short_clips.py", args_list,
                          data={"root": repo_relative(args.root), "split_file": repo_relative(args.split_file),
                                "num_clips": len(files), "fingerprint": fingerprint_files(files),
                                "fingerprint_of": "sorted (file, sha256) of the clips the excerpts were cut from"})
    json_path, md_path = write_result(record, report, render(report), results_dir=args.out_dir)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
