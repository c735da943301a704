"""Every held-out real clip at once: the cross-validation's clips and the test split's, per recipe (issue #12).

    python benchmarks/real_faces_pooled.py --variant "no cue=runs/real-faces-cv:benchmarks/results/real_faces/A.json" \\
        --variant "cue=runs/real-faces-cv-sync:benchmarks/results/real_faces/B.json"

Why: a recipe is chosen on the cross-validation (13 held-out clips, ``benchmarks/real_faces_cv.py``) and reported
on the 6 test clips (``benchmarks/real_faces.py``), and both are small enough to disagree. Each scores every clip with
models that never saw its speaker (the folds' models, and the quickstart models that never saw the test split), so
together they are 19 held-out clips per recipe. This script pools them, read-only: nothing is trained or re-scored.

Per recipe and model (teacher, distilled, pruned, the training-free baseline), on the ``scan`` verdict (the
baseline: its sync score):

- **pooled AUC**: every held-out original against every manipulated clip, whichever model scored them (the
  models' score scales differ, which this also pays for);
- **within-model AUC**: only pairs of clips scored by the same model (one fold, or the test split), the share of
  such pairs ranked right;
- **in-sync FPR** of the pruned (shipped) student: originals at or above their own model's operating point.
- **the test split against the CV**: is the test split's result what a draw of as many clips from the CV's held-out
  clips gives? For random subsets of the CV clips of the test split's size (drawn without replacement), the mean
  pooled AUC over the four manipulations: its 95% range, and the share of subsets at or below the test split's own
  mean AUC (small: the test split is unusually hard for that model; the subsets mix the folds' models, as the
  pooled CV AUC does).

A variant is ``NAME=CV_WORK:TEST_RECORD``: the CV work folder (its ``fold*/fold_scores.json``) and the real_faces JSON
record of the same recipe's quickstart models. Clips where no face was found are left out, as in both sources.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import build_record, parse_cli, report_parser, write_result  # noqa: E402
from benchmarks.real_faces import BASELINE_NAME, MANIPULATED, _jsonable, auc_vs_original, verdict_score  # noqa: E402
from benchmarks.real_faces_cv import MODELS, pooled_clips  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.real_faces_pooled")

STEM = "real_faces_pooled"
METHODS = (*MODELS, BASELINE_NAME)
#: random test-sized subsets of the CV clips drawn for the test-vs-CV comparison
SUBSETS = 2000


def load_reports(cv_work: Path, test_record: Path) -> list[dict[str, Any]]:
    """The CV folds' score files and the test split's record, each one model group's held-out clips."""
    folds = sorted(cv_work.glob("fold*/fold_scores.json"))
    if not folds:
        raise FileNotFoundError(f"no fold*/fold_scores.json under {cv_work}: run benchmarks/real_faces_cv.py first")
    reports = [json.loads(p.read_text()) for p in folds]
    test = json.loads(test_record.read_text())
    test.pop("record", None)
    return [*reports, test]


def within_model_auc(reports: Sequence[dict[str, Any]], method: str, cond: str) -> float | None:
    """Share of (original, manipulated) pairs scored by the same report's model ranked right (ties count half)."""
    right = total = 0.0
    for rep in reports:
        per_method, _, _ = pooled_clips([rep])
        clips = per_method.get(method, [])
        orig = [verdict_score(method, c["original"]) for c in clips]
        fake = [verdict_score(method, c[cond]) for c in clips if cond in c]
        auc = auc_vs_original(orig, fake)
        if auc is not None:
            right += auc * len(orig) * len(fake)
            total += len(orig) * len(fake)
    return right / total if total else None


def pooled_aucs(clips: Sequence[dict[str, Any]], method: str) -> dict[str, float | None]:
    """Per manipulation, the pooled AUC of ``clips`` (one method's ``pooled_clips`` entries) against their originals."""
    orig = [verdict_score(method, c["original"]) for c in clips]
    return {cond: auc_vs_original(orig, [verdict_score(method, c[cond]) for c in clips if cond in c])
            for cond in MANIPULATED}


def mean_auc(clips: Sequence[dict[str, Any]], method: str) -> float | None:
    """Mean over the manipulations of the pooled AUC of ``clips`` (one method's ``pooled_clips`` entries)."""
    vals = [a for a in pooled_aucs(clips, method).values() if a is not None]
    return float(np.mean(vals)) if vals else None


def test_against_cv(reports: Sequence[dict[str, Any]], method: str, subsets: int = SUBSETS,
                    seed: int = 0) -> dict[str, Any] | None:
    """The last report (the test split) against random subsets of the others' clips (the CV folds) of the same size:
    the test's mean pooled AUC, the subsets' 2.5 / 50 / 97.5 percentiles, and the share of subsets at or below it."""
    test_clips = pooled_clips(reports[-1:])[0].get(method, [])
    cv_clips = pooled_clips(reports[:-1])[0].get(method, [])
    k = len(test_clips)
    test_auc = mean_auc(test_clips, method)
    if test_auc is None or k < 2 or len(cv_clips) < k:
        return None
    rng = np.random.default_rng(seed)
    draws = [mean_auc([cv_clips[i] for i in rng.choice(len(cv_clips), k, replace=False)], method)
             for _ in range(subsets)]
    vals = np.array([d for d in draws if d is not None])
    return {"test_clips": k, "cv_clips": len(cv_clips), "subsets": int(vals.size), "test_mean_auc": test_auc,
            "cv_subset_mean_auc_p2_5_p50_p97_5": [float(np.percentile(vals, q)) for q in (2.5, 50, 97.5)],
            "share_of_cv_subsets_at_or_below_test": float(np.mean(vals <= test_auc + 1e-12))}


