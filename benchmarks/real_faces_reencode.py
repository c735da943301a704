"""Re-encoded genuine clips (issue #12): does the verdict survive what real videos go through on their way to a user?

Real clips reach the detector re-encoded, scaled, mirrored, converted to another frame rate, with their audio
resampled or recorded in noise; the clips the project is judged on come from sources it has not seen. This benchmark
re-encodes every clip of ``pinlite_edge/data/splits/real_av.json`` with each transform of
``pinlite_edge.data.reencode.TRANSFORMS`` (the one table; the operating point's calibration uses three of them,
``CALIBRATION_REENCODINGS``, the other four it never sees), then runs the real-faces harness (``benchmarks/real_faces.py``: the same conditions, windows, offset scan,
operating point and training-free baseline) on the re-encoded files, and compares with the clips as they are:

==================  ====================================================================================
as-is               the clip file itself (the reference row)
reencode            one more generation: H.264 CRF 18, AAC 128 kb/s, everything else kept
crf35               heavy H.264 compression (CRF 35)
half-res            both sides halved (CRF 18)
fps-convert         25 <-> 30 fps by repeating or dropping frames (each output frame shows the source frame on
                    screen at the middle of its own display time, as a frame-rate filter does; audio untouched)
mirror              left and right swapped (selfie cameras)
audio-44k-stereo    audio resampled to 44.1 kHz, two channels, AAC 64 kb/s
audio-noise-10db    white noise added to the audio at 10 dB SNR (a noisy room)
==================  ====================================================================================

How a clip is re-encoded: ``pinlite_edge.data.reencode.reencode`` (one decode with the SDK's own decoder, audio
lined up with the first video frame, H.264 + AAC). The re-encoded files are cached in ``--work-dir`` (default a
temporary folder).

What it reports per transform, for each model and the baseline: on the TEST split (6 clips the models never saw) the
harness's AUCs, in-sync false-positive rate and offset accuracy; over ALL 31 clips (25 of them seen in training,
so this is about stability, not accuracy) the genuine clips ``Detector.detect`` calls fake (at the model's
operating point) and at P >= 0.9, and how far each genuine clip's P(fake) moved from its as-is value. A condition's shift is 5 frames of the
re-encoded clip: 200 ms at 25 fps, 167 ms at 30 fps (so ``fps-convert`` also changes the shifts of the clips it
converts). The baseline's threshold is chosen once, on the as-is train split.

    python benchmarks/real_faces_reencode.py onnx=pinlite-workspace/exports/onnx/pinlite-student.onnx
    python benchmarks/real_faces_reencode.py --baseline-only --transform crf35 --transform mirror

Writes ``benchmarks/results/real_faces_reencode/<machine>.{json,md}``.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import real_faces as rf  # noqa: E402
from benchmarks.real_clip_verdicts import LIMIT, detect_files  # noqa: E402
from benchmarks._record import (build_record, fingerprint_json, parse_cli, report_parser, repo_relative,  # noqa: E402
                                write_result)  # noqa: E402
from pinlite_edge.data.reencode import TRANSFORMS, reencode  # noqa: E402
from pinlite_edge.errors import InputError, PinliteError  # noqa: E402
from pinlite_edge.features.windows import PreparedClip  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.real_faces_reencode")

SPLITS = ("train", "dev", "test")
AS_IS = "as-is"


class ReencodedStore(rf.ClipStore):
    """The harness's clip store over re-encoded copies: ``get(path)`` prepares ``path`` re-encoded by ``name``
    (cached under ``work_dir``; :data:`AS_IS` prepares the file itself)."""

    def __init__(self, name: str, work_dir: Path):
        from pinlite_edge.features.pipeline import prepare_file

        def prepare(path: Path, contract: Any) -> PreparedClip:
            return prepare_file(self.copy_of(Path(path)), contract)

        super().__init__(prepare)
        self.name, self.work_dir = name, work_dir
        self.encode_seconds = 0.0

    def copy_of(self, path: Path) -> Path:
        if self.name == AS_IS:
            return path
        dst = self.work_dir / self.name / f"{path.parent.name}__{path.stem}.mp4"
        if not dst.is_file():
            t0 = time.perf_counter()
            reencode(path, dst, TRANSFORMS[self.name], seed=sum(path.name.encode()))
            self.encode_seconds += time.perf_counter() - t0
            log.info("%s: re-encoded %s", self.name, path.name)
        return dst


# --- the run ----------------------------------------------------------------------------------------------------
def _copies(store: ReencodedStore, clips: Sequence[Any]) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """``(file, copy)`` of each clip that ``store`` can make, and ``{"file", "reason"}`` of each it cannot (an excerpt
    longer than the clip, a file that does not decode): those are left out of the Detector pass with a warning and
    recorded, as the harness leaves them out of its rows and lists them under "skipped"."""
    files, left_out = [], []
    for clip in clips:
        try:
            files.append((clip.file, store.copy_of(clip.path)))
        except PinliteError as exc:
            log.warning("%s: %s left out: %s", store.name, clip.file, exc)
            left_out.append({"file": clip.file, "reason": f"{type(exc).__name__}: {exc}"})
    return files, left_out


def _moves(scores: dict[str, float], reference: dict[str, float] | None) -> dict[str, float | None] | None:
    """How far each file's score moved from ``reference`` (its as-is score): median |move|, largest up and down."""
    if reference is None:
        return None
    moves = [scores[f] - reference[f] for f in scores if f in reference]
    if not moves:
        return {"median_abs": None, "max_up": None, "max_down": None}
    return {"median_abs": float(np.median(np.abs(moves))), "max_up": float(np.max(moves)),
            "max_down": float(np.min(moves))}


