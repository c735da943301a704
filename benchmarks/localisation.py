"""Localisation on real faces: do the per-window numbers say WHERE a clip is out of sync?

``detect`` prints a P(fake) per window and the explanation marks the "most suspicious window". A forensic user reads
them as "this segment was manipulated". This measures whether they can be read so, on the real clips of
``../shared/data/real-av`` (speaker-disjoint split ``pinlite_edge/data/splits/real_av.json``).

For each clip with a face and at least ``--min-windows`` windows, the windows of the clip as it is and of the same clip
with its audio delayed 200 ms, advanced 200 ms, or swapped with another speaker's (``benchmarks/real_faces.py``'s
conditions) are scored as ``Detector`` scores a file (offset scan on). A partly manipulated clip is then made by
taking the first half of the windows from the genuine clip and the second half from the manipulated one. Each window
is scored alone, so this is exactly what the model gives on a clip manipulated from its middle on, except that no
window straddles the splice. The question: do the manipulated half's windows score higher than the genuine half's?
ROC AUC, pooled over clips and as a mean of per-clip AUCs, for:

- ``classifier``: the window's own P(fake) (what ``detect`` prints per window, and what picks the explanation's window);
- ``scan R=k``: a local offset scan, ``1 - exp(-(max - margin at 0))`` of the scan margins averaged over the window
  and its ``k`` neighbours on each side (``ScanResult.local_fake_probs``), the verdict's own statistic made local.

0.5 is chance. The train and dev clips were seen in training by the shipped model; the test clips were not. With
``--cv-run`` (a ``benchmarks/real_faces_cv.py`` work folder) each fold's pruned student also scores its own held-out
clips: the cross-validation's 13 speakers, the estimate to trust (the 6 test clips are the split where the whole
model fails, ``benchmarks/results/real_faces.md``).

    python benchmarks/localisation.py --model pinlite-workspace/exports/onnx/pinlite-student.onnx \
        --cv-run runs/real-faces-cv-sync

Writes ``benchmarks/results/localisation/<machine>.{json,md}``.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import real_faces as rf  # noqa: E402
from benchmarks._record import (build_record, fingerprint_json, parse_cli, repo_relative, report_parser,  # noqa: E402
                                write_result)

log = logging.getLogger("pinlite_edge.benchmarks.localisation")

STEM = "localisation"
MANIPULATIONS = ("delay200", "advance200", "swap")
DEFAULT_RADII = (0, 1, 2, 3, 5)
SPLITS = {"shipped model, seen clips (train + dev)": ("train", "dev"), "shipped model, test clips": ("test",)}
CV_SUBSET = "cross-validation: each fold's model on its held-out clips"


def half_and_half(genuine: np.ndarray, manipulated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Windows of a clip manipulated from its middle on: (values, labels 0 genuine / 1 manipulated)."""
    n = len(genuine)
    h = n // 2
    return np.concatenate([genuine[:h], manipulated[h:]]), np.r_[np.zeros(h), np.ones(n - h)]


def clip_scores(detector: Any, clip: Any, partner: Any, contract: Any, min_windows: int) -> dict[str, Any] | None:
    """Window P(fake) and scan margins of the clip as it is and under each manipulation (None: too short)."""
    starts = rf.condition_starts(clip, contract, None)
    if not starts or len(starts) < min_windows:
        return None
    out: dict[str, Any] = {}
    for condition in ("original", *MANIPULATIONS):
        if condition == "swap" and partner is None:
            continue
        windows = rf.condition_windows(clip, contract, starts, condition, partner, detector.scan_offsets)
        result = detector.score_windows(windows)
        out[condition] = {"p": result.fake_prob_per_window, "scan": result.scan}
    return out


