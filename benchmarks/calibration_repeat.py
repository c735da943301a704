"""Does calibrating one checkpoint twice give one operating point? Two runs of calibrate's scoring, each in a fresh
process, on the same genuine clips, their re-encoded copies and excerpts.

``python -m pinlite_edge.calibrate`` scores every genuine calibration clip and copies of it (re-encoded at CRF 35,
half resolution, 44.1 kHz stereo AAC, and 1.2 s / 2 s excerpts: ``CALIBRATION_REENCODINGS``) and puts the thresholds
where at most ``--target-fpr`` of those scores are called fake. The copies are written afresh each run. This runs
that scoring (``pinlite_edge.calibrate.score_clips``) ``--runs`` times, each in its own Python process as separate
calibrations are, fits the operating point of each run (``fit_operating_point``), and reports:

- how many scores differ between the first run and each other, and by how much (originals and copies apart);
- each run's whole-clip and short-clip thresholds.

    python benchmarks/calibration_repeat.py [--checkpoint pinlite-workspace/pruned/best.safetensors] [--runs 2]

Writes ``benchmarks/results/calibration_repeat/<machine>.{json,md}`` through ``benchmarks/_record.py``. It decides
nothing; it measures how reproducible the operating point is.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._record import build_record, fingerprint_files, parse_cli, report_parser, write_result  # noqa: E402

BENCH = "calibration_repeat"
AGGREGATES = ("max", "mean", "scan")

#: one run, in a child process: the scores of every clip and copy, as JSON
CHILD = r"""
import json, sys
from pathlib import Path
from pinlite_edge.calibrate import genuine_clips, score_clips
from pinlite_edge.data.reencode import CALIBRATION_REENCODINGS
checkpoint, root, split_file, out = sys.argv[1:5]
files = genuine_clips(Path(root), split_file, ("train", "dev"))
scores = score_clips(Path(checkpoint), files, reencodings=CALIBRATION_REENCODINGS, progress=False)
json.dump([{"file": str(s.file), "reencoding": s.reencoding, "face_found": s.face_found, "windows": s.windows,
            "max": s.fake_prob_max, "mean": s.fake_prob_mean, "scan": s.fake_prob_scan} for s in scores],
          open(out, "w"))
"""


def run_once(checkpoint: Path, root: Path, split_file: Path, out: Path) -> list[dict[str, Any]]:
    subprocess.run([sys.executable, "-c", CHILD, str(checkpoint), str(root), str(split_file), str(out)], check=True,
                   cwd=REPO)
    return json.loads(out.read_text())


def operating_point(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """The thresholds calibrate would write for these scores (its target rate, its face filter)."""
    from pinlite_edge.operating_point import DEFAULT_TARGET_FPR, fit_operating_point

    kept = [s for s in scores if s["face_found"] is not False]
    point = fit_operating_point({a: [s[a] for s in kept] for a in AGGREGATES}, target_fpr=DEFAULT_TARGET_FPR,
                                windows={a: [s["windows"][a] for s in kept] for a in AGGREGATES})
    return {"scores": len(kept), "thresholds": {a: round(v, 4) for a, v in point.thresholds.items()},
            "short_thresholds": {a: round(v, 4) for a, v in point.short_thresholds.items()}}


def compare(first: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    key = lambda s: (s["file"], s["reencoding"])  # noqa: E731
    a, b = {key(s): s for s in first}, {key(s): s for s in other}
    out: dict[str, Any] = {"only_in_one": len(set(a) ^ set(b))}
    for part, pick in (("originals", lambda k: k[1] is None), ("copies", lambda k: k[1] is not None)):
        keys = [k for k in a if k in b and pick(k)]
        moved = [abs(a[k]["scan"] - b[k]["scan"]) for k in keys
                 if a[k]["scan"] is not None and b[k]["scan"] is not None and a[k]["scan"] != b[k]["scan"]]
        faces = sum(a[k]["face_found"] != b[k]["face_found"] for k in keys)
        out[part] = {"scored": len(keys), "scan_differs": len(moved),
                     "largest_scan_change": round(max(moved), 4) if moved else 0.0, "face_found_differs": faces}
    return out


def markdown(runs: list[dict[str, Any]], comparisons: list[dict[str, Any]], notes: str | None) -> str:
    lines = ["# Calibration repeatability: one checkpoint, calibrate's scoring run in separate processes", "",
             "| run | scores kept | whole-clip thresholds (max / mean / scan) | short-clip (max / mean / scan) |",
             "|---|---|---|---|"]
    for i, r in enumerate(runs, 1):
        t, s = r["thresholds"], r["short_thresholds"]
        lines.append(f"| {i} | {r['scores']} | {' / '.join(str(t.get(a)) for a in AGGREGATES)} | "
                     f"{' / '.join(str(s.get(a)) for a in AGGREGATES)} |")
    lines += ["", "Scores that differ from run 1 (scan P(fake)):", "",
              "| run | originals differing (of scored) | largest change | copies differing (of scored) | largest "
              "change | face found differs (copies) |", "|---|---|---|---|---|---|"]
    for i, c in enumerate(comparisons, 2):
        o, k = c["originals"], c["copies"]
        lines.append(f"| {i} | {o['scan_differs']} of {o['scored']} | {o['largest_scan_change']} | "
                     f"{k['scan_differs']} of {k['scored']} | {k['largest_scan_change']} | {k['face_found_differs']} |")
    if notes:
        lines += ["", notes.strip()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = report_parser(__doc__ or "")
    p.add_argument("--checkpoint", type=Path, default=REPO / "pinlite-workspace" / "pruned" / "best.safetensors")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "real-av")
    p.add_argument("--split-file", type=Path, default=REPO / "pinlite_edge" / "data" / "splits" / "real_av.json")
    p.add_argument("--runs", type=int, default=2, help="calibration runs, each in a fresh process (>= 2)")
    argv_list, args = parse_cli(p, argv)
    if args.runs < 2 or not args.checkpoint.is_file() or not args.data.is_dir():
        p.error("needs --runs >= 2, an existing --checkpoint and the --data folder")
    with tempfile.TemporaryDirectory() as tmp:
        scores = [run_once(args.checkpoint, args.data, args.split_file, Path(tmp) / f"run{i}.json")
                  for i in range(args.runs)]
    runs = [operating_point(s) for s in scores]
    comparisons = [compare(scores[0], s) for s in scores[1:]]
    files = sorted({s["file"] for s in scores[0]})
    record = build_record(BENCH, "benchmarks/calibration_repeat.py", argv_list,
                          data={"fingerprint": fingerprint_files([args.checkpoint, *files]),
                                "checkpoint": str(args.checkpoint), "clips": len(files),
                                "splits": "train+dev of " + args.split_file.name},
                          code_paths=["benchmarks/calibration_repeat.py", "pinlite_edge/calibrate.py",
                                      "pinlite_edge/data/reencode.py", "pinlite_edge/features",
                                      "pinlite_edge/operating_point.py"])
    notes = args.notes.read_text() if args.notes else None
    json_path, md_path = write_result(record, {"runs": runs, "comparisons": comparisons, "scores": scores},
                                      markdown(runs, comparisons, notes), args.out_dir)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
