"""Paired comparison of recipes cross-validated on the same folds: is a variant's change larger than the noise?

    python benchmarks/real_faces_cv_compare.py --reference "cue=runs/real-faces-cv-sync" \\
        --variant "peak contrast=runs/real-faces-cv-sync-contrast" --variant "learned audio=runs/..."

Why: each recipe variant of issue #12 is decided on ``benchmarks/real_faces_cv.py``'s 13 held-out clips. The
intervals in each CV report are those of one recipe's AUC; a variant and its reference score the *same* clips with
models trained on the *same* folds, so their difference is better judged paired. This script reads the folds' score
files (``WORK/fold*/fold_scores.json``; read-only, nothing is trained or re-scored), matches clips by file and, for
each model, resamples the held-out clips with replacement (the same draw for both recipes) to give the 95% interval
of the difference in mean scan AUC over the four manipulations (the measure the pre-registered rules use), and the
share of draws where the variant is ahead. Clips without a face, or missing from either recipe, are left out.

``--statistic`` compares *scoring* variants instead of recipes: each variant's clip score is recomputed from the scan
curve its folds stored (``scan_curve``: the window-averaged margin per offset), with the statistic named, while the
reference keeps the score it was recorded with. ``--variant NAME=SAME_WORK --statistic confidence`` thus asks what
the same fold models would have scored with that verdict statistic (:data:`STATISTICS`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks._record import build_record, parse_cli, report_parser, write_result  # noqa: E402
from benchmarks.real_faces import MANIPULATED, ConditionScore, _jsonable  # noqa: E402
from benchmarks.real_faces_cv import MODELS  # noqa: E402
from benchmarks.real_faces_pooled import mean_auc, pooled_aucs  # noqa: E402

log = logging.getLogger("pinlite_edge.benchmarks.real_faces_cv_compare")

STEM = "real_faces_cv_compare"
REPS = 2000


def confidence_fake_prob(curve: dict[int, float]) -> float:
    """``sigmoid(median_k curve[k] - curve[0])``: the sync confidence at the given alignment (SyncNet's median minus
    the value at the offset asked about), as a fake-likeness in (0, 1). The candidate statistic of
    ``benchmarks/results/real_faces_cv_sync_confidence/notes.md``."""
    values = np.array(list(curve.values()), np.float64)
    return float(1.0 / (1.0 + np.exp(-(np.median(values) - curve[0]))))


#: the reference's name when each variant is compared with its own recorded scores (``--statistic`` without
#: ``--reference``)
OWN_SCORES = "each variant's own recorded scan scores"

#: verdict statistics a variant's clip scores can be recomputed with from a stored scan curve (``--statistic``)
STATISTICS: dict[str, Callable[[dict[int, float]], float]] = {"confidence": confidence_fake_prob}

#: per clip file, per model, per condition: the clip's scores (``real_faces_cv.pooled_clips``' entries, keyed by file)
ClipScores = dict[str, dict[str, dict[str, ConditionScore]]]


def _rescored(stored: dict[str, Any], statistic: str | None) -> ConditionScore:
    score = ConditionScore.from_dict(stored)
    if statistic is None:
        return score
    curve = stored.get("scan_curve")
    if not curve:
        raise ValueError(f"--statistic {statistic}: a stored score has no scan_curve to recompute it from")
    score.scan = STATISTICS[statistic]({int(k): float(v) for k, v in curve.items()})
    return score


def load_scores(work: Path, statistic: str | None = None) -> ClipScores:
    """The held-out clips (with a face) of every fold of the CV work folder ``work``; with ``statistic`` (a key of
    :data:`STATISTICS`) each clip's scan score is recomputed from its stored scan curve."""
    files = sorted(Path(work).glob("fold*/fold_scores.json"))
    if not files:
        raise FileNotFoundError(f"no fold*/fold_scores.json under {work}: run benchmarks/real_faces_cv.py first")
    out: ClipScores = {}
    for path in files:
        for clip in json.loads(path.read_text())["clips"]:
            if clip.get("face_found") is False:
                continue
            out[clip["file"]] = {m: {c: _rescored(v, statistic) for c, v in conds.items()}
                                 for m, conds in clip.get("scores", {}).items() if m in MODELS}
    return out


