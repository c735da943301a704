"""What the shipped model says about every genuine clip: ``Detector.detect`` on each file of ../shared/data/real-av.

    python benchmarks/real_clip_verdicts.py pinlite-workspace/exports/onnx/pinlite-student.onnx

Every clip there is real and in sync, so a ``fake`` verdict is a false positive. Writes
``benchmarks/results/real_clip_verdicts/<machine>.{json,md}`` (with the run's record, ``benchmarks/_record.py``): per
clip the verdict, the P(fake) it used (the offset scan's by default), max and mean P(fake) over its windows, the
offset estimate, face found / coverage and which split of ``pinlite_edge/data/splits/real_av.json`` it belongs to
(train clips were seen in training; dev and test clips were not). Issue #12 asks that none gets P(fake) >= 0.9.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import RESULTS_DIR, build_record, fingerprint_files, repo_relative, write_result  # noqa: E402
from benchmarks.real_faces import DEFAULT_ROOT, DEFAULT_SPLIT_FILE  # noqa: E402
from pinlite_edge.errors import PinliteError  # noqa: E402

log = logging.getLogger("real_clip_verdicts")
LIMIT = 0.9


def clip_files(root: Path) -> list[Path]:
    from pinlite_edge.utils.files import find_videos

    return find_videos(root)


def verdicts(artifact: Path, root: Path, split_file: Path, threads: int = 1) -> list[dict[str, Any]]:
    """``Detector.detect`` on every clip under ``root``, each row tagged with its split."""
    from pinlite_edge.data.splits import read_split_file

    splits = {name: rec.split for name, rec in read_split_file(split_file).items()}
    return detect_files(artifact, [(p.relative_to(root).as_posix(), p) for p in clip_files(root)], splits, threads)


def detect_files(artifact: Path, files: list[tuple[str, Path]], splits: dict[str, str], threads: int = 1
                 ) -> list[dict[str, Any]]:
    """One row per ``(name, path)``: ``Detector.detect(path)`` with the artefact's defaults (verdict, the P(fake) it
    used, max / mean window P(fake), offset, face found), or the error that file raised."""
    from pinlite_edge import Detector

    rows = []
    with Detector.load(artifact, threads=threads) as det:
        for rel, path in files:
            t0 = time.perf_counter()
            try:
                r = det.detect(path)
            except PinliteError as exc:
                rows.append({"file": rel, "split": splits.get(rel), "error": str(exc)})
                continue
            rows.append({"file": rel, "split": splits.get(rel), "verdict": r.verdict, "aggregate": r.aggregate,
                         "fake_prob": round(r.fake_prob, 4), "fake_prob_scan": _round(r.fake_prob_scan),
                         "fake_prob_max": round(r.fake_prob_max, 4), "fake_prob_mean": round(r.fake_prob_mean, 4),
                         "offset_frames": r.offset_frames, "face_found": r.face_found,
                         "face_coverage": r.face_coverage, "windows": len(r.windows),
                         "threshold": round(r.threshold, 4), "threshold_source": r.threshold_source,
                         "seconds": round(time.perf_counter() - t0, 3)})
            log.info("%s: %s P(fake) %.3f (%s); max %.3f mean %.3f", rel, r.verdict, r.fake_prob, r.aggregate,
                     r.fake_prob_max, r.fake_prob_mean)
    return rows


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def render(report: dict[str, Any]) -> str:
    rows = report["clips"]
    scored = [r for r in rows if "fake_prob_max" in r]
    over = [r for r in scored if r.get("fake_prob", r["fake_prob_max"]) >= LIMIT]
    over_max = [r for r in scored if r["fake_prob_max"] >= LIMIT]
    aggregates = sorted({r.get("aggregate", "max") for r in scored})
    thresholds = sorted({(r["threshold"], r["threshold_source"]) for r in scored})
    held_out = [r for r in scored if r["split"] == "test"]
    lines = ["# Verdicts of the shipped model on every genuine clip of ../shared/data/real-av", "",
             f"Model: `{report['artifact']}` (training data: {report['training_data']})", "",
             f"{len(over)} of {len(scored)} clips reach P(fake) >= {LIMIT} on the Detector's default verdict "
             f"({'/'.join(aggregates)} aggregate; target: none); with the max of the window P(fake) instead: "
             f"{len(over_max)}. {sum(r['verdict'] == 'fake' for r in scored)} are called fake at the Detector's "
             "default threshold (" + "; ".join(f"{t:.4f}: {src}" for t, src in thresholds) + "), of them "
             f"{sum(r['verdict'] == 'fake' for r in held_out)} of the {len(held_out)} test-split clips (neither "
             f"trained nor calibrated on); {sum(r['verdict'] == 'no-face' for r in scored)} say no-face. Train and "
             "dev clips were seen in training (train) or checkpoint selection (dev) and, when the model has an "
             "operating point, in its calibration.", "",
             "| clip | split | verdict | P(fake) (verdict's) | P(fake) scan | P(fake) max | P(fake) mean | offset | "
             "face coverage |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['file']} | {r['split']} | error: {r['error']} | | | | | | |")
        else:
            scan = "n/a" if r.get("fake_prob_scan") is None else f"{r['fake_prob_scan']:.3f}"
            lines.append(f"| {r['file']} | {r['split']} | {r['verdict']} | "
                         f"{r.get('fake_prob', r['fake_prob_max']):.3f} | {scan} | {r['fake_prob_max']:.3f} | "
                         f"{r['fake_prob_mean']:.3f} | {r['offset_frames']:+d} | {r['face_coverage']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", type=Path, help="the model (.onnx / .pte / .safetensors)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--split-file", type=Path, default=DEFAULT_SPLIT_FILE)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR,
                   help="results root: writes OUT_DIR/real_clip_verdicts/<machine>.{json,md}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.root.is_dir():
        log.warning("real-av data not found at %s: nothing to do", args.root)
        return 0
    from pinlite_edge.runtimes import load_runner
    from pinlite_edge.trained_on import describe_training_data

    try:
        training = describe_training_data(load_runner(args.artifact).training_data)
        clips = verdicts(args.artifact, args.root, args.split_file, args.threads)
    except PinliteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {"artifact": str(args.artifact), "training_data": training, "limit": LIMIT, "clips": clips}
    files = clip_files(args.root)
    record = build_record("real_clip_verdicts", "benchmarks/real_clip_verdicts.py", argv,
                          data={"root": repo_relative(args.root), "num_clips": len(files),
                                "fingerprint": fingerprint_files(files),
                                "fingerprint_of": "sorted (file, sha256) of every clip under the root"})
    write_result(record, report, render(report), results_dir=args.out_dir)
    print(render(report).split("\n\n")[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