def verdict_counts(rows: Sequence[dict[str, Any]], reference: dict[str, float] | None) -> dict[str, Any]:
    """``Detector.detect`` rows of genuine clips (``benchmarks/real_clip_verdicts.detect_files``): how many were called
    fake, reached P(fake) >= ``LIMIT`` (0.9, issue #12), had no face or failed; how far their P(fake) moved from
    ``reference``."""
    scored = [r for r in rows if "fake_prob" in r]
    return {"num_clips": len(rows),
            "called_fake": sum(r["verdict"] == "fake" for r in scored),
            "called_fake_files": sorted(r["file"] for r in scored if r["verdict"] == "fake"),
            "at_p09": sum(r["fake_prob"] >= LIMIT for r in scored),
            "no_face": sum(r["verdict"] == "no-face" for r in scored),
            "errors": [{"file": r["file"], "error": r["error"]} for r in rows if "error" in r],
            "move": _moves({r["file"]: r["fake_prob"] for r in scored}, reference)}


def summarise_transform(reports: dict[str, dict[str, Any]], reference: dict[str, dict[str, float]] | None
                        ) -> dict[str, Any]:
    """One transform's harness rows per method: the TEST split's row, AUCs over every clip of every split, and (used
    for the baseline, which has no Detector) the originals at or above the method's threshold and how far each
    original's score moved against ``reference`` (``method -> {file: as-is original score}``)."""
    test = reports["test"]
    out: dict[str, Any] = {}
    for row in test["table"]:
        method = row["method"]
        clips = [c for r in reports.values() for c in r["clips"] if method in c["scores"]]
        per_clip = [{k: rf.ConditionScore.from_dict(v) for k, v in c["scores"][method].items()} for c in clips]
        originals = {c["file"]: c["scores"][method]["original"]["scan"] for c in clips}
        out[method] = {"test": row, "all": rf.summarise(per_clip, row["threshold"]), "num_clips_all": len(clips),
                       "originals_at_threshold": sum(v >= row["threshold"] for v in originals.values()),
                       "original_move": _moves(originals, None if reference is None else reference.get(method))}
    return out


