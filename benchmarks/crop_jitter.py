"""Crop placement (issue #12): how much do the shipped model's scores move when the mouth crop moves a little?

The face track can place a clip's crop squares a pixel or two apart from run to run of the pipeline (another decoder,
an RGB round trip, a re-encode). This scores every genuine clip of ``../shared/data/real-av`` with
``Detector.detect`` (defaults, the model's operating point) with every crop square moved by ``SHIFT`` of its side
left / right / up / down and scaled by ``1 +- SCALE`` (one variant at a time, every frame alike), beside the unmoved
crop, and reports how far the scan P(fake) and the verdicts move.

    python benchmarks/crop_jitter.py pinlite-workspace/exports/onnx/pinlite-student.onnx

Writes ``benchmarks/results/crop_jitter/<machine>.{json,md}``; how to read it was fixed before the first run in
``benchmarks/results/crop_jitter/notes.md``.
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import (build_record, fingerprint_files, parse_cli, repo_relative,  # noqa: E402
                                report_parser, write_result)
from benchmarks.real_faces import DEFAULT_ROOT, DEFAULT_SPLIT_FILE  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.crop_jitter")

SHIFT = 0.03  # of the crop's side
SCALE = 0.05
#: name -> (dx, dy, relative size change), dx / dy in crop sides
VARIANTS = {"unmoved": (0.0, 0.0, 0.0), "left": (-SHIFT, 0.0, 0.0), "right": (SHIFT, 0.0, 0.0),
            "up": (0.0, -SHIFT, 0.0), "down": (0.0, SHIFT, 0.0), "smaller": (0.0, 0.0, -SCALE),
            "larger": (0.0, 0.0, SCALE)}


def moved_box(box: Any, height: int, width: int, dx: float, dy: float, ds: float) -> Any:
    """``box`` (a FaceBox) moved by ``dx``, ``dy`` of its side and scaled by ``1 + ds``, kept inside the frame."""
    from pinlite_edge.features.facecrop import FaceBox

    side = int(round(min(max(2.0, box.size * (1.0 + ds)), height, width)))
    cx, cy = box.x + box.size / 2.0 + dx * box.size, box.y + box.size / 2.0 + dy * box.size
    x0 = int(round(min(max(cx - side / 2.0, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2.0, 0), height - side)))
    return FaceBox(x=x0, y=y0, size=side, found=box.found)


@contextlib.contextmanager
def crops_moved(dx: float, dy: float, ds: float) -> Iterator[None]:
    """Within the block, every tracked crop square the file path cuts is moved (the face track itself is not)."""
    from pinlite_edge.features import cropstream

    real = cropstream.mouth_box

    def mouth_box(face: Any, height: int, width: int, cfg: Any) -> Any:
        box = real(face, height, width, cfg)
        return moved_box(box, height, width, dx, dy, ds) if box.found else box

    cropstream.mouth_box = mouth_box
    try:
        yield
    finally:
        cropstream.mouth_box = real


def score(artifact: Path, files: list[Path]) -> dict[str, dict[str, Any]]:
    """Per file, per variant: verdict, scan P(fake), threshold."""
    from pinlite_edge import Detector
    from pinlite_edge.errors import PinliteError

    out: dict[str, dict[str, Any]] = {str(f): {} for f in files}
    with Detector.load(artifact, threads=1) as det:
        for name, (dx, dy, ds) in VARIANTS.items():
            log.info("variant %s", name)
            with crops_moved(dx, dy, ds):
                for f in files:
                    try:
                        r = det.detect(f)
                    except PinliteError as exc:
                        out[str(f)][name] = {"error": str(exc)}
                        continue
                    out[str(f)][name] = {"verdict": r.verdict, "fake_prob": round(r.fake_prob, 4),
                                         "threshold": round(r.threshold, 4)}
    return out


def summary(scored: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = {f: v for f, v in scored.items() if v.get("unmoved", {}).get("verdict") in ("real", "fake")}
    per_variant = {}
    for name in VARIANTS:
        if name == "unmoved":
            continue
        deltas = [abs(v[name]["fake_prob"] - v["unmoved"]["fake_prob"]) for v in rows.values()
                  if "fake_prob" in v[name]]
        flips = [f for f, v in rows.items() if v[name].get("verdict") != v["unmoved"]["verdict"]]
        per_variant[name] = {"clips": len(deltas), "median_abs_change": round(statistics.median(deltas), 4),
                             "max_abs_change": round(max(deltas), 4), "verdicts_changed": len(flips)}
    flipped = sorted(f for f, v in rows.items()
                     if any(v[n].get("verdict") != v["unmoved"]["verdict"] for n in VARIANTS))
    spread = [max(x["fake_prob"] for x in v.values() if "fake_prob" in x)
              - min(x["fake_prob"] for x in v.values() if "fake_prob" in x) for v in rows.values()]
    return {"clips": len(rows), "per_variant": per_variant, "clips_with_a_changed_verdict": flipped,
            "median_spread": round(statistics.median(spread), 4), "max_spread": round(max(spread), 4),
            "called_fake_unmoved": sum(v["unmoved"]["verdict"] == "fake" for v in rows.values())}


def render(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = ["# Crop placement: how far scores move when the mouth crop moves", "",
             f"Model: `{report['model']}` (defaults, its operating point). {s['clips']} genuine clips with a face, "
             f"every crop square moved by {SHIFT:.0%} of its side or scaled by {SCALE:.0%}, one variant at a time.",
             "", "| variant | median abs change of scan P(fake) | largest | verdicts changed |", "|---|---|---|---|"]
    for name, v in s["per_variant"].items():
        lines.append(f"| {name} | {v['median_abs_change']:.3f} | {v['max_abs_change']:.3f} | "
                     f"{v['verdicts_changed']} of {v['clips']} |")
    lines += ["", f"Spread of scan P(fake) over the 7 placements, per clip: median {s['median_spread']:.3f}, largest "
              f"{s['max_spread']:.3f}. Called fake with the unmoved crop: {s['called_fake_unmoved']} of {s['clips']}. "
              f"Clips whose verdict changes under some placement: {len(s['clips_with_a_changed_verdict'])}"
              + (": " + ", ".join(f"`{Path(f).name}`" for f in s["clips_with_a_changed_verdict"])
                 if s["clips_with_a_changed_verdict"] else "") + "."]
    notes = report.get("notes")
    return "\n".join(lines) + "\n" + (f"\n{notes}\n" if notes else "")


def main(argv: Sequence[str] | None = None) -> int:
    p = report_parser(__doc__)
    p.add_argument("model", type=Path, help="the artefact to score with (e.g. the quickstart's ONNX student)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE)
    args_list, args = parse_cli(p, argv)
    if not args.root.is_dir():
        log.warning("real-av data not found at %s: nothing to do", args.root)
        return 0
    if not args.model.is_file():
        p.error(f"{args.model} is not a file")
    from pinlite_edge.data.splits import read_split_file

    files = [args.root / rel for rel in sorted(read_split_file(args.split_file))]
    scored = score(args.model, files)
    report = {"model": repo_relative(args.model), "shift": SHIFT, "scale": SCALE, "variants": VARIANTS,
              "summary": summary(scored), "clips": {repo_relative(f): v for f, v in scored.items()},
              "notes": args.notes.read_text() if args.notes else None}
    record = build_record("crop_jitter", "benchmarks/crop_jitter.py", args_list,
                          data={"root": repo_relative(args.root), "split_file": repo_relative(args.split_file),
                                "num_clips": len(files), "fingerprint": fingerprint_files(files),
                                "fingerprint_of": "sorted (file, sha256) of the genuine clips"})
    write_result(record, report, render(report), results_dir=args.out_dir)
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