def auc_rows(per_clip: Sequence[dict[str, Any]], radii: Sequence[int]) -> dict[str, dict[str, Any]]:
    """{manipulation: {method: {pooled_auc, mean_clip_auc, clips}}}."""
    from pinlite_edge.metrics.classification import roc_auc

    table: dict[str, dict[str, Any]] = {}
    for m in MANIPULATIONS:
        methods: dict[str, dict[str, list[np.ndarray]]] = {}
        for scores in per_clip:
            if m not in scores:
                continue
            g, x = scores["original"], scores[m]
            variants = {"classifier": (g["p"], x["p"])}
            for r in radii:
                variants[f"scan R={r}"] = (g["scan"].local_fake_probs(r), x["scan"].local_fake_probs(r))
            for name, (gv, xv) in variants.items():
                values, labels = half_and_half(np.asarray(gv), np.asarray(xv))
                acc = methods.setdefault(name, {"values": [], "labels": []})
                acc["values"].append(values)
                acc["labels"].append(labels)
        table[m] = {}
        for name, acc in methods.items():
            per = [roc_auc(lab, val) for lab, val in zip(acc["labels"], acc["values"])]
            table[m][name] = {"pooled_auc": round(float(roc_auc(np.concatenate(acc["labels"]),
                                                                  np.concatenate(acc["values"]))), 3),
                              "mean_clip_auc": round(float(np.nanmean(per)), 3), "clips": len(per)}
    return table


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Model `{report['model']}`; a clip manipulated from its middle on (module doc). AUC of the manipulated "
             "half's windows against the genuine half's: pooled over clips / mean of per-clip AUCs. 0.5 is chance.",
             ""]
    for subset, table in report["subsets"].items():
        clips = max((v["clips"] for row in table.values() for v in row.values()), default=0)
        lines += [f"### {subset} ({clips} clips)", "", "| per-window score | " + " | ".join(MANIPULATIONS) + " |",
                  "|---|" + "---|" * len(MANIPULATIONS)]
        methods = list(next(iter(table.values())).keys()) if table else []
        for name in methods:
            cells = [f"{table[m][name]['pooled_auc']:.3f} / {table[m][name]['mean_clip_auc']:.3f}"
                     if name in table.get(m, {}) else "n/a" for m in MANIPULATIONS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if report.get("notes"):
        lines += [report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = report_parser(__doc__)
    p.add_argument("--model", type=Path, default=REPO_ROOT / "pinlite-workspace/exports/onnx/pinlite-student.onnx",
                   help="artefact scored with Detector (default: the workspace's ONNX student)")
    p.add_argument("--root", type=Path, default=None, help="real-av folder (default ../shared/data/real-av)")
    p.add_argument("--split-file", type=Path, default=REPO_ROOT / "pinlite_edge/data/splits/real_av.json")
    p.add_argument("--radii", default=",".join(map(str, DEFAULT_RADII)),
                   help="neighbours on each side of the local scans (default %(default)s)")
    p.add_argument("--min-windows", type=int, default=6, help="shorter clips are left out (default %(default)s)")
    p.add_argument("--cv-run", type=Path, default=None,
                   help="a real_faces_cv.py work folder (foldK.json + foldK/pruned/best.safetensors): also score each "
                        "fold's held-out clips with that fold's model")
    p.add_argument("--threads", type=int, default=2)
    args_list, args = parse_cli(p, argv)
    root = rf.real_av_root(args.root)
    if isinstance(root, int):
        return root
    from pinlite_edge.detector import Detector

    radii = [int(r) for r in args.radii.split(",") if r]
    store = rf.ClipStore()
    report: dict[str, Any] = {"model": repo_relative(args.model), "radii": radii, "min_windows": args.min_windows,
                              "subsets": {}, "clips": {}}
    fingerprints: list[str] = []
    plan = [(subset, args.model, args.split_file, splits) for subset, splits in SPLITS.items()]
    if args.cv_run is not None:
        folds = sorted(args.cv_run.glob("fold[0-9].json"))
        if not folds:
            log.error("--cv-run %s holds no foldK.json (a benchmarks/real_faces_cv.py work folder)", args.cv_run)
            return 2
        plan += [(CV_SUBSET, args.cv_run / f.stem / "pruned" / "best.safetensors", f, ("test",)) for f in folds]
    per_subset: dict[str, list[dict[str, Any]]] = {}
    for subset, model, split_file, splits in plan:
        with Detector.load(model, threads=args.threads, threshold=0.5) as det:
            for split in splits:
                clips = rf.load_split(split_file, root, split)
                fingerprints.append(rf.data_fingerprint(clips))
                partners = rf.swap_partners(clips)
                for i, sc in enumerate(clips):
                    clip = store.get(sc.path, det.contract)
                    if not clip.face_found:
                        continue
                    partner = store.get(clips[partners[i]].path, det.contract) if partners[i] is not None else None
                    scores = clip_scores(det, clip, partner, det.contract, args.min_windows)
                    if scores is not None:
                        per_subset.setdefault(subset, []).append(scores)
                        report["clips"].setdefault(subset, {})[sc.file] = {
                            "split": split, "model": repo_relative(model), "windows": len(scores["original"]["p"])}
    for subset, per_clip in per_subset.items():
        report["subsets"][subset] = auc_rows(per_clip, radii)
        log.info("%s: %d clips", subset, len(per_clip))
    if args.notes:
        report["notes"] = args.notes.read_text()
    record = build_record(STEM, "benchmarks/localisation.py", args_list,
                          data={"root": repo_relative(root), "split_file": repo_relative(args.split_file),
                                "fingerprint": fingerprint_json(fingerprints)[:16]},
                          code_paths=("benchmarks/localisation.py", "benchmarks/real_faces.py", "pinlite_edge"))
    json_path, md_path = write_result(record, report, markdown(report), args.out_dir)
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