def run(cfg: rf.EvalConfig, transforms: Sequence[str], work_dir: Path) -> dict[str, Any]:
    """Every transform on every split (the harness's ``evaluate``) and every model's ``Detector.detect`` on every
    copy; the baseline's threshold from the as-is train split unless ``cfg.baseline_threshold`` is given."""
    as_is = ReencodedStore(AS_IS, work_dir)  # one store: the as-is clips are prepared once for both uses below
    if cfg.run_baseline and cfg.baseline_threshold is None:
        train = rf.evaluate(replace(cfg, split="train", run_models=False), as_is)
        cfg = replace(cfg, baseline_threshold=float(train["baseline"]["threshold"]))
        log.info("baseline threshold %.4f (as-is train split)", cfg.baseline_threshold)
    clips = {split: rf.load_split(cfg.split_file, cfg.root, split) for split in SPLITS}
    split_of = {c.file: split for split, cs in clips.items() for c in cs}
    results: dict[str, Any] = {}
    harness_ref: dict[str, dict[str, float]] | None = None
    detect_ref: dict[str, dict[str, float]] = {}
    for name in [AS_IS, *[t for t in transforms if t != AS_IS]]:
        store = as_is if name == AS_IS else ReencodedStore(name, work_dir)
        t0 = time.perf_counter()
        reports = {split: rf.evaluate(replace(cfg, split=split), store) for split in SPLITS}
        rows = summarise_transform(reports, harness_ref)
        files, left_out = _copies(store, [c for cs in clips.values() for c in cs])
        detections = {}
        for spec in cfg.models if cfg.run_models else []:
            found = detect_files(spec.path, files, split_of, threads=cfg.threads or 1)
            detections[spec.name] = {"counts": verdict_counts(found, detect_ref.get(spec.name)), "clips": found,
                                     "left_out": left_out}
            if name == AS_IS:
                detect_ref[spec.name] = {r["file"]: r["fake_prob"] for r in found if "fake_prob" in r}
        if name == AS_IS:
            harness_ref = {m: {c["file"]: c["scores"][m]["original"]["scan"] for r in reports.values()
                               for c in r["clips"] if m in c["scores"]} for m in rows}
        results[name] = {"description": "the clip file itself" if name == AS_IS else TRANSFORMS[name].description,
                         "encoding": None if name == AS_IS else TRANSFORMS[name].to_dict(),
                         "seconds": round(time.perf_counter() - t0, 1),
                         "encode_seconds": round(store.encode_seconds, 1),
                         "methods": rows, "detect": detections,
                         "skipped": [s for r in reports.values() for s in r["data"]["skipped"]],
                         "fingerprints": {s: r["data"]["fingerprint"] for s, r in reports.items()},
                         "clips": {s: r["clips"] for s, r in reports.items()}}
        log.info("%s done in %.0f s", name, results[name]["seconds"])
    return {"transforms": results, "baseline_threshold": cfg.baseline_threshold}