def summarise_variant(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    per_method, fpr_hits, no_face = pooled_clips(reports)
    missing = [m for m in METHODS if m not in per_method]
    if missing:
        raise ValueError(f"methods {missing} are not in every source")
    rows = []
    for method in METHODS:
        clips = per_method[method]
        row: dict[str, Any] = {"method": method, "clips": len(clips)}
        for cond in MANIPULATED:
            orig = [verdict_score(method, c["original"]) for c in clips]
            row[f"pooled_auc_{cond}"] = auc_vs_original(orig, [verdict_score(method, c[cond]) for c in clips
                                                               if cond in c])
            row[f"within_model_auc_{cond}"] = within_model_auc(reports, method, cond)
        for kind in ("pooled", "within_model"):
            vals = [row[f"{kind}_auc_{c}"] for c in MANIPULATED if row[f"{kind}_auc_{c}"] is not None]
            row[f"{kind}_auc_mean"] = float(np.mean(vals)) if vals else None
        row["test_against_cv"] = test_against_cv(reports, method)
        hits = fpr_hits.get(method)
        if method == "pruned" and hits:
            row["fpr_at_operating_point"] = float(np.mean(hits))
            row["false_positives"] = f"{int(np.sum(hits))} of {len(hits)}"
        rows.append(row)
    return {"sources": len(reports), "no_face": no_face, "rows": rows}


def render_markdown(result: dict[str, Any]) -> str:
    lines = ["# Real faces: every held-out clip, per recipe (CV folds + test split)", "",
             "Read-only pooling of `benchmarks/real_faces_cv.py` fold scores and `benchmarks/real_faces.py` test-split "
             "records: each clip scored by a model that never saw its speaker. Scan verdict (baseline: its sync "
             "score). Columns delay200 / advance200 / delay80 / swap, then their mean.", ""]
    for name, v in result["variants"].items():
        lines += [f"## {name}", "", f"Sources: `{v['cv_work']}` ({v['sources'] - 1} folds) and `{v['test_record']}`; "
                  f"no face (left out): {', '.join(v['no_face']) or 'none'}.", "",
                  "| method | clips | pooled AUC | mean | within-model AUC | mean | in-sync FPR at the operating point |",
                  "|---|---|---|---|---|---|---|"]
        for r in v["rows"]:
            def cells(kind: str) -> str:
                return " / ".join("—" if r[f"{kind}_auc_{c}"] is None else f"{r[f'{kind}_auc_{c}']:.2f}"
                                  for c in MANIPULATED)
            fpr = f"{r['fpr_at_operating_point']:.2f} ({r['false_positives']})" if "false_positives" in r else "—"
            lines.append(f"| {r['method']} | {r['clips']} | {cells('pooled')} | {r['pooled_auc_mean']:.2f} | "
                         f"{cells('within_model')} | {r['within_model_auc_mean']:.2f} | {fpr} |")
        lines += ["", "The test split against the CV: mean AUC of the test split's clips, and of random subsets of "
                  "the CV's held-out clips of the same size (95% range, median; share at or below the test's).", "",
                  "| method | test clips | test mean AUC | CV subsets: 2.5% / median / 97.5% | share at or below |",
                  "|---|---|---|---|---|"]
        for r in v["rows"]:
            t = r.get("test_against_cv")
            if t:
                lo, mid, hi = t["cv_subset_mean_auc_p2_5_p50_p97_5"]
                lines.append(f"| {r['method']} | {t['test_clips']} | {t['test_mean_auc']:.2f} | {lo:.2f} / {mid:.2f} / "
                             f"{hi:.2f} | {t['share_of_cv_subsets_at_or_below_test']:.3f} |")
        lines.append("")
    if result.get("notes"):
        lines += ["## Notes", "", result["notes"].strip()]
    return "\n".join(lines) + "\n"


def _variant(text: str) -> tuple[str, Path, Path]:
    name, sep, rest = text.partition("=")
    cv, sep2, test = rest.rpartition(":")
    if not (sep and sep2 and name and cv and test):
        raise argparse.ArgumentTypeError(f"expected NAME=CV_WORK:TEST_RECORD, got {text!r}")
    return name, Path(cv), Path(test)


def build_parser() -> argparse.ArgumentParser:
    p = report_parser(__doc__)
    p.add_argument("--variant", action="append", type=_variant, required=True, metavar="NAME=CV_WORK:TEST_RECORD",
                   help="one recipe: its CV work folder and its test-split record (repeat per recipe)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv, args = parse_cli(build_parser(), argv)
    variants: dict[str, Any] = {}
    digest = hashlib.sha256()
    for name, cv_work, test_record in args.variant:
        try:
            reports = load_reports(cv_work, test_record)
            summary = summarise_variant(reports)
        except (OSError, ValueError) as exc:
            log.error("variant %s: %s", name, exc)
            return 2
        for rep in reports:
            digest.update(json.dumps(sorted((c["file"], c.get("sha256")) for c in rep["clips"])).encode())
        variants[name] = {"cv_work": str(cv_work), "test_record": str(test_record), **summary}
    result = {"variants": variants, "notes": args.notes.read_text() if args.notes else None}
    record = build_record(STEM, "benchmarks/real_faces_pooled.py", argv,
                          data={"fingerprint": digest.hexdigest(),
                                "fingerprint_of": "each source's sorted (file, sha256) of its held-out clips",
                                "sources": {n: [v["cv_work"], v["test_record"]] for n, v in variants.items()}})
    json_path, md_path = write_result(record, _jsonable(result), render_markdown(result), results_dir=args.out_dir)
    log.info("wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