def clip_fingerprint(work: Path) -> str:
    """sha256 over the sorted ``(file, sha256)`` of every held-out clip of ``work``'s folds."""
    pairs = sorted((c["file"], c.get("sha256")) for path in sorted(Path(work).glob("fold*/fold_scores.json"))
                   for c in json.loads(path.read_text())["clips"])
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def paired_difference(reference: ClipScores, variant: ClipScores, method: str, reps: int = REPS,
                      seed: int = 0) -> dict[str, Any]:
    """Variant minus reference mean AUC of ``method`` on their common clips, with its paired-bootstrap interval."""
    files = sorted(f for f in set(reference) & set(variant)
                   if method in reference[f] and method in variant[f])
    if len(files) < 2:
        raise ValueError(f"{method}: fewer than 2 clips scored by both recipes")
    def recipe_auc(scores: ClipScores, draw: Sequence[str]) -> float:
        auc = mean_auc([scores[f][method] for f in draw], method)
        return float("nan") if auc is None else auc

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(reps):
        draw = [files[i] for i in rng.integers(0, len(files), len(files))]
        diffs.append(recipe_auc(variant, draw) - recipe_auc(reference, draw))
    d = np.array(diffs)
    d = d[np.isfinite(d)]
    ref, var = recipe_auc(reference, files), recipe_auc(variant, files)
    per_condition = {name: pooled_aucs([scores[f][method] for f in files], method)
                     for name, scores in (("reference", reference), ("variant", variant))}
    return {"method": method, "clips": len(files), "reference_mean_auc": ref, "variant_mean_auc": var,
            "reference_auc": per_condition["reference"], "variant_auc": per_condition["variant"],
            "difference": var - ref, "difference_ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
            "share_variant_ahead": float(np.mean(d > 0)), "reps": int(d.size)}


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def render_markdown(result: dict[str, Any]) -> str:
    reference = (f"Reference: {OWN_SCORES}." if result["reference"]["work"] is None else
                 f"Reference `{result['reference']['name']}` (`{result['reference']['work']}`).")
    lines = ["# Real faces: recipe variants against their reference, paired on the same CV clips", "",
             f"{reference} Mean scan AUC over the four manipulations on the clips both recipes scored; 95% interval "
             f"of the difference from {REPS} paired bootstrap draws of the clips (the same draw for both recipes).", ""]
    lines += [f"Variant `{v['name']}` (`{v['work']}`): its clip scores recomputed from the stored scan curves with the "
              f"statistic `{v['statistic']}` (nothing re-run).\n" for v in result["variants"] if v.get("statistic")]
    lines += ["| variant | model | clips | reference | variant | difference | 95% interval | share of draws ahead |",
              "|---|---|---|---|---|---|---|---|"]
    for v in result["variants"]:
        for r in v["rows"]:
            lo, hi = r["difference_ci95"]
            lines.append(f"| {v['name']} | {r['method']} | {r['clips']} | {r['reference_mean_auc']:.3f} | "
                         f"{r['variant_mean_auc']:.3f} | {r['difference']:+.3f} | {lo:+.3f} to {hi:+.3f} | "
                         f"{r['share_variant_ahead']:.2f} |")
    lines += ["", "AUC per manipulation (reference -> variant):", "",
              "| variant | model | " + " | ".join(MANIPULATED) + " |", "|---|---|" + "---|" * len(MANIPULATED)]
    for v in result["variants"]:
        for r in v["rows"]:
            cells = [f"{_f(r['reference_auc'][c])} -> {_f(r['variant_auc'][c])}" for c in MANIPULATED]
            lines.append(f"| {v['name']} | {r['method']} | " + " | ".join(cells) + " |")
    lines.append("")
    if result.get("notes"):
        lines += ["## Notes", "", result["notes"].strip()]
    return "\n".join(lines) + "\n"


def _named(text: str) -> tuple[str, Path]:
    name, sep, work = text.rpartition("=")  # the name may hold "=", the path should not
    if not (sep and name and work):
        raise argparse.ArgumentTypeError(f"expected NAME=CV_WORK, got {text!r}")
    return name, Path(work)


def build_parser() -> argparse.ArgumentParser:
    p = report_parser(__doc__)
    p.add_argument("--reference", type=_named, default=None, metavar="NAME=CV_WORK",
                   help="the reference recipe's CV work folder (required unless --statistic: then, without it, each "
                        "variant is compared with its own recorded scores)")
    p.add_argument("--variant", type=_named, action="append", required=True, metavar="NAME=CV_WORK",
                   help="a variant's CV work folder, cross-validated on the same folds (repeatable)")
    p.add_argument("--statistic", choices=sorted(STATISTICS), default=None,
                   help="recompute the variants' clip scores from their stored scan curves with this verdict "
                        "statistic (a scoring variant; the reference keeps its recorded scores)")
    p.add_argument("--stem", default=STEM, help="results folder name (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv, args = parse_cli(parser, argv)
    if args.reference is None and args.statistic is None:
        parser.error("--reference is required unless --statistic compares each variant with its own recorded scores")
    try:
        reference = None if args.reference is None else load_scores(args.reference[1])
        variants = []
        for name, work in args.variant:
            scores = load_scores(work, args.statistic)
            ref_scores = load_scores(work) if reference is None else reference
            variants.append({"name": name, "work": str(work), "statistic": args.statistic,
                             "rows": [paired_difference(ref_scores, scores, m) for m in MODELS]})
    except (OSError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 2
    ref_name, ref_work = args.reference or (OWN_SCORES, None)
    result = {"reference": {"name": ref_name, "work": None if ref_work is None else str(ref_work)},
              "variants": variants, "notes": args.notes.read_text() if args.notes else None}
    fingerprint_work = ref_work or Path(variants[0]["work"])
    record = build_record(args.stem, "benchmarks/real_faces_cv_compare.py", argv,
                          data={"fingerprint": clip_fingerprint(fingerprint_work),
                                "fingerprint_of": f"sorted (file, sha256) of the held-out clips of {fingerprint_work}",
                                "sources": sorted({str(fingerprint_work), *(v["work"] for v in variants)})})
    json_path, md_path = write_result(record, _jsonable(result), render_markdown(result), results_dir=args.out_dir)
    log.info("wrote %s and %s", json_path, md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