# --- the report -------------------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _mean_auc(row: dict[str, Any]) -> float | None:
    aucs = [row.get(f"auc_{k}") for k in rf.MANIPULATED]
    known = [a for a in aucs if a is not None]
    return float(np.mean(known)) if known else None


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Re-encoded genuine clips", "",
             "Each transform re-encodes every clip of the real split, then the real-faces harness runs on the copies "
             "and each model's `Detector.detect` runs on every copy (`benchmarks/real_faces_reencode.py`, module "
             "doc). TEST: the 6 test clips, never seen in training. ALL: every clip of train, dev and test (25 of "
             "them seen in training: stability, not accuracy). AUCs: the offset scan's P(fake) for models, the sync "
             "score for the baseline. Verdicts: `Detector.detect` on each genuine copy with the artefact's "
             "defaults (a `fake` verdict is a false positive).", ""]
    first = next(iter(report["transforms"].values()))
    for method in first["methods"]:
        is_model = method in first["detect"]
        if is_model:
            head = ("| transform | TEST AUC delay200 | advance200 | delay80 | swap | TEST FPR | ALL mean AUC | "
                    "genuine called fake (Detector) | at P >= 0.9 | no face | median abs move of P(fake) |")
        else:
            head = ("| transform | TEST AUC delay200 | advance200 | delay80 | swap | TEST FPR | ALL mean AUC | "
                    "originals at its threshold | median abs move of the score |")
        lines += [f"## {method}", "", head, "|" + "---|" * (head.count("|") - 1)]
        for name, t in report["transforms"].items():
            e = t["methods"].get(method)
            if e is None:
                continue
            row = e["test"]
            cells = [name, *[_f(row.get(f"auc_{k}")) for k in rf.MANIPULATED], _f(row.get("fpr")),
                     _f(_mean_auc(e["all"]))]
            if is_model:
                d = t["detect"][method]["counts"]
                move = (d.get("move") or {}).get("median_abs")
                cells += [f"{d['called_fake']} of {d['num_clips']}", f"{d['at_p09']} of {d['num_clips']}",
                          str(d["no_face"]), "reference" if name == AS_IS else _f(move, 3)]
            else:
                move = (e.get("original_move") or {}).get("median_abs")
                cells += [f"{e['originals_at_threshold']} of {e['num_clips_all']}",
                          "reference" if name == AS_IS else _f(move, 3)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Transforms", "", "| transform | what | seconds (encode) | clips skipped |", "|---|---|---|---|"]
    for name, t in report["transforms"].items():
        skipped = ", ".join(f"{s['file']} ({s['reason'][:60]})" for s in t["skipped"]) or "none"
        lines.append(f"| {name} | {t['description']} | {t['seconds']:.0f} ({t['encode_seconds']:.0f}) | {skipped} |")
    lines.append("")
    lines.append(f"Baseline threshold: {_f(report.get('baseline_threshold'), 4)} (as-is train split, Youden's J).")
    if report.get("notes"):
        lines += ["", "## Findings", "", report["notes"].strip()]
    return "\n".join(lines) + "\n"


def build_parser() -> Any:
    p = report_parser(__doc__)
    p.add_argument("models", nargs="*", default=[], metavar="NAME=PATH",
                   help="models to evaluate: checkpoint .safetensors or artefact .onnx/.pte/engine")
    p.add_argument("--transform", action="append", default=None, choices=[AS_IS, *TRANSFORMS],
                   help="a transform to run (repeatable; default all; as-is always runs as the reference)")
    p.add_argument("--baseline-only", action="store_true", help="skip the models")
    p.add_argument("--baseline-threshold", type=float, default=None,
                   help="the baseline's threshold (default: chosen on the as-is train split)")
    p.add_argument("--root", type=Path, default=None,
                   help=f"the real-av folder (default {repo_relative(rf.DEFAULT_ROOT)}; skipped with a note if absent)")
    p.add_argument("--split-file", type=Path, default=rf.DEFAULT_SPLIT_FILE)
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where the re-encoded copies are kept (default: a temporary folder, removed afterwards)")
    p.add_argument("--threads", type=int, default=1, help="runner threads (default 1)")
    p.add_argument("--no-hash-check", action="store_true", help="do not re-hash the clips against the split file")
    return p


def main(argv: list[str] | None = None) -> int:
    argv, args = parse_cli(build_parser(), argv)
    root = rf.real_av_root(args.root)
    if isinstance(root, int):
        return root
    try:
        models = [] if args.baseline_only else [rf.parse_model_spec(m) for m in args.models]
        if not models and not args.baseline_only:
            raise InputError("give at least one model NAME=PATH, or --baseline-only")
        cfg = rf.EvalConfig(root=root, split_file=args.split_file, models=models, run_models=bool(models),
                            baseline_threshold=args.baseline_threshold, threads=args.threads or None,
                            verify_hashes=not args.no_hash_check)
        transforms = args.transform or list(TRANSFORMS)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="pinlite-reencode-") as tmp:
            work = args.work_dir or Path(tmp)
            report = run(cfg, transforms, work)
    except PinliteError as exc:
        log.error("%s", exc)
        return 2
    report = {"wall_seconds": round(time.perf_counter() - t0, 1), **report}
    if args.notes is not None:
        report["notes"] = args.notes.read_text()
    fingerprints = report["transforms"][AS_IS]["fingerprints"]
    record = build_record("real_faces_reencode", "benchmarks/real_faces_reencode.py", argv,
                          data={"root": repo_relative(root), "split_file": repo_relative(args.split_file),
                                "fingerprint": fingerprint_json(fingerprints), "split_fingerprints": fingerprints,
                                "fingerprint_of": "sha256 of the harness's fingerprints of each split's clips",
                                "models": [{"name": m.name, "path": repo_relative(m.path)} for m in models]})
    json_path, md_path = write_result(record, rf._jsonable(report), render_markdown(report), args.out_dir)
    log.info("wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
